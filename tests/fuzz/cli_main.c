/* The deft CLI with its main() renamed, for the option-parser target. */
#define main deft_cli_main
#include "../../tools/deft.c"

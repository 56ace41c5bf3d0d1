/* The deft train, convex and checkpoint option parsers, with argv made
 * from the input: byte 0 picks the command (train, convex, checkpoint, by
 * its value mod 3), the rest is
 * split at NUL and newline bytes into at most 48 arguments. The CLI runs
 * with deft_cli_dry_run set, so it parses and checks everything and stops
 * before loading data or training. */
#include "fuzz.h"

#include <getopt.h>

extern int deft_cli_dry_run;
int deft_cli_main(int argc, char **argv);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    deft_cli_dry_run = 1;
    char *text = malloc(size);
    if (!text)
        abort();
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char *argv[52];
    int argc = 0;
    argv[argc++] = "deft";
    static char *const cmds[3] = {"train", "convex", "checkpoint"};
    argv[argc++] = cmds[data[0] % 3];
    for (char *p = text, *end = text + size - 1; p < end && argc < 50;) {
        char *q = p;
        while (q < end && *q != '\0' && *q != '\n')
            q++;
        *q = '\0';
        argv[argc++] = p;
        p = q + 1;
    }
    argv[argc] = NULL;
    optind = 0; /* glibc: a full reset of getopt's state */
    opterr = 0;
    (void)deft_cli_main(argc, argv);
    free(text);
    return 0;
}

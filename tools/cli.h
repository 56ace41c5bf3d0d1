/* Helpers shared by the deft subcommands (deft.c, convex.c): bad values are
 * reported as one line "deft CMD: --flag VALUE: what is wrong" on stderr,
 * and the functions return the usage exit status, 2. */
#ifndef DEFT_CLI_H
#define DEFT_CLI_H

#include "deft.h"

enum { DEFT_EXIT_USAGE = 2 };

/* The subcommand named in messages ("train", "convex"); set on entry. */
extern const char *deft_cli_cmd;
/* Set by the option-parser fuzz target (tests/fuzz/fuzz_cli.c): commands
 * parse and check their options, then return 0 before loading data. */
extern int deft_cli_dry_run;

int deft_cli_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Parse s as a finite number / an integer in [lo, hi] into *out; 0 on
 * success, else the message and 2. */
int deft_cli_parse_double(const char *flag, const char *s, double lo,
                          double hi, double *out);
int deft_cli_parse_long(const char *flag, const char *s, long lo, long hi,
                        long *out);

/* --reshard[=RULE] (deft train, deft checkpoint): *out = RULE, or mean
 * without one; 0 on success, else the message and 2. */
int deft_cli_parse_reshard(const char *arg, deft_reshard_t *out);
/* For an unexpected argument: 2 with a message if it is a re-sharding rule
 * meant as --reshard=RULE (getopt takes an optional value only after '='),
 * else 0. */
int deft_cli_stray_rule(const char *arg);

#endif

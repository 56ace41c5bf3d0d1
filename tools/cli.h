/* Helpers shared by the deft subcommands (deft.c, convex.c): bad values are
 * reported as one line "deft CMD: --flag VALUE: what is wrong" on stderr,
 * and the functions return the usage exit status, 2. */
#ifndef DEFT_CLI_H
#define DEFT_CLI_H

#include "deft.h"

#include <getopt.h>
#include <stdio.h>

enum { DEFT_EXIT_USAGE = 2 };

/* The subcommand named in messages ("train", "convex"); set on entry. */
extern const char *deft_cli_cmd;
/* Set by the option-parser fuzz target (tests/fuzz/fuzz_cli.c): commands
 * parse and check their options, then return 0 before loading data. */
extern int deft_cli_dry_run;

int deft_cli_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Parse s as an integer in [lo, hi] into *out; 0 on success, else the
 * message and 2. */
int deft_cli_parse_long(const char *flag, const char *s, long lo, long hi,
                        long *out);

/* --reshard[=RULE] (deft train, deft checkpoint): *out = RULE, or mean
 * without one; 0 on success, else the message and 2. */
int deft_cli_parse_reshard(const char *arg, deft_reshard_t *out);
/* For an unexpected argument: 2 with a message if it is a re-sharding rule
 * meant as --reshard=RULE (getopt takes an optional value only after '='),
 * else 0. */
int deft_cli_stray_rule(const char *arg);

/* A command's flags that come from option tables (the optimizer's, the
 * training run's): getopt entries, values and help lines built from the
 * descriptions, so that a flag, its help and its range are written once. */
enum { DEFT_CLI_MAX_FLAGS = 96, DEFT_CLI_TABLE_CODE = 1000 };
typedef struct {
    const deft_option_t *opt[DEFT_CLI_MAX_FLAGS];
    size_t n;
} deft_cli_flags_t;

/* Adds o (skipped without a flag or when full). */
void deft_cli_flags_add(deft_cli_flags_t *f, const deft_option_t *o);
/* The table flags as getopt entries (code DEFT_CLI_TABLE_CODE + index),
 * then the command's own (extra, ended by a zero entry), then the zero
 * entry, into out (room for f->n + the extras + 1). */
void deft_cli_flags_getopt(const deft_cli_flags_t *f,
                           const struct option *extra, struct option *out);
/* The table option of a getopt code, or NULL for the command's own. */
const deft_option_t *deft_cli_flag_of(const deft_cli_flags_t *f, int code);
/* The text a table flag sets: its value, or its implicit one. */
const char *deft_cli_flag_value(const deft_option_t *o, const char *arg);
/* Parses argv (argv[0] is the command): each table flag sets its value
 * through set(cfg, "--flag", text) (whose error is the message), --quiet
 * sets *quiet, --help is reported; an unknown flag or a missing value is
 * a usage error. Returns DEFT_CLI_GO with optind at the first operand,
 * DEFT_CLI_HELP, or the exit status (2) after the message. */
enum { DEFT_CLI_GO = -1, DEFT_CLI_HELP = -2 };
typedef deft_status_t (*deft_cli_set_fn)(void *cfg, const char *name,
                                         const char *value);
int deft_cli_parse(int argc, char **argv, const deft_cli_flags_t *f,
                   deft_cli_set_fn set, void *cfg, int *quiet);
/* One help line (wrapped): "  --flag METAVAR   help: allowed (default
 * deflt)"; deflt NULL or "" prints no default. */
void deft_cli_print_option(FILE *f, const deft_option_t *o, const char *deflt);

#endif

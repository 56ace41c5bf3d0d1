#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *deft_cli_cmd = "";
int deft_cli_dry_run;

int deft_cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "deft %s: ", deft_cli_cmd);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    return DEFT_EXIT_USAGE;
}

int deft_cli_parse_long(const char *flag, const char *s, long lo, long hi,
                        long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE)
        return deft_cli_usage_error("%s '%s': not an integer", flag, s);
    if (v < lo || v > hi)
        return deft_cli_usage_error("%s %s: must be in [%ld, %ld]", flag, s, lo,
                                    hi);
    *out = v;
    return 0;
}

int deft_cli_parse_reshard(const char *arg, deft_reshard_t *out)
{
    *out = DEFT_RESHARD_MEAN;
    if (arg && deft_reshard_parse(arg, out) != DEFT_OK)
        return deft_cli_usage_error("--reshard=%s: %s", arg, deft_last_error());
    return 0;
}

int deft_cli_stray_rule(const char *arg)
{
    deft_reshard_t rule;
    if (deft_reshard_parse(arg, &rule) != DEFT_OK)
        return 0;
    return deft_cli_usage_error("unexpected argument '%s': write the rule as "
                                "--reshard=%s", arg, arg);
}

void deft_cli_flags_add(deft_cli_flags_t *f, const deft_option_t *o)
{
    if (o && o->flag && f->n < DEFT_CLI_MAX_FLAGS)
        f->opt[f->n++] = o;
}

void deft_cli_flags_getopt(const deft_cli_flags_t *f,
                           const struct option *extra, struct option *out)
{
    size_t k = 0;
    for (size_t i = 0; i < f->n; i++, k++) {
        const deft_option_t *o = f->opt[i];
        int has = o->type == DEFT_OPTION_FLAG ? no_argument
                  : o->implicit               ? optional_argument
                                              : required_argument;
        out[k] = (struct option){o->flag, has, NULL,
                                 DEFT_CLI_TABLE_CODE + (int)i};
    }
    for (; extra && extra->name; extra++)
        out[k++] = *extra;
    out[k] = (struct option){0, 0, 0, 0};
}

const deft_option_t *deft_cli_flag_of(const deft_cli_flags_t *f, int code)
{
    int i = code - DEFT_CLI_TABLE_CODE;
    return i >= 0 && (size_t)i < f->n ? f->opt[i] : NULL;
}

const char *deft_cli_flag_value(const deft_option_t *o, const char *arg)
{
    if (arg)
        return arg;
    return o->implicit ? o->implicit : "1"; /* a FLAG given */
}

int deft_cli_parse(int argc, char **argv, const deft_cli_flags_t *f,
                   deft_cli_set_fn set, void *cfg, int *quiet)
{
    static const struct option own[] = {{"quiet", no_argument, 0, 1},
                                        {"help", no_argument, 0, 'h'},
                                        {0, 0, 0, 0}};
    struct option opts[DEFT_CLI_MAX_FLAGS + 3];
    deft_cli_flags_getopt(f, own, opts);
    opterr = 0;
    optind = 0; /* glibc: a full reset, also of a half-parsed "-xy" */
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        const char *flag = argv[optind - 1];
        const deft_option_t *o = deft_cli_flag_of(f, c);
        char name[80];
        snprintf(name, sizeof name, "--%s", o ? o->flag : "");
        if (o && set(cfg, name, deft_cli_flag_value(o, optarg)) != DEFT_OK)
            return deft_cli_usage_error("%s", deft_last_error());
        if (o)
            continue;
        if (c == 1)
            *quiet = 1;
        else if (c == 'h')
            return DEFT_CLI_HELP;
        else if (c == ':')
            return deft_cli_usage_error("%s needs a value", flag);
        else
            return deft_cli_usage_error("unknown option '%s' (see deft %s "
                                        "--help)", flag, deft_cli_cmd);
    }
    return DEFT_CLI_GO;
}

/* Writes words to f, wrapped at 78 columns, continuing at column 23. */
static void wrap(FILE *f, int col, const char *text)
{
    while (*text) {
        const char *sp = strchr(text, ' ');
        int w = sp ? (int)(sp - text) : (int)strlen(text);
        if (col + 1 + w > 78 && col > 23) {
            fprintf(f, "\n%23s", "");
            col = 23;
        } else if (col > 23) {
            fputc(' ', f);
            col++;
        }
        fprintf(f, "%.*s", w, text);
        col += w;
        text += w;
        while (*text == ' ')
            text++;
    }
    fputc('\n', f);
}

void deft_cli_print_option(FILE *f, const deft_option_t *o, const char *deflt)
{
    char head[64], text[1400], allowed[600] = "";
    const int opt = o->implicit && o->metavar; /* --reshard[=RULE] */
    snprintf(head, sizeof head, "  --%s%s%s%s", o->flag,
             opt ? "[=" : o->metavar ? " " : "", o->metavar ? o->metavar : "",
             opt ? "]" : "");
    if (o->type != DEFT_OPTION_FLAG && o->type != DEFT_OPTION_STRING &&
        o->type != DEFT_OPTION_LIST)
        deft_option_allowed(o, allowed, sizeof allowed);
    snprintf(text, sizeof text, "%s%s%s%s%s%s", o->help, allowed[0] ? ": " : "",
             allowed, deflt && deflt[0] ? " (default " : "",
             deflt && deflt[0] ? deflt : "", deflt && deflt[0] ? ")" : "");
    int col = (int)strlen(head);
    fputs(head, f);
    if (col < 23) {
        fprintf(f, "%*s", 23 - col, "");
        col = 23;
    } else {
        fprintf(f, "\n%23s", "");
        col = 23;
    }
    /* the first word starts the column */
    const char *sp = strchr(text, ' ');
    int w = sp ? (int)(sp - text) : (int)strlen(text);
    fprintf(f, "%.*s", w, text);
    wrap(f, col + w, text + w + (sp ? 1 : 0));
}

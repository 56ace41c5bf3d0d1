#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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

int deft_cli_parse_double(const char *flag, const char *s, double lo,
                          double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
        return deft_cli_usage_error("%s '%s': not a number", flag, s);
    if (v < lo || v > hi)
        return deft_cli_usage_error("%s %s: must be in [%g, %g]", flag, s, lo,
                                    hi);
    *out = v;
    return 0;
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

/* Option tables (options.h): parsing, range checks and text for fields
 * described once. */
#include "core/options.h"

#include "core/internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

enum { MAX_CHOICES = 64 };

static int same_name(const char *a, const char *given)
{
    if (!a)
        return 0;
    for (; *a && *given; a++, given++) {
        char x = *a == '-' ? '_' : *a, y = *given == '-' ? '_' : *given;
        if (x != y)
            return 0;
    }
    return *a == *given;
}

int deft_option_matches(const deft_option_t *o, const char *given)
{
    if (!o || !given)
        return 0;
    if (given[0] == '-' && given[1] == '-')
        given += 2;
    return same_name(o->name, given) || same_name(o->flag, given);
}

const char *deft_option_label(const char *name, const char *pre, char *buf)
{
    int flag = strcmp(pre, "--") == 0;
    snprintf(buf, 128, "%s%s", pre, name);
    for (char *c = buf; flag && *c; c++)
        if (*c == '_')
            *c = '-';
    return buf;
}

const deft_option_def_t *deft_option_find(const deft_option_def_t *defs,
                                          size_t n, const char *given)
{
    for (size_t i = 0; i < n; i++)
        if (deft_option_matches(&defs[i].o, given))
            return &defs[i];
    return NULL;
}

const char *deft_option_label_in(const deft_option_def_t *defs, size_t n,
                                 const char *name, const char *pre, char *buf)
{
    for (size_t i = 0; i < n && strcmp(pre, "--") == 0; i++)
        if (strcmp(defs[i].o.name, name) == 0 && defs[i].o.flag) {
            snprintf(buf, 128, "--%s", defs[i].o.flag);
            return buf;
        }
    return deft_option_label(name, pre, buf);
}

const char *deft_option_choices(const deft_option_t *o, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int v = 0; v < MAX_CHOICES && o->choice && o->choice(v); v++) {
        const char *sep = v == 0 ? "" : o->choice(v + 1) ? ", " : " or ";
        int w = snprintf(buf + len, n - len, "%s%s", sep, o->choice(v));
        if (w < 0 || (size_t)w >= n - len)
            break;
        len += (size_t)w;
    }
    return buf;
}

/* "a number >= 1", "an integer in [1, 127]", ... */
static void range_text(const deft_option_t *o, char *buf, size_t n)
{
    const char *what = o->type == DEFT_OPTION_INT ||
                       o->type == DEFT_OPTION_LONG ||
                       o->type == DEFT_OPTION_UINT64 ? "an integer"
                                                     : "a number";
    const int lo_open = o->bounds & DEFT_OPTION_MIN_OPEN;
    const int hi_open = o->bounds & DEFT_OPTION_MAX_OPEN;
    if (isinf(o->max) && isinf(o->min))
        snprintf(buf, n, "%s", what);
    else if (isinf(o->max))
        snprintf(buf, n, "%s %s %.10g", what, lo_open ? ">" : ">=", o->min);
    else if (isinf(o->min))
        snprintf(buf, n, "%s %s %.10g", what, hi_open ? "<" : "<=", o->max);
    else
        snprintf(buf, n, "%s in %c%.10g, %.10g%c", what, lo_open ? '(' : '[',
                 o->min, o->max, hi_open ? ')' : ']');
}

const char *deft_option_allowed(const deft_option_t *o, char *buf, size_t n)
{
    if (!buf || n == 0)
        return buf;
    buf[0] = '\0';
    if (!o)
        return buf;
    if (o->type == DEFT_OPTION_STRING || o->type == DEFT_OPTION_LIST) {
        snprintf(buf, n, "%s", o->type == DEFT_OPTION_LIST ? "a list" : "text");
    } else if (o->type == DEFT_OPTION_FLAG) {
        snprintf(buf, n, "0 or 1");
    } else if (o->type == DEFT_OPTION_CHOICE) {
        char names[512];
        snprintf(buf, n, "one of %s", deft_option_choices(o, names, sizeof names));
    } else {
        range_text(o, buf, n);
        size_t len = strlen(buf);
        if (o->zero && len < n)
            snprintf(buf + len, n - len, ", or 0 (%s)", o->zero);
    }
    if (o->word) {
        size_t len = strlen(buf);
        if (len < n)
            snprintf(buf + len, n - len, ", or %s", o->word);
    }
    return buf;
}

static int in_range(const deft_option_t *o, double v)
{
    if (o->zero && v == 0.0)
        return 1;
    if (!isfinite(v) && o->type != DEFT_OPTION_UINT64)
        return 0;
    if ((o->bounds & DEFT_OPTION_MIN_OPEN) ? !(v > o->min) : !(v >= o->min))
        return 0;
    if ((o->bounds & DEFT_OPTION_MAX_OPEN) ? !(v < o->max) : !(v <= o->max))
        return 0;
    return 1;
}

static void *field(const deft_option_def_t *d, void *base)
{
    return (char *)base + d->offset;
}

size_t deft_option_size(deft_option_type_t type)
{
    switch (type) {
    case DEFT_OPTION_DOUBLE: return sizeof(double);
    case DEFT_OPTION_UINT64: return sizeof(uint64_t);
    case DEFT_OPTION_LONG: return sizeof(long);
    case DEFT_OPTION_FLOAT: return sizeof(float);
    case DEFT_OPTION_STRING: return sizeof(const char *);
    default: return sizeof(int); /* flags, ints, choices (enums) */
    }
}

double deft_option_value(const deft_option_def_t *d, const void *base)
{
    const void *p = (const char *)base + d->offset;
    switch (d->o.type) {
    case DEFT_OPTION_FLOAT: return *(const float *)p;
    case DEFT_OPTION_DOUBLE: return *(const double *)p;
    case DEFT_OPTION_UINT64: return (double)*(const uint64_t *)p;
    case DEFT_OPTION_LONG: return (double)*(const long *)p;
    case DEFT_OPTION_STRING:
    case DEFT_OPTION_LIST: return NAN;
    case DEFT_OPTION_CHOICE: /* enums are stored as int */
    case DEFT_OPTION_FLAG:
    case DEFT_OPTION_INT: return *(const int *)p;
    }
    return NAN;
}

static deft_status_t bad_value(const deft_option_t *o, const char *given,
                               const char *text)
{
    char allowed[600];
    deft_option_allowed(o, allowed, sizeof allowed);
    return deft_fail(DEFT_ERR_INVALID_ARG, "%s '%s': must be %s", given, text,
                     allowed);
}

static int parse_choice(const deft_option_t *o, const char *text, int *out)
{
    for (int v = 0; v < MAX_CHOICES && o->choice && o->choice(v); v++)
        if (strcasecmp(text, o->choice(v)) == 0) {
            *out = v;
            return 1;
        }
    return 0;
}

static int parse_flag(const char *text, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0)
            return *out = 1, 1;
        if (strcasecmp(text, no[i]) == 0)
            return *out = 0, 1;
    }
    return 0;
}

deft_status_t deft_option_parse(const deft_option_def_t *d, void *base,
                                const char *given, const char *text)
{
    const deft_option_t *o = &d->o;
    int iv;
    char *end;
    errno = 0;
    if (o->word && strcasecmp(text, o->word) == 0 &&
        (o->type == DEFT_OPTION_INT || o->type == DEFT_OPTION_LONG)) {
        if (o->type == DEFT_OPTION_LONG) /* words are for integers only */
            *(long *)field(d, base) = o->word_value;
        else
            *(int *)field(d, base) = o->word_value;
        return DEFT_OK;
    }
    switch (o->type) {
    case DEFT_OPTION_STRING:
        *(const char **)field(d, base) = text;
        return DEFT_OK;
    case DEFT_OPTION_LIST:
        return d->parse(d, base, given, text);
    case DEFT_OPTION_FLAG:
        if (!parse_flag(text, &iv))
            return bad_value(o, given, text);
        *(int *)field(d, base) = iv;
        return DEFT_OK;
    case DEFT_OPTION_CHOICE:
        if (!parse_choice(o, text, &iv))
            return bad_value(o, given, text);
        *(int *)field(d, base) = iv;
        return DEFT_OK;
    case DEFT_OPTION_UINT64: {
        while (isspace((unsigned char)*text))
            text++;
        unsigned long long u = strtoull(text, &end, 10);
        if (end == text || *end || errno || text[0] == '-' ||
            !in_range(o, (double)u))
            return bad_value(o, given, text);
        *(uint64_t *)field(d, base) = u;
        return DEFT_OK;
    }
    case DEFT_OPTION_INT:
    case DEFT_OPTION_LONG: {
        long v = strtol(text, &end, 10);
        if (end == text || *end || errno || !in_range(o, (double)v) ||
            (o->type == DEFT_OPTION_INT && (v < INT_MIN || v > INT_MAX)))
            return bad_value(o, given, text);
        if (o->type == DEFT_OPTION_INT)
            *(int *)field(d, base) = (int)v;
        else
            *(long *)field(d, base) = v;
        return DEFT_OK;
    }
    case DEFT_OPTION_FLOAT:
    case DEFT_OPTION_DOUBLE: {
        double v = strtod(text, &end);
        if (end == text || *end || errno == ERANGE || !in_range(o, v))
            return bad_value(o, given, text);
        if (o->type == DEFT_OPTION_FLOAT) {
            float f = (float)v;
            if (!in_range(o, (double)f)) /* rounding may cross an open bound */
                return bad_value(o, given, text);
            *(float *)field(d, base) = f;
        } else {
            *(double *)field(d, base) = v;
        }
        return DEFT_OK;
    }
    }
    return deft_fail(DEFT_ERR_INTERNAL, "%s: option type %d", given,
                     (int)o->type);
}

deft_status_t deft_option_format(const deft_option_def_t *d,
                                 const void *base, char *buf, size_t n)
{
    if (!buf || n == 0)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: no buffer for its value",
                         d->o.name);
    const void *p = (const char *)base + d->offset;
    int w = 0;
    if (d->o.type == DEFT_OPTION_INT && d->o.word &&
        *(const int *)p == d->o.word_value)
        w = snprintf(buf, n, "%s", d->o.word);
    else switch (d->o.type) {
    case DEFT_OPTION_STRING: {
        const char *v = *(const char *const *)p;
        w = snprintf(buf, n, "%s", v ? v : "");
        break;
    }
    case DEFT_OPTION_LIST: w = d->format(d, base, buf, n); break;
    case DEFT_OPTION_FLOAT: { /* the shortest text of the same float */
        const float v = *(const float *)p;
        for (int digits = 1; digits <= 9; digits++) {
            w = snprintf(buf, n, "%.*g", digits, (double)v);
            if (w < 0 || (size_t)w >= n || strtof(buf, NULL) == v)
                break;
        }
        break;
    }
    case DEFT_OPTION_DOUBLE: { /* the shortest text of the same double */
        const double v = *(const double *)p;
        for (int digits = 1; digits <= 17; digits++) {
            w = snprintf(buf, n, "%.*g", digits, v);
            if (w < 0 || (size_t)w >= n || strtod(buf, NULL) == v)
                break;
        }
        break;
    }
    case DEFT_OPTION_UINT64:
        w = snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)p);
        break;
    case DEFT_OPTION_LONG:
        if (d->o.word && *(const long *)p == d->o.word_value)
            w = snprintf(buf, n, "%s", d->o.word);
        else
            w = snprintf(buf, n, "%ld", *(const long *)p);
        break;
    case DEFT_OPTION_CHOICE: {
        const char *name = d->o.choice ? d->o.choice(*(const int *)p) : NULL;
        w = name ? snprintf(buf, n, "%s", name)
                 : snprintf(buf, n, "%d", *(const int *)p);
        break;
    }
    default: w = snprintf(buf, n, "%d", *(const int *)p); break;
    }
    if (w < 0 || (size_t)w >= n)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: a buffer of %zu bytes is too "
                         "small for its value", d->o.name, n);
    return DEFT_OK;
}

deft_status_t deft_option_check(const deft_option_def_t *d, const void *base,
                                const char *prefix)
{
    const deft_option_t *o = &d->o;
    if (o->type == DEFT_OPTION_STRING || o->type == DEFT_OPTION_LIST)
        return DEFT_OK; /* checked when parsed */
    int iv = 0, ok;
    if (o->type == DEFT_OPTION_FLAG || o->type == DEFT_OPTION_CHOICE ||
        o->type == DEFT_OPTION_INT)
        memcpy(&iv, (const char *)base + d->offset, sizeof iv);
    if (o->word && o->type != DEFT_OPTION_CHOICE &&
        deft_option_value(d, base) == (double)o->word_value)
        ok = 1;
    else if (o->type == DEFT_OPTION_FLAG)
        ok = iv == 0 || iv == 1;
    else if (o->type == DEFT_OPTION_CHOICE)
        ok = iv >= 0 && iv < MAX_CHOICES && o->choice && o->choice(iv);
    else
        ok = in_range(o, deft_option_value(d, base));
    if (ok)
        return DEFT_OK;
    char value[64], allowed[600];
    if (o->type == DEFT_OPTION_CHOICE)
        snprintf(value, sizeof value, "%d", iv);
    else
        deft_option_format(d, base, value, sizeof value);
    deft_option_allowed(o, allowed, sizeof allowed);
    char label[128];
    return deft_fail(DEFT_ERR_INVALID_ARG, "%s = %s, must be %s",
                     deft_option_label_in(d, 1, o->name, prefix, label), value,
                     allowed);
}

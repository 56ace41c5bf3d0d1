/* Option tables: a struct's fields described once (name, flag, type,
 * range, help) and set, shown and checked through the description. The
 * optimizer's config (src/optim/config.c) and the training run's
 * (src/train/options.c) are such tables; the CLI builds its flags, help
 * and errors from them. */
#ifndef DEFT_OPTIONS_H
#define DEFT_OPTIONS_H

#include "deft.h"

#include <stddef.h>

/* One field: its public description and where it lives. */
typedef struct deft_option_def deft_option_def_t;
struct deft_option_def {
    deft_option_t o;
    size_t offset;    /* of the field in the struct the table describes */
    /* LIST only: parse text into the field (the message starts with
     * "<given> '<text>': ") and write it back as text. */
    deft_status_t (*parse)(const deft_option_def_t *d, void *base,
                           const char *given, const char *text);
    int (*format)(const deft_option_def_t *d, const void *base, char *buf,
                  size_t n);
};

/* An entry for field F of struct S, of type T (FLAG, INT, ...), with range
 * [LO, HI] and bounds B; the rest of the description as designated
 * initializers after it. */
#define DEFT_OPTION_DEF(S, F, T, LO, HI, B, ...)                              \
    {                                                                        \
        .o = {.name = #F, .type = DEFT_OPTION_##T, .min = (LO), .max = (HI), \
              .bounds = (B), __VA_ARGS__},                                   \
        .offset = offsetof(S, F)                                             \
    }

/* 1 if given names o: its name or flag, with or without "--", '-' and '_'
 * alike. */
int deft_option_matches(const deft_option_t *o, const char *given);

/* The entry of defs (n of them) that given names, or NULL. */
const deft_option_def_t *deft_option_find(const deft_option_def_t *defs,
                                          size_t n, const char *given);

/* Parses text into the field d describes in base, checking type and
 * range; on error base is unchanged and the message starts with
 * "<given> '<text>': ". */
deft_status_t deft_option_parse(const deft_option_def_t *d, void *base,
                                const char *given, const char *text);

/* Checks the field's current value against its range; the message names
 * it as deft_option_label_in does ("<prefix><name>", or its flag when
 * prefix is "--"), then " = <value>, must be <allowed>". */
deft_status_t deft_option_check(const deft_option_def_t *d, const void *base,
                                const char *prefix);

/* The field's value as text that parses back to the same value (the
 * shortest decimal of a float or double, a choice's name); the message
 * names a buffer too small. */
deft_status_t deft_option_format(const deft_option_def_t *d,
                                 const void *base, char *buf, size_t n);

/* The size of a field of this type (a LIST's count: an int). Enums are
 * stored as int: each table asserts sizeof(enum) == sizeof(int). */
size_t deft_option_size(deft_option_type_t type);

/* The field's value as a double (choices and flags as their number). */
double deft_option_value(const deft_option_def_t *d, const void *base);

/* A field's name in a message: pre + name, or as a flag ("--avg-period")
 * when pre is "--". buf holds at least 128 bytes. Rules between fields
 * (src/optim, src/compress) name fields this way. */
const char *deft_option_label(const char *name, const char *pre, char *buf);

/* As deft_option_label, with the flag of the entry called name in defs. */
const char *deft_option_label_in(const deft_option_def_t *defs, size_t n,
                                 const char *name, const char *pre, char *buf);

/* The names of a choice option's values, "a, b or c", into buf. */
const char *deft_option_choices(const deft_option_t *o, char *buf, size_t n);

#endif

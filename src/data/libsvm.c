/* LIBSVM / SVMlight text files: "label idx:val idx:val ... [# comment]",
 * 1-based increasing indices, one example per line. Read in two passes
 * (validate and size, then fill), so memory is the dense matrix alone.
 * Read through zlib, so a gzip-compressed file works as well. */
#include "data/data.h"

#include "core/internal.h"
#include "data/gz.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* More classes than this is a regression file or a typo, not a task. */
#define SVM_MAX_CLASSES 65536

typedef struct {
    gzFile f;
    const char *path;
    char *line;
    size_t cap;
    size_t lineno;
} svm_reader_t;

/* Reads the next line (any length) into rd->line; *eof = 1 at the end. */
static deft_status_t svm_getline(svm_reader_t *rd, int *eof)
{
    size_t len = 0;
    *eof = 0;
    for (;;) {
        if (rd->cap - len < 2) {
            size_t cap = rd->cap ? 2 * rd->cap : 4096;
            if (cap > deft_data_max_bytes())
                return deft_fail(DEFT_ERR_FORMAT,
                                 "%s:%zu: a line longer than %zu bytes (the "
                                 "reader's limit, DEFT_DATA_MAX_BYTES)",
                                 rd->path, rd->lineno + 1, deft_data_max_bytes());
            char *grown = realloc(rd->line, cap);
            if (!grown)
                return deft_fail(DEFT_ERR_NOMEM,
                                 "%s:%zu: cannot allocate a line of %zu bytes",
                                 rd->path, rd->lineno + 1, cap);
            rd->line = grown, rd->cap = cap;
        }
        size_t room = rd->cap - len;
        if (room > INT_MAX)
            room = INT_MAX;
        errno = 0;
        if (!gzgets(rd->f, rd->line + len, (int)room)) {
            int errnum;
            const char *msg = deft_gz_error(rd->f, rd->path, &errnum);
            if (errnum == Z_ERRNO)
                return deft_fail(DEFT_ERR_IO, "%s: read failed: %s", rd->path,
                                 strerror(errno));
            if (errnum != Z_OK)
                return deft_fail(DEFT_ERR_FORMAT,
                                 "%s:%zu: corrupt gzip stream: %s", rd->path,
                                 rd->lineno + 1, msg);
            if (len == 0) {
                *eof = 1;
                return DEFT_OK;
            }
            break;
        }
        len += strlen(rd->line + len);
        /* gzgets stops at a newline, at the end of the input, or when the
         * buffer is full; only the last one means the line goes on. */
        if ((len > 0 && rd->line[len - 1] == '\n') || len + 1 < rd->cap)
            break;
    }
    /* A last line cut short by a truncated gzip stream: say so rather than
     * report what the cut did to its syntax. */
    if (len == 0 || rd->line[len - 1] != '\n') {
        int errnum;
        const char *msg = deft_gz_error(rd->f, rd->path, &errnum);
        if (errnum != Z_OK)
            return deft_fail(DEFT_ERR_FORMAT, "%s:%zu: corrupt gzip stream: %s",
                             rd->path, rd->lineno + 1, msg);
    }
    rd->lineno++;
    return DEFT_OK;
}

static int svm_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
           c == '\f';
}

static char *svm_token_end(char *p)
{
    while (*p && !svm_space(*p))
        p++;
    return p;
}

/* Parses one line. *blank = 1 for an empty or comment-only line. Indices
 * above limit (> 0) are errors; row (may be NULL) receives the values. */
static deft_status_t svm_parse(const svm_reader_t *rd, int limit,
                               double *label, long *max_idx, float *row,
                               int *blank)
{
    char *p = rd->line, *hash = strchr(p, '#');
    const char *path = rd->path;
    size_t ln = rd->lineno;
    if (hash)
        *hash = '\0';
    while (svm_space(*p))
        p++;
    *blank = *p == '\0';
    *max_idx = 0;
    if (*blank)
        return DEFT_OK;

    char *tend = svm_token_end(p), *end;
    int tlen = (int)(tend - p > 40 ? 40 : tend - p);
    errno = 0;
    *label = strtod(p, &end);
    if (end != tend || !isfinite(*label))
        return deft_fail(DEFT_ERR_FORMAT, "%s:%zu: bad label '%.*s'", path, ln,
                         tlen, p);
    if (*label != floor(*label) || fabs(*label) > 1e9)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: label %g is not a class number (an integer; "
                         "regression files are not supported)",
                         path, ln, *label);

    long prev = 0;
    for (p = tend;;) {
        while (svm_space(*p))
            p++;
        if (!*p)
            break;
        char *tok = p;
        tend = svm_token_end(p);
        tlen = (int)(tend - tok > 40 ? 40 : tend - tok);
        if (!isdigit((unsigned char)*p))
            return deft_fail(DEFT_ERR_FORMAT,
                             "%s:%zu: bad index in '%.*s' (want idx:value with "
                             "idx a positive integer)",
                             path, ln, tlen, tok);
        errno = 0;
        long idx = strtol(p, &end, 10);
        if (*end != ':')
            return deft_fail(DEFT_ERR_FORMAT,
                             "%s:%zu: missing ':' after the index in '%.*s'",
                             path, ln, tlen, tok);
        if (errno == ERANGE || idx > INT_MAX)
            return deft_fail(DEFT_ERR_FORMAT,
                             "%s:%zu: index in '%.*s' is too large", path, ln,
                             tlen, tok);
        if (idx == 0)
            return deft_fail(DEFT_ERR_FORMAT,
                             "%s:%zu: bad index 0 (indices are 1-based)", path,
                             ln);
        if (idx <= prev)
            return deft_fail(DEFT_ERR_FORMAT,
                             "%s:%zu: index %ld after index %ld (indices must "
                             "increase)",
                             path, ln, idx, prev);
        if (limit > 0 && idx > limit)
            return deft_fail(DEFT_ERR_FORMAT,
                             "%s:%zu: index %ld is beyond the %d features",
                             path, ln, idx, limit);
        char *v = end + 1;
        double val = 0;
        if (!svm_space(*v) && *v)
            val = strtod(v, &end);
        if (svm_space(*v) || !*v || end != tend)
            return deft_fail(DEFT_ERR_FORMAT,
                             "%s:%zu: value in '%.*s' is not a number", path,
                             ln, tlen, tok);
        if (!isfinite(val) || fabs(val) > FLT_MAX)
            return deft_fail(DEFT_ERR_FORMAT,
                             "%s:%zu: value of index %ld is %s", path, ln, idx,
                             isnan(val) ? "NaN" : "infinite or beyond float "
                                                  "range");
        if (row)
            row[idx - 1] = (float)val;
        prev = idx;
        p = tend;
    }
    *max_idx = prev;
    return DEFT_OK;
}

typedef struct {
    size_t n;
    long max_idx;
    double lo, hi;   /* smallest and largest label                        */
    int distinct;    /* distinct label values seen, counted up to 3       */
} svm_scan_t;

static void svm_scan_label(svm_scan_t *sc, double label)
{
    if (sc->n == 0) {
        sc->lo = sc->hi = label;
        sc->distinct = 1;
    } else if (label != sc->lo && label != sc->hi) {
        /* With at most two seen, lo and hi are exactly the values seen. */
        if (sc->distinct < 3)
            sc->distinct++;
        sc->lo = label < sc->lo ? label : sc->lo;
        sc->hi = label > sc->hi ? label : sc->hi;
    }
    sc->n++;
}

deft_status_t deft_dataset_load_libsvm(deft_dataset_t *out, const char *path,
                                       int features)
{
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_dataset_load_libsvm: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_dataset_load_libsvm: path is NULL");
    if (features < 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_dataset_load_libsvm: features = %d, must be >= 0 "
                         "(0 = infer)",
                         features);

    svm_reader_t rd = {NULL, path, NULL, 0, 0};
    svm_scan_t sc = {0, 0, 0, 0, 0};
    float *x = NULL;
    int32_t *y = NULL;
    deft_status_t st = DEFT_OK;
    int eof = 0, blank;
    double label;
    long max_idx;

    errno = 0;
    rd.f = gzopen(path, "rb");
    if (!rd.f)
        return deft_fail(DEFT_ERR_IO, "%s: cannot open: %s", path,
                         errno ? strerror(errno) : "out of memory");
    gzbuffer(rd.f, 1u << 17);

    const size_t limit = deft_data_max_bytes();
    while ((st = svm_getline(&rd, &eof)) == DEFT_OK && !eof) {
        if ((uint64_t)gztell(rd.f) > limit) {
            st = deft_fail(DEFT_ERR_FORMAT,
                           "%s: more than %zu bytes once decompressed (the "
                           "reader's limit, DEFT_DATA_MAX_BYTES)", path, limit);
            goto done;
        }
        st = svm_parse(&rd, features, &label, &max_idx, NULL, &blank);
        if (st != DEFT_OK)
            goto done;
        if (blank)
            continue;
        svm_scan_label(&sc, label);
        sc.max_idx = max_idx > sc.max_idx ? max_idx : sc.max_idx;
    }
    if (st != DEFT_OK)
        goto done;
    if (sc.n == 0) {
        st = deft_fail(DEFT_ERR_FORMAT, "%s: no examples (the file is empty)",
                       path);
        goto done;
    }
    int w = features > 0 ? features : (int)sc.max_idx;
    if (w == 0) {
        st = deft_fail(DEFT_ERR_FORMAT,
                       "%s: no feature indices in any line; pass the number "
                       "of features",
                       path);
        goto done;
    }

    int binary = sc.distinct == 2, shift = 0, n_classes = 2;
    if (!binary) {
        if (sc.lo < 0) {
            st = deft_fail(DEFT_ERR_FORMAT,
                           "%s: labels range over [%g, %g]; other than a pair "
                           "of values they must be 0..K-1 or 1..K",
                           path, sc.lo, sc.hi);
            goto done;
        }
        shift = sc.lo >= 1;
        if (sc.hi - shift + 1 > SVM_MAX_CLASSES) {
            st = deft_fail(DEFT_ERR_FORMAT,
                           "%s: label %g gives more than %d classes", path,
                           sc.hi, SVM_MAX_CLASSES);
            goto done;
        }
        n_classes = (int)sc.hi - shift + 1;
    }

    /* Dense rows may not cost more than a small multiple of the text:
     * an index alone is no reason to allocate (see data.h). */
    z_off_t pos = gztell(rd.f);
    if (pos < 0) {
        st = deft_fail(DEFT_ERR_IO, "%s: cannot tell how much was read", path);
        goto done;
    }
    size_t text = (size_t)pos;
    double dense = (double)sc.n * (double)w * sizeof(float);
    size_t slack = limit / 16;
    double allowed = (double)DEFT_DATA_DENSE_FACTOR * (double)text +
                     (double)slack;
    if (dense > allowed || sc.n > SIZE_MAX / sizeof(float) / (size_t)w) {
        st = deft_fail(DEFT_ERR_FORMAT,
                       "%s: %zu examples x %d features would take %.3g GB as "
                       "dense rows, more than %d x the file's %zu bytes + %zu "
                       "MiB that this reader allows: it stores rows densely, "
                       "and this file is too sparse for that",
                       path, sc.n, w, dense / 1e9, DEFT_DATA_DENSE_FACTOR, text,
                       slack >> 20);
        goto done;
    }
    x = deft_alloc(sc.n * (size_t)w * sizeof *x);
    y = deft_alloc(sc.n * sizeof *y);
    if (!x || !y) {
        st = deft_fail(DEFT_ERR_NOMEM,
                       "%s: cannot allocate %zu rows x %d features", path,
                       sc.n, w);
        goto done;
    }

    if (gzrewind(rd.f) != 0) {
        st = deft_fail(DEFT_ERR_IO, "%s: cannot rewind for the second pass",
                       path);
        goto done;
    }
    rd.lineno = 0;
    size_t i = 0;
    while ((st = svm_getline(&rd, &eof)) == DEFT_OK && !eof) {
        float *row = i < sc.n ? x + i * (size_t)w : NULL;
        st = svm_parse(&rd, w, &label, &max_idx, row, &blank);
        if (st != DEFT_OK)
            goto done;
        if (blank)
            continue;
        int32_t cls = binary ? label == sc.hi : (int32_t)label - shift;
        if (i == sc.n || cls < 0 || cls >= n_classes) {
            st = deft_fail(DEFT_ERR_FORMAT,
                           "%s: the file changed while reading it", path);
            goto done;
        }
        y[i++] = cls;
    }
    if (st == DEFT_OK && i != sc.n)
        st = deft_fail(DEFT_ERR_FORMAT, "%s: the file changed while reading it",
                       path);
    if (st != DEFT_OK)
        goto done;

    out->n = sc.n;
    out->c = out->h = 1;
    out->w = w;
    out->n_classes = n_classes;
    out->x = x, x = NULL;
    out->y = y, y = NULL;
done:
    gzclose_r(rd.f);
    free(rd.line);
    deft_free(x);
    deft_free(y);
    return st;
}

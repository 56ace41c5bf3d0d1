/* LIBSVM / SVMlight text files: "label idx:val idx:val ... [# comment]",
 * 1-based increasing indices, one example per line. One parser
 * (deft_libsvm_pass) hands every line to a visitor; the loaders read in two
 * passes (deft_libsvm_scan validates and sizes, then a pass fills), so
 * memory is the rows alone: dense here, CSR in deft_logreg_load_libsvm.
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

/* Parses the label token at *p, leaving *p after it. */
static deft_status_t svm_parse_label(const svm_reader_t *rd, char **p,
                                     double *label)
{
    char *tok = *p, *tend = svm_token_end(tok), *end;
    int tlen = (int)(tend - tok > 40 ? 40 : tend - tok);
    errno = 0;
    *label = strtod(tok, &end);
    if (end != tend || !isfinite(*label))
        return deft_fail(DEFT_ERR_FORMAT, "%s:%zu: bad label '%.*s'", rd->path,
                         rd->lineno, tlen, tok);
    if (*label != floor(*label) || fabs(*label) > 1e9)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: label %g is not a class number (an integer; "
                         "regression files are not supported)",
                         rd->path, rd->lineno, *label);
    *p = tend;
    return DEFT_OK;
}

/* Parses the token "idx:value" at [tok, tend): an index above prev (the
 * line's previous one) and at most limit (if > 0), a finite float value. */
static deft_status_t svm_parse_entry(const svm_reader_t *rd, char *tok,
                                     char *tend, long prev, int limit,
                                     long *idx, float *value)
{
    const char *path = rd->path;
    size_t ln = rd->lineno;
    int tlen = (int)(tend - tok > 40 ? 40 : tend - tok);
    char *end;
    if (!isdigit((unsigned char)*tok))
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: bad index in '%.*s' (want idx:value with "
                         "idx a positive integer)",
                         path, ln, tlen, tok);
    errno = 0;
    *idx = strtol(tok, &end, 10);
    if (*end != ':')
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: missing ':' after the index in '%.*s'", path,
                         ln, tlen, tok);
    if (errno == ERANGE || *idx > INT_MAX)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: index in '%.*s' is too large", path, ln,
                         tlen, tok);
    if (*idx == 0)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: bad index 0 (indices are 1-based)", path, ln);
    if (*idx <= prev)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: index %ld after index %ld (indices must "
                         "increase)",
                         path, ln, *idx, prev);
    if (limit > 0 && *idx > limit)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: index %ld is beyond the %d features", path,
                         ln, *idx, limit);
    char *v = end + 1;
    double val = 0;
    if (!svm_space(*v) && *v)
        val = strtod(v, &end);
    if (svm_space(*v) || !*v || end != tend)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: value in '%.*s' is not a number", path, ln,
                         tlen, tok);
    if (!isfinite(val) || fabs(val) > FLT_MAX)
        return deft_fail(DEFT_ERR_FORMAT, "%s:%zu: value of index %ld is %s",
                         path, ln, *idx,
                         isnan(val) ? "NaN" : "infinite or beyond float range");
    *value = (float)val;
    return DEFT_OK;
}

/* Parses one line and hands it to v: nothing for an empty or comment-only
 * line, else example() with the label, then entry() for each pair. */
static deft_status_t svm_parse(const svm_reader_t *rd, int limit,
                               const deft_libsvm_visitor_t *v)
{
    char *p = rd->line, *hash = strchr(p, '#');
    if (hash)
        *hash = '\0';
    while (svm_space(*p))
        p++;
    if (*p == '\0')
        return DEFT_OK;
    double label;
    deft_status_t st = svm_parse_label(rd, &p, &label);
    if (st == DEFT_OK)
        st = v->example(v->ctx, label, rd->lineno);
    for (long idx = 0; st == DEFT_OK;) {
        while (svm_space(*p))
            p++;
        if (!*p)
            break;
        char *tend = svm_token_end(p);
        float value = 0;
        st = svm_parse_entry(rd, p, tend, idx, limit, &idx, &value);
        if (st == DEFT_OK)
            st = v->entry(v->ctx, (uint32_t)idx, value);
        p = tend;
    }
    return st;
}

deft_status_t deft_libsvm_pass(const char *path, int limit,
                               const deft_libsvm_visitor_t *v, size_t *bytes)
{
    svm_reader_t rd = {NULL, path, NULL, 0, 0};
    errno = 0;
    rd.f = gzopen(path, "rb");
    if (!rd.f)
        return deft_fail(DEFT_ERR_IO, "%s: cannot open: %s", path,
                         errno ? strerror(errno) : "out of memory");
    gzbuffer(rd.f, 1u << 17);
    const size_t max_bytes = deft_data_max_bytes();
    deft_status_t st;
    int eof = 0;
    while ((st = svm_getline(&rd, &eof)) == DEFT_OK && !eof) {
        if ((uint64_t)gztell(rd.f) > max_bytes) {
            st = deft_fail(DEFT_ERR_FORMAT,
                           "%s: more than %zu bytes once decompressed (the "
                           "reader's limit, DEFT_DATA_MAX_BYTES)", path,
                           max_bytes);
            break;
        }
        if ((st = svm_parse(&rd, limit, v)) != DEFT_OK)
            break;
    }
    z_off_t pos = gztell(rd.f);
    if (st == DEFT_OK && pos < 0)
        st = deft_fail(DEFT_ERR_IO, "%s: cannot tell how much was read", path);
    if (st == DEFT_OK && bytes)
        *bytes = (size_t)pos;
    gzclose_r(rd.f);
    free(rd.line);
    return st;
}

/* The first pass's visitor: counts, labels, largest index. */
static deft_status_t scan_example(void *ctx, double label, size_t lineno)
{
    deft_libsvm_scan_t *sc = ctx;
    if (sc->n == 0) {
        sc->lo = sc->hi = label;
        sc->distinct = 1;
    } else if (label != sc->lo && label != sc->hi) {
        /* With at most two seen, lo and hi are exactly the values seen. */
        if (sc->distinct < 3 && ++sc->distinct == 3) {
            sc->third = label;
            sc->third_line = lineno;
        }
        sc->lo = label < sc->lo ? label : sc->lo;
        sc->hi = label > sc->hi ? label : sc->hi;
    }
    sc->n++;
    return DEFT_OK;
}

static deft_status_t scan_entry(void *ctx, uint32_t idx, float value)
{
    deft_libsvm_scan_t *sc = ctx;
    sc->max_idx = idx > sc->max_idx ? idx : sc->max_idx;
    sc->nnz += value != 0;
    return DEFT_OK;
}

deft_status_t deft_libsvm_scan(const char *path, int limit,
                               deft_libsvm_scan_t *sc)
{
    memset(sc, 0, sizeof *sc);
    deft_libsvm_visitor_t v = {scan_example, scan_entry, sc};
    deft_status_t st = deft_libsvm_pass(path, limit, &v, &sc->bytes);
    if (st != DEFT_OK)
        return st;
    if (sc->n == 0)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: no examples (the file is empty or only "
                         "comments)", path);
    return DEFT_OK;
}

/* ---- dense rows ------------------------------------------------------- */

/* How labels become classes: a pair -> 0 (smaller) and 1 (larger), else
 * label - shift in [0, n_classes). */
typedef struct {
    int binary, shift, n_classes;
    double hi;
} svm_classes_t;

static deft_status_t svm_classes(const deft_libsvm_scan_t *sc,
                                 const char *path, svm_classes_t *c)
{
    c->binary = sc->distinct == 2;
    c->shift = 0;
    c->n_classes = 2;
    c->hi = sc->hi;
    if (c->binary)
        return DEFT_OK;
    if (sc->lo < 0)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: labels range over [%g, %g]; other than a pair "
                         "of values they must be 0..K-1 or 1..K",
                         path, sc->lo, sc->hi);
    c->shift = sc->lo >= 1;
    if (sc->hi - c->shift + 1 > SVM_MAX_CLASSES)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: label %g gives more than %d classes", path,
                         sc->hi, SVM_MAX_CLASSES);
    c->n_classes = (int)sc->hi - c->shift + 1;
    return DEFT_OK;
}

/* Dense rows may not cost more than a small multiple of the text: an index
 * alone is no reason to allocate (see data.h). */
static deft_status_t svm_dense_fits(const deft_libsvm_scan_t *sc, int w,
                                    const char *path)
{
    double dense = (double)sc->n * (double)w * sizeof(float);
    size_t slack = deft_data_max_bytes() / 16;
    double allowed = (double)DEFT_DATA_DENSE_FACTOR * (double)sc->bytes +
                     (double)slack;
    if (dense > allowed || sc->n > SIZE_MAX / sizeof(float) / (size_t)w)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: %zu examples x %d features would take %.3g GB "
                         "as dense rows, more than %d x the file's %zu bytes "
                         "+ %zu MiB that this reader allows: it stores rows "
                         "densely, and this file is too sparse for that",
                         path, sc->n, w, dense / 1e9, DEFT_DATA_DENSE_FACTOR,
                         sc->bytes, slack >> 20);
    return DEFT_OK;
}

/* The second pass's visitor: row i of x, class i of y. */
typedef struct {
    deft_dataset_t *ds; /* n (from the first pass), w, x, y              */
    svm_classes_t cl;
    const char *path;
    size_t i;
    float *row;
} svm_fill_t;

static deft_status_t fill_example(void *ctx, double label, size_t lineno)
{
    svm_fill_t *f = ctx;
    (void)lineno;
    int32_t cls = f->cl.binary ? label == f->cl.hi
                               : (int32_t)label - f->cl.shift;
    if (f->i == f->ds->n || cls < 0 || cls >= f->cl.n_classes)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: the file changed while reading it", f->path);
    f->row = f->ds->x + f->i * (size_t)f->ds->w;
    f->ds->y[f->i++] = cls;
    return DEFT_OK;
}

static deft_status_t fill_entry(void *ctx, uint32_t idx, float value)
{
    svm_fill_t *f = ctx;
    f->row[idx - 1] = value; /* idx <= w: the pass's limit */
    return DEFT_OK;
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
    deft_libsvm_scan_t sc;
    svm_fill_t f = {out, {0, 0, 0, 0}, path, 0, NULL};
    deft_status_t st = deft_libsvm_scan(path, features, &sc);
    if (st == DEFT_OK)
        st = svm_classes(&sc, path, &f.cl);
    int w = features > 0 ? features : (int)sc.max_idx;
    if (st == DEFT_OK && w == 0)
        st = deft_fail(DEFT_ERR_FORMAT,
                       "%s: no feature indices in any line; pass the number "
                       "of features",
                       path);
    if (st == DEFT_OK)
        st = svm_dense_fits(&sc, w, path);
    if (st != DEFT_OK)
        return st;
    out->n = sc.n;
    out->c = out->h = 1;
    out->w = w;
    out->n_classes = f.cl.n_classes;
    out->x = deft_alloc(sc.n * (size_t)w * sizeof *out->x);
    out->y = deft_alloc(sc.n * sizeof *out->y);
    if (!out->x || !out->y)
        st = deft_fail(DEFT_ERR_NOMEM,
                       "%s: cannot allocate %zu rows x %d features", path,
                       sc.n, w);
    deft_libsvm_visitor_t v = {fill_example, fill_entry, &f};
    if (st == DEFT_OK)
        st = deft_libsvm_pass(path, w, &v, NULL);
    if (st == DEFT_OK && f.i != sc.n)
        st = deft_fail(DEFT_ERR_FORMAT, "%s: the file changed while reading it",
                       path);
    if (st != DEFT_OK)
        deft_dataset_free(out);
    return st;
}

/* deft_logreg_load_libsvm: a two-class LIBSVM file straight into CSR rows.
 * The first pass (deft_libsvm_scan, data.h) validates every line and
 * counts rows, non-zeros and labels; the second (deft_libsvm_pass, the same
 * parser) stores the non-zeros with their file indices. Then the columns
 * are compacted (a radix sort of the entries by index numbers the distinct
 * indices in increasing order), the bias column appended and the rows
 * normalized, all in place or with O(nnz) scratch. */
#include "convex/convex.h"

#include "convex/rows.h"
#include "core/internal.h"

#include <stdlib.h>

/* Logistic regression is a two-class problem. */
static deft_status_t check_labels(const deft_libsvm_scan_t *sc,
                                  const char *path)
{
    if (sc->distinct == 1)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: every example has label %g; logistic "
                         "regression needs exactly two distinct labels (the "
                         "larger -> +1, the smaller -> -1)", path, sc->lo);
    if (sc->distinct > 2)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s:%zu: label %g is a third distinct label (the "
                         "file's labels range over [%g, %g]); logistic "
                         "regression needs exactly two (the larger -> +1, "
                         "the smaller -> -1)",
                         path, sc->third_line, sc->third, sc->lo, sc->hi);
    if (sc->nnz > UINT32_MAX)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: %zu non-zero values, more than this loader "
                         "can index (2^32 - 1)", path, sc->nnz);
    return DEFT_OK;
}

/* The second pass's visitor: row starts, labels and non-zeros, with
 * indices as in the file. Whatever differs from the first pass is a file
 * that changed under us. */
typedef struct {
    deft_logreg_t *p;
    const deft_libsvm_scan_t *sc;
    const char *path;
    size_t i, k; /* rows and non-zeros stored so far */
} csr_fill_t;

static deft_status_t changed(const char *path)
{
    return deft_fail(DEFT_ERR_FORMAT, "%s: the file changed while reading it",
                     path);
}

static deft_status_t fill_example(void *ctx, double label, size_t lineno)
{
    csr_fill_t *f = ctx;
    (void)lineno;
    if (f->i == f->sc->n || (label != f->sc->lo && label != f->sc->hi))
        return changed(f->path);
    f->p->indptr[f->i] = f->k;
    f->p->b[f->i++] = label == f->sc->hi ? 1.0f : -1.0f;
    return DEFT_OK;
}

static deft_status_t fill_entry(void *ctx, uint32_t idx, float value)
{
    csr_fill_t *f = ctx;
    if (value == 0)
        return DEFT_OK; /* explicit zeros are not stored */
    if (f->k == f->sc->nnz)
        return changed(f->path);
    f->p->indices[f->k] = idx;
    f->p->values[f->k++] = value;
    return DEFT_OK;
}

/* One stable counting-sort pass of positions by 16 bits of their keys:
 * out receives in (NULL: 0..n-1) ordered by (key >> shift) & 0xffff.
 * count is 65537 scratch. */
static void radix_pass(const uint32_t *key, const uint32_t *in, uint32_t *out,
                       size_t n, int shift, size_t *count)
{
    memset(count, 0, sizeof(size_t) * 65537);
    for (size_t t = 0; t < n; t++)
        count[((key[in ? in[t] : t] >> shift) & 0xffffu) + 1]++;
    for (size_t v = 0; v < 65536; v++)
        count[v + 1] += count[v];
    for (size_t t = 0; t < n; t++) {
        uint32_t pos = in ? in[t] : (uint32_t)t;
        out[count[(key[pos] >> shift) & 0xffffu]++] = pos;
    }
}

/* Renumbers the columns of p's nnz entries (file indices >= 1) to 0..k-1
 * in increasing order of index, and puts the k indices in p->column_ids
 * (room for k + 1: the bias goes last). k goes to p->d. O(nnz) time and
 * 8 nnz bytes of scratch (nnz < 2^32, check_labels). */
static deft_status_t compact_columns(deft_logreg_t *p, size_t nnz,
                                     const char *path)
{
    uint32_t *sorted = malloc(sizeof(uint32_t) * (nnz ? nnz : 1));
    uint32_t *tmp = malloc(sizeof(uint32_t) * (nnz ? nnz : 1));
    size_t *count = malloc(sizeof(size_t) * 65537);
    if (!sorted || !tmp || !count) {
        free(sorted);
        free(tmp);
        free(count);
        return deft_fail(DEFT_ERR_NOMEM, "%s: no memory to sort %zu "
                         "non-zeros by column", path, nnz);
    }
    radix_pass(p->indices, NULL, tmp, nnz, 0, count);
    radix_pass(p->indices, tmp, sorted, nnz, 16, count);
    free(tmp);
    free(count);
    size_t k = 0;
    uint32_t prev = 0; /* no file index is 0 */
    for (size_t t = 0; t < nnz; t++) {
        uint32_t *idx = &p->indices[sorted[t]];
        if (*idx != prev)
            p->column_ids[k++] = prev = *idx;
        *idx = (uint32_t)(k - 1);
    }
    free(sorted);
    p->d = k;
    return DEFT_OK;
}

/* Appends column p->d (the bias, value 1) to every row, in place: the
 * arrays have room for nnz + n entries; rows move up from the last. */
static void append_bias(deft_logreg_t *p)
{
    const uint32_t bias = (uint32_t)p->d;
    for (size_t i = p->n; i-- > 0;) {
        size_t lo = p->indptr[i], hi = p->indptr[i + 1];
        memmove(p->indices + lo + i, p->indices + lo,
                sizeof(uint32_t) * (hi - lo));
        memmove(p->values + lo + i, p->values + lo, sizeof(float) * (hi - lo));
        p->indices[hi + i] = bias;
        p->values[hi + i] = 1.0f;
        p->indptr[i + 1] = hi + i + 1;
    }
    p->column_ids[p->d++] = 0;
    p->nnz = p->indptr[p->n];
}

/* Allocates the CSR arrays for sc's rows, non-zeros and their biases. */
static deft_status_t alloc_csr(deft_logreg_t *p, const deft_libsvm_scan_t *sc,
                               const char *path)
{
    size_t cap = sc->nnz + sc->n;
    p->indptr = malloc(sizeof(size_t) * (sc->n + 1));
    p->b = malloc(sizeof(float) * sc->n);
    p->indices = malloc(sizeof(uint32_t) * cap);
    p->values = malloc(sizeof(float) * cap);
    p->column_ids = malloc(sizeof(uint32_t) * (sc->nnz + 1));
    if (!p->indptr || !p->b || !p->indices || !p->values || !p->column_ids)
        return deft_fail(DEFT_ERR_NOMEM,
                         "%s: no memory for %zu rows with %zu non-zeros", path,
                         sc->n, sc->nnz);
    p->n = sc->n;
    p->indptr[0] = 0;
    return DEFT_OK;
}

/* The second pass: the rows into p (allocated for sc). */
static deft_status_t fill_csr(deft_logreg_t *p, const deft_libsvm_scan_t *sc,
                              const char *path)
{
    csr_fill_t f = {p, sc, path, 0, 0};
    deft_libsvm_visitor_t v = {fill_example, fill_entry, &f};
    deft_status_t st = deft_libsvm_pass(path, (int)sc->max_idx, &v, NULL);
    if (st == DEFT_OK && (f.i != sc->n || f.k != sc->nnz))
        st = changed(path);
    if (st == DEFT_OK)
        p->indptr[p->n] = f.k;
    return st;
}

deft_status_t deft_logreg_load_libsvm(deft_logreg_t *out, const char *path,
                                      int normalize, size_t *n_features_in_file)
{
    const char *fn = "deft_logreg_load_libsvm";
    if (out)
        memset(out, 0, sizeof *out);
    if (n_features_in_file)
        *n_features_in_file = 0;
    if (!out || !path)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !out ? "out" : "path");
    deft_libsvm_scan_t sc;
    deft_status_t st = deft_libsvm_scan(path, 0, &sc);
    if (st == DEFT_OK)
        st = check_labels(&sc, path);
    if (st == DEFT_OK)
        st = alloc_csr(out, &sc, path);
    if (st == DEFT_OK)
        st = fill_csr(out, &sc, path);
    if (st == DEFT_OK)
        st = compact_columns(out, sc.nnz, path);
    if (st != DEFT_OK) {
        deft_logreg_free(out);
        return st;
    }
    append_bias(out);
    uint32_t *ids = realloc(out->column_ids, sizeof(uint32_t) * out->d);
    out->column_ids = ids ? ids : out->column_ids; /* a failed shrink: keep */
    if (normalize)
        deft_rows_normalize(out);
    out->d_file = (size_t)sc.max_idx;
    if (n_features_in_file)
        *n_features_in_file = out->d_file;
    return DEFT_OK;
}

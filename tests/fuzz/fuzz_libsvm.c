/* The LIBSVM readers, raw and gzip: every input goes through the dense
 * reader (deft_dataset_load_libsvm) and the CSR one of the logistic problem
 * (deft_logreg_load_libsvm). Input: byte 0: bit 0 = gzip, bits 1-7 =
 * features for the dense reader (0 = infer from the file), bit 1 also
 * normalizes the CSR rows; the rest is the file. */
#include "convex/convex.h"
#include "data/data.h"

#include "fuzz.h"

#include <math.h>

/* What the CSR reader promises: on success, rows whose columns increase and
 * end with the bias, labels +-1, finite values, every other column used,
 * column ids increasing; the model's loss is log 2 at 0, and a shuffle
 * keeps the rows valid. On error an empty problem. Frees it. */
static void fuzz_check_csr(deft_logreg_t *p, deft_status_t st)
{
    if (st != DEFT_OK) {
        if (p->n || p->d || p->nnz || p->b || p->indptr || p->indices ||
            p->values || p->column_ids)
            abort(); /* "on error *out is left empty" */
        return;
    }
    if (p->n == 0 || p->d == 0 || p->a || p->indptr[0] != 0 ||
        p->nnz != p->indptr[p->n] || p->column_ids[p->d - 1] != 0)
        abort();
    unsigned char *seen = calloc(p->d, 1);
    double *x = calloc(p->d, sizeof *x), *g = calloc(p->d, sizeof *g);
    if (!seen || !x || !g)
        abort();
    for (size_t i = 0; i < p->n; i++) {
        size_t lo = p->indptr[i], hi = p->indptr[i + 1];
        if (hi <= lo || p->indices[hi - 1] != p->d - 1 ||
            (p->b[i] != 1.0f && p->b[i] != -1.0f))
            abort();
        for (size_t k = lo; k < hi; k++) {
            if ((k > lo && p->indices[k] <= p->indices[k - 1]) ||
                !isfinite(p->values[k]))
                abort();
            seen[p->indices[k]] = 1;
        }
    }
    for (size_t j = 0; j + 1 < p->d; j++)
        if (!seen[j] || p->column_ids[j] == 0 ||
            p->column_ids[j] > p->d_file ||
            (j > 0 && p->column_ids[j] <= p->column_ids[j - 1]))
            abort();
    if (fabs(deft_logreg_loss_grad(p, 0, p->n, x, g) - log(2.0)) > 1e-12)
        abort();
    deft_logreg_shuffle(p, 1);
    if (p->nnz != p->indptr[p->n] || p->indices[p->indptr[1] - 1] != p->d - 1)
        abort();
    free(seen);
    free(x);
    free(g);
    deft_logreg_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 16 KiB: small enough that inputs (and gzip streams given as they
     * are, flag bit 0 clear) reach the limit checks, and fast. */
    deft_data_set_max_bytes((size_t)16 << 10);
    if (size < 1)
        return 0;
    int flags = data[0];
    const char *path = fuzz_path("svm");
    if (fuzz_write(path, data + 1, size - 1, flags & 1))
        abort();
    deft_dataset_t ds;
    fuzz_check_dataset(&ds, deft_dataset_load_libsvm(&ds, path, flags >> 1));
    deft_logreg_t lr;
    fuzz_check_csr(&lr, deft_logreg_load_libsvm(&lr, path, (flags >> 1) & 1,
                                                NULL));
    unlink(path);
    return 0;
}

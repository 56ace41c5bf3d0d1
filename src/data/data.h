/* Data sets: IDX (MNIST / Fashion-MNIST layout, raw or gzip) and LIBSVM
 * text files, per-worker shards of every epoch, normalization and
 * augmentation. Every reader checks what it reads and names the file in its
 * error: a truncated, corrupt or inconsistent file gives DEFT_ERR_FORMAT
 * (or DEFT_ERR_IO when it cannot be opened/read), never a crash.
 *
 * Memory on any file: a reader allocates at most a small multiple of what
 * the file actually holds once decompressed, never what a header or an
 * index merely claims:
 *   IDX     the bytes read (a gzip body grows as it arrives, from at most
 *           1 MiB, to at most 2x what arrived) plus 4 bytes per pixel and
 *           per label for the floats and labels, so about 6x the
 *           decompressed body; a raw file whose header claims more than
 *           the file holds is refused before any body is allocated;
 *   LIBSVM  one line buffer (at most 2x the longest line) plus the dense
 *           rows, n x features x 4 bytes, which must not exceed
 *           DEFT_DATA_DENSE_FACTOR x the decompressed bytes plus a slack
 *           of DEFT_DATA_MAX_BYTES / 16 (64 MiB; so a 30-byte file naming
 *           feature 900000000 is refused, not a 14 GB allocation). Sparse
 *           files go to deft_logreg_load_libsvm (convex/convex.h), which
 *           stores only the non-zeros (at most ~10 bytes per byte of text).
 * Each file, raw or gzip, whose content is longer than DEFT_DATA_MAX_BYTES
 * once decompressed (a gzip bomb, or a header claiming more) is refused
 * with an error naming the limit, after reading at most that much (plus
 * one 4 KiB block). */
#ifndef DEFT_DATA_H
#define DEFT_DATA_H

#include "deft.h"

#include <stddef.h>
#include <stdint.h>

/* Dense examples: x is (n, c, h, w) floats (for LIBSVM: c = h = 1,
 * w = features), y is (n,) int32 labels in [0, n_classes). */
typedef struct {
    size_t n;
    int c, h, w;
    int n_classes;
    float *x;
    int32_t *y;
} deft_dataset_t;

#define DEFT_DATA_MAX_BYTES ((size_t)1 << 30)    /* 1 GiB decompressed */
#define DEFT_DATA_DENSE_FACTOR 16

/* Test hook: sets the decompressed-size limit (default DEFT_DATA_MAX_BYTES;
 * 0 restores it; the LIBSVM dense slack is a 16th of it) and returns the
 * previous one. The fuzz targets lower it to 16 KiB. */
size_t deft_data_set_max_bytes(size_t max_bytes);
/* The current limit. */
size_t deft_data_max_bytes(void);

/* Where Debian's dataset-fashion-mnist package puts the files. */
#define DEFT_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Reads an IDX image file (magic 0x00000803, u8 pixels, dims n, rows,
 * cols) and an IDX label file (magic 0x00000801, u8 labels) into out,
 * pixels scaled to [0, 1]. Either file may be gzip-compressed (detected by
 * its magic bytes). The counts must agree; labels must be < 10 (n_classes
 * is set to 10); sizes that would overflow are refused. On error out is
 * left empty. */
deft_status_t deft_dataset_load_idx(deft_dataset_t *out, const char *images,
                                    const char *labels);

/* Loads dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (the .gz
 * name is tried first). dir NULL means DEFT_FASHION_MNIST_DIR. train or
 * test may be NULL to skip that set. A missing directory or file gives
 * DEFT_ERR_IO with a hint to install dataset-fashion-mnist. On error both
 * are left empty. */
deft_status_t deft_dataset_load_mnist_dir(deft_dataset_t *train,
                                          deft_dataset_t *test,
                                          const char *dir);

/* Reads a LIBSVM text file ("label idx:val idx:val ...", 1-based indices,
 * increasing) into dense rows of `features` floats (0 = infer from the
 * largest index seen). Labels are mapped to classes: for two distinct
 * label values (e.g. -1/+1 or 0/1), the smaller -> 0, the larger -> 1;
 * otherwise integer labels 0..K-1 or 1..K are used as given (shifted to
 * 0-based). Malformed lines give DEFT_ERR_FORMAT with file:line. Blank
 * lines and "#" comments are skipped; CRLF is fine; the file may be
 * gzip-compressed. On error out is left empty. */
deft_status_t deft_dataset_load_libsvm(deft_dataset_t *out, const char *path,
                                       int features);

/* ---- the LIBSVM parser, shared by the LIBSVM loaders (the dense one
 * above, deft_logreg_load_libsvm's CSR one in convex/convex.h) ---------- */

/* What a pass over a LIBSVM file reports, line by line: example() for each
 * example (a non-blank line) with its label (an integer, |label| <= 1e9)
 * and line number, then entry() for each of its idx:value pairs in order
 * (idx 1-based and increasing, value finite, explicit zeros included).
 * Either may stop the pass by returning an error made with deft_fail. */
typedef struct {
    deft_status_t (*example)(void *ctx, double label, size_t lineno);
    deft_status_t (*entry)(void *ctx, uint32_t idx, float value);
    void *ctx;
} deft_libsvm_visitor_t;

/* Reads path (raw or gzip) once, parsing and checking every line and
 * calling v. Indices above limit (if > 0) are errors. *bytes (may be NULL)
 * receives the decompressed size. Errors: DEFT_ERR_IO (cannot open or
 * read), DEFT_ERR_FORMAT (a malformed line, with file:line; more than
 * deft_data_max_bytes), or what a callback returned. */
deft_status_t deft_libsvm_pass(const char *path, int limit,
                               const deft_libsvm_visitor_t *v, size_t *bytes);

/* What a first pass finds. */
typedef struct {
    size_t n;          /* examples                                        */
    size_t nnz;        /* idx:value pairs with value != 0                 */
    long max_idx;      /* largest index, 0 if none                        */
    double lo, hi;     /* smallest and largest label                      */
    int distinct;      /* distinct labels, counted up to 3                */
    double third;      /* with distinct == 3: the first label that was    */
    size_t third_line; /* neither of the first two, and its line          */
    size_t bytes;      /* decompressed size                               */
} deft_libsvm_scan_t;

/* The first pass of a loader: deft_libsvm_pass into *sc (limit as there).
 * A file without examples is DEFT_ERR_FORMAT. */
deft_status_t deft_libsvm_scan(const char *path, int limit,
                               deft_libsvm_scan_t *sc);

/* NULL-safe; leaves *ds empty. */
void deft_dataset_free(deft_dataset_t *ds);

/* Per-pixel-position-independent standardization: subtracts the train
 * set's mean and divides by its standard deviation (one scalar each, over
 * all values), applied to both sets (test may be NULL). */
void deft_dataset_standardize(deft_dataset_t *train, deft_dataset_t *test);

/* Keeps only examples whose label is in `keep` (n_keep labels) and
 * relabels keep[i] -> i. In place. */
deft_status_t deft_dataset_filter_labels(deft_dataset_t *ds,
                                         const int32_t *keep, int n_keep);

/* Epoch shards. Each epoch is a permutation of [0, n) drawn from (seed,
 * epoch); step s of the epoch uses positions [s*B, (s+1)*B) of it (B = the
 * global batch), and worker k of K takes the b = B/K positions starting at
 * s*B + k*b. So workers see disjoint parts of every epoch, and a run with K
 * workers sees the same global batches as one with 1 worker. The last n % B
 * examples of each permutation are skipped. */
typedef struct {
    size_t n;          /* examples in the data set                       */
    int global_batch;  /* B                                              */
    int nworkers;      /* K, B % K == 0                                  */
    int rank;          /* k                                              */
    uint64_t seed;
    uint64_t epoch;    /* epoch of perm                                  */
    uint32_t *perm;    /* (n,) permutation of the current epoch          */
} deft_sampler_t;

deft_status_t deft_sampler_init(deft_sampler_t *s, size_t n, int global_batch,
                                int nworkers, int rank, uint64_t seed);
void deft_sampler_free(deft_sampler_t *s);
/* Steps per epoch: floor(n / B). */
size_t deft_sampler_steps_per_epoch(const deft_sampler_t *s);
/* Indices (b,) of this worker's part of step `step` (counted from the
 * start of training: epoch = step / steps_per_epoch); reshuffles when the
 * epoch changes. Returns a pointer into s->perm. */
const uint32_t *deft_sampler_batch(deft_sampler_t *s, uint64_t step);

/* Copies examples idx (b,) into x (b, c, h, w) and y (b,). With augment,
 * each image is randomly cropped from its 2-pixel zero-padded version
 * (offsets in [-2, 2] on each axis) and flipped horizontally with
 * probability 1/2. The draws for an example come from (seed, step, its
 * index), so runs are reproducible and a run with K workers augments every
 * global batch exactly as a run with 1 worker does; rank is not used. */
void deft_dataset_gather(const deft_dataset_t *ds, const uint32_t *idx, int b,
                         int augment, uint64_t seed, uint64_t step, int rank,
                         float *x, int32_t *y);

#endif

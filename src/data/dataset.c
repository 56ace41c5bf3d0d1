/* Operations on loaded data sets: free, standardize, filter, gather. */
#include "data/data.h"

#include "core/internal.h"
#include "core/rng.h"

#include <math.h>
#include <string.h>

/* Augmentation draws from its own purpose so that its streams never meet
 * the epoch permutations' (seed, epoch, 0, DEFT_STREAM_DATA). */
#define DATA_STREAM_AUGMENT ((uint64_t)DEFT_STREAM_DATA | (uint64_t)1 << 63)

static size_t max_bytes = DEFT_DATA_MAX_BYTES;

size_t deft_data_set_max_bytes(size_t bytes)
{
    size_t old = max_bytes;
    max_bytes = bytes ? bytes : DEFT_DATA_MAX_BYTES;
    return old;
}

size_t deft_data_max_bytes(void)
{
    return max_bytes;
}

void deft_dataset_free(deft_dataset_t *ds)
{
    if (!ds)
        return;
    deft_free(ds->x);
    deft_free(ds->y);
    memset(ds, 0, sizeof *ds);
}

static size_t dataset_values(const deft_dataset_t *ds)
{
    return ds->n * (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
}

void deft_dataset_standardize(deft_dataset_t *train, deft_dataset_t *test)
{
    if (!train || !train->x)
        return;
    size_t m = dataset_values(train);
    if (m == 0)
        return;
    /* Two passes in double: a single-pass sum of squares loses the
     * variance to cancellation when the mean is large. */
    double sum = 0;
    for (size_t i = 0; i < m; i++)
        sum += train->x[i];
    double mean = sum / (double)m, ss = 0;
    for (size_t i = 0; i < m; i++) {
        double d = train->x[i] - mean;
        ss += d * d;
    }
    double sd = sqrt(ss / (double)m);
    /* A constant feature set has nothing to scale; centering still helps. */
    float fmean = (float)mean, inv = sd > 0 ? (float)(1.0 / sd) : 1.0f;
    for (size_t i = 0; i < m; i++)
        train->x[i] = (train->x[i] - fmean) * inv;
    if (test && test->x) {
        size_t mt = dataset_values(test);
        for (size_t i = 0; i < mt; i++)
            test->x[i] = (test->x[i] - fmean) * inv;
    }
}

deft_status_t deft_dataset_filter_labels(deft_dataset_t *ds,
                                         const int32_t *keep, int n_keep)
{
    if (!ds || !keep)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_dataset_filter_labels: %s is NULL",
                         ds ? "keep" : "ds");
    if (n_keep < 1 || n_keep > ds->n_classes)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_dataset_filter_labels: n_keep = %d, must be in "
                         "[1, %d] (n_classes)",
                         n_keep, ds->n_classes);
    int32_t *map = deft_alloc((size_t)ds->n_classes * sizeof *map);
    if (!map)
        return deft_fail(DEFT_ERR_NOMEM,
                         "deft_dataset_filter_labels: cannot allocate %d labels",
                         ds->n_classes);
    for (int c = 0; c < ds->n_classes; c++)
        map[c] = -1;
    for (int i = 0; i < n_keep; i++) {
        if (keep[i] < 0 || keep[i] >= ds->n_classes || map[keep[i]] >= 0) {
            deft_status_t st = deft_fail(
                DEFT_ERR_INVALID_ARG,
                "deft_dataset_filter_labels: keep[%d] = %d is %s", i,
                (int)keep[i],
                keep[i] < 0 || keep[i] >= ds->n_classes ? "out of range"
                                                        : "a duplicate");
            deft_free(map);
            return st;
        }
        map[keep[i]] = i;
    }
    size_t row = (size_t)ds->c * (size_t)ds->h * (size_t)ds->w, j = 0;
    for (size_t i = 0; i < ds->n; i++) {
        int32_t to = map[ds->y[i]];
        if (to < 0)
            continue;
        if (j != i)
            memcpy(ds->x + j * row, ds->x + i * row, row * sizeof *ds->x);
        ds->y[j++] = to;
    }
    ds->n = j;
    ds->n_classes = n_keep;
    deft_free(map);
    return DEFT_OK;
}

/* dst = src shifted by (dy, dx) with zero fill, mirrored if flip: the crop
 * of the 2-pixel zero-padded image at offset (2 + dy, 2 + dx). */
static void augment_plane(const float *src, float *dst, int h, int w, int dy,
                          int dx, int flip)
{
    for (int r = 0; r < h; r++) {
        int sr = r + dy;
        float *out = dst + (size_t)r * w;
        if (sr < 0 || sr >= h) {
            memset(out, 0, (size_t)w * sizeof *out);
            continue;
        }
        const float *in = src + (size_t)sr * w;
        for (int col = 0; col < w; col++) {
            int sc = (flip ? w - 1 - col : col) + dx;
            out[col] = sc >= 0 && sc < w ? in[sc] : 0.0f;
        }
    }
}

void deft_dataset_gather(const deft_dataset_t *ds, const uint32_t *idx, int b,
                         int augment, uint64_t seed, uint64_t step, int rank,
                         float *x, int32_t *y)
{
    (void)rank;
    size_t plane = (size_t)ds->h * (size_t)ds->w;
    size_t row = (size_t)ds->c * plane;
    for (int i = 0; i < b; i++) {
        const float *src = ds->x + (size_t)idx[i] * row;
        float *dst = x + (size_t)i * row;
        y[i] = ds->y[idx[i]];
        if (!augment) {
            memcpy(dst, src, row * sizeof *dst);
            continue;
        }
        /* Keyed by the example, not the worker: an example occurs once per
         * epoch, so (step, example) is unique, and K workers augment each
         * global batch exactly as one worker would. */
        deft_rng_t r = deft_rng_make(seed, step, idx[i], DATA_STREAM_AUGMENT);
        int dy = (int)deft_rng_below(&r, 5) - 2;
        int dx = (int)deft_rng_below(&r, 5) - 2;
        int flip = (int)(deft_rng_u64(&r) >> 63);
        for (int c = 0; c < ds->c; c++)
            augment_plane(src + c * plane, dst + c * plane, ds->h, ds->w, dy,
                          dx, flip);
    }
}

/* Private side of the compressors: the object every kind shares, the table
 * of operations each kind provides (one file per kind), and helpers. Only
 * src/compress/ and the compressor tests include it. */
#ifndef DEFT_COMPRESS_IMPL_H
#define DEFT_COMPRESS_IMPL_H

#include "compress/compress.h"
#include "core/internal.h"
#include "core/options.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* One segment: a tensor of the layout, or the whole vector for
 * DEFT_SCOPE_GLOBAL. Its index in c->seg is the `tensor` of its random
 * streams. */
typedef struct {
    size_t off; /* first element in the flat vector                      */
    size_t n;   /* number of elements, >= 1                              */
    size_t k;   /* kept per step: max(1, floor(n / ratio)) for kinds that
                   use a ratio, else 0                                   */
    size_t rows; /* a rows x (n / rows) matrix when >= 2 (from the
                    layout's rows, scope tensor only), else 0: a vector */
} deft_segment_t;

typedef struct deft_compressor_ops deft_compressor_ops_t;

struct deft_compressor {
    const deft_compressor_ops_t *ops;
    deft_compressor_params_t p;
    size_t dim;            /* d < 2^32                                     */
    size_t n_seg;          /* T                                            */
    deft_segment_t *seg;   /* [T]                                          */
    size_t total_k;        /* K = sum of seg[t].k                          */
    size_t max_n;          /* largest segment                              */
    size_t max_k;          /* largest seg[t].k                             */
    size_t msg_bytes;      /* set by ops->init                             */
    size_t float_off;      /* byte offset of the floats msg_finite checks  */
    size_t float_count;    /* how many floats from float_off (>= 1)        */
    void *impl;            /* kind-specific state, owned by ops->init/fini */
};

/* What a kind provides. init runs after the segments are set up: it sets
 * msg_bytes, float_off and float_count and allocates impl (returning
 * DEFT_ERR_NOMEM via deft_fail on failure; fini is then still called).
 * select/gather/scatter are NULL for non-linear kinds. */
/* A compressor registers itself by defining its table entry with
 *     DEFT_COMPRESSOR(deft_compress_NAME_ops) = { .kind = ..., ... };
 * in its own file: the build collects these lines of src/compress/ into
 * deft_compressor_registry, which the names, the option table, the
 * optimizer and the CLI loop over. */
#define DEFT_COMPRESSOR(sym) const deft_compressor_ops_t sym

struct deft_compressor_ops {
    deft_compressor_kind_t kind; /* its number: stable, stored in states */
    const char *name;
    const char *help;  /* one line, for deft list                        */
    deft_wire_t wire;
    int uses_ratio;
    int uses_rows;     /* 1: it reads the layout's matrix shapes (rows)  */
    /* Its parameters: config fields only it (or a kin) reads, declared in
     * its file; NULL-terminated, or NULL. */
    const deft_option_def_t *const *params;
    /* Optional: 1 when C(v) is v on coordinates every worker shares,
     * unscaled, so that the workers' messages average blocks of their
     * vectors (what psync needs); NULL: never. */
    int (*selects)(const deft_optim_config_t *cfg);
    /* Optional: rules beyond its parameters' ranges; pre prefixes field
     * names ("cfg->", or "--" for flags). */
    deft_status_t (*validate)(const deft_optim_config_t *cfg, const char *pre);
    deft_status_t (*init)(deft_compressor_t *c);
    void (*fini)(deft_compressor_t *c);
    void (*encode)(deft_compressor_t *c, uint64_t step, float *v, void *msg);
    void (*decode_add)(const deft_compressor_t *c, const void *msg,
                       float alpha, float *out);
    void (*select)(deft_compressor_t *c, uint64_t step);
    void (*gather)(const deft_compressor_t *c, const float *v, float *msg);
    void (*scatter)(const deft_compressor_t *c, const float *msg, float alpha,
                    float *out);
    /* Optional. msg_finite and poison: for messages whose values are not
     * floats (NULL: the float range float_off/float_count). */
    int (*msg_finite)(const deft_compressor_t *c, const void *msg);
    void (*poison)(const deft_compressor_t *c, void *msg);
    /* DEFT_WIRE_ROUNDS only: the float span of round r's part of the
     * message, the rounds after the first (encode is round 0 for these,
     * see compress.h), and the warm-start state. */
    void (*round_span)(const deft_compressor_t *c, int r, size_t *off,
                       size_t *n);
    void (*encode_round)(deft_compressor_t *c, uint64_t step, int r, float *v,
                         void *msg, float *own_out);
    void (*finish)(deft_compressor_t *c, const void *msg);
    size_t (*state_floats)(const deft_compressor_t *c);
    void (*state_get)(const deft_compressor_t *c, void *state);
    void (*state_set)(deft_compressor_t *c, const void *state);
};

/* Every compressor's entry, NULL-terminated (generated, see above). */
extern const deft_compressor_ops_t *const deft_compressor_registry[];
/* The entry of a kind; NULL for an unknown value. */
const deft_compressor_ops_t *deft_compressor_ops_of(deft_compressor_kind_t kind);
/* randk's option randk_scaled, which randk-private shares. */
extern const deft_option_def_t deft_option_randk_scaled;
/* selects for kinds whose every configuration keeps shared coordinates
 * unscaled (none, rbgs). */
int deft_selects_always(const deft_optim_config_t *cfg);
/* 1 for selecting unscaled randk (randk's selects). */
int deft_randk_selects(const deft_optim_config_t *cfg);

/* The dense operations none and scale share (every coordinate chosen):
 * out += alpha * msg, msg = v, out = alpha * msg; d floats. */
void deft_dense_decode_add(const deft_compressor_t *c, const void *msg,
                           float alpha, float *out);
void deft_dense_gather(const deft_compressor_t *c, const float *v,
                       float *msg);
void deft_dense_scatter(const deft_compressor_t *c, const float *msg,
                        float alpha, float *out);

/* randk's draw (randk.c), shared with randk-private: for each segment t,
 * k_t distinct indices, a uniform k_t-subset of the segment drawn from the
 * stream (seed, step, t, purpose) (Floyd's algorithm), written in
 * increasing order as global indices to idx, segment after segment (K in
 * all). bitmap: ceil(max_n / 64) words, zero on entry and on return. */
void deft_randk_draw(const deft_compressor_t *c, uint64_t step,
                     uint64_t purpose, uint64_t *bitmap, uint32_t *idx);
/* randk's take, likewise shared: val[j] = v[idx[j]], times n_t / k_t in
 * segment t when p.randk_scaled, and v[idx[j]] -= val[j] (0 when
 * unscaled), for the K indices of deft_randk_draw. */
void deft_randk_take(const deft_compressor_t *c, const uint32_t *idx,
                     float *v, float *val);
/* Decode of the sparse layout topk and randk-private send (K uint32 global
 * indices, then K floats): out[idx[j]] += alpha * val[j]; an index >= d
 * (a corrupt message) is skipped. */
void deft_sparse_decode_add(const deft_compressor_t *c, const void *msg,
                            float alpha, float *out);

/* Sums in double with independent accumulators in a fixed order, so the
 * result is reproducible (abs: 8; sq: 32, in the DEFT_CLONES builds, the
 * qsgd norm's). */
double deft_sum_abs_f64(const float *v, size_t n);
double deft_sum_sq_f64(const float *v, size_t n);

/* Hot loops compiled for AVX-512 (x86-64-v4), AVX2 and the baseline, one
 * chosen at load time (GCC's target_clones; not under the sanitizers or
 * clang). They must give the same bits on every clone: lanes independent,
 * IEEE operations only (no FMA: none of the targets enables it). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define DEFT_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define DEFT_CLONES
#endif

/* Unaligned-safe float access: sign and qsgd messages are T floats followed
 * by bytes, so a message inside an allgather buffer may start at any byte. */
static inline float deft_load_f32(const void *p)
{
    float x;
    memcpy(&x, p, sizeof x);
    return x;
}
static inline void deft_store_f32(void *p, float x)
{
    memcpy(p, &x, sizeof x);
}

/* Top-k counters, for tests and benchmarks: segments selected by each
 * path of topk.c (sampled includes ties, the sampled segments that needed
 * the tie pass; fallback counts radix runs after the sample misjudged).
 * Zero for other kinds. */
typedef struct {
    uint64_t sampled;
    uint64_t ties;
    uint64_t fallback;
    uint64_t heap;
    uint64_t small;
    uint64_t direct;
} deft_topk_stats_t;
void deft_topk_get_stats(const deft_compressor_t *c, deft_topk_stats_t *out);

/* The positions the sampled path reads in a segment of n elements keeping
 * k (the first max of them into pos); returns the sample size, 0 when such
 * a segment is not sampled. Lets tests build data that defeats the sample. */
size_t deft_topk_sample_positions(size_t n, size_t k, size_t *pos,
                                  size_t max);

#endif

/* Compressors (src/compress): message layouts, exactness of top-k against
 * a brute-force reference, contraction and unbiasedness, round trips,
 * RBGS linearity, determinism, randk-private's per-worker coordinates,
 * NaN handling and argument errors. */
#include "testutil.h"

#include "compress/compress.h"
#include "compress/compress_impl.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The layout most tests use: a small, an odd, a mid-size and a 1-element
 * tensor (d = 6038, not a multiple of 8). */
static const size_t L_SIZES[] = {1000, 37, 5000, 1};
static const deft_layout_t L = {4, L_SIZES, NULL};
#define L_DIM 6038

static const deft_scope_t SCOPES[] = {DEFT_SCOPE_TENSOR, DEFT_SCOPE_GLOBAL};

static deft_compressor_params_t params(deft_compressor_kind_t kind,
                                       deft_scope_t scope, double ratio)
{
    deft_compressor_params_t p = {kind, ratio, scope, 0, 16, 1234, 0, 1};
    return p;
}

static deft_compressor_t *make(const deft_layout_t *layout,
                               const deft_compressor_params_t *p)
{
    deft_compressor_t *c = NULL;
    assert_status(deft_compressor_create(&c, layout, p), DEFT_OK);
    assert_non_null(c);
    return c;
}

static float *falloc(size_t n)
{
    float *v = calloc(n ? n : 1, sizeof(float));
    assert_non_null(v);
    return v;
}

static size_t keep(size_t n, double ratio)
{
    size_t k = (size_t)floor((double)n / ratio);
    return k < 1 ? 1 : (k > n ? n : k);
}

/* The segments of a layout under a scope: sizes into seg[], returns T. */
static size_t segments(const deft_layout_t *l, deft_scope_t scope,
                       size_t *seg)
{
    if (scope == DEFT_SCOPE_TENSOR) {
        memcpy(seg, l->sizes, l->n_tensors * sizeof *seg);
        return l->n_tensors;
    }
    seg[0] = 0;
    for (size_t t = 0; t < l->n_tensors; t++)
        seg[0] += l->sizes[t];
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Message sizes                                                            */
/* ------------------------------------------------------------------------ */

static void test_msg_sizes(void **state)
{
    (void)state;
    const double ratios[] = {1, 3, 7.5, 256};
    for (int si = 0; si < 2; si++) {
        size_t seg[4];
        size_t T = segments(&L, SCOPES[si], seg);
        for (int ri = 0; ri < 4; ri++) {
            double ratio = ratios[ri];
            size_t K = 0;
            for (size_t t = 0; t < T; t++)
                K += keep(seg[t], ratio);
            struct {
                deft_compressor_kind_t kind;
                int levels;
                size_t bytes;
                int linear;
            } want[] = {
                {DEFT_COMP_NONE, 16, 4 * (size_t)L_DIM, 1},
                {DEFT_COMP_SCALE, 16, 4 * (size_t)L_DIM, 1},
                {DEFT_COMP_RBGS, 16, 4 * K, 1},
                {DEFT_COMP_RANDK, 16, 4 * K, 1},
                {DEFT_COMP_TOPK, 16, 8 * K, 0},
                {DEFT_COMP_SIGN, 16, 4 * T + (L_DIM + 7) / 8, 0},
                {DEFT_COMP_QSGD, 1, 4 * T + (L_DIM * 2 + 7) / 8, 0},
                {DEFT_COMP_QSGD, 7, 4 * T + (L_DIM * 4 + 7) / 8, 0},
                {DEFT_COMP_QSGD, 8, 4 * T + L_DIM, 0},
                {DEFT_COMP_QSGD, 127, 4 * T + L_DIM, 0},
                {DEFT_COMP_FP16, 16, 2 * (size_t)L_DIM, 0},
                {DEFT_COMP_BF16, 16, 2 * (size_t)L_DIM, 0},
                {DEFT_COMP_RANDK_PRIVATE, 16, 8 * K, 0},
            };
            for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
                deft_compressor_params_t p =
                    params(want[w].kind, SCOPES[si], ratio);
                p.qsgd_levels = want[w].levels;
                deft_compressor_t *c = make(&L, &p);
                assert_int_equal(deft_compressor_msg_bytes(c), want[w].bytes);
                assert_int_equal(deft_compressor_is_linear(c), want[w].linear);
                assert_int_equal(deft_compressor_dim(c), L_DIM);
                deft_compressor_destroy(c);
            }
        }
    }
    /* floor(37 / 256) = 0 still keeps one element: K = 3 + 1 + 19 + 1. */
    deft_compressor_params_t p = params(DEFT_COMP_RBGS, DEFT_SCOPE_TENSOR, 256);
    deft_compressor_t *c = make(&L, &p);
    assert_int_equal(deft_compressor_msg_bytes(c), 4 * (3 + 1 + 19 + 1));
    deft_compressor_destroy(c);
}

/* ------------------------------------------------------------------------ */
/* Argument errors                                                          */
/* ------------------------------------------------------------------------ */

static void expect_create_error(const deft_layout_t *l,
                                const deft_compressor_params_t *p,
                                deft_status_t want, const char *mention)
{
    static int dummy;
    deft_compressor_t *c = (deft_compressor_t *)(void *)&dummy; /* reset? */
    assert_status(deft_compressor_create(&c, l, p), want);
    assert_null(c);
    assert_error_mentions(mention);
}

static void test_create_errors(void **state)
{
    (void)state;
    deft_compressor_params_t p = params(DEFT_COMP_TOPK, DEFT_SCOPE_TENSOR, 4);
    deft_compressor_t *c;
    assert_status(deft_compressor_create(NULL, &L, &p), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("out");
    expect_create_error(NULL, &p, DEFT_ERR_INVALID_ARG, "layout");
    expect_create_error(&L, NULL, DEFT_ERR_INVALID_ARG, "p is NULL");

    p.ratio = 0.5;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->ratio = 0.5");
    assert_error_mentions("must be >= 1");
    p.ratio = NAN;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->ratio");
    p.kind = DEFT_COMP_RBGS;
    p.ratio = 0;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->ratio");
    p.kind = DEFT_COMP_SCALE;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->ratio");

    p = params(DEFT_COMP_QSGD, DEFT_SCOPE_TENSOR, 4);
    p.qsgd_levels = 0;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->qsgd_levels = 0");
    p.qsgd_levels = 128;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->qsgd_levels = 128");
    p.qsgd_levels = 127;
    c = make(&L, &p);
    deft_compressor_destroy(c);

    /* Kinds with worker-private randomness need a rank >= 0. */
    p = params(DEFT_COMP_RANDK_PRIVATE, DEFT_SCOPE_TENSOR, 4);
    p.rank = -1;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->rank = -1");
    assert_error_mentions("randk-private");
    p.kind = DEFT_COMP_QSGD;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->rank = -1");
    p.kind = DEFT_COMP_RANDK_PRIVATE;
    p.ratio = 0.5;
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->ratio = 0.5");

    p = params((deft_compressor_kind_t)42, DEFT_SCOPE_TENSOR, 4);
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->kind = 42");
    p = params(DEFT_COMP_RBGS, (deft_scope_t)7, 4);
    expect_create_error(&L, &p, DEFT_ERR_INVALID_ARG, "p->scope = 7");

    p = params(DEFT_COMP_RBGS, DEFT_SCOPE_TENSOR, 4);
    deft_layout_t empty = {0, L_SIZES, NULL};
    expect_create_error(&empty, &p, DEFT_ERR_INVALID_ARG,
                        "layout->n_tensors = 0");
    deft_layout_t nosizes = {2, NULL, NULL};
    expect_create_error(&nosizes, &p, DEFT_ERR_INVALID_ARG, "layout->sizes");
    const size_t with_zero[] = {10, 0, 5};
    deft_layout_t zero = {3, with_zero, NULL};
    expect_create_error(&zero, &p, DEFT_ERR_INVALID_ARG,
                        "layout->sizes[1] = 0");
    const size_t huge[] = {(size_t)1 << 31, (size_t)1 << 31};
    deft_layout_t big = {2, huge, NULL};
    expect_create_error(&big, &p, DEFT_ERR_UNSUPPORTED, "2^32");

    /* Kinds without a ratio ignore it; with a ratio >= 1 all is well. */
    p = params(DEFT_COMP_SIGN, DEFT_SCOPE_TENSOR, 0);
    c = make(&L, &p);
    deft_compressor_destroy(c);
    deft_compressor_destroy(NULL);
}

/* ------------------------------------------------------------------------ */
/* Top-k against a brute-force reference                                    */
/* ------------------------------------------------------------------------ */

static const float *g_ref_v;

/* |v| descending, then index ascending. */
static int cmp_topk(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    float x = fabsf(g_ref_v[i]), y = fabsf(g_ref_v[j]);
    if (x != y)
        return x > y ? -1 : 1;
    return i < j ? -1 : (i > j);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return i < j ? -1 : (i > j);
}

/* Encodes v0 with topk and checks, per segment, that the message holds
 * exactly the reference's k indices (any order) with their values, and that
 * the residual is 0 there and v0 elsewhere. */
static void check_topk(const deft_layout_t *l, deft_scope_t scope,
                       double ratio, const float *v0)
{
    deft_compressor_params_t p = params(DEFT_COMP_TOPK, scope, ratio);
    deft_compressor_t *c = make(l, &p);
    size_t d = deft_compressor_dim(c);
    size_t seg[64];
    size_t T = segments(l, scope, seg);
    float *v = falloc(d);
    memcpy(v, v0, d * sizeof(float));
    unsigned char *msg = malloc(deft_compressor_msg_bytes(c));
    assert_non_null(msg);
    deft_compressor_encode(c, 3, v, msg);
    size_t K = deft_compressor_msg_bytes(c) / 8;
    const uint32_t *idx = (const uint32_t *)msg;
    const float *val = (const float *)(msg + 4 * K);

    uint32_t *ref = malloc(d * sizeof *ref);
    uint32_t *got = malloc(K * sizeof *got);
    unsigned char *chosen = calloc(d, 1);
    assert_true(ref && got && chosen);
    g_ref_v = v0;
    size_t off = 0, pos = 0;
    for (size_t t = 0; t < T; t++) {
        size_t n = seg[t], k = keep(n, ratio);
        for (size_t i = 0; i < n; i++)
            ref[i] = (uint32_t)(off + i);
        qsort(ref, n, sizeof *ref, cmp_topk);
        qsort(ref, k, sizeof *ref, cmp_u32);
        memcpy(got, idx + pos, k * sizeof *got);
        qsort(got, k, sizeof *got, cmp_u32);
        for (size_t j = 0; j < k; j++) {
            if (got[j] != ref[j])
                fail_msg("segment %zu (n %zu, k %zu): kept index %u, "
                         "reference %u (rank %zu)",
                         t, n, k, got[j], ref[j], j);
        }
        for (size_t j = pos; j < pos + k; j++) {
            assert_true(idx[j] >= off && idx[j] < off + n);
            assert_memory_equal(&val[j], &v0[idx[j]], sizeof(float));
            chosen[idx[j]] = 1;
        }
        off += n;
        pos += k;
    }
    assert_int_equal(pos, K);
    for (size_t i = 0; i < d; i++) {
        float want = chosen[i] ? 0.0f : v0[i];
        if (memcmp(&v[i], &want, sizeof want) != 0)
            fail_msg("residual[%zu] = %g, want %g", i, v[i], want);
    }
    free(ref);
    free(got);
    free(chosen);
    free(msg);
    free(v);
    deft_compressor_destroy(c);
}

/* Test vectors: 0 uniform, 1 few distinct values, 2 all zeros, 3 constant,
 * 4 heavy ties (-2..2 with many zeros), 5 heavy-tailed (1/u). */
static void fill_kind(float *v, size_t n, int kind, uint64_t seed)
{
    deft_rng_t r = deft_rng_make(seed, 1, 2, DEFT_STREAM_TEST);
    for (size_t i = 0; i < n; i++) {
        float u = deft_rng_uniform(&r);
        switch (kind) {
        case 0:
            v[i] = 2.0f * u - 1.0f;
            break;
        case 1:
            v[i] = (float)((int)(u * 3.0f) + 1) * (i & 1 ? -0.5f : 0.5f);
            break;
        case 2:
            v[i] = (i & 2) ? -0.0f : 0.0f;
            break;
        case 3:
            v[i] = 0.25f;
            break;
        case 4:
            v[i] = (float)((int)(u * 5.0f) - 2);
            break;
        default:
            v[i] = (u < 0.5f ? -1.0f : 1.0f) / (u + 1e-3f);
            break;
        }
    }
}

static void test_topk_exact_small(void **state)
{
    (void)state;
    float *v = falloc(L_DIM);
    const double ratios[] = {1, 2.5, 16, 256, 1e9};
    for (int kind = 0; kind < 6; kind++) {
        fill_kind(v, L_DIM, kind, 10 + (uint64_t)kind);
        for (int ri = 0; ri < 5; ri++)
            for (int si = 0; si < 2; si++)
                check_topk(&L, SCOPES[si], ratios[ri], v);
    }
    free(v);
}

/* Segments of 100003 (too small to sample at ratio 256, more than the
 * candidate buffer holds when tied: radix passes over the whole segment)
 * and 40000 (sampled at ratio 32). */
static void test_topk_exact_mid(void **state)
{
    (void)state;
    const size_t sizes[] = {100003, 40000, 3};
    deft_layout_t l = {3, sizes, NULL};
    float *v = falloc(140006);
    for (int kind = 0; kind < 6; kind++) {
        fill_kind(v, 140006, kind, 20 + (uint64_t)kind);
        check_topk(&l, DEFT_SCOPE_TENSOR, 256, v);
        check_topk(&l, DEFT_SCOPE_TENSOR, 32, v);
        check_topk(&l, DEFT_SCOPE_GLOBAL, 100, v);
    }
    free(v);
}

#define TOPK_TEST_MAX_SAMPLE 65536

static deft_topk_stats_t topk_stats_after(const deft_layout_t *l,
                                          double ratio, const float *v0)
{
    deft_compressor_params_t p = params(DEFT_COMP_TOPK, DEFT_SCOPE_TENSOR,
                                        ratio);
    deft_compressor_t *c = make(l, &p);
    size_t d = deft_compressor_dim(c);
    float *v = falloc(d);
    void *msg = malloc(deft_compressor_msg_bytes(c));
    memcpy(v, v0, d * sizeof(float));
    deft_compressor_encode(c, 0, v, msg);
    deft_topk_stats_t st;
    deft_topk_get_stats(c, &st);
    free(msg);
    free(v);
    deft_compressor_destroy(c);
    return st;
}

/* One large segment: random data goes through the sampled path, tied
 * data through its tie pass; data built against the sample's positions
 * goes through the radix fallback. All of them exact. */
static void test_topk_exact_large(void **state)
{
    (void)state;
    const size_t n = 131072, k = n / 64;
    const size_t sizes[] = {n};
    deft_layout_t l = {1, sizes, NULL};
    float *v = falloc(n);
    deft_topk_stats_t st;

    fill_kind(v, n, 0, 30);
    st = topk_stats_after(&l, 64, v);
    assert_true(st.sampled == 1 && st.ties == 0 && st.fallback == 0);
    check_topk(&l, DEFT_SCOPE_TENSOR, 64, v);
    fill_kind(v, n, 5, 31); /* heavy tails */
    st = topk_stats_after(&l, 64, v);
    assert_true(st.sampled == 1 && st.ties == 0 && st.fallback == 0);
    check_topk(&l, DEFT_SCOPE_TENSOR, 64, v);
    /* Every other element zero: a plain stride would see only one kind. */
    for (size_t i = 1; i < n; i += 2)
        v[i] = 0.0f;
    st = topk_stats_after(&l, 64, v);
    assert_true(st.sampled == 1 && st.ties == 0 && st.fallback == 0);
    check_topk(&l, DEFT_SCOPE_TENSOR, 64, v);

    /* Ties and few distinct values: the sample's threshold is a key held
     * by far more elements than the candidate buffer; the tie pass
     * completes the keys above it with the first ties. */
    for (int kind = 1; kind <= 4; kind++) {
        fill_kind(v, n, kind, 32);
        st = topk_stats_after(&l, 64, v);
        assert_true(st.sampled == 1 && st.ties == 1 && st.fallback == 0);
        check_topk(&l, DEFT_SCOPE_TENSOR, 64, v);
    }
    /* Sparse spikes, fewer than k: the sample sees (almost) only zeros. */
    memset(v, 0, n * sizeof(float));
    for (size_t i = 0; i < n; i += 97)
        v[i] = (float)(i % 13) - 6.5f;
    st = topk_stats_after(&l, 64, v);
    assert_true(st.sampled == 1 && st.ties == 1 && st.fallback == 0);
    check_topk(&l, DEFT_SCOPE_TENSOR, 64, v);

    /* Against the sample: large values exactly where it looks, so its
     * threshold leaves fewer than k candidates; then tiny values there and
     * large distinct ones elsewhere, so that too many pass, even strictly
     * above the threshold. Both fall back to radix selection. */
    size_t *pos = malloc(TOPK_TEST_MAX_SAMPLE * sizeof *pos);
    size_t S = deft_topk_sample_positions(n, k, pos, TOPK_TEST_MAX_SAMPLE);
    assert_true(S > 0 && S <= TOPK_TEST_MAX_SAMPLE);
    fill_kind(v, n, 0, 33);
    for (size_t j = 0; j < S; j++)
        v[pos[j]] = 10.0f + (float)(j % 1000);
    st = topk_stats_after(&l, 64, v);
    assert_true(st.sampled == 0 && st.fallback == 1);
    check_topk(&l, DEFT_SCOPE_TENSOR, 64, v);
    fill_kind(v, n, 0, 34);
    for (size_t j = 0; j < S; j++)
        v[pos[j]] = 1e-3f * v[pos[j]];
    st = topk_stats_after(&l, 64, v);
    assert_true(st.sampled == 0 && st.fallback == 1);
    check_topk(&l, DEFT_SCOPE_TENSOR, 64, v);
    free(pos);
    free(v);
}

/* Small k, not sampled: the heap scan; ascending magnitudes make it give
 * up for radix selection. Segments too small for anything else: the
 * quickselect. */
static void test_topk_exact_heap_small(void **state)
{
    (void)state;
    const size_t sizes[] = {20000};
    deft_layout_t l = {1, sizes, NULL};
    float *v = falloc(20000);
    deft_topk_stats_t st;
    fill_kind(v, 20000, 0, 35);
    st = topk_stats_after(&l, 256, v);
    assert_true(st.heap == 1 && st.direct == 0);
    check_topk(&l, DEFT_SCOPE_TENSOR, 256, v);
    for (int kind = 1; kind <= 5; kind++) {
        fill_kind(v, 20000, kind, 36);
        check_topk(&l, DEFT_SCOPE_TENSOR, 256, v);
    }
    for (size_t i = 0; i < 20000; i++)
        v[i] = (i & 1 ? 1.0f : -1.0f) * (float)(20000 - i);
    assert_int_equal(topk_stats_after(&l, 256, v).heap, 1);
    check_topk(&l, DEFT_SCOPE_TENSOR, 256, v);
    for (size_t i = 0; i < 20000; i++)
        v[i] = (i & 1 ? 1.0f : -1.0f) * (float)i;
    st = topk_stats_after(&l, 256, v);
    assert_true(st.heap == 0 && st.direct == 1);
    check_topk(&l, DEFT_SCOPE_TENSOR, 256, v);
    fill_kind(v, 20000, 0, 37);
    st = topk_stats_after(&l, 8, v); /* k = 2500: radix */
    assert_true(st.heap == 0 && st.direct == 1);
    check_topk(&l, DEFT_SCOPE_TENSOR, 8, v);
    const size_t small[] = {1024, 700, 2};
    deft_layout_t ls = {3, small, NULL};
    st = topk_stats_after(&ls, 4, v);
    assert_true(st.small == 2); /* the 2-element tensor keeps everything */
    for (int kind = 0; kind <= 5; kind++) {
        fill_kind(v, 1726, kind, 38);
        check_topk(&ls, DEFT_SCOPE_TENSOR, 4, v);
        check_topk(&ls, DEFT_SCOPE_TENSOR, 1.01, v);
    }
    free(v);
}

/* The benchmark's configuration: ratio 256 on a segment of 2^19. */
static void test_topk_exact_ratio256(void **state)
{
    (void)state;
    const size_t n = (size_t)1 << 19;
    const size_t sizes[] = {n - 5, 5};
    deft_layout_t l = {2, sizes, NULL};
    float *v = falloc(n);
    fill_kind(v, n, 0, 40);
    deft_topk_stats_t st = topk_stats_after(&l, 256, v);
    assert_true(st.sampled == 1 && st.fallback == 0);
    check_topk(&l, DEFT_SCOPE_TENSOR, 256, v);
    check_topk(&l, DEFT_SCOPE_GLOBAL, 256, v);
    free(v);
}

/* ||C(v) - v||^2 <= (1 - k/n) ||v||^2 per segment, for every v. */
static void test_topk_contraction(void **state)
{
    (void)state;
    float *v0 = falloc(L_DIM), *v = falloc(L_DIM);
    const double ratios[] = {1.5, 4, 37, 256};
    for (int kind = 0; kind < 6; kind++)
        for (int ri = 0; ri < 4; ri++)
            for (int si = 0; si < 2; si++) {
                fill_kind(v0, L_DIM, kind, 50 + (uint64_t)kind);
                deft_compressor_params_t p =
                    params(DEFT_COMP_TOPK, SCOPES[si], ratios[ri]);
                deft_compressor_t *c = make(&L, &p);
                void *msg = malloc(deft_compressor_msg_bytes(c));
                memcpy(v, v0, sizeof(float) * L_DIM);
                deft_compressor_encode(c, 0, v, msg);
                size_t seg[4], T = segments(&L, SCOPES[si], seg), off = 0;
                for (size_t t = 0; t < T; t++) {
                    double e = 0, n2 = 0;
                    for (size_t i = off; i < off + seg[t]; i++) {
                        e += (double)v[i] * v[i];
                        n2 += (double)v0[i] * v0[i];
                    }
                    double bound =
                        (1.0 - (double)keep(seg[t], ratios[ri]) / seg[t]) * n2;
                    if (e > bound * (1 + 1e-12))
                        fail_msg("segment %zu: ||C(v)-v||^2 = %g > %g", t, e,
                                 bound);
                    off += seg[t];
                }
                free(msg);
                deft_compressor_destroy(c);
            }
    free(v0);
    free(v);
}

/* ------------------------------------------------------------------------ */
/* Expected contraction (rbgs, randk) and unbiasedness (randk, qsgd)        */
/* ------------------------------------------------------------------------ */

/* Every coordinate is kept with probability m = k/n (rbgs: uniform start;
 * randk, randk-private: uniform k-subset), so F = ||C(v)||^2 / ||v||^2 has mean m and,
 * lying in [0, 1], variance <= m(1 - m) (Bhatia-Davis). The average of
 * N = 2000 independent steps is then within 5 sigma = 5 sqrt(m(1-m)/N) of
 * m except with probability ~6e-7 (CLT), and 1 - F = ||C(v)-v||^2/||v||^2
 * likewise of 1 - k/n. Checked per segment. */
static void expect_contraction(deft_compressor_kind_t kind, double ratio,
                               deft_scope_t scope)
{
    enum { N = 2000 };
    deft_compressor_params_t p = params(kind, scope, ratio);
    deft_compressor_t *c = make(&L, &p);
    float *v0 = falloc(L_DIM), *v = falloc(L_DIM);
    void *msg = malloc(deft_compressor_msg_bytes(c));
    fill_kind(v0, L_DIM, 5, 60); /* uneven magnitudes */
    size_t seg[4], T = segments(&L, scope, seg);
    double sum[4] = {0, 0, 0, 0}, n2[4] = {0, 0, 0, 0};
    for (size_t t = 0, off = 0; t < T; off += seg[t++])
        for (size_t i = off; i < off + seg[t]; i++)
            n2[t] += (double)v0[i] * v0[i];
    for (uint64_t step = 0; step < N; step++) {
        memcpy(v, v0, sizeof(float) * L_DIM);
        deft_compressor_encode(c, step, v, msg);
        for (size_t t = 0, off = 0; t < T; off += seg[t++]) {
            double e = 0;
            for (size_t i = off; i < off + seg[t]; i++)
                e += (double)v[i] * v[i];
            sum[t] += e / n2[t];
        }
    }
    for (size_t t = 0; t < T; t++) {
        double m = (double)keep(seg[t], ratio) / (double)seg[t];
        double tol = 5.0 * sqrt(m * (1.0 - m) / N);
        assert_close(sum[t] / N, 1.0 - m, 0, tol + 1e-12);
    }
    free(msg);
    free(v0);
    free(v);
    deft_compressor_destroy(c);
}

static void test_expected_contraction(void **state)
{
    (void)state;
    for (int si = 0; si < 2; si++) {
        expect_contraction(DEFT_COMP_RBGS, 4, SCOPES[si]);
        expect_contraction(DEFT_COMP_RBGS, 50, SCOPES[si]);
        expect_contraction(DEFT_COMP_RANDK, 4, SCOPES[si]);
        expect_contraction(DEFT_COMP_RANDK, 50, SCOPES[si]);
        expect_contraction(DEFT_COMP_RANDK_PRIVATE, 4, SCOPES[si]);
        expect_contraction(DEFT_COMP_RANDK_PRIVATE, 50, SCOPES[si]);
    }
}

/* Scaled randk (shared or private): C(v)_i = v_i n/k with probability k/n,
 * else 0, so E C(v)_i = v_i and Var C(v)_i = v_i^2 (n/k - 1). The mean of
 * N steps is within 6 sigma of v_i per coordinate; over 6038 coordinates
 * the chance of any miss is below 1.2e-5 (normal tails, union bound). */
static void test_randk_scaled_unbiased(void **state)
{
    (void)state;
    enum { N = 3000 };
    for (int si = 0; si < 4; si++) {
        deft_compressor_params_t p =
            params(si < 2 ? DEFT_COMP_RANDK : DEFT_COMP_RANDK_PRIVATE,
                   SCOPES[si % 2], 4);
        p.randk_scaled = 1;
        p.rank = 1;
        deft_compressor_t *c = make(&L, &p);
        float *v0 = falloc(L_DIM), *v = falloc(L_DIM), *dec = falloc(L_DIM);
        double *acc = calloc(L_DIM, sizeof *acc);
        void *msg = malloc(deft_compressor_msg_bytes(c));
        fill_kind(v0, L_DIM, 0, 70);
        for (uint64_t step = 0; step < N; step++) {
            memcpy(v, v0, sizeof(float) * L_DIM);
            deft_compressor_encode(c, step, v, msg);
            memset(dec, 0, sizeof(float) * L_DIM);
            deft_compressor_decode_add(c, msg, 1.0f, dec);
            for (size_t i = 0; i < L_DIM; i++)
                acc[i] += dec[i];
        }
        size_t seg[4], T = segments(&L, SCOPES[si % 2], seg);
        for (size_t t = 0, off = 0; t < T; off += seg[t++]) {
            double nk = (double)seg[t] / (double)keep(seg[t], 4);
            for (size_t i = off; i < off + seg[t]; i++) {
                double sd = fabs(v0[i]) * sqrt((nk - 1.0) / N);
                assert_close(acc[i] / N, v0[i], 0, 6.0 * sd + 1e-6);
            }
        }
        free(msg);
        free(acc);
        free(v0);
        free(v);
        free(dec);
        deft_compressor_destroy(c);
    }
}

/* qsgd: C(v)_i = sign * (norm/s) * l with l in {floor(y), floor(y) + 1},
 * E l = y = |v_i| s / norm, so Var C(v)_i <= (norm/s)^2 / 4; the mean of
 * N steps is within 6 sigma = 3 (norm/s) / sqrt(N) per coordinate (union
 * bound over 6038 coordinates as above). */
/* The vectorized encoder (whichever clone this CPU runs) against a scalar
 * restatement of qsgd.c's definition, bitwise: codes and residuals. The
 * uniform of element i of segment t is lowbias32(i + key) >> 8, key from
 * the worker-private stream (seed, step, t, rank). */
static uint32_t ref_u24(uint32_t key, uint32_t i)
{
    uint32_t x = i + key;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x >> 8;
}

static void test_qsgd_matches_scalar_definition(void **state)
{
    (void)state;
    const int levels[] = {1, 5, 16, 127};
    for (int li = 0; li < 4; li++)
        for (int si = 0; si < 2; si++) {
            const int s = levels[li];
            const unsigned b = s == 1 ? 2 : s <= 7 ? 4 : 8;
            deft_compressor_params_t p = params(DEFT_COMP_QSGD, SCOPES[si], 1);
            p.qsgd_levels = s;
            p.rank = 3;
            deft_compressor_t *c = make(&L, &p);
            float *v0 = falloc(L_DIM), *v = falloc(L_DIM);
            unsigned char *msg = malloc(deft_compressor_msg_bytes(c));
            fill_kind(v0, L_DIM, li, 500 + (uint64_t)li);
            memcpy(v, v0, sizeof(float) * L_DIM);
            const uint64_t step = 41;
            deft_compressor_encode(c, step, v, msg);
            const unsigned char *codes = msg + 4 * c->n_seg;
            for (size_t t = 0; t < c->n_seg; t++) {
                const size_t off = c->seg[t].off, n = c->seg[t].n;
                /* 32 interleaved double sums, combined pairwise */
                double a[32] = {0};
                for (size_t i = 0; i < n; i++)
                    a[i % 32] += (double)v0[off + i] * (double)v0[off + i];
                for (int w = 16; w >= 1; w /= 2)
                    for (int j = 0; j < w; j++)
                        a[j] += a[j + w];
                float norm = (float)sqrt(a[0]);
                const float inv = (float)((double)s / (double)norm);
                const float q = (float)((double)norm / (double)s);
                deft_rng_t g = deft_rng_make(p.seed, step, t,
                                             DEFT_STREAM_PRIVATE(DEFT_STREAM_QSGD, 3));
                uint64_t k64 = deft_rng_u64(&g);
                uint32_t key = (uint32_t)(k64 ^ (k64 >> 32));
                const int zero = !(norm >= 0x1p-100f); /* left as is */
                for (size_t i = 0; i < n; i++) {
                    float xi = v0[off + i];
                    float y = zero ? 0.0f : fabsf(xi) * inv;
                    float tr = (float)(int)y;
                    float u = (float)(int32_t)ref_u24(key, (uint32_t)i) * (1.0f / 16777216.0f);
                    float l = tr + (u < y - tr ? 1.0f : 0.0f);
                    if (l > (float)s)
                        l = (float)s;
                    float cq = copysignf(q * l, xi);
                    float res = xi - cq;
                    unsigned want = (unsigned)l << 1 | (signbit(xi) != 0);
                    if (zero)
                        res = xi, want = 0;
                    size_t bit = (off + i) * b;
                    unsigned code = (codes[bit >> 3] >> (bit & 7)) & ((1u << b) - 1);
                    if (code != want || memcmp(&res, &v[off + i], 4) != 0)
                        fail_msg("s=%d segment %zu element %zu: code %u want %u, "
                                 "residual %.9g want %.9g", s, t, i, code, want,
                                 (double)v[off + i], (double)res);
                }
            }
            free(msg), free(v0), free(v);
            deft_compressor_destroy(c);
        }
}

static void test_qsgd_unbiased(void **state)
{
    (void)state;
    enum { N = 1500 };
    const int levels[] = {1, 16};
    for (int li = 0; li < 2; li++) {
        deft_compressor_params_t p =
            params(DEFT_COMP_QSGD, DEFT_SCOPE_TENSOR, 1);
        p.qsgd_levels = levels[li];
        p.rank = 3;
        deft_compressor_t *c = make(&L, &p);
        float *v0 = falloc(L_DIM), *v = falloc(L_DIM), *dec = falloc(L_DIM);
        double *acc = calloc(L_DIM, sizeof *acc);
        unsigned char *msg = malloc(deft_compressor_msg_bytes(c));
        fill_kind(v0, L_DIM, 0, 80 + (uint64_t)li);
        for (uint64_t step = 0; step < N; step++) {
            memcpy(v, v0, sizeof(float) * L_DIM);
            deft_compressor_encode(c, step, v, msg);
            memset(dec, 0, sizeof(float) * L_DIM);
            deft_compressor_decode_add(c, msg, 1.0f, dec);
            for (size_t i = 0; i < L_DIM; i++)
                acc[i] += dec[i];
        }
        for (size_t t = 0, off = 0; t < 4; off += L_SIZES[t++]) {
            double norm = 0;
            for (size_t i = off; i < off + L_SIZES[t]; i++)
                norm += (double)v0[i] * v0[i];
            double q = sqrt(norm) / levels[li];
            for (size_t i = off; i < off + L_SIZES[t]; i++)
                assert_close(acc[i] / N, v0[i], 0, 3.0 * q / sqrt(N) + 1e-6);
        }
        free(msg);
        free(acc);
        free(v0);
        free(v);
        free(dec);
        deft_compressor_destroy(c);
    }
}

/* Decodes the codes of a qsgd message and checks levels in [0, s], and
 * more precisely in {floor(y), ceil(y)}, with the sign bit of v_i < 0. */
static void test_qsgd_levels(void **state)
{
    (void)state;
    const int levels[] = {1, 3, 7, 8, 100, 127};
    for (int li = 0; li < 6; li++)
        for (int si = 0; si < 2; si++) {
            const int s = levels[li];
            const unsigned b = s == 1 ? 2 : s <= 7 ? 4 : 8;
            deft_compressor_params_t p = params(DEFT_COMP_QSGD, SCOPES[si], 1);
            p.qsgd_levels = s;
            deft_compressor_t *c = make(&L, &p);
            float *v0 = falloc(L_DIM), *v = falloc(L_DIM);
            unsigned char *msg = malloc(deft_compressor_msg_bytes(c));
            fill_kind(v0, L_DIM, li & 1 ? 5 : 0, 90 + (uint64_t)li);
            v0[17] = 0.0f;
            size_t seg[4], T = segments(&L, SCOPES[si], seg);
            for (uint64_t step = 0; step < 5; step++) {
                memcpy(v, v0, sizeof(float) * L_DIM);
                deft_compressor_encode(c, step, v, msg);
                const unsigned char *codes = msg + 4 * T;
                for (size_t t = 0, off = 0; t < T; off += seg[t++]) {
                    float norm;
                    memcpy(&norm, msg + 4 * t, 4);
                    double n2 = 0;
                    for (size_t i = off; i < off + seg[t]; i++)
                        n2 += (double)v0[i] * v0[i];
                    assert_close(norm, sqrt(n2), 1e-6, 0);
                    for (size_t i = off; i < off + seg[t]; i++) {
                        size_t bit = i * b;
                        unsigned code =
                            (codes[bit >> 3] >> (bit & 7)) & ((1u << b) - 1);
                        int l = (int)(code >> 1);
                        double y = fabs((double)v0[i]) / norm * s;
                        assert_true(l >= 0 && l <= s);
                        assert_true(l >= (int)floor(y - 1e-9) &&
                                    l <= (int)ceil(y + 1e-9));
                        if (l > 0)
                            assert_int_equal(code & 1, v0[i] < 0.0f);
                    }
                }
                /* The padding bits of the last byte stay zero. */
                if ((L_DIM * b) % 8)
                    assert_int_equal(codes[L_DIM * b / 8] >> ((L_DIM * b) % 8),
                                     0);
            }
            free(msg);
            free(v0);
            free(v);
            deft_compressor_destroy(c);
        }
    /* A zero segment: norm 0, all codes 0, residual 0. */
    deft_compressor_params_t p = params(DEFT_COMP_QSGD, DEFT_SCOPE_TENSOR, 1);
    deft_compressor_t *c = make(&L, &p);
    float *v = falloc(L_DIM);
    unsigned char *msg = malloc(deft_compressor_msg_bytes(c));
    memset(msg, 0xff, deft_compressor_msg_bytes(c));
    deft_compressor_encode(c, 0, v, msg);
    for (size_t i = 0; i < deft_compressor_msg_bytes(c); i++)
        assert_int_equal(msg[i], 0);
    for (size_t i = 0; i < L_DIM; i++)
        assert_true(v[i] == 0.0f);
    assert_true(deft_compressor_msg_finite(c, msg));
    free(msg);
    free(v);
    deft_compressor_destroy(c);
}

/* ------------------------------------------------------------------------ */
/* Round trips, linearity, determinism                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    deft_compressor_kind_t kind;
    double ratio;
    int scaled;
    int levels;
    int exact; /* residual + decode reproduces v bitwise */
} kind_case_t;

static const kind_case_t CASES[] = {
    {"none", DEFT_COMP_NONE, 1, 0, 16, 1},
    {"scale", DEFT_COMP_SCALE, 3, 0, 16, 0},
    {"scale1", DEFT_COMP_SCALE, 1, 0, 16, 1},
    {"rbgs", DEFT_COMP_RBGS, 7, 0, 16, 1},
    {"rbgs1", DEFT_COMP_RBGS, 1, 0, 16, 1},
    {"randk", DEFT_COMP_RANDK, 7, 0, 16, 1},
    {"randk-scaled", DEFT_COMP_RANDK, 7, 1, 16, 0},
    {"topk", DEFT_COMP_TOPK, 7, 0, 16, 1},
    {"sign", DEFT_COMP_SIGN, 1, 0, 16, 0},
    {"qsgd1", DEFT_COMP_QSGD, 1, 0, 1, 0},
    {"qsgd5", DEFT_COMP_QSGD, 1, 0, 5, 0},
    {"qsgd127", DEFT_COMP_QSGD, 1, 0, 127, 0},
    {"fp16", DEFT_COMP_FP16, 1, 0, 16, 1},
    {"bf16", DEFT_COMP_BF16, 1, 0, 16, 1},
    {"randk-private", DEFT_COMP_RANDK_PRIVATE, 7, 0, 16, 1},
    {"randk-private-scaled", DEFT_COMP_RANDK_PRIVATE, 7, 1, 16, 0},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

static deft_compressor_t *make_case(const kind_case_t *kc, deft_scope_t scope)
{
    deft_compressor_params_t p = params(kc->kind, scope, kc->ratio);
    p.randk_scaled = kc->scaled;
    p.qsgd_levels = kc->levels;
    return make(&L, &p);
}

/* After encode(v0 -> residual, msg), residual + decode(msg) = v0: bitwise
 * where the chosen residual is exactly 0, else within two roundings. For
 * non-linear kinds the message is decoded after another encode (it must
 * not depend on state). Also decode_add's alpha scales C. */
static void test_round_trip(void **state)
{
    (void)state;
    float *v0 = falloc(L_DIM), *v = falloc(L_DIM), *w = falloc(L_DIM);
    float *a = falloc(L_DIM), *b2 = falloc(L_DIM);
    for (size_t ci = 0; ci < N_CASES; ci++)
        for (int si = 0; si < 2; si++) {
            const kind_case_t *kc = &CASES[ci];
            deft_compressor_t *c = make_case(kc, SCOPES[si]);
            size_t bytes = deft_compressor_msg_bytes(c);
            unsigned char *msg = malloc(bytes), *msg2 = malloc(bytes);
            fill_kind(v0, L_DIM, 5, 100 + ci);
            memcpy(v, v0, sizeof(float) * L_DIM);
            deft_compressor_encode(c, 9, v, msg);
            if (!deft_compressor_is_linear(c)) {
                fill_kind(w, L_DIM, 0, 200 + ci);
                deft_compressor_encode(c, 10, w, msg2);
            }
            /* C = decode into zeros, with alpha 1 and alpha -2. */
            memset(a, 0, sizeof(float) * L_DIM);
            memset(b2, 0, sizeof(float) * L_DIM);
            deft_compressor_decode_add(c, msg, 1.0f, a);
            deft_compressor_decode_add(c, msg, -2.0f, b2);
            double vmax = 0, cmax = 0;
            for (size_t i = 0; i < L_DIM; i++) {
                vmax = fmax(vmax, fabs(v0[i]));
                cmax = fmax(cmax, fabs(a[i]));
                assert_close(b2[i], -2.0 * a[i], 1e-6, 0);
            }
            deft_compressor_decode_add(c, msg, 1.0f, v);
            for (size_t i = 0; i < L_DIM; i++) {
                if (kc->exact) {
                    if (memcmp(&v[i], &v0[i], sizeof(float)) != 0)
                        fail_msg("%s scope %d: v[%zu] = %.9g, want %.9g",
                                 kc->name, (int)SCOPES[si], i, v[i], v0[i]);
                } else {
                    assert_close(v[i], v0[i], 0, 1.2e-7 * (vmax + cmax));
                }
            }
            free(msg);
            free(msg2);
            deft_compressor_destroy(c);
        }
    free(v0);
    free(v);
    free(w);
    free(a);
    free(b2);
}

/* SPEC property 3 for rbgs (and randk and none, the other linear kinds
 * whose messages are plain copies): with the same seed and step, the sum
 * of 4 workers' messages, added in rank order, is bitwise the message of
 * the sum of their vectors added in the same order; its decode is C(sum).
 * Also select + gather reproduce the message and scatter sets exactly the
 * chosen coordinates. 20 steps, so that rbgs blocks also wrap around. */
static void test_linearity(void **state)
{
    (void)state;
    enum { K = 4 };
    const deft_compressor_kind_t kinds[] = {DEFT_COMP_RBGS, DEFT_COMP_RANDK,
                                            DEFT_COMP_NONE};
    float *vk[K], *vs = falloc(L_DIM), *sum_v = falloc(L_DIM);
    float *out = falloc(L_DIM), *out2 = falloc(L_DIM);
    for (int k = 0; k < K; k++) {
        vk[k] = falloc(L_DIM);
        fill_kind(vk[k], L_DIM, k == 3 ? 5 : 0, 300 + (uint64_t)k);
    }
    for (size_t i = 0; i < L_DIM; i++)
        sum_v[i] = ((vk[0][i] + vk[1][i]) + vk[2][i]) + vk[3][i];
    for (int ki = 0; ki < 3; ki++)
        for (int si = 0; si < 2; si++) {
            deft_compressor_params_t p = params(kinds[ki], SCOPES[si], 5);
            deft_compressor_t *c[K];
            for (int k = 0; k < K; k++) {
                p.rank = k; /* must not matter */
                c[k] = make(&L, &p);
            }
            size_t m = deft_compressor_msg_bytes(c[0]) / sizeof(float);
            float *msg[K], *msum = falloc(m), *mref = falloc(m);
            float *g = falloc(m);
            for (int k = 0; k < K; k++)
                msg[k] = falloc(m);
            for (uint64_t step = 70; step < 90; step++) {
                for (int k = 0; k < K; k++) {
                    memcpy(vs, vk[k], sizeof(float) * L_DIM);
                    deft_compressor_encode(c[k], step, vs, msg[k]);
                }
                for (size_t j = 0; j < m; j++)
                    msum[j] =
                        ((msg[0][j] + msg[1][j]) + msg[2][j]) + msg[3][j];
                memcpy(vs, sum_v, sizeof(float) * L_DIM);
                deft_compressor_encode(c[0], step, vs, mref);
                assert_memory_equal(msum, mref, m * sizeof(float));
                /* decode(sum of messages) = C(sum) = sum - residual. */
                memset(out, 0, sizeof(float) * L_DIM);
                deft_compressor_decode_add(c[1], msum, 1.0f, out);
                for (size_t i = 0; i < L_DIM; i++) {
                    float want = sum_v[i] - vs[i];
                    assert_memory_equal(&out[i], &want, sizeof(float));
                }
                deft_compressor_select(c[2], step + 1000);
                deft_compressor_select(c[2], step);
                deft_compressor_gather(c[2], sum_v, g);
                assert_memory_equal(g, mref, m * sizeof(float));
                for (size_t i = 0; i < L_DIM; i++)
                    out2[i] = 5.0f;
                deft_compressor_scatter(c[2], g, 0.5f, out2);
                for (size_t i = 0; i < L_DIM; i++) {
                    int chosen = vs[i] == 0.0f && sum_v[i] != 0.0f;
                    if (chosen)
                        assert_true(out2[i] == 0.5f * sum_v[i]);
                    else if (sum_v[i] != 0.0f)
                        assert_true(out2[i] == 5.0f);
                }
            }
            free(g);
            for (int k = 0; k < K; k++) {
                free(msg[k]);
                deft_compressor_destroy(c[k]);
            }
            free(msum);
            free(mref);
        }
    /* scale is linear only up to rounding; its gather/scatter are dense. */
    deft_compressor_params_t p = params(DEFT_COMP_SCALE, DEFT_SCOPE_TENSOR, 4);
    deft_compressor_t *c = make(&L, &p);
    deft_compressor_select(c, 3);
    deft_compressor_gather(c, sum_v, out);
    assert_memory_equal(out, sum_v, sizeof(float) * L_DIM);
    deft_compressor_scatter(c, sum_v, 2.0f, out2);
    for (size_t i = 0; i < L_DIM; i++)
        assert_true(out2[i] == 2.0f * sum_v[i]);
    deft_compressor_destroy(c);
    for (int k = 0; k < K; k++)
        free(vk[k]);
    free(vs);
    free(sum_v);
    free(out);
    free(out2);
}

/* Same seed and step: identical messages (qsgd, randk-private: also the
 * same rank).
 * rbgs blocks: consecutive indices from a start that changes with the
 * step and the seed, wrapping to the segment's first index. randk: k
 * distinct increasing indices. */
static void test_determinism(void **state)
{
    (void)state;
    float *v = falloc(L_DIM), *v0 = falloc(L_DIM);
    for (size_t ci = 0; ci < N_CASES; ci++)
        for (int si = 0; si < 2; si++) {
            deft_compressor_t *c1 = make_case(&CASES[ci], SCOPES[si]);
            deft_compressor_t *c2 = make_case(&CASES[ci], SCOPES[si]);
            size_t bytes = deft_compressor_msg_bytes(c1);
            unsigned char *m1 = malloc(bytes), *m2 = malloc(bytes);
            fill_kind(v0, L_DIM, 0, 400);
            memcpy(v, v0, sizeof(float) * L_DIM);
            deft_compressor_encode(c1, 5, v, m1);
            memcpy(v, v0, sizeof(float) * L_DIM);
            deft_compressor_encode(c2, 4, v, m2); /* state must not leak */
            memcpy(v, v0, sizeof(float) * L_DIM);
            deft_compressor_encode(c2, 5, v, m2);
            assert_memory_equal(m1, m2, bytes);
            free(m1);
            free(m2);
            deft_compressor_destroy(c1);
            deft_compressor_destroy(c2);
        }
    /* qsgd rounding is private to the rank. */
    deft_compressor_params_t p = params(DEFT_COMP_QSGD, DEFT_SCOPE_TENSOR, 1);
    deft_compressor_t *c0 = make(&L, &p);
    p.rank = 1;
    deft_compressor_t *c1 = make(&L, &p);
    size_t bytes = deft_compressor_msg_bytes(c0);
    unsigned char *m0 = malloc(bytes), *m1 = malloc(bytes);
    memcpy(v, v0, sizeof(float) * L_DIM);
    deft_compressor_encode(c0, 5, v, m0);
    memcpy(v, v0, sizeof(float) * L_DIM);
    deft_compressor_encode(c1, 5, v, m1);
    assert_true(memcmp(m0, m1, bytes) != 0);
    free(m0);
    free(m1);
    deft_compressor_destroy(c0);
    deft_compressor_destroy(c1);

    /* rbgs with v_i = local index + 1: the message spells out the block. */
    for (size_t t = 0, off = 0; t < 4; off += L_SIZES[t++])
        for (size_t i = 0; i < L_SIZES[t]; i++)
            v0[off + i] = (float)(i + 1);
    for (int si = 0; si < 2; si++) {
        if (SCOPES[si] == DEFT_SCOPE_GLOBAL)
            for (size_t i = 0; i < L_DIM; i++)
                v0[i] = (float)(i + 1);
        size_t seg[4], T = segments(&L, SCOPES[si], seg);
        size_t starts[3][4];
        for (int run = 0; run < 3; run++) {
            p = params(DEFT_COMP_RBGS, SCOPES[si], 16);
            p.seed = run == 2 ? 99 : 1234;
            deft_compressor_t *c = make(&L, &p);
            float *msg = falloc(deft_compressor_msg_bytes(c) / 4);
            memcpy(v, v0, sizeof(float) * L_DIM);
            deft_compressor_encode(c, run == 1 ? 8 : 7, v, msg);
            size_t pos = 0;
            for (size_t t = 0; t < T; t++) {
                size_t n = seg[t], b = keep(n, 16);
                size_t st = (size_t)msg[pos] - 1;
                assert_true(st < n);
                starts[run][t] = st;
                for (size_t j = 0; j < b; j++)
                    assert_true(msg[pos + j] == (float)((st + j) % n + 1));
                pos += b;
            }
            free(msg);
            deft_compressor_destroy(c);
        }
        /* The 5000-element (or global) segment's start moves with the step
         * and the seed (equal by chance with probability 1/n each). */
        size_t big = SCOPES[si] == DEFT_SCOPE_TENSOR ? 2 : 0;
        assert_true(starts[0][big] != starts[1][big]);
        assert_true(starts[0][big] != starts[2][big]);
    }

    /* rbgs starts are uniform: over 4000 steps on the 37-element tensor
     * every start occurs (each misses with probability (36/37)^4000). */
    {
        p = params(DEFT_COMP_RBGS, DEFT_SCOPE_TENSOR, 37);
        deft_compressor_t *c = make(&L, &p);
        float *msg = falloc(deft_compressor_msg_bytes(c) / 4);
        int seen[37] = {0};
        for (uint64_t step = 0; step < 4000; step++) {
            for (size_t t = 0, off = 0; t < 4; off += L_SIZES[t++])
                for (size_t i = 0; i < L_SIZES[t]; i++)
                    v[off + i] = (float)(i + 1);
            deft_compressor_encode(c, step, v, msg);
            seen[(size_t)msg[27] - 1] = 1; /* after 27 floats of tensor 0 */
        }
        for (int i = 0; i < 37; i++)
            assert_true(seen[i]);
        free(msg);
        deft_compressor_destroy(c);
    }

    /* randk: indices distinct and increasing within each segment. */
    for (int si = 0; si < 2; si++) {
        p = params(DEFT_COMP_RANDK, SCOPES[si], 3);
        deft_compressor_t *c = make(&L, &p);
        float *msg = falloc(deft_compressor_msg_bytes(c) / 4);
        for (size_t i = 0; i < L_DIM; i++)
            v[i] = (float)(i + 1);
        deft_compressor_encode(c, 3, v, msg);
        size_t seg[4], T = segments(&L, SCOPES[si], seg), pos = 0, off = 0;
        for (size_t t = 0; t < T; off += seg[t++]) {
            size_t k = keep(seg[t], 3);
            for (size_t j = 0; j < k; j++) {
                assert_true(msg[pos + j] >= (float)(off + 1) &&
                            msg[pos + j] <= (float)(off + seg[t]));
                if (j)
                    assert_true(msg[pos + j] > msg[pos + j - 1]);
                assert_true(v[(size_t)msg[pos + j] - 1] == 0.0f);
            }
            pos += k;
        }
        free(msg);
        deft_compressor_destroy(c);
    }
    free(v);
    free(v0);
}

/* ------------------------------------------------------------------------ */
/* randk-private: each worker its own coordinates                           */
/* ------------------------------------------------------------------------ */

/* Checks a randk-private message of v0 (v its residual) against the
 * definition: per segment keep(n, ratio) increasing indices inside the
 * segment, then their values v0_i (times n/k when scaled), residual
 * v0_i - value there and v0_i elsewhere, bitwise. Sets chosen[i] (d bytes)
 * to whether i was chosen. */
static void check_randk_private(const deft_compressor_params_t *p,
                                const float *v0, const float *v,
                                const unsigned char *msg,
                                unsigned char *chosen)
{
    size_t seg[4], T = segments(&L, p->scope, seg), K = 0;
    for (size_t t = 0; t < T; t++)
        K += keep(seg[t], p->ratio);
    memset(chosen, 0, L_DIM);
    for (size_t t = 0, off = 0, pos = 0; t < T; off += seg[t++]) {
        const size_t k = keep(seg[t], p->ratio);
        const float f = (float)((double)seg[t] / (double)k);
        uint32_t prev = 0;
        for (size_t j = 0; j < k; j++, pos++) {
            uint32_t i;
            float val;
            memcpy(&i, msg + 4 * pos, 4);
            memcpy(&val, msg + 4 * (K + pos), 4);
            assert_true(i >= off && i < off + seg[t]);
            assert_true(j == 0 || i > prev);
            prev = i;
            chosen[i] = 1;
            float want = p->randk_scaled ? f * v0[i] : v0[i];
            float res = p->randk_scaled ? v0[i] - want : 0.0f;
            assert_memory_equal(&val, &want, 4);
            assert_memory_equal(&v[i], &res, 4);
        }
    }
    for (size_t i = 0; i < L_DIM; i++)
        if (!chosen[i])
            assert_memory_equal(&v[i], &v0[i], 4);
}

/* Four ranks with the same seed and step: each message is per the
 * definition; the ranks' coordinate sets differ, and overlap as much as
 * independent uniform k-subsets do (mean k^2/n over 200 steps, within 5
 * sigma of the hypergeometric); the same rank again (a fresh compressor,
 * after another step) gives the same message bitwise; and the decoded
 * messages add up to the sum of the workers' C(v_k) = v_k - residual_k. */
static void test_randk_private_ranks(void **state)
{
    (void)state;
    enum { K = 4, N = 200 };
    float *v0[K], *v = falloc(L_DIM), *out = falloc(L_DIM);
    double *want = calloc(L_DIM, sizeof *want);
    unsigned char *chosen[K];
    assert_non_null(want);
    for (int r = 0; r < K; r++) {
        v0[r] = falloc(L_DIM);
        fill_kind(v0[r], L_DIM, r == 3 ? 5 : 0, 700 + (uint64_t)r);
        chosen[r] = malloc(L_DIM);
        assert_non_null(chosen[r]);
    }
    for (int si = 0; si < 2; si++)
        for (int scaled = 0; scaled < 2; scaled++) {
            deft_compressor_params_t p =
                params(DEFT_COMP_RANDK_PRIVATE, SCOPES[si], 5);
            p.randk_scaled = scaled;
            deft_compressor_t *c[K];
            for (int r = 0; r < K; r++) {
                p.rank = r;
                c[r] = make(&L, &p);
            }
            p.rank = 2;
            deft_compressor_t *again = make(&L, &p);
            const size_t bytes = deft_compressor_msg_bytes(c[0]);
            unsigned char *msg[K], *m2 = malloc(bytes);
            for (int r = 0; r < K; r++)
                msg[r] = malloc(bytes);
            /* the largest segment: the 5000-element tensor or everything */
            const size_t big_off = si == 0 ? 1037 : 0;
            const size_t big_n = si == 0 ? 5000 : L_DIM;
            const double kb = (double)keep(big_n, 5), nb = (double)big_n;
            double overlap = 0;
            for (uint64_t step = 0; step < N; step++) {
                for (int r = 0; r < K; r++) {
                    memcpy(v, v0[r], sizeof(float) * L_DIM);
                    deft_compressor_encode(c[r], step, v, msg[r]);
                    p.rank = r;
                    check_randk_private(&p, v0[r], v, msg[r], chosen[r]);
                    if (step == 3) {
                        for (size_t i = 0; i < L_DIM; i++)
                            want[i] = r ? want[i] + (double)(v0[r][i] - v[i])
                                        : (double)(v0[r][i] - v[i]);
                    }
                }
                for (int r = 0; r < K; r++)
                    for (int q = r + 1; q < K; q++)
                        assert_true(memcmp(chosen[r] + big_off,
                                           chosen[q] + big_off, big_n) != 0);
                for (size_t i = big_off; i < big_off + big_n; i++)
                    overlap += chosen[0][i] & chosen[1][i];
                if (step == 3) {
                    /* same rank, fresh state, after another step: same bits */
                    memcpy(v, v0[2], sizeof(float) * L_DIM);
                    deft_compressor_encode(again, step + 1, v, m2);
                    memcpy(v, v0[2], sizeof(float) * L_DIM);
                    deft_compressor_encode(again, step, v, m2);
                    assert_memory_equal(m2, msg[2], bytes);
                    /* any rank's compressor decodes any message */
                    memset(out, 0, sizeof(float) * L_DIM);
                    for (int r = 0; r < K; r++)
                        deft_compressor_decode_add(c[(r + 1) % K], msg[r],
                                                   1.0f, out);
                    for (size_t i = 0; i < L_DIM; i++)
                        assert_close(out[i], want[i], 1e-6, 1e-6);
                }
            }
            const double mean = kb * kb / nb;
            const double var = kb * (kb / nb) * (1 - kb / nb) * (nb - kb) /
                               (nb - 1);
            if (!scaled)
                printf("  randk-private scope %d: mean overlap of two ranks' "
                       "%g-subsets of %g: %.2f (independent: %.2f)\n",
                       (int)SCOPES[si], kb, nb, overlap / N, mean);
            assert_close(overlap / N, mean, 0, 5 * sqrt(var / N));
            for (int r = 0; r < K; r++) {
                free(msg[r]);
                deft_compressor_destroy(c[r]);
            }
            free(m2);
            deft_compressor_destroy(again);
        }
    for (int r = 0; r < K; r++) {
        free(v0[r]);
        free(chosen[r]);
    }
    free(v);
    free(out);
    free(want);
}

/* Uniform selection: over N steps coordinate i of a segment is chosen
 * Binomial(N, k/n) times; every count is within 6 sigma of N k/n (a miss
 * anywhere among the 6038 coordinates has probability below 1.2e-5;
 * the 1-element tensor is chosen every step). Two ranks, both scopes. */
static void test_randk_private_uniform(void **state)
{
    (void)state;
    enum { N = 4000 };
    const int ranks[] = {0, 3};
    float *v = falloc(L_DIM);
    uint32_t *count = malloc(L_DIM * sizeof *count);
    assert_non_null(count);
    for (int si = 0; si < 2; si++)
        for (int ri = 0; ri < 2; ri++) {
            deft_compressor_params_t p =
                params(DEFT_COMP_RANDK_PRIVATE, SCOPES[si], 4);
            p.rank = ranks[ri];
            deft_compressor_t *c = make(&L, &p);
            const size_t K = deft_compressor_msg_bytes(c) / 8;
            uint32_t *msg = malloc(8 * K);
            memset(count, 0, L_DIM * sizeof *count);
            for (uint64_t step = 0; step < N; step++) {
                deft_compressor_encode(c, step, v, msg);
                for (size_t j = 0; j < K; j++)
                    count[msg[j]]++;
            }
            size_t seg[4], T = segments(&L, SCOPES[si], seg);
            double worst = 0;
            for (size_t t = 0, off = 0; t < T; off += seg[t++]) {
                const double m = (double)keep(seg[t], 4) / (double)seg[t];
                const double sd = sqrt(N * m * (1 - m));
                for (size_t i = off; i < off + seg[t]; i++) {
                    double z = fabs(count[i] - N * m);
                    if (z > 6 * sd + 1e-9)
                        fail_msg("scope %d rank %d: coordinate %zu chosen %u "
                                 "times in %d steps, expected %.1f +- %.1f",
                                 (int)SCOPES[si], ranks[ri], i, count[i], N,
                                 N * m, sd);
                    if (sd > 0 && z / sd > worst)
                        worst = z / sd;
                }
            }
            printf("  randk-private scope %d rank %d: largest deviation of a "
                   "coordinate's count %.2f sigma\n", (int)SCOPES[si],
                   ranks[ri], worst);
            free(msg);
            deft_compressor_destroy(c);
        }
    free(count);
    free(v);
}

/* ------------------------------------------------------------------------ */
/* msg_finite, poison, NaN, unaligned messages                              */
/* ------------------------------------------------------------------------ */

static void test_finite_and_poison(void **state)
{
    (void)state;
    float *v = falloc(L_DIM), *out = falloc(L_DIM);
    for (size_t ci = 0; ci < N_CASES; ci++)
        for (int si = 0; si < 2; si++) {
            deft_compressor_t *c = make_case(&CASES[ci], SCOPES[si]);
            size_t bytes = deft_compressor_msg_bytes(c);
            unsigned char *msg = malloc(bytes);
            fill_kind(v, L_DIM, 0, 500);
            deft_compressor_encode(c, 0, v, msg);
            assert_true(deft_compressor_msg_finite(c, msg));
            deft_compressor_poison(c, msg);
            assert_false(deft_compressor_msg_finite(c, msg));
            /* NaN in v: always visible for kinds that send a function of
             * every element, and for topk (NaN sorts above everything). */
            if (CASES[ci].kind == DEFT_COMP_TOPK ||
                CASES[ci].kind == DEFT_COMP_SIGN ||
                CASES[ci].kind == DEFT_COMP_QSGD ||
                CASES[ci].kind == DEFT_COMP_NONE ||
                CASES[ci].kind == DEFT_COMP_SCALE) {
                fill_kind(v, L_DIM, 0, 501);
                v[1500] = NAN;
                deft_compressor_encode(c, 1, v, msg);
                assert_false(deft_compressor_msg_finite(c, msg));
                fill_kind(v, L_DIM, 0, 502);
                v[4000] = -INFINITY;
                deft_compressor_encode(c, 1, v, msg);
                assert_false(deft_compressor_msg_finite(c, msg));
            }
            free(msg);
            deft_compressor_destroy(c);
        }
    /* topk keeps the NaN itself, at its index. */
    deft_compressor_params_t p = params(DEFT_COMP_TOPK, DEFT_SCOPE_TENSOR, 100);
    deft_compressor_t *c = make(&L, &p);
    unsigned char *msg = malloc(deft_compressor_msg_bytes(c));
    fill_kind(v, L_DIM, 5, 503);
    v[1500] = NAN;
    deft_compressor_encode(c, 0, v, msg);
    size_t K = deft_compressor_msg_bytes(c) / 8;
    int found = 0;
    for (size_t j = 0; j < K; j++) {
        uint32_t i;
        memcpy(&i, msg + 4 * j, 4);
        if (i == 1500) {
            float x;
            memcpy(&x, msg + 4 * K + 4 * j, 4);
            found = isnan(x);
        }
    }
    assert_true(found);
    assert_true(v[1500] == 0.0f);
    free(msg);
    deft_compressor_destroy(c);

    /* sign and qsgd messages sit at any byte offset inside an allgather
     * buffer (their size need not be a multiple of 4): decoding, checking
     * and poisoning an unaligned copy gives the same results. */
    const deft_compressor_kind_t nl[] = {DEFT_COMP_SIGN, DEFT_COMP_QSGD};
    for (int ki = 0; ki < 2; ki++) {
        p = params(nl[ki], DEFT_SCOPE_TENSOR, 1);
        c = make(&L, &p);
        size_t bytes = deft_compressor_msg_bytes(c);
        unsigned char *m = malloc(bytes), *buf = malloc(bytes + 8);
        float *out2 = falloc(L_DIM);
        fill_kind(v, L_DIM, 0, 504);
        deft_compressor_encode(c, 2, v, m);
        memcpy(buf + 3, m, bytes);
        memset(out, 0, sizeof(float) * L_DIM);
        deft_compressor_decode_add(c, m, 1.0f, out);
        deft_compressor_decode_add(c, buf + 3, 1.0f, out2);
        assert_memory_equal(out, out2, sizeof(float) * L_DIM);
        assert_true(deft_compressor_msg_finite(c, buf + 3));
        deft_compressor_poison(c, buf + 3);
        assert_false(deft_compressor_msg_finite(c, buf + 3));
        free(m);
        free(buf);
        free(out2);
        deft_compressor_destroy(c);
    }
    free(v);
    free(out);
}

/* sign: the scale is the mean |v| of each segment, 0 maps to +scale, and
 * the bits follow v_i < 0 at bit i % 8 of byte i / 8. */
static void test_sign_layout(void **state)
{
    (void)state;
    for (int si = 0; si < 2; si++) {
        deft_compressor_params_t p = params(DEFT_COMP_SIGN, SCOPES[si], 1);
        deft_compressor_t *c = make(&L, &p);
        float *v0 = falloc(L_DIM), *v = falloc(L_DIM);
        unsigned char *msg = malloc(deft_compressor_msg_bytes(c));
        fill_kind(v0, L_DIM, 0, 600);
        v0[3] = 0.0f;
        v0[4] = -0.0f;
        memcpy(v, v0, sizeof(float) * L_DIM);
        deft_compressor_encode(c, 0, v, msg);
        size_t seg[4], T = segments(&L, SCOPES[si], seg);
        const unsigned char *bits = msg + 4 * T;
        for (size_t t = 0, off = 0; t < T; off += seg[t++]) {
            double l1 = 0;
            for (size_t i = off; i < off + seg[t]; i++)
                l1 += fabs(v0[i]);
            float scale;
            memcpy(&scale, msg + 4 * t, 4);
            assert_close(scale, l1 / seg[t], 1e-6, 0);
            for (size_t i = off; i < off + seg[t]; i++) {
                int bit = (bits[i / 8] >> (i % 8)) & 1;
                assert_int_equal(bit, v0[i] < 0.0f);
                float ci = bit ? -scale : scale;
                assert_close(v[i], v0[i] - ci, 0, 1e-7);
            }
        }
        assert_int_equal(bits[L_DIM / 8] >> (L_DIM % 8), 0);
        free(msg);
        free(v0);
        free(v);
        deft_compressor_destroy(c);
    }
}

/* Non-linear kinds ignore select/gather/scatter. */
static void test_nonlinear_noops(void **state)
{
    (void)state;
    const deft_compressor_kind_t kinds[] = {DEFT_COMP_TOPK,
                                            DEFT_COMP_RANDK_PRIVATE};
    for (int ki = 0; ki < 2; ki++) {
        deft_compressor_params_t p = params(kinds[ki], DEFT_SCOPE_TENSOR, 4);
        deft_compressor_t *c = make(&L, &p);
        float *v = falloc(L_DIM), *m = falloc(L_DIM);
        for (size_t i = 0; i < L_DIM; i++)
            v[i] = 3.0f;
        deft_compressor_select(c, 1);
        deft_compressor_gather(c, v, m);
        deft_compressor_scatter(c, m, 1.0f, v);
        for (size_t i = 0; i < L_DIM; i++)
            assert_true(v[i] == 3.0f && m[i] == 0.0f);
        free(v);
        free(m);
        deft_compressor_destroy(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msg_sizes),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_topk_exact_small),
        cmocka_unit_test(test_topk_exact_mid),
        cmocka_unit_test(test_topk_exact_large),
        cmocka_unit_test(test_topk_exact_heap_small),
        cmocka_unit_test(test_topk_exact_ratio256),
        cmocka_unit_test(test_topk_contraction),
        cmocka_unit_test(test_expected_contraction),
        cmocka_unit_test(test_randk_scaled_unbiased),
        cmocka_unit_test(test_qsgd_unbiased),
        cmocka_unit_test(test_qsgd_levels),
        cmocka_unit_test(test_qsgd_matches_scalar_definition),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_linearity),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_randk_private_ranks),
        cmocka_unit_test(test_randk_private_uniform),
        cmocka_unit_test(test_finite_and_poison),
        cmocka_unit_test(test_sign_layout),
        cmocka_unit_test(test_nonlinear_noops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* fp16 and bf16 (src/compress/half.h, fp16.c, bf16.c) and the 16-bit
 * allreduce: exact round trips on every representable value, nearest-even
 * rounding checked against the neighbouring 16-bit values, overflow to
 * Inf, NaN/Inf reported as divergence, halved bytes, and the sum decoded
 * to float in rank order. */
#include "testutil.h"
#include "lsq.h"

#include "comm/comm_internal.h"
#include "compress/compress.h"
#include "compress/half.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    uint16_t (*to16)(float);
    float (*to32)(uint16_t);
    uint16_t max_finite; /* largest finite positive pattern */
} fmt_t;

static const fmt_t FMTS[2] = {
    {"fp16", deft_f32_to_f16, deft_f16_to_f32, 0x7bff},
    {"bf16", deft_f32_to_bf16, deft_bf16_to_f32, 0x7f7f},
};

/* Every 16-bit pattern: decoding is exact, so encoding the decoded value
 * must give the pattern back (NaNs stay NaN). */
static void test_round_trip_exhaustive(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++)
        for (uint32_t h = 0; h < 65536; h++) {
            float x = FMTS[f].to32((uint16_t)h);
            uint16_t back = FMTS[f].to16(x);
            if (isnan(x)) {
                if (!isnan(FMTS[f].to32(back)))
                    fail_msg("%s: NaN 0x%04x came back as 0x%04x",
                             FMTS[f].name, h, back);
            } else if (back != h) {
                fail_msg("%s: 0x%04x -> %.9g -> 0x%04x", FMTS[f].name, h,
                         (double)x, back);
            }
        }
}

/* The nearest 16-bit value to x among the candidates around the result,
 * ties to the even pattern; both compared in double (exact here). */
static void check_nearest(const fmt_t *fm, float x)
{
    uint16_t h = fm->to16(x);
    double y = fm->to32(h), err = fabs((double)x - y);
    uint16_t mag = h & 0x7fff, sign = h & 0x8000;
    if (mag > fm->max_finite) { /* Inf: x must be at or past the midpoint */
        double top = fm->to32(fm->max_finite);
        double next = fm->name[0] == 'f' ? 65536.0 : ldexp(1.0, 128);
        if (!(fabs((double)x) >= (top + next) / 2))
            fail_msg("%s: %.9g rounded to Inf", fm->name, (double)x);
        return;
    }
    for (int dlt = -1; dlt <= 1; dlt += 2) {
        int nb = (int)mag + dlt;
        if (nb < 0 || nb > fm->max_finite)
            continue;
        double z = fm->to32((uint16_t)(sign | nb));
        double e2 = fabs((double)x - z);
        if (e2 < err || (e2 == err && (mag & 1)))
            fail_msg("%s: %.9g -> %.9g (0x%04x), but %.9g is %s", fm->name,
                     (double)x, y, h, z, e2 < err ? "nearer" : "as near and even");
    }
}

static void test_nearest_even(void **state)
{
    (void)state;
    deft_rng_t g = deft_rng_make(1, 2, 3, DEFT_STREAM_TEST);
    for (int f = 0; f < 2; f++) {
        const fmt_t *fm = &FMTS[f];
        for (int i = 0; i < 200000; i++) {
            /* random exponent over the whole range, random mantissa bits */
            uint32_t u = (uint32_t)deft_rng_u64(&g);
            int e = f == 0 ? 127 - 27 + (int)(u % 45) : 1 + (int)(u % 253);
            uint32_t bits = (uint32_t)e << 23 | ((uint32_t)(u >> 8) & 0x7fffff);
            if (u & 0x80)
                bits |= 0x80000000u;
            check_nearest(fm, deft_bits_f32(bits));
        }
        /* exact midpoints between neighbours: ties go to even */
        for (uint32_t h = 0; h < fm->max_finite; h += 7) {
            double a = fm->to32((uint16_t)h), b = fm->to32((uint16_t)(h + 1));
            float mid = (float)((a + b) / 2);
            if ((double)mid == (a + b) / 2) {
                uint16_t r = fm->to16(mid);
                uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
                if (r != want)
                    fail_msg("%s: midpoint %.9g of 0x%04x, 0x%04x -> 0x%04x",
                             fm->name, (double)mid, h, h + 1, r);
            }
        }
    }
    /* fp16's edges */
    assert_int_equal(deft_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(deft_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(deft_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(deft_f32_to_f16(-1e9f), 0xfc00);
    assert_int_equal(deft_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(deft_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
    assert_int_equal(deft_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* tie: even */
    assert_int_equal(deft_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    assert_true(isnan(deft_f16_to_f32(deft_f32_to_f16(NAN))));
    assert_int_equal(deft_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(deft_f32_to_bf16(3.4028235e38f), 0x7f80);
    assert_true(isnan(deft_bf16_to_f32(deft_f32_to_bf16(NAN))));
}

static deft_compressor_t *make16(deft_compressor_kind_t kind, size_t *sizes,
                                 size_t nt)
{
    deft_layout_t l = {nt, sizes, NULL};
    deft_compressor_params_t p = {kind, 1, DEFT_SCOPE_TENSOR, 0, 16, 7, 0, 1};
    deft_compressor_t *c = NULL;
    assert_status(deft_compressor_create(&c, &l, &p), DEFT_OK);
    return c;
}

/* The compressor: message = d halves, residual + decode = v bitwise,
 * out-of-range values become Inf and fail msg_finite, poison works. */
static void test_compressor(void **state)
{
    (void)state;
    size_t sizes[2] = {300, 77};
    const deft_compressor_kind_t kinds[2] = {DEFT_COMP_FP16, DEFT_COMP_BF16};
    for (int f = 0; f < 2; f++) {
        deft_compressor_t *c = make16(kinds[f], sizes, 2);
        assert_int_equal(deft_compressor_msg_bytes(c), 2 * 377);
        assert_int_equal(deft_compressor_wire(c),
                         f ? DEFT_WIRE_SUM_BF16 : DEFT_WIRE_SUM_F16);
        float v[377], v0[377], dec[377];
        uint16_t msg[377];
        deft_test_fill(v0, 377, 5 + f);
        for (int i = 0; i < 377; i++)
            v0[i] *= 100.0f;
        memcpy(v, v0, sizeof v);
        deft_compressor_encode(c, 0, v, msg);
        memset(dec, 0, sizeof dec);
        deft_compressor_decode_add(c, msg, 1.0f, dec);
        for (int i = 0; i < 377; i++) {
            assert_int_equal(msg[i], FMTS[f].to16(v0[i]));
            assert_true(dec[i] + v[i] == v0[i]);
        }
        assert_true(deft_compressor_msg_finite(c, msg));
        deft_compressor_poison(c, msg);
        assert_false(deft_compressor_msg_finite(c, msg));
        /* fp16 overflows at 65520; bf16 only at float's own Inf */
        memcpy(v, v0, sizeof v);
        v[100] = f ? INFINITY : 1e6f;
        deft_compressor_encode(c, 1, v, msg);
        assert_false(deft_compressor_msg_finite(c, msg));
        deft_compressor_destroy(c);
    }
}

/* ---- 16-bit allreduce and the optimizer on the threads backend -------- */

enum { AR_N = 1000, AR_K = 3 };

typedef struct {
    uint16_t in[AR_K][AR_N];
    uint16_t out[AR_K][AR_N];
    deft_comm_stats_t stats[AR_K];
    int bf16;
} ar_t;

static deft_status_t ar_worker(deft_comm_t *comm, void *arg)
{
    ar_t *a = arg;
    int r = deft_comm_rank(comm);
    memcpy(a->out[r], a->in[r], sizeof a->out[r]);
    deft_status_t st = deft_comm_allreduce_sum_half(comm, a->out[r], AR_N, a->bf16);
    deft_comm_get_stats(comm, &a->stats[r]);
    return st;
}

static void test_allreduce_half(void **state)
{
    (void)state;
    ar_t *a = calloc(1, sizeof *a);
    assert_non_null(a);
    for (int f = 0; f < 2; f++) {
        a->bf16 = f;
        float x[AR_N];
        for (int r = 0; r < AR_K; r++) {
            deft_test_fill(x, AR_N, 40 + r);
            for (int i = 0; i < AR_N; i++)
                a->in[r][i] = FMTS[f].to16(x[i] * 3.0f);
        }
        assert_status(deft_run_threads(AR_K, ar_worker, a), DEFT_OK);
        for (int i = 0; i < AR_N; i++) {
            float s = 0.0f; /* decoded, added in float in rank order */
            for (int r = 0; r < AR_K; r++)
                s += FMTS[f].to32(a->in[r][i]);
            uint16_t want = FMTS[f].to16(s);
            for (int r = 0; r < AR_K; r++)
                if (a->out[r][i] != want)
                    fail_msg("%s: element %d on rank %d: got 0x%04x, want 0x%04x",
                             FMTS[f].name, i, r, a->out[r][i], want);
        }
        for (int r = 0; r < AR_K; r++) {
            /* half of a float allreduce's bytes */
            assert_int_equal(a->stats[r].payload_bytes, 2 * AR_N);
            assert_int_equal(a->stats[r].bytes_sent,
                             deft_ring_allreduce_bytes(AR_N, AR_K, r) / 2);
        }
    }
    free(a);
}

typedef struct {
    deft_compressor_kind_t kind;
    int steps;
    int bad_step; /* worker 1 sends a bad gradient here (-1: never) */
    float bad;    /* the value it sends */
    lsq_t p;
    float final_x[4][LSQ_D];
    uint64_t payload[4];
    deft_status_t last[4];
} opt_run_t;

static deft_status_t opt_worker(deft_comm_t *comm, void *arg)
{
    opt_run_t *a = arg;
    int r = deft_comm_rank(comm);
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.algo = DEFT_ALGO_EF;
    cfg.compressor = a->kind;
    cfg.lr = 0.05f;
    cfg.momentum = 0.5f;
    cfg.seed = 9;
    float x0[LSQ_D], grad[LSQ_D];
    deft_test_fill(x0, LSQ_D, 3);
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &cfg);
    if (st != DEFT_OK)
        return st;
    for (int s = 0; s < a->steps && st == DEFT_OK; s++) {
        const float *pt;
        deft_optim_ask(opt, &pt);
        lsq_grad(&a->p, r, pt, grad);
        if (s == a->bad_step && r == 1)
            grad[5] = a->bad;
        deft_step_info_t info;
        st = deft_optim_tell(opt, grad, &info);
        a->payload[r] = info.payload_bytes;
    }
    a->last[r] = st;
    const float *x;
    deft_optim_params(opt, &x);
    memcpy(a->final_x[r], x, sizeof a->final_x[r]);
    deft_optim_destroy(opt);
    return st == DEFT_ERR_DIVERGED ? DEFT_OK : st;
}

/* EF over fp16/bf16 on 4 workers: half the bytes of none, the same model
 * on every worker, bitwise repeatable, close to the uncompressed run; a
 * gradient beyond the 16-bit range ends the run as divergence on all. */
static void test_optimizer(void **state)
{
    (void)state;
    opt_run_t *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    opt_run_t *ref = calloc(1, sizeof *ref);
    assert_true(a && b && ref);
    lsq_init(&ref->p, 4, 21);
    ref->kind = DEFT_COMP_NONE;
    ref->steps = 300;
    ref->bad_step = -1;
    assert_status(deft_run_threads(4, opt_worker, ref), DEFT_OK);
    const deft_compressor_kind_t kinds[2] = {DEFT_COMP_FP16, DEFT_COMP_BF16};
    for (int f = 0; f < 2; f++) {
        for (opt_run_t *o = a; o; o = o == a ? b : NULL) {
            o->p = ref->p;
            o->kind = kinds[f];
            o->steps = 300;
            o->bad_step = -1;
            assert_status(deft_run_threads(4, opt_worker, o), DEFT_OK);
        }
        assert_int_equal(a->payload[0], 2 * LSQ_D);
        assert_int_equal(ref->payload[0], 4 * LSQ_D);
        assert_memory_equal(a->final_x, b->final_x, sizeof a->final_x);
        for (int r = 1; r < 4; r++)
            assert_memory_equal(a->final_x[0], a->final_x[r], sizeof a->final_x[0]);
        /* error feedback keeps the 16-bit run on the uncompressed one */
        double diff = deft_test_max_rel_diff(a->final_x[0], ref->final_x[0],
                                             LSQ_D, 1e-2);
        printf("%s: max rel diff to none after 300 steps %.3g\n",
               FMTS[f].name, diff);
        assert_true(diff < (f ? 2e-2 : 2e-3));
        /* fp16: 1e30 is finite in float (no local NaN/Inf) but Inf in
         * the 16-bit message; bf16 has float's range: a NaN. */
        a->bad_step = 7;
        a->bad = f ? NAN : 1e30f;
        a->steps = 20;
        assert_status(deft_run_threads(4, opt_worker, a), DEFT_OK);
        for (int r = 0; r < 4; r++)
            assert_status(a->last[r], DEFT_ERR_DIVERGED);
    }
    lsq_free(&ref->p);
    free(a);
    free(b);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_exhaustive),
        cmocka_unit_test(test_nearest_even),
        cmocka_unit_test(test_compressor),
        cmocka_unit_test(test_allreduce_half),
        cmocka_unit_test(test_optimizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

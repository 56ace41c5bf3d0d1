/* Compressor throughput: encode and decode_add of every compressor on d
 * floats (default 16M, or argv[1]) of normal-ish data, next to the memcpy
 * time of the same d floats measured in the same run. Per-tensor scope
 * uses 16 equal tensors; topk also runs with global scope. Best of several
 * repetitions (v is refilled outside the timed region: encode overwrites
 * it); no assertions on time. GB/s and ns/el refer to the dense vector of
 * d floats, "x mcpy" is the time over the memcpy time. powersgd sees the
 * 16 tensors as 1024-row matrices (1024 x 1024 at the default d) and
 * its encode is both rounds for one worker (deft_compressor_encode_local),
 * with OpenBLAS on one thread as in training.
 *
 * Usage: bench_compress [d] [reps] */
#include "compress/compress.h"
#include "compress/compress_impl.h"
#include "core/internal.h"
#include "core/rng.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_TENSORS 16
#define TOPK_TARGET_NS 1.0
#define QSGD_TARGET_X_MEMCPY 1.5
#define PSGD_ROWS 1024

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sum of 4 uniforms, centred and scaled: close to N(0, 1), and cheap. */
static void fill_normalish(float *v, size_t n, uint64_t seed)
{
    deft_rng_t r = deft_rng_make(seed, 0, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < n; i++) {
        uint64_t x = deft_rng_u64(&r);
        double s = (double)(x & 0xffff) + (double)((x >> 16) & 0xffff) +
                   (double)((x >> 32) & 0xffff) + (double)(x >> 48);
        v[i] = (float)((s / 65536.0 - 2.0) * 1.7320508);
    }
}

typedef struct {
    const char *label;
    deft_compressor_kind_t kind;
    deft_scope_t scope;
    double ratio;
    int randk_scaled;
    int qsgd_levels;
    int powersgd_rank;
} bench_case_t;

int main(int argc, char **argv)
{
    size_t d = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : (size_t)1 << 24;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (d < N_TENSORS || reps < 1) {
        fprintf(stderr, "usage: bench_compress [d >= %d] [reps >= 1]\n",
                N_TENSORS);
        return 2;
    }
    openblas_set_num_threads(1); /* powersgd's sgemm, as the trainer runs it */
    float *src = deft_alloc(d * sizeof(float));
    float *v = deft_alloc(d * sizeof(float));
    float *out = deft_alloc(d * sizeof(float));
    void *msg = deft_alloc(d * sizeof(float) + 4096); /* >= any message */
    if (!src || !v || !out || !msg) {
        fprintf(stderr, "bench_compress: out of memory for d = %zu\n", d);
        return 1;
    }
    fill_normalish(src, d, 42);
    memcpy(v, src, d * sizeof(float));
    memset(out, 0, d * sizeof(float));
    memset(msg, 0, d * sizeof(float) + 4096);

    size_t sizes[N_TENSORS];
    for (int t = 0; t < N_TENSORS; t++)
        sizes[t] = d / N_TENSORS + (t == N_TENSORS - 1 ? d % N_TENSORS : 0);
    size_t rows[N_TENSORS];
    for (int t = 0; t < N_TENSORS; t++)
        rows[t] = sizes[t] % PSGD_ROWS == 0 ? PSGD_ROWS : 0;
    deft_layout_t layout = {N_TENSORS, sizes, rows};

    double t_memcpy = 1e30;
    for (int r = 0; r < reps + 2; r++) {
        double t0 = now_s();
        memcpy(v, src, d * sizeof(float));
        double t1 = now_s();
        t_memcpy = t1 - t0 < t_memcpy ? t1 - t0 : t_memcpy;
    }
    const double bytes = (double)d * sizeof(float);
    printf("bench_compress: d = %zu floats (%.1f MB), %d reps, best time\n",
           d, bytes / 1e6, reps);
    printf("memcpy of d floats: %.3f ms, %.2f GB/s, %.3f ns/element\n\n",
           t_memcpy * 1e3, bytes / t_memcpy / 1e9, t_memcpy * 1e9 / (double)d);

    const bench_case_t cases[] = {
        {"none", DEFT_COMP_NONE, DEFT_SCOPE_TENSOR, 1, 0, 0, 0},
        {"scale", DEFT_COMP_SCALE, DEFT_SCOPE_TENSOR, 256, 0, 0, 0},
        {"rbgs", DEFT_COMP_RBGS, DEFT_SCOPE_TENSOR, 256, 0, 0, 0},
        {"randk", DEFT_COMP_RANDK, DEFT_SCOPE_TENSOR, 256, 0, 0, 0},
        {"randk-scaled", DEFT_COMP_RANDK, DEFT_SCOPE_TENSOR, 256, 1, 0, 0},
        {"randk-private", DEFT_COMP_RANDK_PRIVATE, DEFT_SCOPE_TENSOR, 256, 0, 0,
         0},
        {"topk", DEFT_COMP_TOPK, DEFT_SCOPE_TENSOR, 256, 0, 0, 0},
        {"topk-global", DEFT_COMP_TOPK, DEFT_SCOPE_GLOBAL, 256, 0, 0, 0},
        {"topk-1024", DEFT_COMP_TOPK, DEFT_SCOPE_TENSOR, 1024, 0, 0, 0},
        {"sign", DEFT_COMP_SIGN, DEFT_SCOPE_TENSOR, 1, 0, 0, 0},
        {"qsgd-s1", DEFT_COMP_QSGD, DEFT_SCOPE_TENSOR, 1, 0, 1, 0},
        {"qsgd-s16", DEFT_COMP_QSGD, DEFT_SCOPE_TENSOR, 1, 0, 16, 0},
        {"qsgd-s7", DEFT_COMP_QSGD, DEFT_SCOPE_TENSOR, 1, 0, 7, 0},
        {"fp16", DEFT_COMP_FP16, DEFT_SCOPE_TENSOR, 1, 0, 0, 0},
        {"bf16", DEFT_COMP_BF16, DEFT_SCOPE_TENSOR, 1, 0, 0, 0},
        {"powersgd-r1", DEFT_COMP_POWERSGD, DEFT_SCOPE_TENSOR, 1, 0, 0, 1},
        {"powersgd-r4", DEFT_COMP_POWERSGD, DEFT_SCOPE_TENSOR, 1, 0, 0, 4},
    };
    printf("%-13s %-6s %8s | %9s %7s %7s %7s | %9s %7s %7s %7s\n", "compressor",
           "scope", "msg MB", "enc ms", "GB/s", "ns/el", "x mcpy", "dec ms",
           "GB/s", "ns/el", "x mcpy");
    double enc_ns[sizeof cases / sizeof cases[0]];
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const bench_case_t *bc = &cases[ci];
        deft_compressor_params_t p = {bc->kind,        bc->ratio,
                                      bc->scope,       bc->randk_scaled,
                                      bc->qsgd_levels, 7,
                                      0,               bc->powersgd_rank};
        deft_compressor_t *c;
        if (deft_compressor_create(&c, &layout, &p) != DEFT_OK) {
            fprintf(stderr, "bench_compress: %s: %s\n", bc->label,
                    deft_last_error());
            return 1;
        }
        double t_enc = 1e30, t_dec = 1e30;
        for (int r = 0; r < reps; r++) {
            memcpy(v, src, d * sizeof(float)); /* encode overwrites v */
            double t0 = now_s();
            deft_compressor_encode_local(c, (uint64_t)r, v, msg);
            double t1 = now_s();
            t_enc = t1 - t0 < t_enc ? t1 - t0 : t_enc;
        }
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            deft_compressor_decode_add(c, msg, 0.5f, out);
            double t1 = now_s();
            t_dec = t1 - t0 < t_dec ? t1 - t0 : t_dec;
        }
        enc_ns[ci] = t_enc * 1e9 / (double)d;
        printf("%-13s %-6s %8.3f | %9.3f %7.2f %7.3f %7.2f | %9.3f %7.2f "
               "%7.3f %7.2f\n",
               bc->label, bc->scope == DEFT_SCOPE_GLOBAL ? "global" : "tensor",
               (double)deft_compressor_msg_bytes(c) / 1e6, t_enc * 1e3,
               bytes / t_enc / 1e9, t_enc * 1e9 / (double)d, t_enc / t_memcpy,
               t_dec * 1e3, bytes / t_dec / 1e9, t_dec * 1e9 / (double)d,
               t_dec / t_memcpy);
        if (bc->kind == DEFT_COMP_TOPK) {
            deft_topk_stats_t st;
            deft_topk_get_stats(c, &st);
            printf("%-13s   segments by path: sampled %llu (tie pass %llu), "
                   "fallback %llu, heap %llu, small %llu, radix %llu\n",
                   "", (unsigned long long)st.sampled,
                   (unsigned long long)st.ties,
                   (unsigned long long)st.fallback,
                   (unsigned long long)st.heap, (unsigned long long)st.small,
                   (unsigned long long)st.direct);
        }
        deft_compressor_destroy(c);
    }
    printf("\ntopk encode vs the %.1f ns/element target:\n", TOPK_TARGET_NS);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        if (cases[ci].kind == DEFT_COMP_TOPK)
            printf("  %-12s ratio %-5g %-6s %.3f ns/element (%s)\n",
                   cases[ci].label, cases[ci].ratio,
                   cases[ci].scope == DEFT_SCOPE_GLOBAL ? "global" : "tensor",
                   enc_ns[ci],
                   enc_ns[ci] <= TOPK_TARGET_NS ? "meets target"
                                                 : "ABOVE target");
    printf("\nqsgd encode vs the %.1fx memcpy target:\n", QSGD_TARGET_X_MEMCPY);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        if (cases[ci].kind == DEFT_COMP_QSGD)
            printf("  %-12s %.3f ns/element, %.2fx memcpy (%s)\n",
                   cases[ci].label, enc_ns[ci],
                   enc_ns[ci] / (t_memcpy * 1e9 / (double)d),
                   enc_ns[ci] <= QSGD_TARGET_X_MEMCPY * t_memcpy * 1e9 / (double)d
                       ? "meets target"
                       : "ABOVE target");
    deft_free(src);
    deft_free(v);
    deft_free(out);
    deft_free(msg);
    return 0;
}

/* Re-sharding optimizer state across worker counts
 * (deft_optim_state_reshard): for every algorithm, K workers take steps on
 * per-worker quadratics 0.5 |x - t_k|^2, save their states, the states are
 * re-sharded to K' workers, which load them and go on. Checked: what every
 * worker shares is kept bitwise, the mean of what is local is kept to
 * rounding, the output model is kept, K' = K is the identity, K' > K
 * copies, the re-sharded run keeps training, and bad requests fail. */
#include "testutil.h"

#include "core/internal.h"
#include "optim/optim_internal.h"
#include "train/checkpoint.h"

#include <unistd.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { NT = 2, D = 16, KMAX = 8, STEPS = 6, MORE = 40 };
static const size_t SIZES[NT] = {12, 4}; /* (3, 4) matrix, (4,) vector */
static const size_t ROWS[NT] = {3, 1};
enum { NBUF = 7 }; /* x, e, m, gk, g, z, w: DEFT_BUF_* bit order */

typedef struct {
    deft_algo_t algo;
    deft_compressor_kind_t comp;
} case_t;

static const case_t CASES[] = {
    {DEFT_ALGO_SGD, DEFT_COMP_NONE},   {DEFT_ALGO_EF, DEFT_COMP_TOPK},
    {DEFT_ALGO_DEF, DEFT_COMP_TOPK},   {DEFT_ALGO_DEFA, DEFT_COMP_RANDK},
    {DEFT_ALGO_SAEF, DEFT_COMP_TOPK},  {DEFT_ALGO_PSYNC, DEFT_COMP_RBGS},
    {DEFT_ALGO_EF21, DEFT_COMP_TOPK},  {DEFT_ALGO_ECLK, DEFT_COMP_TOPK},
    {DEFT_ALGO_DEF, DEFT_COMP_POWERSGD},
};

static deft_optim_config_t config_for(const case_t *c)
{
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.algo = c->algo;
    cfg.compressor = c->comp;
    cfg.ratio = 4;
    cfg.lr = 0.05f;
    cfg.momentum = c->algo == DEFT_ALGO_EF21 ? 0.0f : 0.5f;
    cfg.weight_decay = 0.01f;
    cfg.avg_period = 4;
    cfg.seed = 7;
    cfg.eclk_L = 2.0, cfg.eclk_mu = 0.5, cfg.eclk_p = 0.5, cfg.eclk_theta1 = 0.3;
    return cfg;
}

/* Worker k's quadratic's minimum, and the gradient noise of a step. */
static float target(int k, size_t i)
{
    return 0.3f * (float)(k % 5) - 0.05f * (float)i + 0.4f;
}

typedef struct {
    case_t c;
    int K, steps;         /* workers; steps to take after creating/loading  */
    const char *in;       /* (K, size) states to load, or NULL: fresh       */
    char *out;            /* (K, size) states saved at the end              */
    size_t size;
    float bufs[KMAX][NBUF][D]; /* each worker's vectors after loading       */
    float out0[D];        /* output model after loading (or at the end)     */
    float out_end[D];
    uint64_t step0;
    deft_status_t st;
} run_t;

static void copy_bufs(const deft_optim_t *o, float bufs[NBUF][D])
{
    const float *v[NBUF] = {o->x, o->e, o->m, o->gk, o->g, o->z, o->w};
    for (int b = 0; b < NBUF; b++)
        if (v[b])
            memcpy(bufs[b], v[b], sizeof(float) * D);
        else
            memset(bufs[b], 0, sizeof(float) * D);
}

static deft_status_t worker(deft_comm_t *comm, void *arg)
{
    run_t *a = arg;
    const int k = deft_comm_rank(comm);
    deft_layout_t l = {NT, SIZES, ROWS};
    deft_optim_config_t cfg = config_for(&a->c);
    float x0[D], grad[D];
    for (size_t i = 0; i < D; i++)
        x0[i] = 0.1f * (float)i - 0.7f;
    deft_optim_t *opt = NULL;
    deft_status_t st = deft_optim_create(&opt, comm, &l, x0, &cfg);
    if (st == DEFT_OK && a->in)
        st = deft_optim_state_load(opt, a->in + (size_t)k * a->size, a->size);
    if (st == DEFT_OK) {
        copy_bufs(opt, a->bufs[k]);
        a->step0 = opt->step;
        st = deft_optim_output(opt, k == 0 ? a->out0 : grad);
    }
    for (int s = 0; s < a->steps && st == DEFT_OK; s++) {
        const float *pt;
        if ((st = deft_optim_ask(opt, &pt)) != DEFT_OK)
            break;
        for (size_t i = 0; i < D; i++)
            grad[i] = pt[i] - target(k, i);
        st = deft_optim_tell(opt, grad, NULL);
    }
    if (st == DEFT_OK)
        st = deft_optim_output(opt, k == 0 ? a->out_end : grad);
    if (st == DEFT_OK && a->out) {
        a->size = deft_optim_state_size(opt);
        st = deft_optim_state_save(opt, a->out + (size_t)k * a->size, a->size);
    }
    deft_optim_destroy(opt);
    if (k == 0)
        a->st = st;
    return st;
}

/* Runs K fresh workers for STEPS steps; returns their states (K, *size). */
static char *states_after_steps(const case_t *c, int K, size_t *size)
{
    run_t *a = calloc(1, sizeof *a);
    a->c = *c;
    a->K = K;
    a->steps = STEPS;
    a->out = calloc((size_t)K, 1 << 14);
    assert_status(deft_run_threads(K, worker, a), DEFT_OK);
    assert_true(a->size < (1 << 14));
    *size = a->size;
    char *out = a->out;
    free(a);
    return out;
}

/* Loads states into K workers and runs `steps` more steps. */
static run_t *load_and_run(const case_t *c, int K, const char *states,
                           size_t size, int steps)
{
    run_t *a = calloc(1, sizeof *a);
    a->c = *c;
    a->K = K;
    a->in = states;
    a->size = size;
    a->steps = steps;
    assert_status(deft_run_threads(K, worker, a), DEFT_OK);
    return a;
}

static double loss_of(const float *x, int K)
{
    double l = 0;
    for (int k = 0; k < K; k++)
        for (size_t i = 0; i < D; i++)
            l += 0.5 * ((double)x[i] - target(k, i)) * ((double)x[i] - target(k, i));
    return l / K;
}

/* Max over elements of |mean_new - mean_old| / scale, where scale is the
 * largest |value| of the buffer: the mean is kept to float rounding. */
static double mean_drift(run_t *before, run_t *after, int b)
{
    double worst = 0, scale = 1e-30;
    for (size_t i = 0; i < D; i++) {
        double mo = 0, mn = 0;
        for (int k = 0; k < before->K; k++) {
            mo += before->bufs[k][b][i];
            scale = fmax(scale, fabs(before->bufs[k][b][i]));
        }
        for (int j = 0; j < after->K; j++)
            mn += after->bufs[j][b][i];
        worst = fmax(worst, fabs(mn / after->K - mo / before->K));
    }
    return worst / scale;
}

static void check_reshard(const case_t *c, int K, int K2)
{
    size_t size;
    char *states = states_after_steps(c, K, &size);
    run_t *before = load_and_run(c, K, states, size, 0);
    char *out = malloc((size_t)K2 * size);
    assert_status(deft_optim_state_reshard(states, size, K, out, K2,
                                           DEFT_RESHARD_MEAN), DEFT_OK);
    run_t *after = load_and_run(c, K2, out, size, MORE);
    const int local = deft_algo_ops(c->algo)->local;
    assert_int_equal(after->step0, before->step0);
    for (int b = 0; b < NBUF; b++) {
        if (local & (1 << b)) {
            double drift = mean_drift(before, after, b);
            if (drift > 3e-7)
                fail_msg("%s/%s %d->%d: buffer %d's mean moved by %g of its "
                         "scale", deft_algo_name(c->algo),
                         deft_compressor_name(c->comp), K, K2, b, drift);
            if (K2 % K == 0) /* K2 > K, a multiple: copies */
                for (int j = 0; j < K2; j++)
                    assert_memory_equal(after->bufs[j][b],
                                        before->bufs[j * K / K2][b],
                                        sizeof(float) * D);
            if (K % K2 == 0) /* equal groups: each new one is its mean */
                for (int j = 0; j < K2; j++)
                    for (size_t i = 0; i < D; i++) {
                        const int g = K / K2;
                        double sum = 0;
                        for (int k = j * g; k < (j + 1) * g; k++)
                            sum += before->bufs[k][b][i];
                        assert_true(after->bufs[j][b][i] == (float)(sum / g));
                    }
        } else {
            for (int j = 0; j < K2; j++)
                assert_memory_equal(after->bufs[j][b], before->bufs[0][b],
                                    sizeof(float) * D);
        }
    }
    /* The output model: bitwise where it is x, else to rounding. */
    for (size_t i = 0; i < D; i++)
        assert_close(after->out0[i], before->out0[i], 0, 1e-6);
    if (c->algo != DEFT_ALGO_DEF && c->algo != DEFT_ALGO_PSYNC)
        assert_memory_equal(after->out0, before->out0, sizeof(float) * D);
    /* It trains: the loss of K2 workers' problem goes down. */
    double l0 = loss_of(after->out0, K2), l1 = loss_of(after->out_end, K2);
    if (!(l1 < l0))
        fail_msg("%s %d->%d: loss %g after %d more steps, %g at the re-shard",
                 deft_algo_name(c->algo), K, K2, l1, MORE, l0);
    free(before);
    free(after);
    free(out);
    free(states);
}

static void test_every_algorithm_keeps_its_invariants(void **state)
{
    (void)state;
    static const int KK[][2] = {{8, 7}, {8, 4}, {4, 8}, {3, 1}, {4, 3}, {2, 5}};
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++)
        for (size_t p = 0; p < sizeof KK / sizeof KK[0]; p++)
            check_reshard(&CASES[c], KK[p][0], KK[p][1]);
}

/* K' = K gives back the same bytes, and the run continues bitwise as if
 * never re-sharded. */
static void test_same_count_is_identity(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        size_t size;
        char *states = states_after_steps(&CASES[c], 3, &size);
        char *out = malloc(3 * size);
        assert_status(deft_optim_state_reshard(states, size, 3, out, 3,
                                               DEFT_RESHARD_MEAN), DEFT_OK);
        assert_memory_equal(out, states, 3 * size);
        free(out);
        free(states);
    }
}

/* ZERO: errors and momenta restart at zero, the model is kept. */
static void test_zero_mode_resets_errors_and_momenta(void **state)
{
    (void)state;
    const case_t c = {DEFT_ALGO_DEF, DEFT_COMP_TOPK};
    size_t size;
    char *states = states_after_steps(&c, 4, &size);
    char *out = malloc(3 * size);
    assert_status(deft_optim_state_reshard(states, size, 4, out, 3,
                                           DEFT_RESHARD_ZERO), DEFT_OK);
    run_t *before = load_and_run(&c, 4, states, size, 0);
    run_t *after = load_and_run(&c, 3, out, size, MORE);
    for (int j = 0; j < 3; j++) {
        assert_memory_equal(after->bufs[j][0], before->bufs[0][0], sizeof(float) * D);
        for (size_t i = 0; i < D; i++) {
            assert_true(after->bufs[j][1][i] == 0.0f);
            assert_true(after->bufs[j][2][i] == 0.0f);
        }
    }
    /* DEF's output is then x itself, no longer x - avg(e). */
    assert_memory_equal(after->out0, before->bufs[0][0], sizeof(float) * D);
    assert_true(loss_of(after->out_end, 3) < loss_of(after->out0, 3));
    free(before);
    free(after);
    free(out);
    free(states);
}

static void test_bad_requests_fail_clearly(void **state)
{
    (void)state;
    const case_t c = {DEFT_ALGO_DEF, DEFT_COMP_TOPK};
    size_t size;
    char *states = states_after_steps(&c, 2, &size);
    char *out = calloc(8, size);
    assert_status(deft_optim_state_reshard(states, size, 2, out, 0,
                                           DEFT_RESHARD_MEAN),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("k_out = 0");
    assert_status(deft_optim_state_reshard(states, size, 2, out, 1,
                                           DEFT_RESHARD_NONE),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("mode = 0");
    assert_status(deft_optim_state_reshard(NULL, size, 2, out, 1,
                                           DEFT_RESHARD_MEAN),
                  DEFT_ERR_INVALID_ARG);
    /* A changed byte in worker 1's state. */
    states[size + size / 2] ^= 4;
    assert_status(deft_optim_state_reshard(states, size, 2, out, 1,
                                           DEFT_RESHARD_MEAN), DEFT_ERR_FORMAT);
    assert_error_mentions("corrupt");
    states[size + size / 2] ^= 4;
    /* Worker 1's state from another step: not one run. */
    uint64_t step;
    memcpy(&step, states + size + 24, 8); /* header: 4 u32, d, step */
    step++;
    memcpy(states + size + 24, &step, 8);
    deft_state_seal(states + size, size);
    assert_status(deft_optim_state_reshard(states, size, 2, out, 1,
                                           DEFT_RESHARD_MEAN), DEFT_ERR_FORMAT);
    assert_error_mentions("not from one run");
    /* A blob that is not a state, and a truncated one. */
    assert_status(deft_optim_state_reshard(out, 64, 1, states, 1,
                                           DEFT_RESHARD_MEAN), DEFT_ERR_FORMAT);
    assert_status(deft_optim_state_reshard(states, 8, 1, out, 1,
                                           DEFT_RESHARD_MEAN), DEFT_ERR_FORMAT);
    free(out);
    free(states);
}

/* A version 1 checkpoint (no optimizer blob length in its header) is
 * re-sharded by finding the blob's end by its checksum, powersgd's Q
 * included; version 2 records the length. Both give the same states. */
static void test_checkpoint_versions_reshard_alike(void **state)
{
    (void)state;
    const case_t c = {DEFT_ALGO_DEF, DEFT_COMP_POWERSGD};
    size_t osz;
    char *states = states_after_steps(&c, 4, &osz);
    const size_t nbn = 5, ssz = osz + nbn * sizeof(float);
    char *ws = calloc(4, ssz);
    for (int k = 0; k < 4; k++) {
        memcpy(ws + (size_t)k * ssz, states + (size_t)k * osz, osz);
        for (size_t i = 0; i < nbn; i++) {
            float bn = (float)(k + 1) * 0.5f + (float)i;
            memcpy(ws + (size_t)k * ssz + osz + i * sizeof bn, &bn, sizeof bn);
        }
    }
    deft_ckpt_meta_t meta;
    memset(&meta, 0, sizeof meta);
    meta.workers = 4;
    meta.algo = (uint32_t)c.algo;
    meta.compressor = (uint32_t)c.comp;
    meta.dim = D;
    meta.batch = 12;
    meta.optim_bytes = osz;
    char path[] = "/tmp/deft-test-reshard-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_status(deft_checkpoint_write(path, &meta, ws, ssz), DEFT_OK);
    deft_ckpt_meta_t got;
    void *rd = NULL, *out2 = NULL, *out1 = NULL;
    size_t rsz;
    assert_status(deft_checkpoint_read(path, &got, &rd, &rsz), DEFT_OK);
    assert_int_equal(got.optim_bytes, osz);
    assert_status(deft_checkpoint_reshard_states(&got, rd, rsz, 3,
                                                 DEFT_RESHARD_MEAN, &out2),
                  DEFT_OK);
    /* The same file as version 1: meta without optim_bytes (its last 8
     * bytes), version 1, the checksum redone. */
    FILE *f = fopen(path, "rb");
    static char file[1 << 16];
    size_t len = fread(file, 1, sizeof file, f);
    fclose(f);
    const size_t meta_end = 16 + sizeof(deft_ckpt_meta_t);
    memmove(file + meta_end - 8, file + meta_end, len - meta_end);
    len -= 8;
    const uint32_t v1 = 1, msz = (uint32_t)sizeof(deft_ckpt_meta_t) - 8;
    memcpy(file + 8, &v1, 4);
    memcpy(file + 12, &msz, 4);
    uint32_t crc = deft_crc32(0, file, len - 4);
    memcpy(file + len - 4, &crc, 4);
    f = fopen(path, "wb");
    assert_int_equal(fwrite(file, 1, len, f), len);
    fclose(f);
    void *rd1 = NULL;
    size_t rsz1;
    assert_status(deft_checkpoint_read(path, &got, &rd1, &rsz1), DEFT_OK);
    assert_int_equal(got.optim_bytes, 0);
    assert_int_equal(got.workers, 4);
    assert_int_equal(rsz1, rsz);
    assert_memory_equal(rd1, rd, 4 * rsz);
    assert_status(deft_checkpoint_reshard_states(&got, rd1, rsz1, 3,
                                                 DEFT_RESHARD_MEAN, &out1),
                  DEFT_OK);
    free(rd1);
    assert_memory_equal(out1, out2, 3 * ssz);
    /* BN statistics keep their mean: (0.5 + 1 + 1.5 + 2) / 4 + i. */
    for (size_t i = 0; i < nbn; i++) {
        double m = 0;
        for (int j = 0; j < 3; j++) {
            float v;
            memcpy(&v, (char *)out2 + (size_t)j * ssz + osz + i * sizeof v, sizeof v);
            m += v;
        }
        assert_close(m / 3, 1.25 + (double)i, 1e-6, 0);
    }
    /* A batch of 12 cannot be split over 5. */
    got.workers = 4;
    void *bad = NULL;
    assert_status(deft_checkpoint_reshard_states(&got, rd, rsz, 5,
                                                 DEFT_RESHARD_MEAN, &bad),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("1, 2, 3, 4, 6, 12");
    unlink(path);
    free(rd);
    free(out1);
    free(out2);
    free(ws);
    free(states);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_algorithm_keeps_its_invariants),
        cmocka_unit_test(test_same_count_is_identity),
        cmocka_unit_test(test_zero_mode_resets_errors_and_momenta),
        cmocka_unit_test(test_bad_requests_fail_clearly),
        cmocka_unit_test(test_checkpoint_versions_reshard_alike),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Misuse of the optimizer API returns the right status and a message that
 * names the bad argument; no crash, no hang. */
#include "testutil.h"
#include "lsq.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    deft_optim_config_t cfg;
    const deft_layout_t *layout;
    int null_x0;
    deft_status_t status;
    char error[512];
} create_case_t;

static deft_status_t try_create(deft_comm_t *comm, void *arg)
{
    create_case_t *c = arg;
    float x0[LSQ_D] = {0};
    deft_optim_t *opt = (deft_optim_t *)&opt; /* must be reset to NULL */
    deft_status_t st = deft_optim_create(&opt, comm, c->layout,
                                         c->null_x0 ? NULL : x0, &c->cfg);
    if (deft_comm_rank(comm) == 0) {
        c->status = st;
        snprintf(c->error, sizeof c->error, "%s", deft_last_error());
    }
    if (st != DEFT_OK && opt != NULL)
        return DEFT_ERR_INTERNAL;
    deft_optim_destroy(opt);
    return DEFT_OK;
}

static void expect_create(deft_optim_config_t cfg, const deft_layout_t *layout,
                          deft_status_t want, const char *needle)
{
    create_case_t c = {cfg, layout, 0, DEFT_OK, ""};
    assert_status(deft_run_threads(2, try_create, &c), DEFT_OK);
    if (c.status != want || !strstr(c.error, needle))
        fail_msg("create gave %s \"%s\", want %s mentioning \"%s\"",
                 deft_status_str(c.status), c.error, deft_status_str(want), needle);
}

static void test_create_rejects_bad_config(void **state)
{
    (void)state;
    const deft_optim_config_t ok = DEFT_OPTIM_CONFIG_INIT;
    deft_optim_config_t c;
    expect_create(ok, lsq_layout(), DEFT_OK, "");

    c = ok, c.ratio = 0.5;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "ratio");
    c = ok, c.ratio = NAN;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "ratio");
    c = ok, c.lambda = 1.5f;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "lambda");
    c = ok, c.lambda = -0.1f;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "lambda");
    c = ok, c.lr = 0.0f;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "lr");
    c = ok, c.momentum = 1.0f;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "momentum");
    c = ok, c.weight_decay = -1.0f;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "weight_decay");
    c = ok, c.avg_period = -2;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "avg_period");
    c = ok, c.algo = (deft_algo_t)42;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "algo");
    c = ok, c.compressor = (deft_compressor_kind_t)42;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "compressor");
    c = ok, c.compressor = DEFT_COMP_QSGD, c.qsgd_levels = 0;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "qsgd_levels");
    c = ok, c.algo = DEFT_ALGO_PSYNC, c.compressor = DEFT_COMP_TOPK;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "topk");
    c = ok, c.compressor = DEFT_COMP_POWERSGD, c.powersgd_rank = 0;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "powersgd_rank = 0");
    c = ok, c.compressor = DEFT_COMP_POWERSGD, c.powersgd_rank = 1025;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "powersgd_rank");
    c = ok, c.compressor = DEFT_COMP_POWERSGD, c.scope = DEFT_SCOPE_GLOBAL;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "scope tensor");
    c = ok, c.algo = DEFT_ALGO_PSYNC, c.compressor = DEFT_COMP_POWERSGD;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "powersgd");
    c = ok, c.algo = DEFT_ALGO_PSYNC, c.compressor = DEFT_COMP_FP16;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "fp16");
    c = ok, c.algo = DEFT_ALGO_PSYNC, c.compressor = DEFT_COMP_RANDK_PRIVATE;
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "randk-private");
    size_t bad_rows[3] = {4, 2, 0}; /* 20 = 4 x 5, but 13 is odd */
    deft_layout_t rows_bad = {3, lsq_sizes, bad_rows};
    expect_create(ok, &rows_bad, DEFT_ERR_INVALID_ARG, "rows[1] = 2");
    c = ok, c.algo = DEFT_ALGO_ECLK; /* needs L and mu (test_eclk.c) */
    expect_create(c, lsq_layout(), DEFT_ERR_INVALID_ARG, "eclk_L");

    deft_layout_t empty = {0, lsq_sizes, NULL};
    expect_create(ok, &empty, DEFT_ERR_INVALID_ARG, "n_tensors");
    size_t zero[2] = {5, 0};
    deft_layout_t has_zero = {2, zero, NULL};
    expect_create(ok, &has_zero, DEFT_ERR_INVALID_ARG, "sizes[1]");
    deft_layout_t null_sizes = {2, NULL, NULL};
    expect_create(ok, &null_sizes, DEFT_ERR_INVALID_ARG, "sizes");
    expect_create(ok, NULL, DEFT_ERR_INVALID_ARG, "layout");

    create_case_t nx = {ok, lsq_layout(), 1, DEFT_OK, ""};
    assert_status(deft_run_threads(1, try_create, &nx), DEFT_OK);
    assert_status(nx.status, DEFT_ERR_INVALID_ARG);
    assert_non_null(strstr(nx.error, "x0"));
}

/* Workers that disagree, or one with bad arguments, make every worker fail
 * (nobody is left waiting); fields the algorithm ignores may differ. */
typedef struct {
    int mode;
    deft_status_t st[3];
    char err[3][256];
} agree_t;

static deft_status_t disagreeing(deft_comm_t *comm, void *arg)
{
    agree_t *a = arg;
    float x0[LSQ_D] = {0};
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    int r = deft_comm_rank(comm);
    deft_optim_t *opt = NULL, **out = &opt;
    if (a->mode == 0 && r == 1)
        cfg.ratio = 64;        /* a real disagreement */
    if (a->mode == 1 && r == 2)
        cfg.lambda = 7.0f;     /* invalid on this worker alone */
    if (a->mode == 2 && r == 1)
        out = NULL;            /* invalid on this worker alone */
    if (a->mode == 3) {        /* ef ignores lambda, def ignores avg_period */
        cfg.algo = DEFT_ALGO_EF;
        cfg.lambda = 0.1f * (float)r;
        cfg.avg_period = r;
    }
    /* randk_scaled: randk-private needs it to agree (mode 6), topk ignores
     * it (mode 7). */
    if (a->mode == 6 || a->mode == 7) {
        cfg.compressor = a->mode == 6 ? DEFT_COMP_RANDK_PRIVATE : DEFT_COMP_TOPK;
        cfg.randk_scaled = r == 1;
    }
    /* Shapes: powersgd needs them to agree (mode 4), rbgs ignores them and
     * powersgd_rank (mode 5). */
    size_t rows[3] = {r == 1 ? 4 : 5, 0, 0}; /* 20 = 4x5 or 5x4 */
    deft_layout_t shaped = {3, lsq_sizes, rows};
    const deft_layout_t *layout = lsq_layout();
    if (a->mode == 4)
        cfg.compressor = DEFT_COMP_POWERSGD, layout = &shaped;
    if (a->mode == 5)
        cfg.powersgd_rank = 1 + r, layout = &shaped;
    a->st[r] = deft_optim_create(out, comm, layout, x0, &cfg);
    snprintf(a->err[r], sizeof a->err[r], "%s", deft_last_error());
    deft_optim_destroy(opt);
    return DEFT_OK;
}

static void test_workers_must_agree(void **state)
{
    (void)state;
    const char *want[] = {"differs", "worker 2", "worker 1", "",
                          "differs", "",         "differs",  ""};
    for (int mode = 0; mode < 8; mode++) {
        agree_t a;
        memset(&a, 0, sizeof a);
        a.mode = mode;
        assert_status(deft_run_threads(3, disagreeing, &a), DEFT_OK);
        for (int r = 0; r < 3; r++) {
            deft_status_t expect = mode == 3 || mode == 5 || mode == 7
                                       ? DEFT_OK
                                       : DEFT_ERR_INVALID_ARG;
            if (a.st[r] != expect)
                fail_msg("mode %d worker %d: %s (%s), want %s", mode, r,
                         deft_status_str(a.st[r]), a.err[r],
                         deft_status_str(expect));
            /* The offending worker has its own message; the others name
             * who is at fault. */
            int offender = (mode == 1 && r == 2) || (mode == 2 && r == 1);
            if (expect != DEFT_OK && !offender && !strstr(a.err[r], want[mode]))
                fail_msg("mode %d worker %d: \"%s\" does not mention \"%s\"",
                         mode, r, a.err[r], want[mode]);
        }
    }
}

static deft_status_t misuse(deft_comm_t *comm, void *arg)
{
    (void)arg;
    float x0[LSQ_D] = {0}, grad[LSQ_D] = {0};
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, lsq_layout(), x0, &cfg);
    if (st != DEFT_OK)
        return st;
#define EXPECT(call, want, needle)                                            \
    do {                                                                      \
        deft_status_t s_ = (call);                                            \
        if (s_ != (want) || !strstr(deft_last_error(), (needle))) {           \
            print_error("%s: got %d \"%s\"\n", #call, (int)s_,                \
                        deft_last_error());                                   \
            deft_optim_destroy(opt);                                          \
            return DEFT_ERR_INTERNAL;                                         \
        }                                                                     \
    } while (0)
    EXPECT(deft_optim_tell(opt, grad, NULL), DEFT_ERR_INVALID_USAGE, "ask");
    EXPECT(deft_optim_tell(NULL, grad, NULL), DEFT_ERR_INVALID_ARG, "opt");
    EXPECT(deft_optim_tell(opt, NULL, NULL), DEFT_ERR_INVALID_ARG, "grad");
    EXPECT(deft_optim_ask(opt, NULL), DEFT_ERR_INVALID_ARG, "point");
    EXPECT(deft_optim_ask(NULL, NULL), DEFT_ERR_INVALID_ARG, "opt");
    EXPECT(deft_optim_output(opt, NULL), DEFT_ERR_INVALID_ARG, "model");
    EXPECT(deft_optim_set_lr(opt, -1.0f), DEFT_ERR_INVALID_ARG, "lr");
    EXPECT(deft_optim_set_lr(opt, INFINITY), DEFT_ERR_INVALID_ARG, "lr");
    EXPECT(deft_optim_params(opt, NULL), DEFT_ERR_INVALID_ARG, "x");
    EXPECT(deft_optim_create(NULL, comm, lsq_layout(), x0, &cfg),
           DEFT_ERR_INVALID_ARG, "out");
    deft_optim_t *other = (deft_optim_t *)&other;
    EXPECT(deft_optim_create(&other, NULL, lsq_layout(), x0, &cfg),
           DEFT_ERR_INVALID_ARG, "comm");
    if (other != NULL) /* a failed create leaves *out NULL */
        return DEFT_ERR_INTERNAL;

    /* ask twice returns the same point; one tell consumes it. */
    const float *p1, *p2;
    if (deft_optim_ask(opt, &p1) || deft_optim_ask(opt, &p2) || p1 != p2)
        return DEFT_ERR_INTERNAL;
    if ((st = deft_optim_tell(opt, grad, NULL)) != DEFT_OK)
        return st;
    EXPECT(deft_optim_tell(opt, grad, NULL), DEFT_ERR_INVALID_USAGE, "ask");
    if (deft_optim_steps(opt) != 1 || deft_optim_dim(opt) != LSQ_D)
        return DEFT_ERR_INTERNAL;
    if (deft_optim_set_lr(opt, 0.01f) != DEFT_OK)
        return DEFT_ERR_INTERNAL;
#undef EXPECT
    deft_optim_destroy(opt);
    deft_optim_destroy(NULL);
    return DEFT_OK;
}

static void test_misuse(void **state)
{
    (void)state;
    assert_status(deft_run_threads(1, misuse, NULL), DEFT_OK);
    assert_int_equal(deft_optim_dim(NULL), 0);
    assert_int_equal(deft_optim_steps(NULL), 0);
}

static void test_names_round_trip(void **state)
{
    (void)state;
    for (int a = DEFT_ALGO_SGD; a <= DEFT_ALGO_ECLK; a++) {
        deft_algo_t back;
        assert_status(deft_algo_parse(deft_algo_name((deft_algo_t)a), &back),
                      DEFT_OK);
        assert_int_equal(back, a);
    }
    for (int c = DEFT_COMP_NONE; c <= DEFT_COMP_RANDK_PRIVATE; c++) {
        deft_compressor_kind_t back;
        assert_status(deft_compressor_parse(
                          deft_compressor_name((deft_compressor_kind_t)c), &back),
                      DEFT_OK);
        assert_int_equal(back, c);
    }
    /* kinds keep their numbers; the newest is appended */
    deft_compressor_kind_t rp;
    assert_status(deft_compressor_parse("randk-private", &rp), DEFT_OK);
    assert_int_equal(rp, DEFT_COMP_RANDK_PRIVATE);
    assert_int_equal(DEFT_COMP_BF16, 9);
    assert_int_equal(DEFT_COMP_RANDK_PRIVATE, 10);
    assert_string_equal(deft_compressor_name(DEFT_COMP_RANDK), "randk");
    assert_string_equal(deft_compressor_name((deft_compressor_kind_t)11), "?");
    deft_algo_t a;
    assert_status(deft_algo_parse("adam", &a), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("adam");
    deft_compressor_kind_t k;
    assert_status(deft_compressor_parse("zip", &k), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("zip");
    assert_error_mentions("randk-private");
    assert_string_equal(deft_algo_name((deft_algo_t)99), "?");
    assert_string_equal(deft_compressor_name((deft_compressor_kind_t)99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_rejects_bad_config),
        cmocka_unit_test(test_workers_must_agree),
        cmocka_unit_test(test_misuse),
        cmocka_unit_test(test_names_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Custom backend: callbacks that forward to the threads backend give the
 * same models and traffic as the threads backend itself; a failing
 * callback becomes DEFT_ERR_COMM naming the collective on every worker,
 * with no hang; create checks its arguments. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ctx of the forwarding callbacks: this worker's threads communicator and
 * a collective number at which allreduce fails (0 = never). */
typedef struct {
    deft_comm_t *inner;
    int calls;
    int fail_at;
    char why[64];
} fwd_t;

static deft_status_t fwd_allreduce(void *ctx, float *buf, size_t n)
{
    fwd_t *f = ctx;
    if (++f->calls == f->fail_at) {
        snprintf(f->why, sizeof f->why, "link to the switch is down");
        return DEFT_ERR_IO;
    }
    return deft_comm_allreduce_sum_f32(f->inner, buf, n);
}

static deft_status_t fwd_allgather(void *ctx, const void *send, size_t bytes,
                                   void *recv)
{
    fwd_t *f = ctx;
    f->calls++;
    return deft_comm_allgather(f->inner, send, bytes, recv);
}

static deft_status_t fwd_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    fwd_t *f = ctx;
    f->calls++;
    return deft_comm_broadcast(f->inner, buf, bytes, root);
}

static deft_status_t fwd_barrier(void *ctx)
{
    fwd_t *f = ctx;
    f->calls++;
    return deft_comm_barrier(f->inner);
}

static const char *fwd_describe(void *ctx)
{
    return ((fwd_t *)ctx)->why;
}

static const deft_comm_ops_t fwd_ops = {fwd_allreduce, fwd_allgather,
                                        fwd_broadcast, fwd_barrier,
                                        fwd_describe};

enum { K = 4, NT = 3, STEPS = 12 };
static const size_t tsizes[NT] = {300, 17, 1100};
#define DIM (300 + 17 + 1100)

typedef struct {
    int custom;          /* run through deft_comm_create_custom          */
    int fail_rank;       /* rank whose allreduce fails, or -1            */
    int fail_at;         /* that rank's failing call number              */
    deft_compressor_kind_t comp;
    float model[K][DIM];
    deft_comm_stats_t stats[K];
    deft_status_t status[K];
    char msg[K][512];
} job_t;

static deft_status_t train(deft_comm_t *comm, job_t *job)
{
    int r = deft_comm_rank(comm);
    float x0[DIM], grad[DIM];
    deft_test_fill(x0, DIM, 7);
    deft_layout_t layout = {NT, tsizes, NULL};
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.compressor = job->comp;
    cfg.ratio = 8;
    cfg.lr = 0.05f;
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &layout, x0, &cfg);
    for (int s = 0; s < STEPS && st == DEFT_OK; s++) {
        const float *pt;
        deft_optim_ask(opt, &pt);
        for (int i = 0; i < DIM; i++) /* a quadratic's gradient, per rank */
            grad[i] = pt[i] - 0.01f * (float)((i + r) % 13);
        st = deft_optim_tell(opt, grad, NULL);
    }
    if (st == DEFT_OK)
        st = deft_optim_output(opt, job->model[r]);
    deft_optim_destroy(opt);
    return st;
}

static deft_status_t worker(deft_comm_t *threads_comm, void *arg)
{
    job_t *job = arg;
    int r = deft_comm_rank(threads_comm);
    deft_comm_t *comm = threads_comm;
    fwd_t f = {threads_comm, 0, r == job->fail_rank ? job->fail_at : 0, ""};
    deft_status_t st = DEFT_OK;
    if (job->custom)
        st = deft_comm_create_custom(&comm, &fwd_ops, &f, r,
                                     deft_comm_size(threads_comm));
    if (st == DEFT_OK)
        st = train(comm, job);
    job->status[r] = st;
    snprintf(job->msg[r], sizeof job->msg[r], "%s", deft_last_error());
    deft_comm_get_stats(comm, &job->stats[r]);
    if (job->custom)
        deft_comm_destroy(comm);
    return st;
}

static void custom_matches_threads(void **state)
{
    (void)state;
    static const deft_compressor_kind_t comps[] = {DEFT_COMP_RBGS,
                                                   DEFT_COMP_TOPK};
    for (size_t c = 0; c < 2; c++) {
        static job_t a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        a.fail_rank = b.fail_rank = -1;
        a.comp = b.comp = comps[c];
        b.custom = 1;
        assert_status(deft_run_threads(K, worker, &a), DEFT_OK);
        assert_status(deft_run_threads(K, worker, &b), DEFT_OK);
        for (int r = 0; r < K; r++) {
            if (memcmp(a.model[r], b.model[r], sizeof a.model[r]) != 0)
                fail_msg("%s: rank %d's model through custom callbacks differs "
                         "from the threads backend's (max rel diff %g)",
                         deft_compressor_name(comps[c]), r,
                         deft_test_max_rel_diff(b.model[r], a.model[r], DIM,
                                                1e-6));
            assert_int_equal(b.stats[r].bytes_sent, a.stats[r].bytes_sent);
            assert_int_equal(b.stats[r].payload_bytes, a.stats[r].payload_bytes);
            assert_int_equal(b.stats[r].n_allreduce, a.stats[r].n_allreduce);
            assert_int_equal(b.stats[r].n_allgather, a.stats[r].n_allgather);
            assert_int_equal(b.stats[r].n_broadcast, a.stats[r].n_broadcast);
        }
        assert_true(a.stats[0].bytes_sent > 0);
    }
}

/* Rank 2's 7th callback, an allreduce, fails (create makes one allgather
 * and one broadcast, so that is the 5th step's). Every rank must end with DEFT_ERR_COMM: rank 2 with
 * the callback's own failure, the others because rank 2 left the group. */
static void failing_callback_fails_everyone(void **state)
{
    (void)state;
    static job_t j;
    memset(&j, 0, sizeof j);
    j.custom = 1;
    j.comp = DEFT_COMP_RBGS;
    j.fail_rank = 2;
    j.fail_at = 7;
    assert_status(deft_run_threads(K, worker, &j), DEFT_ERR_COMM);
    for (int r = 0; r < K; r++) {
        if (j.status[r] != DEFT_ERR_COMM)
            fail_msg("rank %d ended with %s, want DEFT_ERR_COMM (%s)", r,
                     deft_status_str(j.status[r]), j.msg[r]);
        if (!strstr(j.msg[r], "custom backend: allreduce (collective #"))
            fail_msg("rank %d's message does not name the collective: %s", r,
                     j.msg[r]);
    }
    /* The failing rank's message carries its sequence number, rank and
     * the callback's own words. */
    assert_non_null(strstr(j.msg[2], "collective #7) failed on rank 2 of 4"));
    assert_non_null(strstr(j.msg[2], "link to the switch is down"));
    assert_non_null(strstr(j.msg[2], "returned 4"));
}

static void create_checks_arguments(void **state)
{
    (void)state;
    deft_comm_t *c = (deft_comm_t *)&c;
    fwd_t f = {0};
    assert_status(deft_comm_create_custom(NULL, &fwd_ops, &f, 0, 1),
                  DEFT_ERR_INVALID_ARG);
    assert_status(deft_comm_create_custom(&c, NULL, &f, 0, 1),
                  DEFT_ERR_INVALID_ARG);
    assert_null(c);
    assert_error_mentions("ops is NULL");
    deft_comm_ops_t ops = fwd_ops;
    ops.broadcast = NULL;
    assert_status(deft_comm_create_custom(&c, &ops, &f, 0, 1),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("ops->broadcast is NULL");
    assert_status(deft_comm_create_custom(&c, &fwd_ops, &f, 2, 2),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("rank = 2");
    assert_status(deft_comm_create_custom(&c, &fwd_ops, &f, 0, 0),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("size = 0");
    /* describe_error is optional. */
    ops = fwd_ops;
    ops.describe_error = NULL;
    assert_status(deft_comm_create_custom(&c, &ops, &f, 0, 1), DEFT_OK);
    assert_int_equal(deft_comm_rank(c), 0);
    assert_int_equal(deft_comm_size(c), 1);
    deft_comm_destroy(c);
    deft_comm_destroy(NULL);
}

/* A single worker needs no engine: its callbacks are still called (the
 * engine may count or trace), and K = 1 sends no bytes. */
static deft_status_t one_allreduce(void *ctx, float *buf, size_t n)
{
    (void)buf, (void)n;
    ++*(int *)ctx;
    return DEFT_OK;
}

static void single_worker_calls_back(void **state)
{
    (void)state;
    int calls = 0;
    const deft_comm_ops_t ops = {one_allreduce, fwd_allgather, fwd_broadcast,
                                 fwd_barrier, NULL};
    deft_comm_t *c;
    assert_status(deft_comm_create_custom(&c, &ops, &calls, 0, 1), DEFT_OK);
    float v[5] = {1, 2, 3, 4, 5};
    assert_status(deft_comm_allreduce_sum_f32(c, v, 5), DEFT_OK);
    assert_int_equal(calls, 1);
    assert_true(v[4] == 5.0f);
    deft_comm_stats_t s;
    deft_comm_get_stats(c, &s);
    assert_int_equal(s.bytes_sent, 0);
    assert_int_equal(s.payload_bytes, 20);
    deft_comm_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(custom_matches_threads),
        cmocka_unit_test(failing_callback_fails_everyone),
        cmocka_unit_test(create_checks_arguments),
        cmocka_unit_test(single_worker_calls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

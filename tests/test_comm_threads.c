/* Threads backend: collectives give exact results for every worker count
 * and awkward sizes, counters follow the documented ring formulas, and a
 * failing or early-returning worker never leaves the others waiting. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const size_t sizes[] = {0, 1, 7, 15, 16, 17, 1000, 4099, 65537};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Worker r's element i: an integer-valued float, so sums are exact in any
 * order and the expected value is known in closed form. */
static float elem(int r, size_t i)
{
    return (float)((int)(i % 1000) - 500 + 3 * r);
}

static deft_status_t collectives_worker(deft_comm_t *comm, void *arg)
{
    int *bad = arg;
    int K = deft_comm_size(comm), r = deft_comm_rank(comm);
    for (size_t s = 0; s < NSIZES; s++) {
        size_t n = sizes[s];
        float *buf = malloc((n + 1) * sizeof(float));
        for (size_t i = 0; i < n; i++)
            buf[i] = elem(r, i);
        deft_status_t st = deft_comm_allreduce_sum_f32(comm, buf, n);
        if (st != DEFT_OK) {
            free(buf);
            return st;
        }
        for (size_t i = 0; i < n; i++) {
            float want = (float)(K * ((int)(i % 1000) - 500) + 3 * K * (K - 1) / 2);
            if (buf[i] != want) {
                fprintf(stderr, "allreduce K=%d n=%zu rank %d: buf[%zu] = %g, "
                        "want %g\n", K, n, r, i, (double)buf[i], (double)want);
                __atomic_store_n(bad, 1, __ATOMIC_SEQ_CST);
                break;
            }
        }
        /* allgather n bytes per worker */
        unsigned char *send = malloc(n + 1), *recv = malloc((size_t)K * n + 1);
        for (size_t i = 0; i < n; i++)
            send[i] = (unsigned char)(r * 31 + i);
        if ((st = deft_comm_allgather(comm, send, n, recv)) != DEFT_OK)
            return st;
        for (int q = 0; q < K; q++)
            for (size_t i = 0; i < n; i++)
                if (recv[(size_t)q * n + i] != (unsigned char)(q * 31 + i)) {
                    fprintf(stderr, "allgather K=%d n=%zu rank %d: block %d "
                            "byte %zu wrong\n", K, n, r, q, i);
                    __atomic_store_n(bad, 1, __ATOMIC_SEQ_CST);
                    q = K;
                    break;
                }
        /* broadcast from every root in turn */
        for (int root = 0; root < K; root++) {
            for (size_t i = 0; i < n; i++)
                send[i] = (unsigned char)(r == root ? 7 * root + i : 0xEE);
            if ((st = deft_comm_broadcast(comm, send, n, root)) != DEFT_OK)
                return st;
            for (size_t i = 0; i < n; i++)
                if (send[i] != (unsigned char)(7 * root + i)) {
                    fprintf(stderr, "broadcast K=%d n=%zu root %d rank %d: "
                            "byte %zu wrong\n", K, n, root, r, i);
                    __atomic_store_n(bad, 1, __ATOMIC_SEQ_CST);
                    break;
                }
        }
        free(send);
        free(recv);
        free(buf);
    }
    return deft_comm_barrier(comm);
}

static void test_collectives_exact_for_1_to_8_workers(void **state)
{
    (void)state;
    for (int K = 1; K <= 8; K++) {
        int bad = 0;
        assert_status(deft_run_threads(K, collectives_worker, &bad), DEFT_OK);
        if (bad)
            fail_msg("collectives gave wrong results with K = %d (see above)", K);
    }
}

/* Floats whose sum depends on the order of the additions: the result must
 * still be identical on all ranks and across runs. */
typedef struct {
    int K;
    size_t n;
    float *out; /* (K, n) each rank's result */
} repro_t;

static deft_status_t repro_worker(deft_comm_t *comm, void *arg)
{
    repro_t *a = arg;
    int r = deft_comm_rank(comm);
    float *buf = a->out + (size_t)r * a->n;
    deft_test_fill(buf, a->n, 1000 + (uint64_t)r);
    for (size_t i = 0; i < a->n; i++)
        buf[i] *= (i % 3 == 0) ? 1e7f : 1e-3f;
    return deft_comm_allreduce_sum_f32(comm, buf, a->n);
}

static void test_allreduce_bitwise_reproducible(void **state)
{
    (void)state;
    repro_t a = {5, 10007, NULL}, b = a;
    a.out = malloc(sizeof(float) * 5 * 10007);
    b.out = malloc(sizeof(float) * 5 * 10007);
    assert_status(deft_run_threads(5, repro_worker, &a), DEFT_OK);
    assert_status(deft_run_threads(5, repro_worker, &b), DEFT_OK);
    assert_memory_equal(a.out, b.out, sizeof(float) * 5 * 10007);
    for (int r = 1; r < 5; r++)
        assert_memory_equal(a.out, a.out + (size_t)r * 10007, sizeof(float) * 10007);
    free(a.out);
    free(b.out);
}

static deft_status_t stats_worker(deft_comm_t *comm, void *arg)
{
    deft_comm_stats_t *out = arg;
    int r = deft_comm_rank(comm);
    /* 1 Gbit/s, 10 us: the alpha-beta model of each collective below. */
    if (deft_comm_set_link(comm, 1.0, 10.0) != DEFT_OK)
        return DEFT_ERR_INTERNAL;
    float buf[1001] = {0};
    char g[24] = {0}, recv[24 * 4];
    deft_status_t st;
    if ((st = deft_comm_allreduce_sum_f32(comm, buf, 1001)) != DEFT_OK ||
        (st = deft_comm_allgather(comm, g, sizeof g, recv)) != DEFT_OK ||
        (st = deft_comm_broadcast(comm, g, sizeof g,
                                  deft_comm_size(comm) > 2 ? 2 : 0)) != DEFT_OK ||
        (st = deft_comm_barrier(comm)) != DEFT_OK)
        return st;
    return deft_comm_get_stats(comm, &out[r]);
}

static void test_traffic_counters_follow_ring_formulas(void **state)
{
    (void)state;
    deft_comm_stats_t s[4];
    assert_status(deft_run_threads(4, stats_worker, s), DEFT_OK);
    for (int r = 0; r < 4; r++) {
        /* 1001 floats in 4 chunks (251, 250, 250, 250): each rank sends 3
         * chunks twice; broadcast from root 2 along 2->3->0->1, so rank 1
         * (the last) forwards nothing. */
        uint64_t ring = 0;
        for (int s2 = 0; s2 < 3; s2++) {
            int c1 = ((r - s2) % 4 + 4) % 4, c2 = ((r + 1 - s2) % 4 + 4) % 4;
            ring += (c1 == 0 ? 251 : 250) + (c2 == 0 ? 251 : 250);
        }
        uint64_t want = ring * 4 + 3 * 24 + (r == 1 ? 0 : 24);
        assert_int_equal(s[r].bytes_sent, want);
        assert_int_equal(s[r].payload_bytes, 1001 * 4 + 24 + (r == 2 ? 24 : 0));
        assert_int_equal(s[r].n_allreduce, 1);
        assert_int_equal(s[r].n_allgather, 1);
        assert_int_equal(s[r].n_broadcast, 1);
        assert_int_equal(s[r].n_barrier, 1);
        /* ring allreduce 2(K-1)(a + n/(K b)), allgather (K-1)(a + n/b),
         * broadcast and barrier ceil(log2 K) = 2 tree levels. */
        double a = 10e-6, b = 1e9 / 8;
        double want_s = 6 * (a + 4004 / (4 * b)) + 3 * (a + 24 / b) +
                        2 * (a + 24 / b) + 2 * a;
        assert_close(s[r].modeled_s, want_s, 1e-9, 0);
        assert_true(s[r].comm_s >= 0 && s[r].comm_cpu_s >= 0);
    }
    /* One worker sends nothing over a wire, but still hands over payload. */
    assert_status(deft_run_threads(1, stats_worker, s), DEFT_OK);
    assert_int_equal(s[0].bytes_sent, 0);
    assert_int_equal(s[0].payload_bytes, 1001 * 4 + 24 + 24);
    assert_close(s[0].modeled_s, 0.0, 0, 0); /* nothing crosses a link */
}

static deft_status_t failing_worker(deft_comm_t *comm, void *arg)
{
    (void)arg;
    if (deft_comm_rank(comm) == 2) {
        return DEFT_ERR_IO; /* e.g. could not read its data */
    }
    float v[10] = {0};
    for (int i = 0; i < 100; i++) {
        deft_status_t st = deft_comm_allreduce_sum_f32(comm, v, 10);
        if (st != DEFT_OK)
            return st;
    }
    return DEFT_OK;
}

static void test_failing_worker_releases_others(void **state)
{
    (void)state;
    deft_status_t st = deft_run_threads(4, failing_worker, NULL);
    /* The root cause is reported, not the others' follow-up errors. */
    assert_status(st, DEFT_ERR_IO);
    assert_error_mentions("worker 2");
}

static deft_status_t early_return_worker(deft_comm_t *comm, void *arg)
{
    (void)arg;
    if (deft_comm_rank(comm) == 0)
        return DEFT_OK; /* forgets the collective the others make */
    return deft_comm_barrier(comm);
}

static void test_early_return_releases_others(void **state)
{
    (void)state;
    assert_status(deft_run_threads(3, early_return_worker, NULL), DEFT_ERR_COMM);
    assert_error_mentions("returned");
}

/* Worker 1 is stuck (here: asleep) for 1.5 s before its 3rd allreduce;
 * the others' 0.3 s watchdog must end their wait with the message. */
static deft_status_t stuck_worker(deft_comm_t *comm, void *arg)
{
    double *timeout = arg;
    deft_status_t st = deft_comm_set_timeout(comm, *timeout);
    if (st != DEFT_OK)
        return st;
    float v[64] = {0};
    for (int i = 0; i < 5; i++) {
        if (i == 2 && deft_comm_rank(comm) == 1)
            nanosleep(&(struct timespec){1, 500000000}, NULL);
        if ((st = deft_comm_allreduce_sum_f32(comm, v, 64)) != DEFT_OK)
            return st;
    }
    return DEFT_OK;
}

static void test_watchdog_ends_a_stuck_collective(void **state)
{
    (void)state;
    double timeout = 0.3;
    assert_status(deft_run_threads(3, stuck_worker, &timeout), DEFT_ERR_COMM);
    /* Names the collective, its sequence number (the 3rd), a rank, the
     * timeout, and what to do. */
    assert_error_mentions("collective watchdog: allreduce (collective #3) on rank");
    assert_error_mentions("(timeout 0.3 s)");
    assert_error_mentions("--comm-timeout");
    /* Without a watchdog (0), or with a longer one, the same stall is
     * waited out and the run succeeds. */
    timeout = 0;
    assert_status(deft_run_threads(3, stuck_worker, &timeout), DEFT_OK);
    timeout = 30;
    assert_status(deft_run_threads(3, stuck_worker, &timeout), DEFT_OK);
}

static deft_status_t nop_allreduce(void *ctx, float *buf, size_t n)
{
    (void)ctx, (void)buf, (void)n;
    return DEFT_OK;
}

static deft_status_t nop_allgather(void *ctx, const void *s, size_t n, void *r)
{
    (void)ctx, (void)s, (void)n, (void)r;
    return DEFT_OK;
}

static deft_status_t nop_broadcast(void *ctx, void *buf, size_t n, int root)
{
    (void)ctx, (void)buf, (void)n, (void)root;
    return DEFT_OK;
}

static deft_status_t nop_barrier(void *ctx)
{
    (void)ctx;
    return DEFT_OK;
}

static void test_set_timeout_arguments(void **state)
{
    (void)state;
    assert_status(deft_comm_set_timeout(NULL, 1), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("comm");
    deft_comm_t *self;
    assert_status(deft_comm_create_self(&self), DEFT_OK);
    assert_status(deft_comm_set_timeout(self, -1), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("seconds = -1");
    assert_status(deft_comm_set_timeout(self, 0.0 / 0.0), DEFT_ERR_INVALID_ARG);
    assert_status(deft_comm_set_timeout(self, 5), DEFT_OK); /* nothing to wait for */
    deft_comm_destroy(self);
    /* A custom backend's callbacks cannot be interrupted. */
    const deft_comm_ops_t ops = {nop_allreduce, nop_allgather, nop_broadcast,
                                 nop_barrier, NULL};
    deft_comm_t *c;
    assert_status(deft_comm_create_custom(&c, &ops, NULL, 0, 2), DEFT_OK);
    assert_status(deft_comm_set_timeout(c, 5), DEFT_ERR_UNSUPPORTED);
    assert_error_mentions("custom backend cannot interrupt");
    assert_status(deft_comm_set_timeout(c, 0), DEFT_OK);
    deft_comm_destroy(c);
}

static deft_status_t mismatched_worker(deft_comm_t *comm, void *arg)
{
    (void)arg;
    float v[8] = {0};
    return deft_comm_allreduce_sum_f32(comm, v, deft_comm_rank(comm) == 1 ? 8 : 4);
}

static void test_mismatched_sizes_are_an_error(void **state)
{
    (void)state;
    assert_status(deft_run_threads(3, mismatched_worker, NULL), DEFT_ERR_COMM);
    assert_error_mentions("disagree");
}

static deft_status_t bad_args_worker(deft_comm_t *comm, void *arg)
{
    (void)arg;
    deft_status_t st = deft_comm_allreduce_sum_f32(comm, NULL, 3);
    if (st != DEFT_ERR_INVALID_ARG || !strstr(deft_last_error(), "buf"))
        return DEFT_ERR_INTERNAL;
    char b[4];
    st = deft_comm_broadcast(comm, b, 4, 9);
    if (st != DEFT_ERR_INVALID_ARG || !strstr(deft_last_error(), "root"))
        return DEFT_ERR_INTERNAL;
    return DEFT_OK;
}

static void test_argument_errors(void **state)
{
    (void)state;
    assert_status(deft_run_threads(2, bad_args_worker, NULL), DEFT_OK);
    assert_status(deft_run_threads(0, bad_args_worker, NULL), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("nworkers");
    assert_status(deft_run_threads(2, NULL, NULL), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("fn");
    assert_int_equal(deft_comm_rank(NULL), -1);
    assert_int_equal(deft_comm_size(NULL), -1);
    assert_status(deft_comm_barrier(NULL), DEFT_ERR_INVALID_ARG);
    assert_status(deft_comm_set_link(NULL, 1, 1), DEFT_ERR_INVALID_ARG);
    deft_comm_reset_stats(NULL);
}

static void test_status_strings_never_null(void **state)
{
    (void)state;
    for (int s = -3; s < 20; s++) {
        const char *msg = deft_status_str((deft_status_t)s);
        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
    }
    assert_string_equal(deft_status_str(DEFT_OK), "success");
    assert_non_null(deft_last_error());
    assert_non_null(deft_version());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collectives_exact_for_1_to_8_workers),
        cmocka_unit_test(test_allreduce_bitwise_reproducible),
        cmocka_unit_test(test_traffic_counters_follow_ring_formulas),
        cmocka_unit_test(test_failing_worker_releases_others),
        cmocka_unit_test(test_early_return_releases_others),
        cmocka_unit_test(test_mismatched_sizes_are_an_error),
        cmocka_unit_test(test_watchdog_ends_a_stuck_collective),
        cmocka_unit_test(test_set_timeout_arguments),
        cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_status_strings_never_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

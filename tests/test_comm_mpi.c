/* MPI backend, run under mpirun with K = 1..4 ranks (CTest:
 * test_comm_mpi_np<K>). Collectives give exact results for awkward sizes,
 * each deft collective is exactly one MPI call, counters equal the threads
 * backend's, and errors come back as statuses instead of aborting the job.
 *
 * Every test is collective. An assertion that failed on one rank only would
 * send that rank to the next test while the others still sit in this one's
 * collectives, so checks between collectives only count failures (CHECK);
 * each test ends with agree(), which sums the failures over all ranks and
 * asserts on every rank. So all ranks fail the same tests, every rank exits
 * non-zero and mpirun exits non-zero. Only rank 0 prints cmocka's report;
 * every rank prints its CHECK messages, prefixed by its rank.
 *
 * The MPI functions the backend uses are wrapped here through MPI's
 * profiling interface (MPI_X calls PMPI_X) to count calls and inject
 * errors: the test links libdeft statically, so the library's calls bind to
 * these definitions. */
#include <mpi.h>

#include "testutil.h"

#include "comm/comm_internal.h"
#include "compress/half.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

/* ---- MPI call counting and error injection (PMPI) ------------------------ */

static struct {
    int on; /* count calls only while set */
    long allreduce, allgather, bcast, barrier, other;
    int fail_barrier; /* next MPI_Barrier returns this code, if non-zero */
} mpi_calls;

int MPI_Allreduce(const void *sendbuf, void *recvbuf, int count,
                  MPI_Datatype datatype, MPI_Op op, MPI_Comm comm)
{
    mpi_calls.allreduce += mpi_calls.on;
    return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
}

int MPI_Allgather(const void *sendbuf, int sendcount, MPI_Datatype sendtype,
                  void *recvbuf, int recvcount, MPI_Datatype recvtype,
                  MPI_Comm comm)
{
    mpi_calls.allgather += mpi_calls.on;
    return PMPI_Allgather(sendbuf, sendcount, sendtype, recvbuf, recvcount,
                          recvtype, comm);
}

int MPI_Bcast(void *buffer, int count, MPI_Datatype datatype, int root,
              MPI_Comm comm)
{
    mpi_calls.bcast += mpi_calls.on;
    return PMPI_Bcast(buffer, count, datatype, root, comm);
}

int MPI_Barrier(MPI_Comm comm)
{
    mpi_calls.barrier += mpi_calls.on;
    if (mpi_calls.fail_barrier) {
        int rc = mpi_calls.fail_barrier;
        mpi_calls.fail_barrier = 0;
        return rc; /* as if the barrier had failed, without communicating */
    }
    return PMPI_Barrier(comm);
}

/* Any other communication the backend might make would show up here. */
int MPI_Reduce(const void *sendbuf, void *recvbuf, int count,
               MPI_Datatype datatype, MPI_Op op, int root, MPI_Comm comm)
{
    mpi_calls.other += mpi_calls.on;
    return PMPI_Reduce(sendbuf, recvbuf, count, datatype, op, root, comm);
}

static void count_start(void)
{
    memset(&mpi_calls, 0, sizeof mpi_calls);
    mpi_calls.on = 1;
}

static long count_stop(void)
{
    mpi_calls.on = 0;
    return mpi_calls.allreduce + mpi_calls.allgather + mpi_calls.bcast +
           mpi_calls.barrier + mpi_calls.other;
}

/* ---- collective-safe checks ---------------------------------------------- */

static int K, R;        /* size and rank of MPI_COMM_WORLD */
static FILE *diag;      /* this rank's stderr, even where cmocka is muted */
static deft_comm_t *cm; /* the communicator under test, over MPI_COMM_WORLD */
static int bad;         /* failed CHECKs on this rank in the current test */

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(diag, "[rank %d of %d] %s:%d: CHECK(%s) failed: ", R, K, \
                    __FILE__, __LINE__, #cond);                              \
            fprintf(diag, __VA_ARGS__);                                      \
            fprintf(diag, "\n");                                             \
            fflush(diag);                                                    \
            bad++;                                                           \
        }                                                                    \
    } while (0)

#define CHECK_STATUS(st, want)                                               \
    do {                                                                     \
        deft_status_t st_ = (st);                                            \
        CHECK(st_ == (want), "%s returned %s, want %s; last error: %s", #st, \
              deft_status_str(st_), deft_status_str(want),                   \
              deft_last_error());                                            \
    } while (0)

/* Ends a test on every rank with the same verdict. Goes through PMPI (not
 * the counting wrapper) on MPI_COMM_WORLD, which is MPI_ERRORS_ARE_FATAL. */
static void agree(void)
{
    int total = 0;
    PMPI_Allreduce(&bad, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    bad = 0;
    if (total != 0)
        fail_msg("%d check(s) failed over the %d ranks (messages above, "
                 "prefixed by rank)", total, K);
}

/* ---- tests ---------------------------------------------------------------- */

static const size_t sizes[] = {0, 1, 2, 3, 5, 7, 15, 16, 17, 1000, 4099,
                               65537, (1u << 20) + 3};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Rank r's element i: an integer-valued float, so sums are exact in any
 * order and the expected value is known in closed form. */
static float elem(int r, size_t i)
{
    return (float)((int)(i % 1000) - 500 + 3 * r);
}

static void test_collectives_exact(void **state)
{
    (void)state;
    size_t nmax = sizes[NSIZES - 1];
    float *buf = malloc(nmax * sizeof(float));
    unsigned char *send = malloc(nmax), *recv = malloc((size_t)K * nmax);
    assert_true(buf && send && recv);
    for (size_t s = 0; s < NSIZES; s++) {
        size_t n = sizes[s];
        for (size_t i = 0; i < n; i++)
            buf[i] = elem(R, i);
        CHECK_STATUS(deft_comm_allreduce_sum_f32(cm, buf, n), DEFT_OK);
        for (size_t i = 0; i < n; i++) {
            float want = (float)(K * ((int)(i % 1000) - 500) + 3 * K * (K - 1) / 2);
            if (buf[i] != want) {
                CHECK(buf[i] == want, "allreduce n=%zu: buf[%zu] = %g, want %g",
                      n, i, (double)buf[i], (double)want);
                break;
            }
        }

        for (size_t i = 0; i < n; i++)
            send[i] = (unsigned char)(R * 31 + i);
        memset(recv, 0xEE, (size_t)K * n);
        CHECK_STATUS(deft_comm_allgather(cm, send, n, recv), DEFT_OK);
        for (int q = 0; q < K; q++)
            for (size_t i = 0; i < n; i++)
                if (recv[(size_t)q * n + i] != (unsigned char)(q * 31 + i)) {
                    CHECK(0, "allgather n=%zu: block %d byte %zu = %u, want %u",
                          n, q, i, recv[(size_t)q * n + i],
                          (unsigned char)(q * 31 + i));
                    q = K;
                    break;
                }

        for (int root = 0; root < K; root++) {
            for (size_t i = 0; i < n; i++)
                send[i] = (unsigned char)(R == root ? 7 * root + i : 0xEE);
            CHECK_STATUS(deft_comm_broadcast(cm, send, n, root), DEFT_OK);
            for (size_t i = 0; i < n; i++)
                if (send[i] != (unsigned char)(7 * root + i)) {
                    CHECK(0, "broadcast n=%zu root %d: byte %zu = %u, want %u",
                          n, root, i, send[i], (unsigned char)(7 * root + i));
                    break;
                }
        }
    }
    CHECK_STATUS(deft_comm_barrier(cm), DEFT_OK);
    free(buf);
    free(send);
    free(recv);
    agree();
}

/* The 16-bit allreduce: one MPI_Allreduce of 2n bytes; integer values sum
 * exactly in any order (fp16 holds integers up to 2048), and values whose
 * sum depends on the order still end with the same bits on every rank. */
static void test_allreduce_half(void **state)
{
    (void)state;
    const size_t n = 4099;
    uint16_t *buf = malloc(n * 2), *root = malloc(n * 2);
    float *x = malloc(n * sizeof(float));
    assert_true(buf && root && x);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        uint16_t (*to16)(float) = bf16 ? deft_f32_to_bf16 : deft_f32_to_f16;
        float (*to32)(uint16_t) = bf16 ? deft_bf16_to_f32 : deft_f16_to_f32;
        for (size_t i = 0; i < n; i++)
            buf[i] = to16((float)((int)(i % 50) - 25 + R));
        deft_comm_stats_t before, after;
        deft_comm_get_stats(cm, &before);
        count_start();
        CHECK_STATUS(deft_comm_allreduce_sum_half(cm, buf, n, bf16), DEFT_OK);
        CHECK(count_stop() == 1 && mpi_calls.allreduce == 1,
              "16-bit allreduce made %ld MPI calls", count_stop());
        deft_comm_get_stats(cm, &after);
        CHECK(after.payload_bytes - before.payload_bytes == 2 * n,
              "payload %llu bytes, want %zu",
              (unsigned long long)(after.payload_bytes - before.payload_bytes),
              2 * n);
        for (size_t i = 0; i < n; i++) {
            float want = (float)(K * ((int)(i % 50) - 25) + K * (K - 1) / 2);
            if (to32(buf[i]) != want) {
                CHECK(0, "bf16=%d: buf[%zu] = %g, want %g", bf16, i,
                      (double)to32(buf[i]), (double)want);
                break;
            }
        }
        deft_test_fill(x, n, 300 + (uint64_t)R);
        for (size_t i = 0; i < n; i++)
            buf[i] = to16(x[i] * 7.0f);
        CHECK_STATUS(deft_comm_allreduce_sum_half(cm, buf, n, bf16), DEFT_OK);
        memcpy(root, buf, n * 2);
        PMPI_Bcast(root, (int)n, MPI_UINT16_T, 0, MPI_COMM_WORLD);
        CHECK(memcmp(root, buf, n * 2) == 0,
              "bf16=%d: 16-bit allreduce result differs from rank 0's", bf16);
    }
    free(buf);
    free(root);
    free(x);
    agree();
}

/* Floats whose sum depends on the order of the additions: every rank must
 * still end with the same bits, close to the exact sum. */
static void test_allreduce_same_bits_on_all_ranks(void **state)
{
    (void)state;
    const size_t n = 100003;
    float *buf = malloc(n * sizeof(float)), *root = malloc(n * sizeof(float));
    float *other = malloc(n * sizeof(float));
    double *exact = calloc(n, sizeof(double));
    assert_true(buf && root && other && exact);
    for (int r = 0; r < K; r++) {
        float *v = r == R ? buf : other;
        deft_test_fill(v, n, 1000 + (uint64_t)r);
        for (size_t i = 0; i < n; i++) {
            v[i] *= (i % 3 == 0) ? 1e7f : 1e-3f;
            exact[i] += v[i];
        }
    }
    CHECK_STATUS(deft_comm_allreduce_sum_f32(cm, buf, n), DEFT_OK);
    memcpy(root, buf, n * sizeof(float));
    PMPI_Bcast(root, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    CHECK(memcmp(root, buf, n * sizeof(float)) == 0,
          "allreduce result differs from rank 0's");
    for (size_t i = 0; i < n; i++) {
        /* K-1 roundings of partial sums bounded by sum |v_r| <= K * 1e7 */
        double tol = (double)K * K * 1e7 * 6e-8 + 1e-6;
        if (fabs((double)buf[i] - exact[i]) > tol) {
            CHECK(0, "buf[%zu] = %.9g, exact sum %.9g", i, (double)buf[i],
                  exact[i]);
            break;
        }
    }
    free(buf);
    free(root);
    free(other);
    free(exact);
    agree();
}

/* Each deft collective is exactly one MPI call of the matching kind, for
 * every size including 0 and every rank count including 1. */
static void test_one_mpi_call_per_collective(void **state)
{
    (void)state;
    float f[17] = {0};
    unsigned char b[17] = {0}, rb[17 * 4];
    static const size_t ns[] = {0, 1, 17};
    for (size_t s = 0; s < 3; s++) {
        size_t n = ns[s];
        count_start();
        CHECK_STATUS(deft_comm_allreduce_sum_f32(cm, n ? f : NULL, n), DEFT_OK);
        CHECK(count_stop() == 1 && mpi_calls.allreduce == 1,
              "allreduce n=%zu made %ld MPI_Allreduce (of %ld MPI calls)", n,
              mpi_calls.allreduce, count_stop());
        count_start();
        /* n = 0 with NULL buffers, as the API allows */
        CHECK_STATUS(deft_comm_allgather(cm, n ? b : NULL, n, n ? rb : NULL),
                     DEFT_OK);
        CHECK(count_stop() == 1 && mpi_calls.allgather == 1,
              "allgather n=%zu made %ld MPI_Allgather (of %ld MPI calls)", n,
              mpi_calls.allgather, count_stop());
        for (int root = 0; root < K; root++) {
            count_start();
            CHECK_STATUS(deft_comm_broadcast(cm, n ? b : NULL, n, root),
                         DEFT_OK);
            CHECK(count_stop() == 1 && mpi_calls.bcast == 1,
                  "broadcast n=%zu root %d made %ld MPI_Bcast (of %ld MPI "
                  "calls)", n, root, mpi_calls.bcast, count_stop());
        }
    }
    count_start();
    CHECK_STATUS(deft_comm_barrier(cm), DEFT_OK);
    CHECK(count_stop() == 1 && mpi_calls.barrier == 1,
          "barrier made %ld MPI_Barrier (of %ld MPI calls)", mpi_calls.barrier,
          count_stop());
    agree();
}

/* Counts beyond INT_MAX are split into INT_MAX pieces. The same code runs
 * with the limit lowered to 1000 elements, on sizes that leave a ragged
 * last piece. */
static void test_counts_beyond_the_mpi_limit_are_split(void **state)
{
    (void)state;
    int old = deft_mpi_set_max_count(1000);
    CHECK(old == INT_MAX, "default max count %d, want INT_MAX", old);
    const size_t n = 4099; /* 5 pieces: 4 x 1000 + 99 */
    float *buf = malloc(n * sizeof(float));
    unsigned char *send = malloc(n), *recv = malloc((size_t)K * n);
    assert_true(buf && send && recv);

    for (size_t i = 0; i < n; i++)
        buf[i] = elem(R, i);
    count_start();
    CHECK_STATUS(deft_comm_allreduce_sum_f32(cm, buf, n), DEFT_OK);
    count_stop();
    CHECK(mpi_calls.allreduce == 5, "allreduce: %ld MPI_Allreduce, want 5",
          mpi_calls.allreduce);
    for (size_t i = 0; i < n; i++) {
        float want = (float)(K * ((int)(i % 1000) - 500) + 3 * K * (K - 1) / 2);
        if (buf[i] != want) {
            CHECK(0, "split allreduce: buf[%zu] = %g, want %g", i,
                  (double)buf[i], (double)want);
            break;
        }
    }

    for (size_t i = 0; i < n; i++)
        send[i] = (unsigned char)(R * 31 + i * 7);
    memset(recv, 0xEE, (size_t)K * n);
    count_start();
    CHECK_STATUS(deft_comm_allgather(cm, send, n, recv), DEFT_OK);
    count_stop();
    CHECK(mpi_calls.allgather == 5, "allgather: %ld MPI_Allgather, want 5",
          mpi_calls.allgather);
    for (int q = 0; q < K; q++)
        for (size_t i = 0; i < n; i++)
            if (recv[(size_t)q * n + i] != (unsigned char)(q * 31 + i * 7)) {
                CHECK(0, "split allgather: block %d byte %zu wrong", q, i);
                q = K;
                break;
            }

    for (int root = 0; root < K; root++) {
        for (size_t i = 0; i < n; i++)
            send[i] = (unsigned char)(R == root ? 5 * root + i : 0xEE);
        count_start();
        CHECK_STATUS(deft_comm_broadcast(cm, send, n, root), DEFT_OK);
        count_stop();
        CHECK(mpi_calls.bcast == 5, "broadcast: %ld MPI_Bcast, want 5",
              mpi_calls.bcast);
        for (size_t i = 0; i < n; i++)
            if (send[i] != (unsigned char)(5 * root + i)) {
                CHECK(0, "split broadcast root %d: byte %zu wrong", root, i);
                break;
            }
    }
    /* exactly at the limit: still one call */
    count_start();
    CHECK_STATUS(deft_comm_allreduce_sum_f32(cm, buf, 1000), DEFT_OK);
    count_stop();
    CHECK(mpi_calls.allreduce == 1, "n = limit: %ld MPI_Allreduce, want 1",
          mpi_calls.allreduce);

    deft_mpi_set_max_count(0);
    free(buf);
    free(send);
    free(recv);
    agree();
}

/* The same sequence as the threads backend's counter test, on both
 * backends: the counters must agree, and follow the ring formulas. */
static deft_status_t stats_sequence(deft_comm_t *comm, void *arg)
{
    deft_comm_stats_t *out = arg;
    int r = deft_comm_rank(comm), k = deft_comm_size(comm);
    float buf[1001] = {0};
    char g[24] = {0}, recv[24 * 8];
    deft_status_t st;
    deft_comm_reset_stats(comm);
    /* the alpha-beta link model is backend-independent too */
    if ((st = deft_comm_set_link(comm, 1.0, 10.0)) != DEFT_OK)
        return st;
    if ((st = deft_comm_allreduce_sum_f32(comm, buf, 1001)) != DEFT_OK ||
        (st = deft_comm_allgather(comm, g, sizeof g, recv)) != DEFT_OK ||
        (st = deft_comm_broadcast(comm, g, sizeof g, k > 2 ? 2 : 0)) != DEFT_OK ||
        (st = deft_comm_barrier(comm)) != DEFT_OK)
        return st;
    return deft_comm_get_stats(comm, &out[r]);
}

/* The traffic counters (not the timings) of two stats records agree. */
static int same_traffic(const deft_comm_stats_t *a, const deft_comm_stats_t *b)
{
    return a->bytes_sent == b->bytes_sent &&
           a->payload_bytes == b->payload_bytes &&
           a->n_allreduce == b->n_allreduce && a->n_allgather == b->n_allgather &&
           a->n_broadcast == b->n_broadcast && a->n_barrier == b->n_barrier;
}

static void test_traffic_counters_match_threads_backend(void **state)
{
    (void)state;
    deft_comm_stats_t mine[4], threads[4];
    assert_true(K <= 4);
    CHECK_STATUS(stats_sequence(cm, mine), DEFT_OK);
    CHECK_STATUS(deft_comm_set_link(cm, 0.0, 0.0), DEFT_OK); /* model off */
    CHECK_STATUS(deft_run_threads(K, stats_sequence, threads), DEFT_OK);
    const deft_comm_stats_t *s = &mine[R], *t = &threads[R];
    CHECK(s->modeled_s == t->modeled_s, "modeled_s %.17g, threads %.17g",
          s->modeled_s, t->modeled_s);
    CHECK(s->comm_s > 0 && s->comm_cpu_s >= 0, "comm_s %g, comm_cpu_s %g",
          s->comm_s, s->comm_cpu_s);
    CHECK(same_traffic(s, t),
          "mpi counters {sent %llu, payload %llu, %llu/%llu/%llu/%llu} != "
          "threads {sent %llu, payload %llu, %llu/%llu/%llu/%llu}",
          (unsigned long long)s->bytes_sent, (unsigned long long)s->payload_bytes,
          (unsigned long long)s->n_allreduce, (unsigned long long)s->n_allgather,
          (unsigned long long)s->n_broadcast, (unsigned long long)s->n_barrier,
          (unsigned long long)t->bytes_sent, (unsigned long long)t->payload_bytes,
          (unsigned long long)t->n_allreduce, (unsigned long long)t->n_allgather,
          (unsigned long long)t->n_broadcast, (unsigned long long)t->n_barrier);

    /* Ring allreduce of 1001 floats: chunk c has 1001/K (+1 for the first
     * 1001 % K chunks) floats; rank r sends chunks r-s and r+1-s, s < K-1.
     * Broadcast along root -> root+1 -> ...: all but the last forward. */
    uint64_t ring = 0;
    for (int st = 0; st < K - 1; st++) {
        int c1 = ((R - st) % K + K) % K, c2 = ((R + 1 - st) % K + K) % K;
        ring += 1001 / K + (c1 < 1001 % K) + 1001 / K + (c2 < 1001 % K);
    }
    int root = K > 2 ? 2 : 0, last = (root + K - 1) % K;
    uint64_t want_sent = ring * 4 + (uint64_t)(K - 1) * 24 +
                         (K > 1 && R != last ? 24 : 0);
    uint64_t want_payload = 1001 * 4 + 24 + (R == root ? 24 : 0);
    CHECK(s->bytes_sent == want_sent, "bytes_sent = %llu, want %llu",
          (unsigned long long)s->bytes_sent, (unsigned long long)want_sent);
    CHECK(s->payload_bytes == want_payload, "payload_bytes = %llu, want %llu",
          (unsigned long long)s->payload_bytes, (unsigned long long)want_payload);
    CHECK(s->n_allreduce == 1 && s->n_allgather == 1 && s->n_broadcast == 1 &&
          s->n_barrier == 1, "operation counts not all 1");
    agree();
}

/* Bad arguments fail on every rank with DEFT_ERR_INVALID_ARG before any
 * MPI call (so no rank is left waiting), and count no traffic. */
static void test_argument_errors_make_no_mpi_call(void **state)
{
    (void)state;
    char b[8] = {0}, rb[8 * 4];
    deft_comm_stats_t before, after;
    deft_comm_reset_stats(cm);
    deft_comm_get_stats(cm, &before);
    count_start();
    CHECK_STATUS(deft_comm_broadcast(cm, b, sizeof b, K), DEFT_ERR_INVALID_ARG);
    CHECK(strstr(deft_last_error(), "root"), "message '%s' does not name root",
          deft_last_error());
    CHECK_STATUS(deft_comm_broadcast(cm, b, sizeof b, -1), DEFT_ERR_INVALID_ARG);
    CHECK_STATUS(deft_comm_broadcast(cm, NULL, 4, 0), DEFT_ERR_INVALID_ARG);
    CHECK_STATUS(deft_comm_allreduce_sum_f32(cm, NULL, 3), DEFT_ERR_INVALID_ARG);
    CHECK(strstr(deft_last_error(), "buf"), "message '%s' does not name buf",
          deft_last_error());
    CHECK_STATUS(deft_comm_allgather(cm, NULL, 4, rb), DEFT_ERR_INVALID_ARG);
    CHECK_STATUS(deft_comm_allgather(cm, b, 4, NULL), DEFT_ERR_INVALID_ARG);
    if (K > 1) /* bytes * K overflows */
        CHECK_STATUS(deft_comm_allgather(cm, b, SIZE_MAX / 2 + 1, rb),
                     DEFT_ERR_INVALID_ARG);
    long calls = count_stop();
    CHECK(calls == 0, "argument errors made %ld MPI calls", calls);
    deft_comm_get_stats(cm, &after);
    CHECK(same_traffic(&before, &after),
          "argument errors changed the traffic counters");

    deft_comm_t *c2 = cm;
    CHECK_STATUS(deft_comm_create_mpi(NULL, MPI_COMM_WORLD), DEFT_ERR_INVALID_ARG);
    CHECK_STATUS(deft_comm_create_mpi(&c2, MPI_COMM_NULL), DEFT_ERR_INVALID_ARG);
    CHECK(c2 == NULL, "failed create left *out = %p", (void *)c2);
    CHECK(strstr(deft_last_error(), "MPI_COMM_NULL"), "message '%s'",
          deft_last_error());
    deft_comm_destroy(NULL);
    CHECK(deft_have_mpi() == 1, "deft_have_mpi() = %d", deft_have_mpi());
    /* everyone is still in step */
    CHECK_STATUS(deft_comm_barrier(cm), DEFT_OK);
    agree();
}

/* An error inside MPI comes back as DEFT_ERR_COMM with MPI's description,
 * instead of MPI's default of aborting the job: the duplicate carries
 * MPI_ERRORS_RETURN. */
static void test_mpi_errors_become_comm_errors(void **state)
{
    (void)state;
    /* A real MPI error: MPI_Bcast's own argument check rejects root = K on
     * every rank before it communicates (comm.c's check is bypassed by
     * calling the backend directly). */
    char b[4] = {0};
    deft_status_t st = cm->ops->broadcast(cm, b, sizeof b, K);
    CHECK_STATUS(st, DEFT_ERR_COMM);
    CHECK(strstr(deft_last_error(), "MPI_Bcast") &&
          strstr(deft_last_error(), "root"),
          "message '%s' does not name MPI_Bcast and MPI's reason",
          deft_last_error());

    /* An injected failure, through the public API. */
    char want[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(MPI_ERR_INTERN, want, &len);
    mpi_calls.fail_barrier = MPI_ERR_INTERN;
    CHECK_STATUS(deft_comm_barrier(cm), DEFT_ERR_COMM);
    CHECK(strstr(deft_last_error(), "MPI_Barrier") &&
          strstr(deft_last_error(), want),
          "message '%s' does not hold MPI's text '%s'", deft_last_error(), want);
    char rank_text[32];
    snprintf(rank_text, sizeof rank_text, "rank %d of %d", R, K);
    CHECK(strstr(deft_last_error(), rank_text), "message '%s' lacks '%s'",
          deft_last_error(), rank_text);

    /* The caller's communicator keeps its error handler. */
    MPI_Errhandler eh;
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh);
    CHECK(eh == MPI_ERRORS_ARE_FATAL, "MPI_COMM_WORLD's handler was changed");
    MPI_Errhandler_free(&eh);
    CHECK_STATUS(deft_comm_barrier(cm), DEFT_OK);
    agree();
}

/* Communicators over a split of MPI_COMM_WORLD: rank and size follow the
 * sub-communicator, sums stay inside it, and it can be destroyed and made
 * again. Intercommunicators are refused. */
static void test_sub_communicators(void **state)
{
    (void)state;
    MPI_Comm half;
    int color = R % 2;
    MPI_Comm_split(MPI_COMM_WORLD, color, R, &half);
    int hr, hk;
    MPI_Comm_rank(half, &hr);
    MPI_Comm_size(half, &hk);
    for (int round = 0; round < 2; round++) {
        deft_comm_t *c = NULL;
        CHECK_STATUS(deft_comm_create_mpi(&c, half), DEFT_OK);
        if (!c) {
            bad++;
            break;
        }
        CHECK(deft_comm_rank(c) == hr && deft_comm_size(c) == hk,
              "rank/size %d/%d, want %d/%d", deft_comm_rank(c),
              deft_comm_size(c), hr, hk);
        float v[3] = {(float)R, 1.0f, (float)(100 * round)};
        CHECK_STATUS(deft_comm_allreduce_sum_f32(c, v, 3), DEFT_OK);
        float want = 0;
        for (int q = color; q < K; q += 2)
            want += (float)q;
        CHECK(v[0] == want && v[1] == (float)hk && v[2] == 100.0f * round * hk,
              "sub-communicator sum {%g, %g, %g}, want {%g, %d, %d}",
              (double)v[0], (double)v[1], (double)v[2], (double)want, hk,
              100 * round * hk);
        deft_comm_destroy(c);
    }
    if (K >= 2) {
        MPI_Comm inter;
        /* leaders: rank 0 of each half = world ranks 0 and 1 */
        MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, color == 0 ? 1 : 0, 77,
                             &inter);
        deft_comm_t *c = NULL;
        CHECK_STATUS(deft_comm_create_mpi(&c, inter), DEFT_ERR_INVALID_ARG);
        CHECK(strstr(deft_last_error(), "intercommunicator"), "message '%s'",
              deft_last_error());
        deft_comm_destroy(c);
        MPI_Comm_free(&inter);
    }
    MPI_Comm_free(&half);
    agree();
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_size(MPI_COMM_WORLD, &K);
    MPI_Comm_rank(MPI_COMM_WORLD, &R);
    diag = fdopen(dup(STDERR_FILENO), "w");
    if (!diag)
        diag = stderr;
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep cmocka's stdout and stderr in order */
    if (R != 0) { /* one cmocka report: rank 0's */
#if defined(__SANITIZE_ADDRESS__)
        /* sanitizer reports still go to the real stderr */
        __sanitizer_set_report_fd((void *)(intptr_t)fileno(diag));
#endif
        if (!freopen("/dev/null", "w", stdout) ||
            !freopen("/dev/null", "w", stderr))
            fprintf(diag, "[rank %d] could not mute cmocka\n", R);
    }
    if (K > 4) {
        fprintf(diag, "test_comm_mpi: run with 1 to 4 ranks, not %d\n", K);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    deft_status_t st = deft_comm_create_mpi(&cm, MPI_COMM_WORLD);
    if (st != DEFT_OK) {
        fprintf(diag, "[rank %d] deft_comm_create_mpi: %s\n", R,
                deft_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (R == 0)
        printf("test_comm_mpi: %d rank(s)\n", K);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collectives_exact),
        cmocka_unit_test(test_allreduce_same_bits_on_all_ranks),
        cmocka_unit_test(test_allreduce_half),
        cmocka_unit_test(test_one_mpi_call_per_collective),
        cmocka_unit_test(test_counts_beyond_the_mpi_limit_are_split),
        cmocka_unit_test(test_traffic_counters_match_threads_backend),
        cmocka_unit_test(test_argument_errors_make_no_mpi_call),
        cmocka_unit_test(test_mpi_errors_become_comm_errors),
        cmocka_unit_test(test_sub_communicators),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);

    deft_comm_destroy(cm);
    /* Failures were agreed on, so every rank has the same count; take the
     * max anyway so that the exit code can never differ between ranks. */
    int worst = 0;
    PMPI_Allreduce(&failed, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    /* diag stays open: sanitizer reports at exit go to it */
    return worst != 0;
}

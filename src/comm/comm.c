/* Backend-independent part of the communicator: argument checks at the API
 * edge and traffic counters. */
#include "comm/comm_internal.h"
#include "compress/half.h"
#include "core/internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>


/* Runs one backend collective as the next in comm's sequence, under the
 * watchdog (when one is set), timing it in wall-clock and thread CPU
 * seconds, and adds `modeled` seconds of the link model. */
#define TIMED(comm, op, modeled, call)                                       \
    do {                                                                     \
        (comm)->seq++;                                                       \
        double w0_ = deft_wall_s(), c0_ = deft_thread_cpu_s();               \
        if ((comm)->wd)                                                      \
            deft_watchdog_enter((comm)->wd, (op), (comm)->seq);              \
        deft_status_t st_ = (call);                                          \
        if ((comm)->wd)                                                      \
            deft_watchdog_leave((comm)->wd);                                 \
        (comm)->stats.comm_s += deft_wall_s() - w0_;                         \
        (comm)->stats.comm_cpu_s += deft_thread_cpu_s() - c0_;               \
        (comm)->stats.modeled_s += (modeled);                                \
        return st_;                                                          \
    } while (0)

const char *deft_comm_op_name(int op)
{
    static const char *const names[] = {"allreduce", "allgather", "broadcast",
                                        "barrier"};
    return op >= DEFT_OP_ALLREDUCE && op <= DEFT_OP_BARRIER ? names[op - 1] : "";
}

static double log2_ceil(int k)
{
    return k > 1 ? ceil(log2((double)k)) : 0.0;
}

/* Alpha-beta times (see deft_comm_set_link); 0 without a link. */
static double model_allreduce(const deft_comm_t *c, double bytes)
{
    if (c->link_bps <= 0 || c->size < 2)
        return 0;
    return 2.0 * (c->size - 1) * (c->link_alpha + bytes / (c->size * c->link_bps));
}

static double model_allgather(const deft_comm_t *c, double bytes)
{
    if (c->link_bps <= 0 || c->size < 2)
        return 0;
    return (c->size - 1) * (c->link_alpha + bytes / c->link_bps);
}

static double model_tree(const deft_comm_t *c, double bytes)
{
    if (c->link_bps <= 0 || c->size < 2)
        return 0;
    return log2_ceil(c->size) * (c->link_alpha + bytes / c->link_bps);
}

/* Chunk c of n elements split into K nearly equal parts: the first n % K
 * chunks have one element more. */
static size_t chunk_len(size_t n, int size, int c)
{
    size_t base = n / (size_t)size, rem = n % (size_t)size;
    return base + ((size_t)c < rem ? 1 : 0);
}

uint64_t deft_ring_allreduce_bytes(size_t n, int size, int rank)
{
    return deft_ring_allreduce_bytes_elem(n, sizeof(float), size, rank);
}

uint64_t deft_ring_allreduce_bytes_elem(size_t n, size_t elem, int size,
                                        int rank)
{
    if (size <= 1)
        return 0;
    /* Reduce-scatter: at step s rank r sends chunk (r - s) mod K, s = 0..K-2;
     * allgather: it sends chunk (r + 1 - s) mod K. */
    uint64_t total = 0;
    for (int s = 0; s < size - 1; s++) {
        total += chunk_len(n, size, ((rank - s) % size + size) % size);
        total += chunk_len(n, size, ((rank + 1 - s) % size + size) % size);
    }
    return total * elem;
}

int deft_comm_rank(const deft_comm_t *comm)
{
    return comm ? comm->rank : -1;
}

int deft_comm_size(const deft_comm_t *comm)
{
    return comm ? comm->size : -1;
}

deft_status_t deft_comm_allreduce_sum_f32(deft_comm_t *comm, float *buf,
                                          size_t n)
{
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_allreduce_sum_f32: comm is NULL");
    if (!buf && n > 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_allreduce_sum_f32: buf is NULL with n = %zu",
                         n);
    comm->stats.n_allreduce++;
    comm->stats.payload_bytes += (uint64_t)n * sizeof(float);
    comm->stats.bytes_sent += deft_ring_allreduce_bytes(n, comm->size, comm->rank);
    TIMED(comm, DEFT_OP_ALLREDUCE, model_allreduce(comm, (double)n * sizeof(float)),
          comm->ops->allreduce_sum_f32(comm, buf, n));
}

/* Backends without a 16-bit path: decode, sum as floats, round back. The
 * result matches a backend that adds once in float and rounds once. */
static deft_status_t half_as_f32(deft_comm_t *comm, uint16_t *buf, size_t n,
                                 int bf16)
{
    float *f = n ? malloc(n * sizeof(float)) : NULL;
    if (n && !f)
        return deft_fail(DEFT_ERR_NOMEM, "deft_comm_allreduce_sum_half: out of "
                         "memory for %zu floats", n);
    for (size_t i = 0; i < n; i++)
        f[i] = bf16 ? deft_bf16_to_f32(buf[i]) : deft_f16_to_f32(buf[i]);
    deft_status_t st = comm->ops->allreduce_sum_f32(comm, f, n);
    for (size_t i = 0; st == DEFT_OK && i < n; i++)
        buf[i] = bf16 ? deft_f32_to_bf16(f[i]) : deft_f32_to_f16(f[i]);
    free(f);
    return st;
}

deft_status_t deft_comm_allreduce_sum_half(deft_comm_t *comm, uint16_t *buf,
                                           size_t n, int bf16)
{
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_allreduce_sum_half: comm is NULL");
    if (!buf && n > 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_allreduce_sum_half: buf is NULL with n = "
                         "%zu", n);
    size_t elem = comm->ops->allreduce_sum_half ? 2 : sizeof(float);
    comm->stats.n_allreduce++;
    comm->stats.payload_bytes += (uint64_t)n * elem;
    comm->stats.bytes_sent +=
        deft_ring_allreduce_bytes_elem(n, elem, comm->size, comm->rank);
    TIMED(comm, DEFT_OP_ALLREDUCE, model_allreduce(comm, (double)n * elem),
          comm->ops->allreduce_sum_half
              ? comm->ops->allreduce_sum_half(comm, buf, n, bf16)
              : half_as_f32(comm, buf, n, bf16));
}

deft_status_t deft_comm_allgather(deft_comm_t *comm, const void *send,
                                  size_t bytes, void *recv)
{
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_comm_allgather: comm is NULL");
    if (bytes > 0 && (!send || !recv))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_allgather: %s is NULL with bytes = %zu",
                         !send ? "send" : "recv", bytes);
    if (bytes > SIZE_MAX / (size_t)comm->size)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_allgather: bytes = %zu times %d workers "
                         "overflows size_t", bytes, comm->size);
    comm->stats.n_allgather++;
    comm->stats.payload_bytes += bytes;
    comm->stats.bytes_sent += (uint64_t)bytes * (uint64_t)(comm->size - 1);
    TIMED(comm, DEFT_OP_ALLGATHER, model_allgather(comm, (double)bytes),
          comm->ops->allgather(comm, send, bytes, recv));
}

deft_status_t deft_comm_broadcast(deft_comm_t *comm, void *buf, size_t bytes,
                                  int root)
{
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_comm_broadcast: comm is NULL");
    if (!buf && bytes > 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_broadcast: buf is NULL with bytes = %zu",
                         bytes);
    if (root < 0 || root >= comm->size)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_broadcast: root = %d, must be in [0, %d)",
                         root, comm->size);
    comm->stats.n_broadcast++;
    /* Chain root -> root+1 -> ...: every rank but the last forwards it. */
    int last = (root + comm->size - 1) % comm->size;
    if (comm->rank == root)
        comm->stats.payload_bytes += bytes;
    if (comm->size > 1 && comm->rank != last)
        comm->stats.bytes_sent += bytes;
    TIMED(comm, DEFT_OP_BROADCAST, model_tree(comm, (double)bytes),
          comm->ops->broadcast(comm, buf, bytes, root));
}

deft_status_t deft_comm_barrier(deft_comm_t *comm)
{
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_comm_barrier: comm is NULL");
    comm->stats.n_barrier++;
    TIMED(comm, DEFT_OP_BARRIER, model_tree(comm, 0.0), comm->ops->barrier(comm));
}

deft_status_t deft_comm_get_stats(const deft_comm_t *comm, deft_comm_stats_t *out)
{
    if (!comm || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_comm_get_stats: %s is NULL",
                         !comm ? "comm" : "out");
    *out = comm->stats;
    return DEFT_OK;
}

deft_status_t deft_comm_set_link(deft_comm_t *comm, double gbps,
                                 double latency_us)
{
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_comm_set_link: comm is NULL");
    if (!(gbps >= 0) || !isfinite(gbps))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_set_link: gbps = %g, must be >= 0 (0 turns "
                         "the model off)", gbps);
    if (!(latency_us >= 0) || !isfinite(latency_us))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_set_link: latency_us = %g, must be >= 0",
                         latency_us);
    comm->link_bps = gbps * 1e9 / 8.0;
    comm->link_alpha = latency_us * 1e-6;
    return DEFT_OK;
}

void deft_comm_reset_stats(deft_comm_t *comm)
{
    if (comm)
        memset(&comm->stats, 0, sizeof comm->stats);
}

deft_status_t deft_comm_set_timeout(deft_comm_t *comm, double seconds)
{
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_comm_set_timeout: comm is NULL");
    if (!(seconds >= 0) || !(seconds <= 1e7))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_set_timeout: seconds = %g, must be in "
                         "[0, 1e7] (0 turns the watchdog off)", seconds);
    if (seconds > 0 && comm->size > 1 && !comm->ops->on_timeout)
        return deft_fail(DEFT_ERR_UNSUPPORTED,
                         "deft_comm_set_timeout: the %s backend cannot "
                         "interrupt its collectives; use the engine's own "
                         "timeout (for torch.distributed, the timeout= of "
                         "init_process_group)", comm->ops->name);
    /* The new watchdog first, so that a failure keeps the old one. */
    deft_watchdog_t *wd = NULL;
    if (seconds > 0 && comm->size > 1) {
        deft_status_t st = deft_watchdog_start(&wd, comm, seconds);
        if (st != DEFT_OK)
            return st;
    }
    deft_watchdog_stop(comm->wd);
    comm->wd = wd;
    return DEFT_OK;
}

void deft_comm_stop_watchdog(deft_comm_t *comm)
{
    if (comm) {
        deft_watchdog_stop(comm->wd);
        comm->wd = NULL;
    }
}

void deft_comm_destroy(deft_comm_t *comm)
{
    if (!comm)
        return;
    deft_comm_stop_watchdog(comm);
    if (comm->ops->destroy)
        comm->ops->destroy(comm);
}

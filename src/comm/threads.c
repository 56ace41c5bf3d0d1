/* Threads backend: K workers as threads of one process. Collectives publish
 * pointers to the workers' own buffers and synchronize with a barrier, so no
 * data is staged through extra memory. The allreduce splits the vector into
 * K chunks; worker r sums chunk r over all buffers in rank order 0..K-1 (so
 * every run, whatever the thread timing, adds in the same order) and then
 * every worker copies the other chunks. When a worker fails or returns, the
 * group is marked failed and every pending or later barrier returns
 * DEFT_ERR_COMM instead of waiting for it. */
#include "comm/comm_internal.h"
#include "compress/half.h"
#include "core/internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    int op;
    size_t n; /* floats or bytes */
    int root;
    const void *ptr;
} slot_t;

typedef struct {
    int size;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    uint64_t generation;
    int failed;    /* a worker failed or left: collectives can't complete */
    int departed;  /* workers whose function returned */
    int have_first;
    deft_status_t first_status;
    char first_msg[1100];
    char why[600];  /* why the group failed, when a watchdog failed it */
    /* (2, size): what each worker published for its current collective.
     * Two sets, alternating per collective, because a worker that leaves
     * a barrier first may publish its next collective while a slower one
     * still reads this one's slots; it can never get two ahead. */
    slot_t *slots[2];
} group_t;

typedef struct {
    group_t *g;
    deft_comm_t comm;
    pthread_t thread;
    deft_worker_fn fn;
    void *arg;
    deft_status_t status;
} worker_t;

static deft_status_t group_barrier(group_t *g, int rank)
{
    deft_status_t st = DEFT_OK;
    pthread_mutex_lock(&g->mu);
    if (g->failed) {
        st = g->why[0]
                 ? deft_fail(DEFT_ERR_COMM, "threads backend: worker %d "
                             "entered a collective after the watchdog failed "
                             "the group: %s", rank, g->why)
                 : deft_fail(DEFT_ERR_COMM, "threads backend: worker %d "
                             "entered a collective after another worker "
                             "failed or returned", rank);
    } else {
        uint64_t gen = g->generation;
        if (++g->arrived == g->size) {
            g->arrived = 0;
            g->generation++;
            pthread_cond_broadcast(&g->cv);
        } else {
            while (g->generation == gen && !g->failed)
                pthread_cond_wait(&g->cv, &g->mu);
            if (g->generation == gen && g->why[0])
                st = deft_fail(DEFT_ERR_COMM, "threads backend: worker %d: %s",
                               rank, g->why);
            else if (g->generation == gen)
                st = deft_fail(DEFT_ERR_COMM,
                               "threads backend: worker %d was waiting in a "
                               "collective when another worker failed or "
                               "returned", rank);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return st;
}

static void group_mark_failed(group_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->failed = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Publishes this worker's part of a collective, waits for all, and checks
 * that everyone called the same collective with the same sizes: a mismatch
 * would otherwise read past buffers. All workers see the same slots, so
 * they all agree on the verdict. */
static deft_status_t publish(deft_comm_t *c, int op, size_t n, int root,
                             const void *ptr)
{
    worker_t *w = c->impl;
    group_t *g = w->g;
    slot_t *slots = g->slots[c->seq & 1]; /* c->seq: this collective's */
    slots[c->rank] = (slot_t){op, n, root, ptr};
    deft_status_t st = group_barrier(g, c->rank);
    if (st != DEFT_OK)
        return st;
    for (int r = 0; r < g->size; r++) {
        const slot_t *s = &slots[r];
        if (s->op != op || s->n != n || s->root != root) {
            group_mark_failed(g);
            return deft_fail(DEFT_ERR_COMM,
                             "threads backend: collectives disagree: worker %d "
                             "called %s(n=%zu, root=%d) while worker %d called "
                             "%s(n=%zu, root=%d)", c->rank, deft_comm_op_name(op), n,
                             root, r, deft_comm_op_name(s->op), s->n, s->root);
        }
    }
    return DEFT_OK;
}

/* Chunk boundaries on 16-float (64-byte) multiples so that workers never
 * write the same cache line. */
static size_t chunk_start(size_t n, int size, int c)
{
    size_t s = (size_t)((double)n * c / size);
    s = (s + 15) & ~(size_t)15;
    return s < n ? s : n;
}

/* The slots of the collective this worker is in (after publish). */
static const slot_t *current_slots(const deft_comm_t *c)
{
    const worker_t *w = c->impl;
    return w->g->slots[c->seq & 1];
}

/* The allreduces' second half: once every worker has reduced its own
 * chunk (into its own buffer), each copies the other chunks of n elements
 * of elem bytes from their owners. */
static deft_status_t copy_other_chunks(deft_comm_t *c, void *buf, size_t n,
                                       size_t elem)
{
    group_t *g = ((worker_t *)c->impl)->g;
    const slot_t *slots = current_slots(c);
    deft_status_t st = group_barrier(g, c->rank);
    if (st != DEFT_OK)
        return st;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank)
            continue;
        size_t a = chunk_start(n, c->size, r), z = chunk_start(n, c->size, r + 1);
        if (z > a)
            memcpy((char *)buf + a * elem, (const char *)slots[r].ptr + a * elem,
                   (z - a) * elem);
    }
    /* Nobody may touch its buffer again until all have copied from it. */
    return group_barrier(g, c->rank);
}

/* The allreduces' first half: publish buf for an allreduce of n elements
 * (root tells the element types apart) and give this worker's chunk
 * [*lo, *hi), which it reduces from the returned slots. */
static deft_status_t begin_allreduce(deft_comm_t *c, void *buf, size_t n,
                                     int root, const slot_t **slots,
                                     size_t *lo, size_t *hi)
{
    deft_status_t st = publish(c, DEFT_OP_ALLREDUCE, n, root, buf);
    *slots = current_slots(c);
    *lo = chunk_start(n, c->size, c->rank);
    *hi = chunk_start(n, c->size, c->rank + 1);
    return st;
}

static deft_status_t threads_allreduce(deft_comm_t *c, float *buf, size_t n)
{
    if (c->size == 1)
        return DEFT_OK;
    const slot_t *slots;
    size_t lo, hi;
    deft_status_t st = begin_allreduce(c, buf, n, 0, &slots, &lo, &hi);
    if (st != DEFT_OK)
        return st;
    enum { BLK = 1024 };
    float acc[BLK];
    for (size_t b = lo; b < hi; b += BLK) {
        size_t m = hi - b < BLK ? hi - b : BLK;
        const float *s0 = (const float *)slots[0].ptr + b;
        for (size_t i = 0; i < m; i++)
            acc[i] = s0[i];
        for (int r = 1; r < c->size; r++) {
            const float *sr = (const float *)slots[r].ptr + b;
            for (size_t i = 0; i < m; i++)
                acc[i] += sr[i];
        }
        memcpy(buf + b, acc, m * sizeof(float));
    }
    return copy_other_chunks(c, buf, n, sizeof(float));
}

/* The same over 16-bit floats: chunk r is decoded and added in float in
 * rank order, then rounded once. */
static deft_status_t threads_allreduce_half(deft_comm_t *c, uint16_t *buf,
                                            size_t n, int bf16)
{
    if (c->size == 1)
        return DEFT_OK;
    /* root -1 / -2 tells a 16-bit allreduce from a float one (root 0). */
    const slot_t *slots;
    size_t lo, hi;
    deft_status_t st =
        begin_allreduce(c, buf, n, bf16 ? -2 : -1, &slots, &lo, &hi);
    if (st != DEFT_OK)
        return st;
    enum { BLK = 1024 };
    float acc[BLK];
    for (size_t b = lo; b < hi; b += BLK) {
        size_t m = hi - b < BLK ? hi - b : BLK;
        for (size_t i = 0; i < m; i++)
            acc[i] = 0.0f;
        for (int r = 0; r < c->size; r++) {
            const uint16_t *sr = (const uint16_t *)slots[r].ptr + b;
            if (bf16)
                for (size_t i = 0; i < m; i++)
                    acc[i] += deft_bf16_to_f32(sr[i]);
            else
                for (size_t i = 0; i < m; i++)
                    acc[i] += deft_f16_to_f32(sr[i]);
        }
        for (size_t i = 0; i < m; i++)
            buf[b + i] = bf16 ? deft_f32_to_bf16(acc[i]) : deft_f32_to_f16(acc[i]);
    }
    return copy_other_chunks(c, buf, n, sizeof(uint16_t));
}

static deft_status_t threads_allgather(deft_comm_t *c, const void *send,
                                       size_t bytes, void *recv)
{
    group_t *g = ((worker_t *)c->impl)->g;
    deft_status_t st = publish(c, DEFT_OP_ALLGATHER, bytes, 0, send);
    if (st != DEFT_OK)
        return st;
    const slot_t *slots = current_slots(c);
    for (int r = 0; r < c->size; r++)
        if (bytes)
            memcpy((char *)recv + (size_t)r * bytes, slots[r].ptr, bytes);
    return group_barrier(g, c->rank);
}

static deft_status_t threads_broadcast(deft_comm_t *c, void *buf, size_t bytes,
                                       int root)
{
    if (c->size == 1)
        return DEFT_OK;
    group_t *g = ((worker_t *)c->impl)->g;
    deft_status_t st = publish(c, DEFT_OP_BROADCAST, bytes, root, buf);
    if (st != DEFT_OK)
        return st;
    if (c->rank != root && bytes)
        memcpy(buf, current_slots(c)[root].ptr, bytes);
    return group_barrier(g, c->rank);
}

static deft_status_t threads_barrier(deft_comm_t *c)
{
    return publish(c, DEFT_OP_BARRIER, 0, 0, NULL);
}

/* The watchdog of worker c fired: fail the group with its message, which
 * wakes every worker waiting in a collective (this one included). */
static void threads_on_timeout(deft_comm_t *c, const char *msg)
{
    group_t *g = ((worker_t *)c->impl)->g;
    pthread_mutex_lock(&g->mu);
    if (!g->failed)
        snprintf(g->why, sizeof g->why, "%s", msg);
    g->failed = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static const deft_comm_backend_t threads_ops = {
    .name = "threads",
    .allreduce_sum_f32 = threads_allreduce,
    .allgather = threads_allgather,
    .broadcast = threads_broadcast,
    .barrier = threads_barrier,
    .destroy = NULL,
    .on_timeout = threads_on_timeout,
    .allreduce_sum_half = threads_allreduce_half,
};

static void *worker_main(void *p)
{
    worker_t *w = p;
    group_t *g = w->g;
    deft_clear_error();
    w->status = w->fn(&w->comm, w->arg);
    deft_comm_stop_watchdog(&w->comm);
    pthread_mutex_lock(&g->mu);
    if (w->status != DEFT_OK && !g->have_first) {
        g->have_first = 1;
        g->first_status = w->status;
        snprintf(g->first_msg, sizeof g->first_msg, "worker %d: %s",
                 w->comm.rank, deft_last_error());
    }
    g->departed++;
    g->failed = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

deft_status_t deft_run_threads(int nworkers, deft_worker_fn fn, void *arg)
{
    if (nworkers < 1 || nworkers > DEFT_MAX_WORKERS)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_run_threads: nworkers = %d, must be in [1, %d]",
                         nworkers, DEFT_MAX_WORKERS);
    if (!fn)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_run_threads: fn is NULL");

    group_t g;
    memset(&g, 0, sizeof g);
    g.size = nworkers;
    g.slots[0] = calloc((size_t)nworkers, sizeof(slot_t));
    g.slots[1] = calloc((size_t)nworkers, sizeof(slot_t));
    worker_t *w = calloc((size_t)nworkers, sizeof *w);
    if (!g.slots[0] || !g.slots[1] || !w) {
        free(g.slots[0]);
        free(g.slots[1]);
        free(w);
        return deft_fail(DEFT_ERR_NOMEM, "deft_run_threads: no memory for %d "
                         "workers", nworkers);
    }
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);

    int started = 0;
    deft_status_t st = DEFT_OK;
    for (int r = 0; r < nworkers; r++) {
        w[r].g = &g;
        w[r].comm = (deft_comm_t){.ops = &threads_ops, .rank = r,
                                  .size = nworkers, .impl = &w[r]};
        w[r].fn = fn;
        w[r].arg = arg;
        if (pthread_create(&w[r].thread, NULL, worker_main, &w[r]) != 0) {
            group_mark_failed(&g);
            st = deft_fail(DEFT_ERR_NOMEM,
                           "deft_run_threads: could not start thread %d of %d",
                           r, nworkers);
            break;
        }
        started++;
    }
    for (int r = 0; r < started; r++)
        pthread_join(w[r].thread, NULL);

    if (st == DEFT_OK && g.have_first) {
        st = g.first_status;
        deft_set_last_error_text(g.first_msg);
    }
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    free(g.slots[0]);
    free(g.slots[1]);
    free(w);
    return st;
}

/* Collective watchdog (deft_comm_set_timeout): one helper thread per
 * communicator that polls how long the current collective has been running.
 * Entering and leaving a collective costs a few atomic stores, so the
 * steps' hot path takes no lock and wakes no thread. The thread sleeps for
 * a tenth of the timeout (at most 1 s) between looks, so a timeout fires
 * between S and 1.1 S seconds after the collective began.
 *
 * When it fires, it formats the message and hands it to the backend's
 * on_timeout: the threads backend fails the group, so that every waiting
 * worker returns DEFT_ERR_COMM; the MPI backend writes the message to
 * stderr and calls MPI_Abort, since a blocked MPI call cannot be
 * interrupted. */
#include "comm/comm_internal.h"
#include "core/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct deft_watchdog {
    deft_comm_t *comm;
    double timeout_s;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;                    /* under mu */
    /* The collective being watched: its op and sequence number, and when
     * it began (CLOCK_MONOTONIC nanoseconds). Written by the
     * communicator's thread, read here. */
    _Atomic int op;              /* DEFT_OP_*, 0 = none              */
    _Atomic uint64_t seq;
    _Atomic int64_t since_ns;
    _Atomic int fired;
};

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void fire(deft_watchdog_t *wd, int op, uint64_t seq, double waited)
{
    char msg[512];
    const deft_comm_t *c = wd->comm;
    snprintf(msg, sizeof msg,
             "collective watchdog: %s (collective #%llu) on rank %d of %d has "
             "not completed after %.1f s (timeout %g s): a peer is stopped, "
             "gone or unreachable. If steps are legitimately this slow, raise "
             "the timeout (deft train --comm-timeout S, 0 = off)",
             deft_comm_op_name(op), (unsigned long long)seq, c->rank, c->size,
             waited, wd->timeout_s);
    atomic_store(&wd->fired, 1);
    c->ops->on_timeout(wd->comm, msg);
}

static void *watch(void *p)
{
    deft_watchdog_t *wd = p;
    double poll = wd->timeout_s / 10 < 1.0 ? wd->timeout_s / 10 : 1.0;
    int64_t poll_ns = (int64_t)(poll * 1e9) + 1;
    pthread_mutex_lock(&wd->mu);
    while (!wd->stop) {
        struct timespec until; /* cv waits on CLOCK_MONOTONIC */
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t ns = until.tv_nsec + poll_ns;
        until.tv_sec += (time_t)(ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&wd->cv, &wd->mu, &until);
        if (wd->stop)
            break;
        int op = atomic_load(&wd->op);
        uint64_t seq = atomic_load(&wd->seq);
        int64_t since = atomic_load(&wd->since_ns);
        double waited = (double)(now_ns() - since) * 1e-9;
        if (op == 0 || atomic_load(&wd->fired) || waited < wd->timeout_s)
            continue;
        /* Still the same collective (not a new one that began between the
         * loads)? Then it has run too long. */
        if (atomic_load(&wd->op) != op || atomic_load(&wd->seq) != seq)
            continue;
        pthread_mutex_unlock(&wd->mu);
        fire(wd, op, seq, waited);
        pthread_mutex_lock(&wd->mu);
    }
    pthread_mutex_unlock(&wd->mu);
    return NULL;
}

deft_status_t deft_watchdog_start(deft_watchdog_t **out, deft_comm_t *comm,
                                  double timeout_s)
{
    deft_watchdog_t *wd = calloc(1, sizeof *wd);
    if (!wd)
        return deft_fail(DEFT_ERR_NOMEM, "deft_comm_set_timeout: no memory "
                         "for the watchdog");
    wd->comm = comm;
    wd->timeout_s = timeout_s;
    pthread_mutex_init(&wd->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&wd->cv, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&wd->thread, NULL, watch, wd) != 0) {
        pthread_cond_destroy(&wd->cv);
        pthread_mutex_destroy(&wd->mu);
        free(wd);
        return deft_fail(DEFT_ERR_NOMEM, "deft_comm_set_timeout: could not "
                         "start the watchdog thread");
    }
    *out = wd;
    return DEFT_OK;
}

void deft_watchdog_stop(deft_watchdog_t *wd)
{
    if (!wd)
        return;
    pthread_mutex_lock(&wd->mu);
    wd->stop = 1;
    pthread_cond_signal(&wd->cv);
    pthread_mutex_unlock(&wd->mu);
    pthread_join(wd->thread, NULL);
    pthread_cond_destroy(&wd->cv);
    pthread_mutex_destroy(&wd->mu);
    free(wd);
}

void deft_watchdog_enter(deft_watchdog_t *wd, int op, uint64_t seq)
{
    /* since before seq, read in the opposite order by watch(): a reader
     * that sees the new seq also sees the new start time. */
    atomic_store(&wd->op, 0);
    atomic_store(&wd->since_ns, now_ns());
    atomic_store(&wd->seq, seq);
    atomic_store(&wd->op, op);
}

void deft_watchdog_leave(deft_watchdog_t *wd)
{
    atomic_store(&wd->op, 0);
}

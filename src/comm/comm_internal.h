/* What a communicator backend provides. deft_comm_* in comm.c checks the
 * arguments, counts traffic, then calls the backend through these ops. */
#ifndef DEFT_COMM_INTERNAL_H
#define DEFT_COMM_INTERNAL_H

#include "deft.h"

typedef struct {
    const char *name;
    deft_status_t (*allreduce_sum_f32)(deft_comm_t *c, float *buf, size_t n);
    deft_status_t (*allgather)(deft_comm_t *c, const void *send, size_t bytes,
                               void *recv);
    deft_status_t (*broadcast)(deft_comm_t *c, void *buf, size_t bytes,
                               int root);
    deft_status_t (*barrier)(deft_comm_t *c);
    /* Frees the communicator (deft_comm_destroy); NULL when deft does not
     * own it (deft_run_threads' communicators). */
    void (*destroy)(deft_comm_t *c);
    /* Called from the watchdog thread when a collective of c has run past
     * its timeout (see watchdog.c), with a message naming it. It must make
     * the collective end: fail it, or end the process. NULL when the
     * backend cannot (then deft_comm_set_timeout refuses). */
    void (*on_timeout)(deft_comm_t *c, const char *msg);
    /* Sums n 16-bit floats (fp16, or bf16 when bf16 = 1) in place, each
     * addition in float on decoded values and rounded back to 16 bits, in
     * an order fixed by rank. NULL: comm.c carries them as floats through
     * allreduce_sum_f32 (the sum is right, the bytes are not halved). */
    deft_status_t (*allreduce_sum_half)(deft_comm_t *c, uint16_t *buf,
                                        size_t n, int bf16);
} deft_comm_backend_t;

typedef struct deft_watchdog deft_watchdog_t;

struct deft_comm {
    const deft_comm_backend_t *ops;
    int rank;
    int size;
    deft_comm_stats_t stats;
    void *impl;        /* backend state                                 */
    double link_bps;   /* modeled bandwidth in bytes/s; 0 = no model    */
    double link_alpha; /* modeled latency in seconds                    */
    uint64_t seq;      /* collectives entered so far, for error messages */
    deft_watchdog_t *wd; /* NULL unless deft_comm_set_timeout(> 0)       */
};

/* The collectives, for messages (1-based; 0 = none). */
enum { DEFT_OP_ALLREDUCE = 1, DEFT_OP_ALLGATHER, DEFT_OP_BROADCAST,
       DEFT_OP_BARRIER };
/* "allreduce", "allgather", "broadcast", "barrier"; "" for anything else. */
const char *deft_comm_op_name(int op);

/* The watchdog (watchdog.c). start: a thread that calls
 * comm->ops->on_timeout once a collective has been inside enter..leave
 * for timeout_s seconds (once). stop: joins and frees it (NULL-safe). */
deft_status_t deft_watchdog_start(deft_watchdog_t **out, deft_comm_t *comm,
                                  double timeout_s);
void deft_watchdog_stop(deft_watchdog_t *wd);
void deft_watchdog_enter(deft_watchdog_t *wd, int op, uint64_t seq);
void deft_watchdog_leave(deft_watchdog_t *wd);
/* Stops comm's watchdog, if any (deft_comm_destroy, and the threads
 * backend when a worker's function returns). */
void deft_comm_stop_watchdog(deft_comm_t *comm);

/* Bytes one rank sends in a ring allreduce of n floats over K ranks: the
 * buffer is cut into K chunks; each rank sends K-1 chunks in the
 * reduce-scatter and K-1 in the allgather phase. */
uint64_t deft_ring_allreduce_bytes(size_t n, int size, int rank);
/* The same for n elements of elem bytes. */
uint64_t deft_ring_allreduce_bytes_elem(size_t n, size_t elem, int size,
                                        int rank);

/* The 16-bit allreduce (see allreduce_sum_half above): on return every
 * worker's buf holds the same sum, bitwise. Counted as an allreduce of
 * 2n bytes (or 4n on backends without a 16-bit path). */
deft_status_t deft_comm_allreduce_sum_half(deft_comm_t *comm, uint16_t *buf,
                                           size_t n, int bf16);

/* Test hook of the MPI backend (src/comm/mpi.c): sets the largest count it
 * passes to one MPI call (default INT_MAX; <= 0 restores it) and returns
 * the previous value, so that tests can exercise the split of counts beyond
 * INT_MAX with small buffers. Returns 0 and does nothing without MPI. */
int deft_mpi_set_max_count(int max_count);

#endif

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
} deft_comm_backend_t;

struct deft_comm {
    const deft_comm_backend_t *ops;
    int rank;
    int size;
    deft_comm_stats_t stats;
    void *impl;        /* backend state                                 */
    double link_bps;   /* modeled bandwidth in bytes/s; 0 = no model    */
    double link_alpha; /* modeled latency in seconds                    */
    uint64_t seq;      /* collectives entered so far, for error messages */
};

/* Bytes one rank sends in a ring allreduce of n floats over K ranks: the
 * buffer is cut into K chunks; each rank sends K-1 chunks in the
 * reduce-scatter and K-1 in the allgather phase. */
uint64_t deft_ring_allreduce_bytes(size_t n, int size, int rank);

/* Test hook of the MPI backend (src/comm/mpi.c): sets the largest count it
 * passes to one MPI call (default INT_MAX; <= 0 restores it) and returns
 * the previous value, so that tests can exercise the split of counts beyond
 * INT_MAX with small buffers. Returns 0 and does nothing without MPI. */
int deft_mpi_set_max_count(int max_count);

#endif

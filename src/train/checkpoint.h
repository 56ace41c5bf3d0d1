/* Checkpoint files: everything needed to continue a run bitwise, namely
 * every worker's optimizer state (model, errors, momenta, step, lr) plus
 * the run's identity and counters. Random choices are keyed by (seed,
 * step), so no generator state needs saving.
 *
 * File layout: "DEFTCKPT" | u32 version | u32 sizeof(meta) | meta |
 * u64 state_size | u32 workers | workers * state_size bytes | u32 CRC-32 of
 * all preceding bytes. Version 2 adds optim_bytes at the end of meta;
 * version 1 files (without it) still read, with optim_bytes 0. Written to PATH.tmp, which is fsynced and renamed
 * over PATH, and then the directory is fsynced: a crash (of the process or
 * the machine) leaves PATH holding the old checkpoint or the new one,
 * whole, never a mixture (tests/test_checkpoint_kill.c kills writers). */
#ifndef DEFT_CHECKPOINT_H
#define DEFT_CHECKPOINT_H

#include "deft.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t model, algo, compressor, workers;
    uint64_t dim;
    uint32_t batch, epochs_done;
    uint64_t seed, step;
    double ratio, lambda;
    uint64_t bytes_per_worker, payload_per_worker;
    double wall_s, best_test_acc;
    double compute_s, comm_s, comm_modeled_s;
    uint64_t optim_bytes; /* of each worker's state, the optimizer's blob
                             (the BN statistics follow); 0 if unknown */
} deft_ckpt_meta_t;

/* Writes meta and the workers' states (workers * state_size bytes). */
deft_status_t deft_checkpoint_write(const char *path, const deft_ckpt_meta_t *meta,
                                    const void *states, size_t state_size);

/* Reads a checkpoint; *states is malloc'ed (free() it) and holds
 * meta->workers * *state_size bytes. Truncation, a wrong magic or version,
 * or a checksum mismatch give DEFT_ERR_FORMAT naming the file. */
deft_status_t deft_checkpoint_read(const char *path, deft_ckpt_meta_t *meta,
                                   void **states, size_t *state_size);

/* Re-shards a checkpoint's states in memory: states holds meta->workers
 * worker states of state_size bytes (the optimizer's blob, then the BN
 * statistics, which keep their mean as the local vectors do); *out gets
 * k_out of them (malloc'ed, free() it) and meta->workers becomes k_out.
 * The global batch is kept, so k_out must divide it: otherwise
 * DEFT_ERR_INVALID_ARG names the worker counts that do. */
deft_status_t deft_checkpoint_reshard_states(deft_ckpt_meta_t *meta,
                                             const void *states,
                                             size_t state_size, int k_out,
                                             deft_reshard_t mode, void **out);

/* Writes the first max worker counts in [1, DEFT_MAX_WORKERS] that divide
 * batch (those a run of that global batch can continue on), separated by
 * sep, into buf (n bytes). */
void deft_checkpoint_worker_counts(uint32_t batch, int max, const char *sep,
                                   char *buf, size_t n);

/* Reads the checkpoint in_path, re-shards it to k_out workers and writes
 * it to out_path (which may be in_path). *from (if not NULL) gets in_path's
 * meta once it was read. */
deft_status_t deft_checkpoint_reshard(const char *in_path, const char *out_path,
                                      int k_out, deft_reshard_t mode,
                                      deft_ckpt_meta_t *from);

#endif

/* Compressors: what a worker sends instead of its dense vector.
 *
 * A compressor is made once per optimizer for a fixed layout and never
 * allocates afterwards. Each step a worker calls deft_compressor_encode on
 * its vector v: this writes the message and replaces v in place by the
 * residual v - C(v) (the new error of error feedback). Messages are then
 * communicated and turned back into vectors with deft_compressor_decode_add.
 *
 * How messages travel (deft_compressor_wire):
 *  - DEFT_WIRE_SUM, linear (none, rbgs, randk, scale): all workers choose
 *    the same coordinates from the shared seed, the message is a float
 *    array, and the element-wise sum of the workers' messages is the
 *    message of the summed vectors (C(a) + C(b) = C(a + b)). One allreduce
 *    per step.
 *  - DEFT_WIRE_GATHER, non-linear (topk, sign, qsgd, randk-private):
 *    messages are allgathered, and each one is decoded on its own.
 *  - DEFT_WIRE_SUM_F16 / _BF16 (fp16, bf16): d 16-bit values, summed by a
 *    16-bit allreduce that decodes to float before adding and rounds the
 *    sum back (deft_comm_allreduce_sum_half); decode the summed message.
 *  - DEFT_WIRE_ROUNDS (powersgd): float messages in two rounds, each
 *    allreduced before the next is encoded. encode writes round 0 and
 *    leaves v alone; after round 0's span is summed, encode_round(1)
 *    writes round 1 from it and replaces v by v - C(v); after round 1's
 *    span is summed, finish keeps what the next step warm-starts from and
 *    decode_add reads the summed message. deft_compressor_encode_local
 *    does all of it for one worker (no sums), for tests and benchmarks.
 *
 * Message layouts (d = dimension, T = number of segments, n_t = segment
 * sizes; a segment is a tensor of the layout, or the whole vector for
 * DEFT_SCOPE_GLOBAL):
 *  - none:  d floats, v itself.
 *  - scale: d floats, v / ratio.
 *  - rbgs:  sum_t b_t floats, b_t = max(1, floor(n_t / ratio)); segment t's
 *           block runs from a start uniform in [0, n_t), wrapping to 0.
 *  - randk: sum_t k_t floats, k_t = max(1, floor(n_t / ratio)), values at
 *           the chosen indices in increasing index order (times n_t / k_t
 *           when scaled).
 *  - topk:  K = sum_t k_t entries: K uint32 global indices, then K floats.
 *  - randk-private: topk's layout; the indices are randk's k_t per segment
 *           but from the worker-private stream (seed, step, segment, rank),
 *           increasing within a segment; values times n_t / k_t when scaled.
 *  - sign:  T floats (segment scales ||v_t||_1 / n_t), then ceil(d / 8)
 *           bytes of sign bits (bit i set when v_i < 0).
 *  - qsgd:  T floats (segment norms ||v_t||_2), then ceil(d * b / 8) bytes
 *           of b-bit codes (b = 2 for s = 1, 4 for s <= 7, else 8): the low
 *           bit is the sign, the rest the level l in [0, s].
 *  - fp16, bf16: d uint16 values.
 *  - powersgd: round 0 = the vectors' values (tensors sent whole, in layout
 *           order), then P_t (rows_t x r_t, row-major) for each compressed
 *           matrix t; round 1 = Q_t (cols_t x r_t) for each. See powersgd.c.
 */
#ifndef DEFT_COMPRESS_H
#define DEFT_COMPRESS_H

#include "deft.h"

#include <stddef.h>
#include <stdint.h>

typedef struct deft_compressor deft_compressor_t;

typedef enum {
    DEFT_WIRE_SUM = 0,
    DEFT_WIRE_GATHER,
    DEFT_WIRE_SUM_F16,
    DEFT_WIRE_SUM_BF16,
    DEFT_WIRE_ROUNDS
} deft_wire_t;

typedef struct {
    deft_compressor_kind_t kind;
    double ratio;      /* >= 1                                               */
    deft_scope_t scope;
    int randk_scaled;
    int qsgd_levels;   /* 1..127                                             */
    uint64_t seed;     /* shared seed                                        */
    int rank;          /* >= 0, for worker-private randomness (qsgd
                          rounding, randk-private's coordinates)            */
    int powersgd_rank; /* powersgd: rank r, 1..1024                          */
} deft_compressor_params_t;

/* 1 if the kind reads the layout's matrix shapes (powersgd), else 0. */
int deft_compressor_kind_uses_rows(deft_compressor_kind_t kind);

/* Creates a compressor for vectors of the given layout (n_tensors >= 1,
 * every size >= 1, total below 2^32; powersgd reads layout->rows).
 * Validates p and names a bad field in the error. Everything a step needs
 * is allocated here. */
deft_status_t deft_compressor_create(deft_compressor_t **out,
                                     const deft_layout_t *layout,
                                     const deft_compressor_params_t *p);
/* NULL-safe. */
void deft_compressor_destroy(deft_compressor_t *c);

/* How messages travel (see above); DEFT_WIRE_SUM for NULL. */
deft_wire_t deft_compressor_wire(const deft_compressor_t *c);
/* 1 for DEFT_WIRE_SUM compressors (messages are summable floats). */
int deft_compressor_is_linear(const deft_compressor_t *c);
/* Size in bytes of one worker's message; the same every step. */
size_t deft_compressor_msg_bytes(const deft_compressor_t *c);
/* Dimension d of the vectors. */
size_t deft_compressor_dim(const deft_compressor_t *c);

/* Draws step `step`'s random choices (shared ones from (seed, step,
 * segment); qsgd's rounding and randk-private's coordinates also from the
 * rank), writes the message of v into msg (msg_bytes bytes) and replaces v
 * by v - C(v). For linear compressors the chosen coordinates are
 * remembered until the next encode or select, for decode_add and scatter. */
void deft_compressor_encode(deft_compressor_t *c, uint64_t step, float *v,
                            void *msg);

/* out += alpha * C, where C is the vector a message stands for. For linear
 * compressors msg may be a sum of messages of the last encoded/selected
 * step. For non-linear ones msg is any one worker's message of any step. */
void deft_compressor_decode_add(const deft_compressor_t *c, const void *msg,
                                float alpha, float *out);

/* Linear compressors only (no-ops otherwise): choose step `step`'s
 * coordinates without encoding (select), copy v's chosen values into msg
 * without touching v (gather), and set out's chosen coordinates to
 * alpha * msg (scatter). PSync averages model blocks with these. */
void deft_compressor_select(deft_compressor_t *c, uint64_t step);
void deft_compressor_gather(const deft_compressor_t *c, const float *v,
                            float *msg);
void deft_compressor_scatter(const deft_compressor_t *c, const float *msg,
                             float alpha, float *out);

/* DEFT_WIRE_ROUNDS: the number of rounds (2), round r's float span in the
 * message, round r >= 1's encode (own_out, if not NULL, gets += this
 * worker's C(v) in the last round), and finish (see above). Rounds 0 for
 * other kinds; span, encode_round and finish are then no-ops. */
int deft_compressor_rounds(const deft_compressor_t *c);
void deft_compressor_round_span(const deft_compressor_t *c, int r,
                                size_t *off, size_t *n);
void deft_compressor_encode_round(deft_compressor_t *c, uint64_t step, int r,
                                  float *v, void *msg, float *own_out);
void deft_compressor_finish(deft_compressor_t *c, const void *msg);
/* encode for one worker alone, whatever the wire: for DEFT_WIRE_ROUNDS all
 * rounds with this worker's message as the sum; otherwise encode. */
void deft_compressor_encode_local(deft_compressor_t *c, uint64_t step,
                                  float *v, void *msg);

/* State a compressor carries from step to step (powersgd's warm-start Q),
 * as state_floats floats at any alignment, for optimizer state blobs: 0
 * floats for the other kinds. */
size_t deft_compressor_state_floats(const deft_compressor_t *c);
void deft_compressor_state_get(const deft_compressor_t *c, void *state);
void deft_compressor_state_set(deft_compressor_t *c, const void *state);

/* 1 if every float in the message (values, scales, norms) is finite. */
int deft_compressor_msg_finite(const deft_compressor_t *c, const void *msg);
/* Makes the message carry a NaN, so every receiver's msg_finite check fails
 * (used to spread one worker's divergence to all). */
void deft_compressor_poison(const deft_compressor_t *c, void *msg);

#endif

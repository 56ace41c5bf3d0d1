/* randk-private: randk with each worker's own coordinates. Per segment
 * k = max(1, floor(n / ratio)) distinct coordinates drawn from the
 * worker-private stream (seed, step, segment, rank), so workers pick
 * different sets and messages cannot be summed (non-linear, allgathered).
 * Message: topk's layout, K = sum_t k_t uint32 global indices (increasing
 * within each segment, segment after segment), then their K values, times
 * n / k when randk_scaled (then E[C(v)] = v). Draw, take and decode are
 * randk's and topk's (compress_impl.h). */
#include "compress/compress_impl.h"
#include "core/rng.h"

static deft_status_t randk_private_init(deft_compressor_t *c)
{
    c->msg_bytes = c->total_k * (sizeof(uint32_t) + sizeof(float));
    c->float_off = c->total_k * sizeof(uint32_t);
    c->float_count = c->total_k;
    /* impl: the draw's bitmap, all zero between calls */
    c->impl = deft_alloc((c->max_n + 63) / 64 * sizeof(uint64_t));
    if (!c->impl)
        return deft_fail(DEFT_ERR_NOMEM,
                         "deft_compressor_create: out of memory "
                         "(randk-private)");
    return DEFT_OK;
}

static void randk_private_fini(deft_compressor_t *c)
{
    deft_free(c->impl);
}

static void randk_private_encode(deft_compressor_t *c, uint64_t step,
                                 float *v, void *msg)
{
    uint32_t *idx = msg;
    deft_randk_draw(c, step, DEFT_STREAM_PRIVATE(DEFT_STREAM_RANDK, c->p.rank),
                    c->impl, idx);
    deft_randk_take(c, idx, v, (float *)(idx + c->total_k));
}

static const deft_option_def_t *const randk_private_params[] = {
    &deft_option_randk_scaled, NULL};

DEFT_COMPRESSOR(deft_compress_randk_private_ops) = {
    .kind = DEFT_COMP_RANDK_PRIVATE,
    .name = "randk-private",
    .help = "k random coordinates per tensor, each worker its own, with indices (allgather)",
    .wire = DEFT_WIRE_GATHER,
    .params = randk_private_params,
    .uses_ratio = 1,
    .init = randk_private_init,
    .fini = randk_private_fini,
    .encode = randk_private_encode,
    .decode_add = deft_sparse_decode_add,
    .select = NULL,
    .gather = NULL,
    .scatter = NULL,
};

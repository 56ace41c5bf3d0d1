/* Custom backend: collectives supplied by the caller as callbacks (see
 * deft_comm_create_custom in deft.h). deft's own layer (comm.c) still checks
 * arguments, counts bytes, times the calls and applies the link model; this
 * file only forwards and turns a callback's failure into DEFT_ERR_COMM that
 * names the collective, its sequence number and the rank. */
#include "comm/comm_internal.h"
#include "core/internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    deft_comm_t comm; /* comm.impl points back here */
    deft_comm_ops_t ops;
    void *ctx;
} custom_comm_t;

static const custom_comm_t *custom_of(const deft_comm_t *c)
{
    return c->impl;
}

/* DEFT_ERR_COMM for a failed callback: what it returned and, when the
 * caller gave one, its own description. */
static deft_status_t callback_failed(const deft_comm_t *c, int op,
                                     deft_status_t rc)
{
    const custom_comm_t *m = custom_of(c);
    const char *detail = m->ops.describe_error ? m->ops.describe_error(m->ctx)
                                               : NULL;
    return deft_fail(DEFT_ERR_COMM,
                     "custom backend: %s (collective #%llu) failed on rank %d "
                     "of %d: the callback returned %d (%s)%s%s", deft_comm_op_name(op),
                     (unsigned long long)c->seq, c->rank, c->size, (int)rc,
                     deft_status_str(rc), detail && *detail ? ": " : "",
                     detail ? detail : "");
}

static deft_status_t custom_allreduce(deft_comm_t *c, float *buf, size_t n)
{
    const custom_comm_t *m = custom_of(c);
    deft_status_t rc = m->ops.allreduce_sum_f32(m->ctx, buf, n);
    return rc == DEFT_OK ? DEFT_OK : callback_failed(c, DEFT_OP_ALLREDUCE, rc);
}

static deft_status_t custom_allgather(deft_comm_t *c, const void *send,
                                      size_t bytes, void *recv)
{
    const custom_comm_t *m = custom_of(c);
    deft_status_t rc = m->ops.allgather(m->ctx, send, bytes, recv);
    return rc == DEFT_OK ? DEFT_OK : callback_failed(c, DEFT_OP_ALLGATHER, rc);
}

static deft_status_t custom_broadcast(deft_comm_t *c, void *buf, size_t bytes,
                                      int root)
{
    const custom_comm_t *m = custom_of(c);
    deft_status_t rc = m->ops.broadcast(m->ctx, buf, bytes, root);
    return rc == DEFT_OK ? DEFT_OK : callback_failed(c, DEFT_OP_BROADCAST, rc);
}

static deft_status_t custom_barrier(deft_comm_t *c)
{
    const custom_comm_t *m = custom_of(c);
    deft_status_t rc = m->ops.barrier(m->ctx);
    return rc == DEFT_OK ? DEFT_OK : callback_failed(c, DEFT_OP_BARRIER, rc);
}

static void custom_destroy(deft_comm_t *c)
{
    free(c->impl);
}

static const deft_comm_backend_t custom_backend = {
    .name = "custom",
    .allreduce_sum_f32 = custom_allreduce,
    .allgather = custom_allgather,
    .broadcast = custom_broadcast,
    .barrier = custom_barrier,
    .destroy = custom_destroy,
    .on_timeout = NULL,
    .allreduce_sum_half = NULL, /* carried as floats, see comm.c */
};

deft_status_t deft_comm_create_custom(deft_comm_t **out,
                                      const deft_comm_ops_t *ops, void *ctx,
                                      int rank, int size)
{
    const char *fn = "deft_comm_create_custom";
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!ops)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: ops is NULL", fn);
    const char *missing = !ops->allreduce_sum_f32 ? "allreduce_sum_f32"
                          : !ops->allgather       ? "allgather"
                          : !ops->broadcast       ? "broadcast"
                          : !ops->barrier         ? "barrier"
                                                  : NULL;
    if (missing)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: ops->%s is NULL; every collective needs a "
                         "callback (only describe_error may be NULL)", fn,
                         missing);
    if (size < 1 || size > (1 << 20))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: size = %d, must be in [1, 1048576]", fn, size);
    if (rank < 0 || rank >= size)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: rank = %d, must be in [0, size = %d)", fn, rank,
                         size);
    custom_comm_t *m = calloc(1, sizeof *m);
    if (!m)
        return deft_fail(DEFT_ERR_NOMEM, "%s: out of memory", fn);
    m->ops = *ops;
    m->ctx = ctx;
    m->comm = (deft_comm_t){.ops = &custom_backend, .rank = rank, .size = size,
                            .impl = m};
    *out = &m->comm;
    return DEFT_OK;
}

/* deft_comm_create_self: the collectives of a group of one. */
static deft_status_t self_allreduce(void *ctx, float *buf, size_t n)
{
    (void)ctx, (void)buf, (void)n;
    return DEFT_OK;
}

static deft_status_t self_allgather(void *ctx, const void *send, size_t bytes,
                                    void *recv)
{
    (void)ctx;
    if (bytes)
        memcpy(recv, send, bytes);
    return DEFT_OK;
}

static deft_status_t self_broadcast(void *ctx, void *buf, size_t bytes,
                                    int root)
{
    (void)ctx, (void)buf, (void)bytes, (void)root;
    return DEFT_OK;
}

static deft_status_t self_barrier(void *ctx)
{
    (void)ctx;
    return DEFT_OK;
}

deft_status_t deft_comm_create_self(deft_comm_t **out)
{
    static const deft_comm_ops_t self_ops = {self_allreduce, self_allgather,
                                             self_broadcast, self_barrier, NULL};
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_comm_create_self: out is NULL");
    return deft_comm_create_custom(out, &self_ops, NULL, 0, 1);
}

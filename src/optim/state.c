/* Optimizer state blobs for checkpoints. Layout (little-endian host order,
 * all fields fixed size):
 *   u32 magic 'DFOS', u32 version, u32 algo, u32 compressor, u64 d,
 *   u64 step, f32 lr, u32 buffer mask, then the buffers in the mask's bit
 *   order (x, e, m, gk, g, z, w), d floats each, then, when bit 7 is set,
 *   the compressor's state (deft_compressor_state_floats floats: powersgd's
 *   warm-start Q). Bits 5 and 6 (eclk's z and anchor w) and 7 came later;
 *   blobs without them read as before. */
#include "core/internal.h"
#include "optim/optim_internal.h"

#define STATE_MAGIC 0x534f4644u /* "DFOS" */
#define STATE_VERSION 1u

typedef struct {
    uint32_t magic, version, algo, compressor;
    uint64_t d, step;
    float lr;
    uint32_t mask;
} state_header_t;

enum { N_BUFS = 7, COMP_BIT = 1 << 7 };

static size_t comp_floats(const deft_optim_t *o)
{
    return deft_compressor_state_floats(o->comp);
}

/* The vectors that make up the state, in blob order; NULL ones are absent.
 * eclk's delta is scratch, rewritten before it is read in every step. */
static int state_buffers(const deft_optim_t *o, float *bufs[N_BUFS])
{
    bufs[0] = o->x;
    bufs[1] = o->e;
    bufs[2] = o->m;
    bufs[3] = o->gk;
    bufs[4] = o->g;
    bufs[5] = o->z;
    bufs[6] = o->w;
    int mask = 0;
    for (int i = 0; i < N_BUFS; i++)
        if (bufs[i])
            mask |= 1 << i;
    return mask | (comp_floats(o) ? COMP_BIT : 0);
}

size_t deft_optim_state_size(const deft_optim_t *opt)
{
    if (!opt)
        return 0;
    float *bufs[N_BUFS];
    int mask = state_buffers(opt, bufs);
    size_t n = 0;
    for (int i = 0; i < N_BUFS; i++)
        n += (mask >> i) & 1;
    return sizeof(state_header_t) + (n * opt->d + comp_floats(opt)) * sizeof(float);
}

deft_status_t deft_optim_state_save(const deft_optim_t *opt, void *buf,
                                    size_t size)
{
    if (!opt || !buf)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_state_save: %s is NULL",
                         !opt ? "opt" : "buf");
    if (size != deft_optim_state_size(opt))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_optim_state_save: size = %zu, must be "
                         "deft_optim_state_size() = %zu", size,
                         deft_optim_state_size(opt));
    float *bufs[N_BUFS];
    state_header_t h = {STATE_MAGIC, STATE_VERSION, (uint32_t)opt->cfg.algo,
                        (uint32_t)opt->cfg.compressor, opt->d, opt->step,
                        opt->cfg.lr, (uint32_t)state_buffers(opt, bufs)};
    char *p = buf;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    for (int i = 0; i < N_BUFS; i++)
        if (bufs[i]) {
            memcpy(p, bufs[i], opt->d * sizeof(float));
            p += opt->d * sizeof(float);
        }
    if (comp_floats(opt))
        deft_compressor_state_get(opt->comp, p);
    return DEFT_OK;
}

deft_status_t deft_optim_state_load(deft_optim_t *opt, const void *buf,
                                    size_t size)
{
    const char *fn = "deft_optim_state_load";
    if (!opt || !buf)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !opt ? "opt" : "buf");
    state_header_t h;
    if (size < sizeof h)
        return deft_fail(DEFT_ERR_FORMAT, "%s: %zu bytes is too short for a "
                         "state header", fn, size);
    memcpy(&h, buf, sizeof h);
    float *bufs[N_BUFS];
    uint32_t mask = (uint32_t)state_buffers(opt, bufs);
    if (h.magic != STATE_MAGIC)
        return deft_fail(DEFT_ERR_FORMAT, "%s: not an optimizer state (magic "
                         "0x%08x)", fn, h.magic);
    if (h.version != STATE_VERSION)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state version %u, this build "
                         "reads version %u", fn, h.version, STATE_VERSION);
    if (h.algo != (uint32_t)opt->cfg.algo)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state is from algorithm %s, this "
                         "optimizer runs %s", fn,
                         deft_algo_name((deft_algo_t)h.algo),
                         deft_algo_name(opt->cfg.algo));
    if (h.compressor != (uint32_t)opt->cfg.compressor)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state is from compressor %s, this "
                         "optimizer uses %s", fn,
                         deft_compressor_name((deft_compressor_kind_t)h.compressor),
                         deft_compressor_name(opt->cfg.compressor));
    if (h.d != opt->d)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state has %llu parameters, this "
                         "model has %zu", fn, (unsigned long long)h.d, opt->d);
    if (h.mask != mask || size != deft_optim_state_size(opt))
        return deft_fail(DEFT_ERR_FORMAT, "%s: state holds %zu bytes, expected "
                         "%zu", fn, size, deft_optim_state_size(opt));
    if (!(h.lr > 0.0f))
        return deft_fail(DEFT_ERR_FORMAT, "%s: state has learning rate %g", fn,
                         (double)h.lr);
    const char *p = (const char *)buf + sizeof h;
    for (int i = 0; i < N_BUFS; i++)
        if (bufs[i]) {
            memcpy(bufs[i], p, opt->d * sizeof(float));
            p += opt->d * sizeof(float);
        }
    if (comp_floats(opt))
        deft_compressor_state_set(opt->comp, p);
    opt->step = h.step;
    opt->cfg.lr = h.lr;
    opt->asked = 0;
    if (opt->w)
        opt->anchor_version++; /* w was replaced: grad f_k(w) is stale */
    return DEFT_OK;
}

/* Optimizer state blobs for checkpoints. Version 2 (little-endian host
 * order, all fields fixed size):
 *   header: u32 magic 'DFOS', u32 version, u32 algo, u32 compressor,
 *           u64 d, u64 step, u64 n_tensors, u32 n_groups, u32 buffer mask
 *   u64 sizes[n_tensors]        the layout, to refuse another model
 *   u32 tensor_group[n_tensors]
 *   u8  m_started[n_tensors], zero-padded to a multiple of 4 bytes
 *   groups[n_groups]: f32 lr, momentum, dampening, weight_decay; u32 nesterov
 *   the buffers in the mask's bit order (x, e, m, gk, g, z, w), d floats
 *   each, then, when bit 7 is set, the compressor's state
 *   (deft_compressor_state_floats floats: powersgd's warm-start Q)
 *   u32 CRC-32 of every byte before it.
 * Version 1 (read only): the header u32 magic, version, algo, compressor,
 * u64 d, step, f32 lr, u32 mask, then the buffers and compressor state. */
#include "core/internal.h"
#include "optim/optim_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define STATE_MAGIC 0x534f4644u /* "DFOS" */
#define STATE_VERSION 2u

typedef struct {
    uint32_t magic, version, algo, compressor;
    uint64_t d, step, n_tensors;
    uint32_t n_groups, mask;
} state_header_t;

typedef struct { /* version 1 */
    uint32_t magic, version, algo, compressor;
    uint64_t d, step;
    float lr;
    uint32_t mask;
} state_header_v1_t;

typedef struct {
    float lr, momentum, dampening, weight_decay;
    uint32_t nesterov;
} state_group_t;

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

/* How many d-float vectors a buffer mask holds. */
static size_t mask_buffers(uint32_t mask)
{
    size_t n = 0;
    for (int i = 0; i < N_BUFS; i++)
        n += (mask >> i) & 1;
    return n;
}

/* Bytes of the buffers and the compressor's state. */
static size_t vectors_size(const deft_optim_t *o)
{
    float *bufs[N_BUFS];
    size_t n = mask_buffers((uint32_t)state_buffers(o, bufs));
    return (n * o->d + comp_floats(o)) * sizeof(float);
}

static size_t padded_flags(size_t n_tensors)
{
    return (n_tensors + 3) / 4 * 4;
}

/* Bytes of the per-tensor tables and the groups. */
static size_t tables_size(size_t n_tensors, size_t n_groups)
{
    return n_tensors * (sizeof(uint64_t) + sizeof(uint32_t)) +
           padded_flags(n_tensors) + n_groups * sizeof(state_group_t);
}

/* Bytes of a version 2 blob with h's header, less the compressor's state:
 * header, tables, vectors and checksum. The caller has bounded h's counts
 * by the blob's size. */
static size_t blob_fixed_size(const state_header_t *h)
{
    return sizeof *h + tables_size(h->n_tensors, h->n_groups) +
           mask_buffers(h->mask) * h->d * sizeof(float) + sizeof(uint32_t);
}

size_t deft_optim_state_size(const deft_optim_t *opt)
{
    if (!opt)
        return 0;
    return sizeof(state_header_t) + tables_size(opt->n_tensors, opt->n_groups) +
           vectors_size(opt) + sizeof(uint32_t);
}

static char *put(char *p, const void *src, size_t n)
{
    memcpy(p, src, n);
    return p + n;
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
                        opt->n_tensors, (uint32_t)opt->n_groups,
                        (uint32_t)state_buffers(opt, bufs)};
    char *p = put(buf, &h, sizeof h);
    for (size_t t = 0; t < opt->n_tensors; t++) {
        uint64_t s = opt->sizes[t];
        p = put(p, &s, sizeof s);
    }
    p = put(p, opt->tgroup, opt->n_tensors * sizeof(uint32_t));
    memset(p, 0, padded_flags(opt->n_tensors));
    memcpy(p, opt->m_started, opt->n_tensors);
    p += padded_flags(opt->n_tensors);
    for (size_t g = 0; g < opt->n_groups; g++) {
        const deft_group_t *src = &opt->groups[g];
        state_group_t sg = {src->lr, src->momentum, src->dampening,
                            src->weight_decay, (uint32_t)src->nesterov};
        p = put(p, &sg, sizeof sg);
    }
    for (int i = 0; i < N_BUFS; i++)
        if (bufs[i])
            p = put(p, bufs[i], opt->d * sizeof(float));
    if (comp_floats(opt))
        deft_compressor_state_get(opt->comp, p);
    deft_state_seal(buf, size);
    return DEFT_OK;
}

deft_status_t deft_state_view(const void *buf, size_t size,
                               deft_state_view_t *v, const char *fn)
{
    memset(v, 0, sizeof *v);
    state_header_t h;
    if (size < sizeof h + sizeof(uint32_t))
        return deft_fail(DEFT_ERR_FORMAT, "%s: %zu bytes is too short for a "
                         "state", fn, size);
    memcpy(&h, buf, sizeof h);
    if (h.magic != STATE_MAGIC)
        return deft_fail(DEFT_ERR_FORMAT, "%s: not an optimizer state (magic "
                         "0x%08x)", fn, h.magic);
    if (h.version != STATE_VERSION)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state version %u; this reads "
                         "version %u%s", fn, h.version, STATE_VERSION,
                         h.version == 1 ? " (load the version 1 state into an "
                         "optimizer and save it again first)" : "");
    uint32_t crc;
    memcpy(&crc, (const char *)buf + size - sizeof crc, sizeof crc);
    if (deft_crc32(0, buf, size - sizeof crc) != crc)
        return deft_fail(DEFT_ERR_FORMAT, "%s: the state is corrupt (checksum "
                         "mismatch over its %zu bytes)", fn, size);
    const size_t nbuf = mask_buffers(h.mask);
    const deft_algo_ops_t *ops = deft_algo_ops((deft_algo_t)h.algo);
    if (!ops || h.n_groups == 0 || h.n_groups > DEFT_MAX_GROUPS ||
        (h.mask & ~(uint32_t)(COMP_BIT | ((1 << N_BUFS) - 1))) ||
        h.n_tensors == 0 || h.n_tensors > (size - sizeof h) / 13 ||
        h.d == 0 || h.d > (size - sizeof h) / sizeof(float) / (nbuf ? nbuf : 1))
        return deft_fail(DEFT_ERR_FORMAT, "%s: the state's header is malformed "
                         "(algorithm %u, %u groups, buffer mask 0x%x)", fn,
                         h.algo, h.n_groups, h.mask);
    const size_t fixed = blob_fixed_size(&h);
    if (size < fixed || (size - fixed) % sizeof(float) != 0 ||
        ((h.mask & COMP_BIT) != 0) != (size > fixed))
        return deft_fail(DEFT_ERR_FORMAT, "%s: state holds %zu bytes, which "
                         "does not match its header", fn, size);
    v->algo = h.algo;
    v->compressor = h.compressor;
    v->mask = h.mask;
    v->d = h.d;
    v->step = h.step;
    v->n_tensors = h.n_tensors;
    v->n_groups = h.n_groups;
    v->flags_off = sizeof h + h.n_tensors * (sizeof(uint64_t) + sizeof(uint32_t));
    v->vec_off = sizeof h + tables_size(h.n_tensors, h.n_groups);
    v->comp_floats = (size - fixed) / sizeof(float);
    return DEFT_OK;
}

deft_status_t deft_state_blob_size(const void *buf, size_t max, size_t *size,
                                   const char *fn)
{
    state_header_t h;
    if (max < sizeof h + sizeof(uint32_t))
        return deft_fail(DEFT_ERR_FORMAT, "%s: %zu bytes is too short for a "
                         "state", fn, max);
    memcpy(&h, buf, sizeof h);
    const size_t nbuf = mask_buffers(h.mask);
    if (h.magic != STATE_MAGIC || h.version != STATE_VERSION)
        return deft_fail(DEFT_ERR_FORMAT, "%s: its worker states are not "
                         "version %u optimizer states (magic 0x%08x, version "
                         "%u)", fn, STATE_VERSION, h.magic, h.version);
    if (h.n_groups > DEFT_MAX_GROUPS || h.n_tensors > max / 13 ||
        h.d > max / sizeof(float) / (nbuf ? nbuf : 1))
        return deft_fail(DEFT_ERR_FORMAT, "%s: an optimizer state's header is "
                         "malformed (%llu tensors, %u groups, %llu parameters)",
                         fn, (unsigned long long)h.n_tensors, h.n_groups,
                         (unsigned long long)h.d);
    const size_t fixed = blob_fixed_size(&h);
    /* The compressor's state has no length field: its end is where the
     * running checksum of the bytes before matches the next 4 bytes. */
    size_t n = fixed - sizeof(uint32_t);
    uint32_t crc = n <= max ? deft_crc32(0, buf, n) : 0;
    for (; n + sizeof(uint32_t) <= max; n += sizeof(float)) {
        uint32_t want;
        memcpy(&want, (const char *)buf + n, sizeof want);
        if (want == crc && (n + 4 == fixed || (h.mask & COMP_BIT))) {
            *size = n + sizeof(uint32_t);
            return DEFT_OK;
        }
        if (!(h.mask & COMP_BIT))
            break;
        crc = deft_crc32(crc, (const char *)buf + n, sizeof(float));
    }
    return deft_fail(DEFT_ERR_FORMAT, "%s: the state is corrupt (no checksum "
                     "matches within its %zu bytes)", fn, max);
}

void deft_state_seal(void *buf, size_t size)
{
    uint32_t crc = deft_crc32(0, buf, size - sizeof(uint32_t));
    memcpy((char *)buf + size - sizeof crc, &crc, sizeof crc);
}

/* The checks both versions share: algorithm, compressor, dimension. */
static deft_status_t check_identity(const deft_optim_t *opt, uint32_t algo,
                                    uint32_t comp, uint64_t d)
{
    const char *fn = "deft_optim_state_load";
    if (algo != (uint32_t)opt->cfg.algo)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state is from algorithm %s, this "
                         "optimizer runs %s", fn, deft_algo_name((deft_algo_t)algo),
                         deft_algo_name(opt->cfg.algo));
    if (comp != (uint32_t)opt->cfg.compressor)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state is from compressor %s, this "
                         "optimizer uses %s", fn,
                         deft_compressor_name((deft_compressor_kind_t)comp),
                         deft_compressor_name(opt->cfg.compressor));
    if (d != opt->d)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state has %llu parameters, this "
                         "model has %zu", fn, (unsigned long long)d, opt->d);
    return DEFT_OK;
}

/* Copies the buffers and the compressor's state from p. */
static void load_vectors(deft_optim_t *opt, const char *p)
{
    float *bufs[N_BUFS];
    state_buffers(opt, bufs);
    for (int i = 0; i < N_BUFS; i++)
        if (bufs[i]) {
            memcpy(bufs[i], p, opt->d * sizeof(float));
            p += opt->d * sizeof(float);
        }
    if (comp_floats(opt))
        deft_compressor_state_set(opt->comp, p);
    opt->asked = 0;
    if (opt->w)
        opt->anchor_version++; /* w was replaced: grad f_k(w) is stale */
}

static deft_status_t load_v1(deft_optim_t *opt, const void *buf, size_t size)
{
    const char *fn = "deft_optim_state_load";
    state_header_v1_t h;
    if (size < sizeof h)
        return deft_fail(DEFT_ERR_FORMAT, "%s: %zu bytes is too short for a "
                         "version 1 state", fn, size);
    memcpy(&h, buf, sizeof h);
    float *bufs[N_BUFS];
    uint32_t mask = (uint32_t)state_buffers(opt, bufs);
    deft_status_t st = check_identity(opt, h.algo, h.compressor, h.d);
    if (st != DEFT_OK)
        return st;
    if (h.mask != mask || size != sizeof h + vectors_size(opt))
        return deft_fail(DEFT_ERR_FORMAT, "%s: state holds %zu bytes, expected "
                         "%zu", fn, size, sizeof h + vectors_size(opt));
    if (!(h.lr > 0.0f) || !isfinite(h.lr))
        return deft_fail(DEFT_ERR_FORMAT, "%s: state has learning rate %g", fn,
                         (double)h.lr);
    deft_group_t *g = malloc(sizeof *g);
    if (!g)
        return deft_fail(DEFT_ERR_NOMEM, "%s: out of memory", fn);
    *g = opt->groups[0];
    g->lr = h.lr;
    free(opt->groups);
    opt->groups = g;
    opt->n_groups = 1;
    memset(opt->tgroup, 0, opt->n_tensors * sizeof(uint32_t));
    memset(opt->m_started, h.step > 0, opt->n_tensors);
    opt->cfg.lr = h.lr;
    opt->step = h.step;
    load_vectors(opt, (const char *)buf + sizeof h);
    return DEFT_OK;
}

/* Version 2's tables: sizes, tensor groups, flags, groups; checked, and
 * the groups decoded into *groups (malloc'd). */
static deft_status_t read_tables(const deft_optim_t *opt, const char *p,
                                 size_t n_groups, deft_group_t **groups)
{
    const char *fn = "deft_optim_state_load";
    for (size_t t = 0; t < opt->n_tensors; t++, p += 8) {
        uint64_t s;
        memcpy(&s, p, 8);
        if (s != opt->sizes[t])
            return deft_fail(DEFT_ERR_FORMAT, "%s: the state's tensor %zu has "
                             "%llu elements, this layout's %zu", fn, t,
                             (unsigned long long)s, opt->sizes[t]);
    }
    for (size_t t = 0; t < opt->n_tensors; t++, p += 4) {
        uint32_t g;
        memcpy(&g, p, 4);
        if (g >= n_groups)
            return deft_fail(DEFT_ERR_FORMAT, "%s: the state puts tensor %zu in "
                             "group %u of %zu", fn, t, g, n_groups);
    }
    for (size_t t = 0; t < padded_flags(opt->n_tensors); t++)
        if ((unsigned char)p[t] > (t < opt->n_tensors))
            return deft_fail(DEFT_ERR_FORMAT, "%s: the state's momentum flags "
                             "are malformed", fn);
    p += padded_flags(opt->n_tensors);
    deft_group_t *gs = malloc(n_groups * sizeof *gs);
    if (!gs)
        return deft_fail(DEFT_ERR_NOMEM, "%s: out of memory", fn);
    for (size_t g = 0; g < n_groups; g++, p += sizeof(state_group_t)) {
        state_group_t sg;
        memcpy(&sg, p, sizeof sg);
        deft_group_t v = {sg.lr, sg.momentum, sg.dampening, sg.weight_decay,
                          sg.nesterov > 1 ? 2 : (int)sg.nesterov};
        char what[48];
        snprintf(what, sizeof what, "the state's group %zu: ", g);
        if (deft_group_check(&v, fn, what) != DEFT_OK) {
            free(gs);
            return deft_fail(DEFT_ERR_FORMAT, "%s", deft_last_error());
        }
        gs[g] = v;
    }
    *groups = gs;
    return DEFT_OK;
}

deft_status_t deft_optim_state_load(deft_optim_t *opt, const void *buf,
                                    size_t size)
{
    const char *fn = "deft_optim_state_load";
    if (!opt || !buf)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !opt ? "opt" : "buf");
    uint32_t mv[2];
    if (size < sizeof mv)
        return deft_fail(DEFT_ERR_FORMAT, "%s: %zu bytes is too short for a "
                         "state header", fn, size);
    memcpy(mv, buf, sizeof mv);
    if (mv[0] != STATE_MAGIC)
        return deft_fail(DEFT_ERR_FORMAT, "%s: not an optimizer state (magic "
                         "0x%08x)", fn, mv[0]);
    if (mv[1] == 1)
        return load_v1(opt, buf, size);
    if (mv[1] != STATE_VERSION)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state version %u, this build "
                         "reads versions 1 and %u", fn, mv[1], STATE_VERSION);
    /* Magic, checksum, a consistent header and length. */
    deft_state_view_t h;
    deft_status_t st = deft_state_view(buf, size, &h, fn);
    if (st != DEFT_OK)
        return st;
    if ((st = check_identity(opt, h.algo, h.compressor, h.d)) != DEFT_OK)
        return st;
    if (h.n_tensors != opt->n_tensors)
        return deft_fail(DEFT_ERR_FORMAT, "%s: the state's layout has %llu "
                         "tensors, this one %zu", fn,
                         (unsigned long long)h.n_tensors, opt->n_tensors);
    float *bufs[N_BUFS];
    if (h.mask != (uint32_t)state_buffers(opt, bufs))
        return deft_fail(DEFT_ERR_FORMAT, "%s: the state's header is malformed "
                         "(%u groups, buffer mask 0x%x)", fn, h.n_groups, h.mask);
    size_t want = sizeof(state_header_t) + tables_size(opt->n_tensors, h.n_groups) +
                  vectors_size(opt) + sizeof(uint32_t);
    if (size != want)
        return deft_fail(DEFT_ERR_FORMAT, "%s: state holds %zu bytes, expected "
                         "%zu", fn, size, want);
    const char *p = (const char *)buf + sizeof(state_header_t);
    deft_group_t *groups = NULL;
    if ((st = read_tables(opt, p, h.n_groups, &groups)) != DEFT_OK)
        return st;
    p += opt->n_tensors * sizeof(uint64_t);
    memcpy(opt->tgroup, p, opt->n_tensors * sizeof(uint32_t));
    p += opt->n_tensors * sizeof(uint32_t);
    memcpy(opt->m_started, p, opt->n_tensors);
    p += padded_flags(opt->n_tensors) + h.n_groups * sizeof(state_group_t);
    free(opt->groups);
    opt->groups = groups;
    opt->n_groups = h.n_groups;
    if (groups[0].lr > 0.0f)
        opt->cfg.lr = groups[0].lr;
    opt->step = h.step;
    load_vectors(opt, p);
    return DEFT_OK;
}

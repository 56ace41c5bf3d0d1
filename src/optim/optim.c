/* Optimizer front end: argument checks at the API edge, allocation of every
 * buffer a step needs, agreement between workers at create time, and
 * dispatch to the algorithm's ops. */
#include "optim/optim_internal.h"

#include "comm/comm_internal.h"
#include "core/internal.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

const deft_algo_ops_t *deft_algo_ops(deft_algo_t a)
{
    switch (a) {
    case DEFT_ALGO_SGD: return &deft_algo_sgd;
    case DEFT_ALGO_EF: return &deft_algo_ef;
    case DEFT_ALGO_DEF: return &deft_algo_def;
    case DEFT_ALGO_DEFA: return &deft_algo_defa;
    case DEFT_ALGO_SAEF: return &deft_algo_saef;
    case DEFT_ALGO_PSYNC: return &deft_algo_psync;
    case DEFT_ALGO_EF21: return &deft_algo_ef21;
    case DEFT_ALGO_ECLK: return &deft_algo_eclk;
    }
    return NULL;
}

static const char *const algo_names[] = {"sgd",  "ef",    "def",  "defa",
                                         "saef", "psync", "ef21", "eclk"};
static const char *const comp_names[] = {"none", "rbgs",  "randk",
                                         "topk", "sign",  "qsgd",
                                         "scale", "powersgd", "fp16",
                                         "bf16", "randk-private"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *deft_algo_name(deft_algo_t algo)
{
    return (unsigned)algo < COUNT(algo_names) ? algo_names[algo] : "?";
}

const char *deft_compressor_name(deft_compressor_kind_t kind)
{
    return (unsigned)kind < COUNT(comp_names) ? comp_names[kind] : "?";
}

deft_status_t deft_algo_parse(const char *name, deft_algo_t *out)
{
    if (!name || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_algo_parse: %s is NULL",
                         !name ? "name" : "out");
    for (size_t i = 0; i < COUNT(algo_names); i++)
        if (strcasecmp(name, algo_names[i]) == 0) {
            *out = (deft_algo_t)i;
            return DEFT_OK;
        }
    return deft_fail(DEFT_ERR_INVALID_ARG,
                     "unknown algorithm '%s' (expected one of sgd, ef, def, "
                     "defa, saef, psync, ef21, eclk)", name);
}

deft_status_t deft_compressor_parse(const char *name,
                                    deft_compressor_kind_t *out)
{
    if (!name || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_compressor_parse: %s is NULL",
                         !name ? "name" : "out");
    for (size_t i = 0; i < COUNT(comp_names); i++)
        if (strcasecmp(name, comp_names[i]) == 0) {
            *out = (deft_compressor_kind_t)i;
            return DEFT_OK;
        }
    return deft_fail(DEFT_ERR_INVALID_ARG,
                     "unknown compressor '%s' (expected one of none, rbgs, "
                     "randk, topk, sign, qsgd, scale, powersgd, fp16, bf16, "
                     "randk-private)",
                     name);
}

deft_status_t deft_group_check(const deft_group_t *g, const char *fn,
                               const char *what)
{
    if (!(g->lr >= 0.0f) || !isfinite(g->lr))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %slr = %g, must be a "
                         "finite number >= 0", fn, what, (double)g->lr);
    if (!(g->momentum >= 0.0f && g->momentum < 1.0f))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: %smomentum = %g, must be in [0, 1)", fn, what,
                         (double)g->momentum);
    if (!(g->dampening >= 0.0f && g->dampening <= 1.0f))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: %sdampening = %g, must be in [0, 1]", fn, what,
                         (double)g->dampening);
    if (!(g->weight_decay >= 0.0f) || !isfinite(g->weight_decay))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: %sweight_decay = %g, must be a finite number "
                         ">= 0", fn, what, (double)g->weight_decay);
    if (g->nesterov != 0 && g->nesterov != 1)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %snesterov = %d, must be "
                         "0 or 1", fn, what, g->nesterov);
    if (g->nesterov && (g->momentum == 0.0f || g->dampening != 0.0f))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: %snesterov = 1 needs momentum > 0 and dampening "
                         "0 (momentum = %g, dampening = %g)", fn, what,
                         (double)g->momentum, (double)g->dampening);
    return DEFT_OK;
}

/* eclk's problem constants and parameters (0 = derive from theory, see
 * eclk.c). */
static deft_status_t validate_eclk(const deft_optim_config_t *cfg)
{
    const char *fn = "deft_optim_create";
    if (!(cfg->eclk_L > 0.0) || !isfinite(cfg->eclk_L))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->eclk_L = %g: eclk needs the smoothness "
                         "constant L of the parts, a finite number > 0", fn,
                         cfg->eclk_L);
    if (!(cfg->eclk_mu > 0.0) || !(cfg->eclk_mu <= cfg->eclk_L))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->eclk_mu = %g: eclk needs the strong "
                         "convexity constant mu, in (0, eclk_L = %g]", fn,
                         cfg->eclk_mu, cfg->eclk_L);
    if (!(cfg->eclk_p >= 0.0 && cfg->eclk_p <= 1.0))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->eclk_p = %g, must be in (0, 1] (0 = the "
                         "theory's 1/eclk_n)", fn, cfg->eclk_p);
    if (!(cfg->eclk_theta1 >= 0.0 && cfg->eclk_theta1 <= 0.5))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->eclk_theta1 = %g, must be in (0, 1/2] (0 = "
                         "derive from theory)", fn, cfg->eclk_theta1);
    if (cfg->eclk_n == 0 && (cfg->eclk_p == 0.0 || cfg->eclk_theta1 == 0.0))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->eclk_n = 0: the number of parts per worker "
                         "is needed to derive %s from theory", fn,
                         cfg->eclk_p == 0.0 ? "eclk_p" : "eclk_theta1");
    return DEFT_OK;
}

/* Checks everything that can be checked without communicating. */
static deft_status_t validate(const deft_layout_t *layout, const float *x0,
                              const deft_optim_config_t *cfg)
{
    const char *fn = "deft_optim_create";
    if (!layout)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: layout is NULL", fn);
    if (!cfg)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: cfg is NULL", fn);
    if (!x0)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: x0 is NULL", fn);
    if (layout->n_tensors == 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: layout->n_tensors = 0, the model needs at least "
                         "one tensor", fn);
    if (!layout->sizes)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: layout->sizes is NULL", fn);
    size_t d = 0;
    for (size_t t = 0; t < layout->n_tensors; t++) {
        if (layout->sizes[t] == 0)
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "%s: layout->sizes[%zu] = 0, tensors must not be "
                             "empty", fn, t);
        if (layout->sizes[t] > SIZE_MAX / 64 - d)
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "%s: layout sizes overflow at tensor %zu", fn, t);
        size_t r = layout->rows ? layout->rows[t] : 0;
        if (r > 1 && layout->sizes[t] % r != 0)
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "%s: layout->rows[%zu] = %zu does not divide "
                             "layout->sizes[%zu] = %zu (a matrix is rows x "
                             "sizes / rows)", fn, t, r, t, layout->sizes[t]);
        d += layout->sizes[t];
    }
    if ((unsigned)cfg->algo >= COUNT(algo_names))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: cfg->algo = %d is not a "
                         "deft_algo_t", fn, (int)cfg->algo);
    if (!deft_algo_ops(cfg->algo))
        return deft_fail(DEFT_ERR_UNSUPPORTED,
                         "%s: cfg->algo = %s is not available in this version",
                         fn, deft_algo_name(cfg->algo));
    if ((unsigned)cfg->compressor >= COUNT(comp_names))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: cfg->compressor = %d is not "
                         "a deft_compressor_kind_t", fn, (int)cfg->compressor);
    if (!(cfg->ratio >= 1.0) || !isfinite(cfg->ratio))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->ratio = %g, must be a finite number >= 1",
                         fn, cfg->ratio);
    if (cfg->scope != DEFT_SCOPE_TENSOR && cfg->scope != DEFT_SCOPE_GLOBAL)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: cfg->scope = %d is not a "
                         "deft_scope_t", fn, (int)cfg->scope);
    if (!(cfg->lambda >= 0.0f && cfg->lambda <= 1.0f))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->lambda = %g, must be in [0, 1]", fn,
                         (double)cfg->lambda);
    if (!(cfg->lr > 0.0f) || !isfinite(cfg->lr))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->lr = %g, must be a finite number > 0", fn,
                         (double)cfg->lr);
    deft_group_t g0 = deft_config_group(cfg);
    deft_status_t gst = deft_group_check(&g0, fn, "cfg->");
    if (gst != DEFT_OK)
        return gst;
    if (cfg->avg_period < 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->avg_period = %d, must be >= 0 (0 = never)",
                         fn, cfg->avg_period);
    if (cfg->compressor == DEFT_COMP_QSGD &&
        (cfg->qsgd_levels < 1 || cfg->qsgd_levels > 127))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->qsgd_levels = %d, must be in [1, 127]", fn,
                         cfg->qsgd_levels);
    if (cfg->compressor == DEFT_COMP_POWERSGD &&
        (cfg->powersgd_rank < 1 || cfg->powersgd_rank > 1024))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: cfg->powersgd_rank = %d, must be in [1, 1024]",
                         fn, cfg->powersgd_rank);
    if (cfg->compressor == DEFT_COMP_POWERSGD && cfg->scope != DEFT_SCOPE_TENSOR &&
        cfg->algo != DEFT_ALGO_SGD)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: powersgd approximates each matrix of the layout "
                         "and needs scope tensor, not global", fn);
    if (cfg->algo == DEFT_ALGO_ECLK) {
        deft_status_t st = validate_eclk(cfg);
        if (st != DEFT_OK)
            return st;
    }
    const deft_algo_ops_t *ops = deft_algo_ops(cfg->algo);
    if ((ops->needs & DEFT_NEED_LINEAR) &&
        !(cfg->compressor == DEFT_COMP_NONE || cfg->compressor == DEFT_COMP_RBGS ||
          (cfg->compressor == DEFT_COMP_RANDK && !cfg->randk_scaled)))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: %s averages blocks of the models and needs a "
                         "selecting, unscaled compressor (none, rbgs or "
                         "unscaled randk), not %s", fn, ops->name,
                         deft_compressor_name(cfg->compressor));
    return DEFT_OK;
}

/* A fingerprint of everything that must agree between workers. Fields the
 * chosen algorithm or compressor ignores are left out, so that workers that
 * differ only there are not refused. */
static uint64_t config_hash(const deft_layout_t *layout,
                            const deft_optim_config_t *in)
{
    deft_optim_config_t norm = *in, *cfg = &norm;
    if (cfg->algo != DEFT_ALGO_DEF && cfg->algo != DEFT_ALGO_DEFA)
        cfg->lambda = 0;
    if (cfg->algo != DEFT_ALGO_SAEF)
        cfg->avg_period = 0;
    if (cfg->algo == DEFT_ALGO_SGD)
        cfg->compressor = DEFT_COMP_NONE, cfg->ratio = 1;
    if (cfg->algo == DEFT_ALGO_EF21)
        cfg->momentum = 0;
    if (cfg->momentum == 0.0f)
        cfg->dampening = 0, cfg->nesterov = 0;
    if (cfg->compressor != DEFT_COMP_QSGD)
        cfg->qsgd_levels = 0;
    if (cfg->algo == DEFT_ALGO_ECLK) {
        cfg->lr = 0, cfg->momentum = 0, cfg->dampening = 0, cfg->nesterov = 0;
        /* theta1 and p derived from n are hashed through n. */
    } else {
        cfg->eclk_L = cfg->eclk_mu = cfg->eclk_p = cfg->eclk_theta1 = 0;
        cfg->eclk_n = 0;
    }
    cfg->randk_scaled = (cfg->compressor == DEFT_COMP_RANDK ||
                         cfg->compressor == DEFT_COMP_RANDK_PRIVATE) &&
                        cfg->randk_scaled;
    const int psgd = cfg->compressor == DEFT_COMP_POWERSGD;
    if (!psgd)
        cfg->powersgd_rank = 0;
    uint64_t h = deft_mix64(layout->n_tensors);
    for (size_t t = 0; t < layout->n_tensors; t++) {
        h = deft_mix64(h ^ layout->sizes[t]);
        /* Shapes matter only to powersgd; vectors hash as 0 either way. */
        size_t r = psgd && layout->rows && layout->rows[t] > 1 ? layout->rows[t] : 0;
        h = deft_mix64(h ^ r);
    }
    uint64_t fields[20];
    double ratio = cfg->ratio;
    uint32_t f32[5];
    memcpy(&f32[0], &cfg->lambda, 4);
    memcpy(&f32[1], &cfg->lr, 4);
    memcpy(&f32[2], &cfg->momentum, 4);
    memcpy(&f32[3], &cfg->weight_decay, 4);
    memcpy(&f32[4], &cfg->dampening, 4);
    memcpy(&fields[0], &ratio, 8);
    fields[1] = (uint64_t)cfg->algo;
    fields[2] = (uint64_t)cfg->compressor;
    fields[3] = (uint64_t)cfg->scope;
    fields[4] = (uint64_t)cfg->randk_scaled;
    fields[5] = (uint64_t)cfg->qsgd_levels;
    fields[6] = (uint64_t)cfg->avg_period;
    fields[7] = cfg->seed;
    for (int i = 0; i < 4; i++)
        fields[8 + i] = f32[i];
    memcpy(&fields[12], &cfg->eclk_L, 8);
    memcpy(&fields[13], &cfg->eclk_mu, 8);
    memcpy(&fields[14], &cfg->eclk_p, 8);
    memcpy(&fields[15], &cfg->eclk_theta1, 8);
    fields[16] = cfg->eclk_n;
    fields[17] = (uint64_t)cfg->powersgd_rank;
    fields[18] = f32[4];
    fields[19] = (uint64_t)cfg->nesterov;
    for (int i = 0; i < 20; i++)
        h = deft_mix64(h ^ fields[i]);
    return h;
}

static deft_status_t allocate(deft_optim_t *o, const float *x0)
{
    int needs = o->ops->needs;
    size_t bytes = o->d * sizeof(float);
    o->n_groups = 1;
    if (!(o->groups = calloc(1, sizeof *o->groups)) ||
        !(o->tgroup = calloc(o->n_tensors, sizeof *o->tgroup)) ||
        !(o->m_started = calloc(o->n_tensors, 1)))
        goto nomem;
    o->groups[0] = deft_config_group(&o->cfg);
    o->x = deft_alloc(bytes);
    if (!o->x)
        goto nomem;
    memcpy(o->x, x0, bytes);
    if ((needs & DEFT_NEED_E) && !(o->e = deft_alloc(bytes)))
        goto nomem;
    if ((needs & DEFT_NEED_M) && !(o->m = deft_alloc(bytes)))
        goto nomem;
    if ((needs & DEFT_NEED_POINT) && !(o->point = deft_alloc(bytes)))
        goto nomem;
    if ((needs & DEFT_NEED_EF21) &&
        (!(o->gk = deft_alloc(bytes)) || !(o->g = deft_alloc(bytes))))
        goto nomem;
    if ((needs & DEFT_NEED_ECLK) &&
        (!(o->z = deft_alloc(bytes)) || !(o->w = deft_alloc(bytes)) ||
         !(o->delta = deft_alloc(bytes))))
        goto nomem;
    if (needs & DEFT_NEED_COMPRESSOR) {
        deft_compressor_params_t p = {
            o->cfg.compressor,  o->cfg.ratio, o->cfg.scope, o->cfg.randk_scaled,
            o->cfg.qsgd_levels, o->cfg.seed,  o->rank,      o->cfg.powersgd_rank,
        };
        deft_layout_t layout = {o->n_tensors, o->sizes, o->rows};
        deft_status_t st = deft_compressor_create(&o->comp, &layout, &p);
        if (st != DEFT_OK)
            return st;
        o->msg_bytes = deft_compressor_msg_bytes(o->comp);
    } else {
        o->msg_bytes = bytes; /* sgd: the dense gradient */
    }
    if (!(o->msg = deft_alloc(o->msg_bytes)))
        goto nomem;
    if (o->comp && deft_compressor_wire(o->comp) == DEFT_WIRE_GATHER &&
        !(o->gathered = deft_alloc(o->msg_bytes * (size_t)o->nworkers)))
        goto nomem;
    return DEFT_OK;
nomem:
    return deft_fail(DEFT_ERR_NOMEM,
                     "deft_optim_create: no memory for the buffers of a %zu-"
                     "float model", o->d);
}

void deft_optim_destroy(deft_optim_t *opt)
{
    if (!opt)
        return;
    deft_compressor_destroy(opt->comp);
    deft_free(opt->x);
    deft_free(opt->e);
    deft_free(opt->m);
    deft_free(opt->point);
    deft_free(opt->gk);
    deft_free(opt->g);
    deft_free(opt->z);
    deft_free(opt->w);
    deft_free(opt->delta);
    deft_free(opt->msg);
    deft_free(opt->gathered);
    free(opt->sizes);
    free(opt->rows);
    free(opt->offs);
    free(opt->groups);
    free(opt->tgroup);
    free(opt->m_started);
    free(opt);
}

deft_status_t deft_optim_create(deft_optim_t **out, deft_comm_t *comm,
                                const deft_layout_t *layout, const float *x0,
                                const deft_optim_config_t *cfg)
{
    /* Without a communicator there is no one to tell; otherwise every
     * worker goes through the allgather below, even with bad arguments, so
     * that all of them return the error and none waits. */
    if (out)
        *out = NULL;
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_create: comm is NULL");
    deft_status_t st = out ? validate(layout, x0, cfg)
                           : deft_fail(DEFT_ERR_INVALID_ARG,
                                       "deft_optim_create: out is NULL");
    deft_optim_t *o = NULL;
    if (st == DEFT_OK) {
        o = calloc(1, sizeof *o);
        if (!o || !(o->sizes = calloc(layout->n_tensors, sizeof(size_t))) ||
            !(o->rows = calloc(layout->n_tensors, sizeof(size_t))) ||
            !(o->offs = calloc(layout->n_tensors + 1, sizeof(size_t)))) {
            st = deft_fail(DEFT_ERR_NOMEM, "deft_optim_create: out of memory");
        } else {
            o->comm = comm;
            o->rank = deft_comm_rank(comm);
            o->nworkers = deft_comm_size(comm);
            o->cfg = *cfg;
            o->ops = deft_algo_ops(cfg->algo);
            o->n_tensors = layout->n_tensors;
            memcpy(o->sizes, layout->sizes, layout->n_tensors * sizeof(size_t));
            if (layout->rows)
                memcpy(o->rows, layout->rows, layout->n_tensors * sizeof(size_t));
            for (size_t t = 0; t < layout->n_tensors; t++) {
                o->offs[t] = o->d;
                o->d += layout->sizes[t];
            }
            o->offs[layout->n_tensors] = o->d;
            o->lambda = cfg->algo == DEFT_ALGO_SAEF ? 1.0f
                        : (cfg->algo == DEFT_ALGO_DEF || cfg->algo == DEFT_ALGO_DEFA)
                            ? cfg->lambda
                            : 0.0f;
            st = allocate(o, x0);
        }
    }
    char mine[1024];
    snprintf(mine, sizeof mine, "%s", deft_last_error());

    uint64_t me[2] = {st == DEFT_OK ? 0 : 1 + (uint64_t)st,
                      st == DEFT_OK ? config_hash(layout, cfg) : 0};
    uint64_t all[2 * 1024];
    int k = deft_comm_size(comm);
    uint64_t *ag = k <= 1024 ? all : malloc(sizeof(uint64_t) * 2 * (size_t)k);
    deft_status_t cst = ag ? deft_comm_allgather(comm, me, sizeof me, ag)
                           : deft_fail(DEFT_ERR_NOMEM, "deft_optim_create: out "
                                                      "of memory");
    if (cst != DEFT_OK) {
        st = cst;
    } else if (st != DEFT_OK) {
        deft_set_last_error_text(mine);
    } else {
        for (int r = 0; r < k; r++) {
            if (ag[2 * r] != 0) {
                st = (deft_status_t)(ag[2 * r] - 1);
                deft_fail(st, "deft_optim_create: worker %d could not create its "
                          "optimizer (%s); see that worker's error", r,
                          deft_status_str(st));
                break;
            }
            if (ag[2 * r + 1] != ag[1]) {
                st = deft_fail(DEFT_ERR_INVALID_ARG,
                               "deft_optim_create: worker %d's layout or config "
                               "differs from worker 0's; all workers must pass "
                               "the same", r);
                break;
            }
        }
    }
    if (ag != all)
        free(ag);
    if (st == DEFT_OK)
        st = deft_comm_broadcast(comm, o->x, o->d * sizeof(float), 0);
    if (st == DEFT_OK && o->cfg.algo == DEFT_ALGO_ECLK)
        deft_eclk_setup(o); /* after the broadcast: z = w = rank 0's x0 */
    if (st != DEFT_OK) {
        deft_optim_destroy(o);
        return st;
    }
    *out = o;
    return DEFT_OK;
}

void deft_optim_config_init(deft_optim_config_t *cfg)
{
    if (cfg)
        *cfg = (deft_optim_config_t)DEFT_OPTIM_CONFIG_INIT;
}

deft_status_t deft_optim_ask(deft_optim_t *opt, const float **point)
{
    if (!opt || !point)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_ask: %s is NULL",
                         !opt ? "opt" : "point");
    *point = opt->ops->ask(opt);
    opt->asked = 1;
    return DEFT_OK;
}

deft_status_t deft_optim_tell(deft_optim_t *opt, const float *grad,
                              deft_step_info_t *info)
{
    if (!opt || !grad)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_tell: %s is NULL",
                         !opt ? "opt" : "grad");
    if (!opt->asked)
        return deft_fail(DEFT_ERR_INVALID_USAGE,
                         "deft_optim_tell: no deft_optim_ask since the last "
                         "tell (step %llu): the gradient must be taken at the "
                         "point ask returns", (unsigned long long)opt->step);
    deft_comm_stats_t before = opt->comm->stats;
    uint64_t step = opt->step;
    deft_status_t st = opt->ops->tell(opt, grad);
    opt->asked = 0;
    if (st != DEFT_OK)
        return st;
    opt->step++;
    memset(opt->m_started, 1, opt->n_tensors); /* every tensor has stepped */
    if (info) {
        info->step = step;
        info->bytes_sent = opt->comm->stats.bytes_sent - before.bytes_sent;
        info->payload_bytes = opt->comm->stats.payload_bytes - before.payload_bytes;
        info->msg_bytes = opt->msg_bytes;
    }
    return DEFT_OK;
}

deft_status_t deft_optim_output(deft_optim_t *opt, float *model)
{
    if (!opt || !model)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_output: %s is NULL",
                         !opt ? "opt" : "model");
    return opt->ops->output(opt, model);
}

deft_status_t deft_optim_set_lr(deft_optim_t *opt, float lr)
{
    if (!opt)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_set_lr: opt is NULL");
    if (!(lr > 0.0f) || !isfinite(lr))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_optim_set_lr: lr = %g, must be a finite number "
                         "> 0", (double)lr);
    opt->cfg.lr = lr;
    for (size_t g = 0; g < opt->n_groups; g++)
        opt->groups[g].lr = lr;
    return DEFT_OK;
}

float deft_optim_get_lr(const deft_optim_t *opt)
{
    return opt ? opt->groups[0].lr : 0.0f;
}

deft_status_t deft_optim_params(const deft_optim_t *opt, const float **x)
{
    if (!opt || !x)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_params: %s is NULL",
                         !opt ? "opt" : "x");
    *x = opt->x;
    return DEFT_OK;
}

deft_status_t deft_optim_error(const deft_optim_t *opt, const float **e)
{
    if (!opt || !e)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_error: %s is NULL",
                         !opt ? "opt" : "e");
    *e = opt->e;
    return DEFT_OK;
}

size_t deft_optim_dim(const deft_optim_t *opt)
{
    return opt ? opt->d : 0;
}

uint64_t deft_optim_steps(const deft_optim_t *opt)
{
    return opt ? opt->step : 0;
}

deft_status_t deft_optim_diverged(const deft_optim_t *opt, const char *what)
{
    /* the compressor's own knob: a ratio, a rank, or none */
    char knob[40] = "";
    const deft_compressor_kind_t k = opt->cfg.compressor;
    if (k == DEFT_COMP_POWERSGD)
        snprintf(knob, sizeof knob, " rank %d", opt->cfg.powersgd_rank);
    else if (k == DEFT_COMP_RBGS || k == DEFT_COMP_RANDK ||
             k == DEFT_COMP_TOPK || k == DEFT_COMP_SCALE ||
             k == DEFT_COMP_RANDK_PRIVATE)
        snprintf(knob, sizeof knob, " ratio %g", opt->cfg.ratio);
    return deft_fail(DEFT_ERR_DIVERGED,
                     "diverged at step %llu: %s (algorithm %s, compressor "
                     "%s%s, lr %g)", (unsigned long long)opt->step, what,
                     deft_algo_name(opt->cfg.algo), deft_compressor_name(k),
                     knob, (double)opt->groups[0].lr);
}

/* powersgd's two rounds: encode (round 0), allreduce it, encode round 1
 * from the sum (the residual and own_out happen here), allreduce it,
 * finish (the warm start), decode the sum. */
static deft_status_t exchange_rounds(deft_optim_t *opt, float *v, int local_bad,
                                     float alpha, float *out, float *own_out)
{
    deft_compressor_t *c = opt->comp;
    float *msg = opt->msg;
    deft_compressor_encode(c, opt->step, v, msg);
    if (local_bad)
        deft_compressor_poison(c, msg);
    for (int r = 0; r < deft_compressor_rounds(c); r++) {
        if (r > 0)
            deft_compressor_encode_round(c, opt->step, r, v, msg, own_out);
        size_t off, n;
        deft_compressor_round_span(c, r, &off, &n);
        deft_status_t st = deft_comm_allreduce_sum_f32(opt->comm, msg + off, n);
        if (st != DEFT_OK)
            return st;
        if (deft_exp_max_f32(msg + off, n) == DEFT_EXP_NONFINITE)
            return deft_optim_diverged(opt, "the averaged compressed update "
                                            "holds NaN or Inf");
    }
    deft_compressor_finish(c, msg);
    deft_compressor_decode_add(c, msg, alpha, out);
    return DEFT_OK;
}

deft_status_t deft_optim_exchange(deft_optim_t *opt, float *v, int local_bad,
                                  float alpha, float *out, float *own_out)
{
    deft_compressor_t *c = opt->comp;
    const deft_wire_t wire = deft_compressor_wire(c);
    if (wire == DEFT_WIRE_ROUNDS)
        return exchange_rounds(opt, v, local_bad, alpha, out, own_out);
    deft_compressor_encode(c, opt->step, v, opt->msg);
    if (own_out)
        deft_compressor_decode_add(c, opt->msg, 1.0f, own_out);
    if (local_bad)
        deft_compressor_poison(c, opt->msg);
    deft_status_t st;
    if (wire != DEFT_WIRE_GATHER) {
        st = wire == DEFT_WIRE_SUM
                 ? deft_comm_allreduce_sum_f32(opt->comm, opt->msg,
                                               opt->msg_bytes / sizeof(float))
                 : deft_comm_allreduce_sum_half(opt->comm, opt->msg,
                                                opt->msg_bytes / sizeof(uint16_t),
                                                wire == DEFT_WIRE_SUM_BF16);
        if (st != DEFT_OK)
            return st;
        if (!deft_compressor_msg_finite(c, opt->msg))
            return deft_optim_diverged(opt, "the averaged compressed update "
                                            "holds NaN or Inf");
        deft_compressor_decode_add(c, opt->msg, alpha, out);
        return DEFT_OK;
    }
    st = deft_comm_allgather(opt->comm, opt->msg, opt->msg_bytes, opt->gathered);
    if (st != DEFT_OK)
        return st;
    for (int r = 0; r < opt->nworkers; r++)
        if (!deft_compressor_msg_finite(c, (char *)opt->gathered +
                                               (size_t)r * opt->msg_bytes))
            return deft_optim_diverged(opt, "a worker's compressed update "
                                            "holds NaN or Inf");
    for (int r = 0; r < opt->nworkers; r++)
        deft_compressor_decode_add(c, (char *)opt->gathered +
                                          (size_t)r * opt->msg_bytes,
                                   alpha, out);
    return DEFT_OK;
}

deft_status_t deft_output_x(deft_optim_t *opt, float *model)
{
    memcpy(model, opt->x, opt->d * sizeof(float));
    return DEFT_OK;
}

deft_status_t deft_output_x_minus_avg_e(deft_optim_t *opt, float *model)
{
    memcpy(model, opt->e, opt->d * sizeof(float));
    deft_status_t st = deft_comm_allreduce_sum_f32(opt->comm, model, opt->d);
    if (st != DEFT_OK)
        return st;
    const float inv = 1.0f / (float)opt->nworkers;
    for (size_t i = 0; i < opt->d; i++)
        model[i] = opt->x[i] - model[i] * inv;
    return DEFT_OK;
}

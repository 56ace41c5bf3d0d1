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

deft_status_t deft_group_check(const deft_group_t *g, const char *fn,
                               const char *what)
{
    char pre[160];
    snprintf(pre, sizeof pre, "%s%s%s", fn && fn[0] ? fn : "",
             fn && fn[0] ? ": " : "", what);
    /* The ranges are the config's (config.c), except that a group may
     * have lr 0 (its tensors stay where they are, as torch allows). */
    deft_optim_config_t c = DEFT_OPTIM_CONFIG_INIT;
    if (!(g->lr >= 0.0f) || !isfinite(g->lr)) {
        char a[128];
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s = %g, must be a number >= "
                         "0 (a group may hold its tensors still)",
                         deft_option_label("lr", pre, a), (double)g->lr);
    }
    c.lr = g->lr == 0.0f ? c.lr : g->lr;
    c.momentum = g->momentum;
    c.dampening = g->dampening;
    c.weight_decay = g->weight_decay;
    c.nesterov = g->nesterov;
    static const char *const fields[] = {"lr", "momentum", "dampening",
                                         "weight_decay", "nesterov"};
    const deft_option_def_t *t;
    const size_t n = deft_optim_option_defs(&t);
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
        if (deft_option_check(deft_option_find(t, n, fields[f]), &c, pre) !=
            DEFT_OK)
            return DEFT_ERR_INVALID_ARG;
    char a[128];
    if (g->nesterov && (g->momentum == 0.0f || g->dampening != 0.0f))
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s = 1 needs momentum > 0 and dampening 0 (momentum "
                         "= %g, dampening = %g)",
                         deft_option_label("nesterov", pre, a),
                         (double)g->momentum, (double)g->dampening);
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
    return deft_optim_config_check_as(cfg, "deft_optim_create: cfg->");
}

/* A fingerprint of everything that must agree between workers. Fields the
 * chosen algorithm or compressor ignores are left out, so that workers that
 * differ only there are not refused. */
static uint64_t config_hash(const deft_layout_t *layout,
                            const deft_optim_config_t *cfg)
{
    const int shapes = deft_compressor_kind_uses_rows(cfg->compressor);
    uint64_t h = deft_mix64(layout->n_tensors);
    for (size_t t = 0; t < layout->n_tensors; t++) {
        h = deft_mix64(h ^ layout->sizes[t]);
        /* Shapes matter only to low-rank compressors; vectors hash as 0. */
        size_t r = shapes && layout->rows && layout->rows[t] > 1 ? layout->rows[t] : 0;
        h = deft_mix64(h ^ r);
    }
    const deft_option_def_t *t;
    const size_t n = deft_optim_option_defs(&t);
    for (size_t i = 0; i < n; i++) {
        if (!deft_option_applies(&t[i].o, cfg))
            continue;
        if (cfg->momentum == 0.0f && (!strcmp(t[i].o.name, "dampening") ||
                                      !strcmp(t[i].o.name, "nesterov")))
            continue; /* read only with momentum */
        uint64_t bits = 0; /* the field's bytes, whatever its type */
        memcpy(&bits, (const char *)cfg + t[i].offset,
               deft_option_size(t[i].o.type));
        h = deft_mix64(h ^ deft_mix64(bits + i));
    }
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
            o->lambda = deft_option_applies(deft_optim_option_find("lambda"), cfg)
                            ? cfg->lambda : 0.0f; /* saef's setup: 1 */
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
    if (st == DEFT_OK && o->ops->setup)
        o->ops->setup(o); /* after the broadcast (eclk: z = w = rank 0's x0) */
    if (st != DEFT_OK) {
        deft_optim_destroy(o);
        return st;
    }
    *out = o;
    return DEFT_OK;
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
    char method[160];
    return deft_fail(DEFT_ERR_DIVERGED,
                     "diverged at step %llu: %s (%s, lr %g)",
                     (unsigned long long)opt->step, what,
                     deft_optim_config_describe(&opt->cfg, method, sizeof method),
                     (double)opt->groups[0].lr);
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

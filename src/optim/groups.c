/* Per-tensor hyperparameters (the group table, as torch.optim's parameter
 * groups) and growing the model by new tensors (add_param_group). */
#include "core/internal.h"
#include "optim/optim_internal.h"

#include <stdio.h>
#include <stdlib.h>

deft_status_t deft_optim_set_groups(deft_optim_t *opt, size_t n_groups,
                                    const deft_group_t *groups,
                                    const uint32_t *tensor_group)
{
    const char *fn = "deft_optim_set_groups";
    if (!opt || !groups)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !opt ? "opt" : "groups");
    if (n_groups == 0 || n_groups > DEFT_MAX_GROUPS)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s: n_groups = %zu, must be in [1, %d]", fn, n_groups,
                         DEFT_MAX_GROUPS);
    for (size_t g = 0; g < n_groups; g++) {
        char what[48];
        snprintf(what, sizeof what, "groups[%zu].", g);
        deft_status_t st = deft_group_check(&groups[g], fn, what);
        if (st != DEFT_OK)
            return st;
    }
    for (size_t t = 0; t < opt->n_tensors; t++) {
        uint32_t gi = tensor_group ? tensor_group[t] : opt->tgroup[t];
        if (gi >= n_groups)
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "%s: tensor %zu is in group %u, but there are "
                             "%zu groups%s", fn, t, gi, n_groups,
                             tensor_group ? "" : " (pass tensor_group to "
                                                 "regroup the tensors)");
    }
    if (n_groups != opt->n_groups) {
        deft_group_t *ng = realloc(opt->groups, n_groups * sizeof *ng);
        if (!ng)
            return deft_fail(DEFT_ERR_NOMEM, "%s: out of memory", fn);
        opt->groups = ng;
        opt->n_groups = n_groups;
    }
    memcpy(opt->groups, groups, n_groups * sizeof *groups);
    if (tensor_group)
        memcpy(opt->tgroup, tensor_group, opt->n_tensors * sizeof(uint32_t));
    return DEFT_OK;
}

size_t deft_optim_num_groups(const deft_optim_t *opt)
{
    return opt ? opt->n_groups : 0;
}

deft_status_t deft_optim_get_group(const deft_optim_t *opt, size_t g,
                                   deft_group_t *out)
{
    if (!opt || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_get_group: %s is "
                         "NULL", !opt ? "opt" : "out");
    if (g >= opt->n_groups)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_get_group: g = %zu, "
                         "there are %zu groups", g, opt->n_groups);
    *out = opt->groups[g];
    return DEFT_OK;
}

deft_status_t deft_optim_tensor_group(const deft_optim_t *opt, size_t t,
                                      uint32_t *group)
{
    if (!opt || !group)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_tensor_group: %s "
                         "is NULL", !opt ? "opt" : "group");
    if (t >= opt->n_tensors)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_tensor_group: t = "
                         "%zu, the layout has %zu tensors", t, opt->n_tensors);
    *group = opt->tgroup[t];
    return DEFT_OK;
}

int deft_optim_output_is_point(const deft_optim_t *opt)
{
    return opt && opt->lambda == 0.0f && opt->ops->output == deft_output_x &&
           !opt->ops->coupled_point;
}

/* The combined layout (the old tensors, then added's) and x0 (this
 * worker's model, then x0_added), in one allocation each; NULL on OOM. */
static deft_status_t grown_inputs(const deft_optim_t *o,
                                  const deft_layout_t *added,
                                  const float *x0_added, size_t **sizes,
                                  size_t **rows, float **x0)
{
    size_t n = o->n_tensors + added->n_tensors, da = 0;
    for (size_t t = 0; t < added->n_tensors; t++)
        da += added->sizes[t];
    *sizes = malloc(n * sizeof(size_t));
    *rows = malloc(n * sizeof(size_t));
    *x0 = malloc((o->d + da) * sizeof(float));
    if (!*sizes || !*rows || !*x0)
        return deft_fail(DEFT_ERR_NOMEM, "deft_optim_create_grown: out of memory");
    memcpy(*sizes, o->sizes, o->n_tensors * sizeof(size_t));
    memcpy(*rows, o->rows, o->n_tensors * sizeof(size_t));
    for (size_t t = 0; t < added->n_tensors; t++) {
        (*sizes)[o->n_tensors + t] = added->sizes[t];
        (*rows)[o->n_tensors + t] = added->rows ? added->rows[t] : 0;
    }
    memcpy(*x0, o->x, o->d * sizeof(float));
    memcpy(*x0 + o->d, x0_added, da * sizeof(float));
    return DEFT_OK;
}

/* Copies the old optimizer's state into the prefix of the grown one:
 * every vector's first d floats, the per-tensor tables, the step. */
static deft_status_t carry_state(deft_optim_t *to, const deft_optim_t *from)
{
    const size_t bytes = from->d * sizeof(float);
    float *const dst[] = {to->x, to->e, to->m, to->gk, to->g, to->z, to->w};
    const float *const src[] = {from->x, from->e, from->m, from->gk,
                                from->g, from->z, from->w};
    for (size_t i = 0; i < sizeof dst / sizeof dst[0]; i++)
        if (src[i])
            memcpy(dst[i], src[i], bytes);
    size_t cs = deft_compressor_state_floats(from->comp);
    if (cs && cs <= deft_compressor_state_floats(to->comp)) {
        /* powersgd's warm start is per matrix in layout order: the old
         * matrices' part is a prefix; the new ones keep their fresh one. */
        float *all = malloc(deft_compressor_state_floats(to->comp) * sizeof(float));
        if (!all)
            return deft_fail(DEFT_ERR_NOMEM, "deft_optim_create_grown: out of memory");
        deft_compressor_state_get(to->comp, all);
        deft_compressor_state_get(from->comp, all); /* overwrites the prefix */
        deft_compressor_state_set(to->comp, all);
        free(all);
    }
    memcpy(to->tgroup, from->tgroup, from->n_tensors * sizeof(uint32_t));
    memcpy(to->m_started, from->m_started, from->n_tensors);
    to->step = from->step;
    to->anchor_version = from->anchor_version + 1; /* w grew */
    deft_group_t *g = malloc(from->n_groups * sizeof *g);
    if (!g)
        return deft_fail(DEFT_ERR_NOMEM, "deft_optim_create_grown: out of memory");
    memcpy(g, from->groups, from->n_groups * sizeof *g);
    free(to->groups);
    to->groups = g; /* the old table as it is; new tensors are in group 0 */
    to->n_groups = from->n_groups;
    return DEFT_OK;
}

deft_status_t deft_optim_create_grown(deft_optim_t **out,
                                      const deft_optim_t *opt,
                                      const deft_layout_t *added,
                                      const float *x0_added)
{
    const char *fn = "deft_optim_create_grown";
    if (out)
        *out = NULL;
    if (!opt)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: from is NULL", fn);
    /* A bad argument on this worker still goes through create's
     * agreement, with an empty layout that create refuses, so that the
     * other workers are not left waiting. */
    deft_status_t st = DEFT_OK;
    if (!out || !added || !x0_added || !added->sizes || added->n_tensors == 0)
        st = deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s", fn,
                       !out ? "out is NULL"
                       : !added ? "added is NULL"
                       : !x0_added ? "x0_added is NULL"
                       : !added->sizes ? "added->sizes is NULL"
                                       : "added->n_tensors = 0, nothing to add");
    size_t *sizes = NULL, *rows = NULL;
    float *x0 = NULL;
    if (st == DEFT_OK)
        st = grown_inputs(opt, added, x0_added, &sizes, &rows, &x0);
    char mine[512] = "";
    if (st != DEFT_OK)
        snprintf(mine, sizeof mine, "%s", deft_last_error());
    deft_layout_t layout = {st == DEFT_OK ? opt->n_tensors + added->n_tensors : 0,
                            sizes, rows};
    float dummy = 0.0f;
    deft_optim_t *n = NULL;
    deft_status_t cst = deft_optim_create(&n, opt->comm, &layout,
                                          x0 ? x0 : &dummy, &opt->cfg);
    if (st == DEFT_OK && cst == DEFT_OK)
        cst = carry_state(n, opt);
    if (st == DEFT_OK && cst == DEFT_OK)
        *out = n, n = NULL;
    deft_optim_destroy(n);
    free(sizes);
    free(rows);
    free(x0);
    if (st != DEFT_OK)
        deft_set_last_error_text(mine);
    return st != DEFT_OK ? st : cst;
}

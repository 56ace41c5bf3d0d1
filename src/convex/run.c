/* The convex experiment loop (run.h): constants, parameter rules, the
 * workers and the log. */
#include "convex/run.h"

#include "compress/compress.h"
#include "core/internal.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const double deft_convex_levels[DEFT_CONVEX_N_LEVELS] = {
    1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8};
const char *const deft_convex_level_names[DEFT_CONVEX_N_LEVELS] = {
    "1e-2", "1e-3", "1e-4", "1e-5", "1e-6", "1e-7", "1e-8"};

static const char *const method_names[DEFT_CONVEX_N_METHODS] = {
    "eclk", "ecgd", "ecsgd", "gd", "lkatyusha", "eclsvrg", "eclsvrg-diana"};

double deft_convex_ratio_shown(const deft_convex_config_t *c)
{
    return c->compressor == DEFT_COMP_NONE ? 1.0 : c->ratio;
}

const char *deft_convex_method_name(deft_convex_method_t m)
{
    return (unsigned)m < DEFT_CONVEX_N_METHODS ? method_names[m] : NULL;
}

deft_status_t deft_convex_method_parse(const char *name,
                                       deft_convex_method_t *out)
{
    for (int i = 0; name && i < DEFT_CONVEX_N_METHODS; i++)
        if (!strcmp(name, method_names[i])) {
            *out = (deft_convex_method_t)i;
            return DEFT_OK;
        }
    return deft_fail(DEFT_ERR_INVALID_ARG, "unknown convex method '%s': "
                     "expected eclk, lkatyusha, ecgd, ecsgd, eclsvrg, "
                     "eclsvrg-diana or gd", name ? name : "(null)");
}

int deft_convex_method_samples(deft_convex_method_t m)
{
    return m == DEFT_CONVEX_ECLK || m == DEFT_CONVEX_LKATYUSHA ||
           m == DEFT_CONVEX_ECSGD || m == DEFT_CONVEX_ECLSVRG ||
           m == DEFT_CONVEX_ECLSVRG_DIANA;
}

/* Methods with an anchor w and the loopless-SVRG estimator. */
static int has_anchor(deft_convex_method_t m)
{
    return m == DEFT_CONVEX_ECLK || m == DEFT_CONVEX_LKATYUSHA ||
           m == DEFT_CONVEX_ECLSVRG || m == DEFT_CONVEX_ECLSVRG_DIANA;
}

static int is_eclk(deft_convex_method_t m)
{
    return m == DEFT_CONVEX_ECLK || m == DEFT_CONVEX_LKATYUSHA;
}

double deft_convex_delta(deft_compressor_kind_t kind, double ratio,
                         int qsgd_levels, size_t d)
{
    double r = ratio >= 1 ? ratio : 1, dd = d > 0 ? (double)d : 1;
    switch (kind) {
    case DEFT_COMP_NONE:
    case DEFT_COMP_FP16:
    case DEFT_COMP_BF16:
    case DEFT_COMP_POWERSGD:
        return 1.0;
    case DEFT_COMP_SCALE:
        return 1.0 - (1.0 - 1.0 / r) * (1.0 - 1.0 / r);
    case DEFT_COMP_QSGD: {
        /* Unbiased with variance omega = min(d/s^2, sqrt(d)/s) (Alistarh
         * et al. 2017); scaled by 1/(1 + omega) it is a contraction. */
        double s = qsgd_levels > 0 ? qsgd_levels : 1;
        return 1.0 / (1.0 + fmin(dd / (s * s), sqrt(dd) / s));
    }
    case DEFT_COMP_SIGN:
        return 1.0 / dd;
    default: { /* topk, randk, randk-private, rbgs: k of d */
        double k = floor(dd / r);
        return (k > 1 ? k : 1) / dd;
    }
    }
}

/* ---- parameters ------------------------------------------------------ */

/* DIANA's quantizer works at the run's ratio (1, the identity, when the
 * run does not compress). */
static double diana_q_ratio(const deft_convex_config_t *c)
{
    return c->compressor != DEFT_COMP_NONE && c->ratio >= 1 ? c->ratio : 1;
}

/* eclk's parameters. L-Katyusha (Kovalev, Horvath & Richtarik 2020) for
 * parts of smoothness L and anchor probability p:
 *   theta1 = min(sqrt(2 mu / (3 L p)), 1/2), theta2 = 1/2,
 *   eta = theta2 / ((1 + theta2) theta1), z step eta/L.
 * The compressor enters through p: with full local gradients and the
 * global anchor gradient, the anchor moves with probability p = delta (the
 * compressor's contraction), so that the dense anchor allreduce (32 d bits
 * with probability delta) costs half a Top-K message (64 k = 64 delta d
 * bits) per round on average, and theta1 is L-Katyusha's for that p. With
 * sampled rows p = B/m, L-Katyusha's own choice. delta_exp E (default 0)
 * further replaces L by L / delta^E; docs/eclk.md shows the grid over E and
 * p that chose these defaults (and that Rand-K, whose coordinates wait a
 * geometric number of rounds, still oscillates with them). L is the
 * smoothness of what a round samples: L_B + mu (L_loc + mu for full local
 * gradients). */
#define ECLK_DELTA_EXP 0.0

/* Under Rand-K (shared or private) an error coordinate waits a geometric
 * number of rounds (mean 1/delta) and then releases what the z step put
 * into it all at once; with the Top-K rule (p = delta, L-Katyusha's theta1
 * for it) those releases swing the run back up (docs/eclk.md). The Rand-K
 * rule, measured on grids rather than derived (ECLK's theorem was not
 * available here):
 *   p = delta / 2 (with full local gradients and the global anchor
 *     gradient): the anchor is on average twice as old as an error
 *     coordinate;
 *   theta1 = L-Katyusha's for that p;
 *   the z step eta/(s L) = 1/(3 theta1 s L) at most
 *     h = ECLK_RANDK_C delta / (rho L),   rho = sqrt(L_mask / L_f),
 *   so s = max(1, rho / (3 ECLK_RANDK_C delta theta1)). L_mask is the
 *   smoothness seen through a k-of-d mask (deft_logreg_smooth_masked): on
 *   data whose curvature lies in a few dense directions (raw pixels, rho
 *   ~ 0.25) a mask sees little of it and a long z step is safe; on nearly
 *   diagonal curvature (rho ~ 1) it is not. */
#define ECLK_RANDK_P 0.5
#define ECLK_RANDK_C 50.0

static int randk_rule(const deft_convex_config_t *c)
{
    return !c->lkatyusha_params && (c->compressor == DEFT_COMP_RANDK ||
                                    c->compressor == DEFT_COMP_RANDK_PRIVATE);
}

static void eclk_params(const deft_convex_config_t *c, deft_convex_setup_t *s)
{
    const int full = s->B == s->m;
    double L = (full ? s->L_loc : s->L_B) + c->mu;
    double p = full ? 1.0 : (double)s->B / (double)s->m;
    if (full && s->anchor_global && !c->lkatyusha_params)
        p = s->delta * (randk_rule(c) ? ECLK_RANDK_P : 1.0);
    if (c->p > 0)
        p = c->p;
    if (!c->lkatyusha_params) {
        s->delta_exp = c->delta_exp_set ? c->delta_exp : ECLK_DELTA_EXP;
        L /= pow(s->delta, s->delta_exp);
    }
    double theta1 = c->theta1, lscale = 1.0;
    if (!(theta1 > 0)) {
        theta1 = sqrt(2.0 * (c->mu / L) / (3.0 * p));
        theta1 = theta1 < 0.5 ? theta1 : 0.5;
        if (randk_rule(c) && s->L_mask > 0 && s->L_f > 0) {
            double rho = sqrt(fmin(s->L_mask / s->L_f, 1.0));
            lscale = fmax(1.0, rho / (3.0 * ECLK_RANDK_C * s->delta * theta1));
        }
    }
    if (c->lscale > 0)
        lscale = c->lscale;
    s->L = L * lscale;
    s->lscale = lscale;
    s->p = p;
    s->theta1 = theta1;
    s->eta = 0.5 / (1.5 * theta1);
}

static deft_status_t check_config(const char *fn, const deft_logreg_t *prob,
                                  const deft_convex_config_t *c)
{
    deft_status_t st;
    if (!prob || !c)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !prob ? "prob" : "c");
    /* Every field's range, from the table (options.c). */
    char pre[64];
    snprintf(pre, sizeof pre, "%s: ", fn);
    const deft_option_def_t *t;
    const size_t n_opts = deft_convex_option_defs(&t);
    for (size_t i = 0; i < n_opts; i++)
        if ((st = deft_option_check(&t[i], c, pre)) != DEFT_OK)
            return st;
    if (prob->n / (size_t)c->workers < 2 ||
        prob->n / (size_t)c->workers > UINT32_MAX)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %zu examples cannot be "
                         "split over %d workers (2 to 2^32 - 1 rows each): "
                         "use fewer workers", fn, prob->n, c->workers);
    if ((c->method == DEFT_CONVEX_GD || c->method == DEFT_CONVEX_LKATYUSHA) &&
        c->compressor != DEFT_COMP_NONE)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s sends dense vectors; "
                         "compressor must be none", fn,
                         method_names[c->method]);
    if (c->anchor != DEFT_ANCHOR_DEFAULT && !has_anchor(c->method))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s has no anchor (the "
                         "anchor gradient is for eclk, lkatyusha and "
                         "eclsvrg)", fn, method_names[c->method]);
    return DEFT_OK;
}

/* The smoothness constants (without mu). */
static deft_status_t constants(const deft_logreg_t *prob, int K,
                               deft_convex_setup_t *s)
{
    const size_t m = s->m, B = s->B, n = m * (size_t)K;
    s->L_max = deft_logreg_smooth_max(prob, 0, n);
    s->L_f = deft_logreg_smooth_avg(prob, 0, n, 1e-10, 5000, &s->power_iters);
    s->L_loc = 0;
    for (int k = 0; k < K; k++) {
        double l = deft_logreg_smooth_avg(prob, (size_t)k * m,
                                          (size_t)(k + 1) * m, 1e-10, 5000,
                                          NULL);
        s->L_loc = l > s->L_loc ? l : s->L_loc;
    }
    if (!isfinite(s->L_f) || !isfinite(s->L_loc))
        return deft_fail(DEFT_ERR_NOMEM, "deft_convex_setup: no memory for "
                         "the power iteration over %zu features", prob->d);
    /* Expected smoothness of a B-row sample without replacement (Gower et
     * al. 2019, Prop. 3.8): L_1 = L_max, L_m = L_loc. */
    s->L_B = B == m ? s->L_loc
                    : ((double)m * (double)(B - 1) * s->L_loc +
                       (double)(m - B) * s->L_max) /
                          ((double)B * (double)(m - 1));
    return DEFT_OK;
}

deft_status_t deft_convex_setup(const deft_logreg_t *prob,
                                const deft_convex_config_t *c,
                                deft_convex_setup_t *s)
{
    deft_status_t st = check_config("deft_convex_setup", prob, c);
    if (st != DEFT_OK)
        return st;
    if (!s)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_convex_setup: out is "
                         "NULL");
    memset(s, 0, sizeof *s);
    s->lscale = 1.0;
    const int K = c->workers;
    s->m = prob->n / (size_t)K;
    s->B = !deft_convex_method_samples(c->method) || c->batch <= 0 ||
                   (size_t)c->batch >= s->m
               ? s->m
               : (size_t)c->batch;
    if ((st = constants(prob, K, s)) != DEFT_OK)
        return st;
    const deft_optim_config_t defaults = DEFT_OPTIM_CONFIG_INIT;
    s->delta = deft_convex_delta(c->compressor, c->ratio,
                                 defaults.qsgd_levels, prob->d);
    if (is_eclk(c->method) && randk_rule(c)) {
        size_t k = (size_t)floor(s->delta * (double)prob->d + 0.5);
        double q = prob->d > 1 ? (double)(k - 1) / (double)(prob->d - 1) : 1;
        s->L_mask = deft_logreg_smooth_masked(prob, 0, s->m * (size_t)K, q,
                                              1e-10, 5000, NULL);
        if (!isfinite(s->L_mask))
            return deft_fail(DEFT_ERR_NOMEM, "deft_convex_setup: no memory "
                             "for the power iteration over %zu features",
                             prob->d);
    }
    s->anchor_global = c->anchor == DEFT_ANCHOR_GLOBAL ||
                       (c->anchor == DEFT_ANCHOR_DEFAULT &&
                        c->method == DEFT_CONVEX_ECLK &&
                        c->compressor != DEFT_COMP_NONE);
    const double mu = c->mu;
    switch (c->method) {
    case DEFT_CONVEX_GD:
    case DEFT_CONVEX_ECGD:
        s->lr = c->lr > 0 ? c->lr : 1.0 / (s->L_f + mu);
        break;
    case DEFT_CONVEX_ECSGD:
        /* SGD with expected smoothness L_B (Gower et al. 2019): linear
         * convergence to a noise floor. */
        s->lr = c->lr > 0 ? c->lr : 1.0 / (2.0 * (s->L_B + mu));
        break;
    case DEFT_CONVEX_ECLSVRG:
    case DEFT_CONVEX_ECLSVRG_DIANA:
        /* The step 1/(L_B + mu) (Gorbunov et al.'s experiments use 1/L;
         * L-SVRG's theorem asks for 1/(6 L)), anchor probability B/m;
         * DIANA's shift step alpha = 1/(omega + 1) = k/d for its
         * quantizer, randk-private scaled at the run's ratio (omega =
         * d/k - 1). */
        s->lr = c->lr > 0 ? c->lr : 1.0 / (s->L_B + mu);
        s->p = c->p > 0 ? c->p : (double)s->B / (double)s->m;
        if (s->B == s->m && s->anchor_global && !(c->p > 0))
            s->p = s->delta; /* the exact estimate needs no anchor moves */
        if (c->method == DEFT_CONVEX_ECLSVRG_DIANA)
            s->alpha = c->alpha > 0 ? c->alpha
                                    : deft_convex_delta(DEFT_COMP_RANDK_PRIVATE,
                                                        diana_q_ratio(c), 0,
                                                        prob->d);
        break;
    case DEFT_CONVEX_ECLK:
    case DEFT_CONVEX_LKATYUSHA:
        eclk_params(c, s);
        if (!(s->L >= c->mu))  // only a given lscale < 1 can do this
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "deft_convex_setup: lscale = %g makes the z "
                             "step's smoothness L = %g smaller than mu = %g: "
                             "use lscale >= %g", s->lscale, s->L, c->mu,
                             s->lscale * c->mu / s->L);
        break;
    default:
        break;
    }
    return DEFT_OK;
}

/* ---- the workers ----------------------------------------------------- */

typedef struct {
    const deft_logreg_t *prob;
    const deft_convex_config_t *c;
    const deft_convex_setup_t *s;
    double pstar, p0;
    FILE *log;
    deft_convex_result_t *res; /* filled by rank 0 */
} ctx_t;

/* One worker's buffers; shapes in floats/doubles. */
typedef struct {
    size_t d, m, lo, B;
    float *x0;          /* (d,) zeros: the start                            */
    float *grad;        /* (d,) what tell gets: g + mu x                    */
    float *model;       /* (d,) the output model; scratch for allreduces    */
    float *w;           /* (d,) eclsvrg's anchor; NULL for the others       */
    double *g;          /* (d,) the estimate, in double                     */
    double *ga;         /* (d,) a_k(w): grad f(w) or grad f_k(w); anchored  */
    double *gw;         /* (d,) grad f_k(w); the global form only           */
    double *shard_loss; /* (K,) the shards' losses at evaluation            */
    uint32_t *idx;      /* (m,) a permutation of the shard's rows           */
    /* eclsvrg-diana: */
    deft_compressor_t *q; /* the unbiased quantizer Q                      */
    double *h_own;      /* (d,) this worker's shift h_k                      */
    double *h_avg;      /* (d,) h = avg_k h_k, the same on every worker      */
    float *qv;          /* (d,) Q's input, then its residual (unused)        */
    float *qdec;        /* (d,) decoded messages                             */
    unsigned char *qmsg;  /* (K, msg_bytes) every worker's Q message         */
    uint64_t w_version, w_seen;
    uint64_t bits, wire;
} wk_t;

static void wk_free(wk_t *b)
{
    free(b->x0);
    free(b->grad);
    free(b->model);
    free(b->w);
    free(b->g);
    free(b->ga);
    free(b->gw);
    free(b->shard_loss);
    free(b->idx);
    deft_compressor_destroy(b->q);
    free(b->h_own);
    free(b->h_avg);
    free(b->qv);
    free(b->qdec);
    free(b->qmsg);
}

/* DIANA's quantizer: randk-private, scaled (unbiased, omega = ratio - 1),
 * at the run's ratio, with this worker's own coordinates. */
static int diana_alloc(wk_t *b, const ctx_t *X, int rank, int K)
{
    const size_t d = b->d;
    size_t sizes[1] = {d};
    deft_layout_t layout = {1, sizes, NULL};
    deft_compressor_params_t qp;
    memset(&qp, 0, sizeof qp);
    qp.kind = DEFT_COMP_RANDK_PRIVATE;
    qp.ratio = diana_q_ratio(X->c);
    qp.scope = DEFT_SCOPE_TENSOR;
    qp.randk_scaled = 1;
    qp.qsgd_levels = 1;
    qp.powersgd_rank = 1;
    qp.seed = X->c->seed ^ 0x51a9a5eedull;
    qp.rank = rank;
    if (deft_compressor_create(&b->q, &layout, &qp) != DEFT_OK)
        return 0;
    size_t mb = deft_compressor_msg_bytes(b->q);
    b->h_own = calloc(d, sizeof(double));
    b->h_avg = calloc(d, sizeof(double));
    b->qv = malloc(sizeof(float) * d);
    b->qdec = malloc(sizeof(float) * d);
    b->qmsg = malloc(mb * (size_t)K);
    return b->h_own && b->h_avg && b->qv && b->qdec && b->qmsg;
}

static int wk_alloc(wk_t *b, const ctx_t *X, int rank, int K)
{
    memset(b, 0, sizeof *b);
    const size_t d = X->prob->d;
    b->d = d;
    b->m = X->s->m;
    b->B = X->s->B;
    b->lo = (size_t)rank * b->m;
    /* The anchor's buffers only for the methods that use them. */
    const deft_convex_method_t m = X->c->method;
    const int anchored = has_anchor(m), own_w = anchored && !is_eclk(m);
    const int global = anchored && X->s->anchor_global;
    b->x0 = calloc(d, sizeof(float));
    b->grad = malloc(sizeof(float) * d);
    b->model = malloc(sizeof(float) * d);
    b->w = own_w ? calloc(d, sizeof(float)) : NULL;
    b->g = malloc(sizeof(double) * d);
    b->ga = anchored ? malloc(sizeof(double) * d) : NULL;
    b->gw = global ? malloc(sizeof(double) * d) : NULL;
    b->shard_loss = malloc(sizeof(double) * (size_t)K);
    b->idx = malloc(sizeof(uint32_t) * b->m);
    if (!b->x0 || !b->grad || !b->model || (own_w && !b->w) || !b->g ||
        (anchored && !b->ga) || (global && !b->gw) || !b->shard_loss ||
        !b->idx)
        return 0;
    for (size_t i = 0; i < b->m; i++)
        b->idx[i] = (uint32_t)i;
    b->w_version = 1;
    return X->c->method != DEFT_CONVEX_ECLSVRG_DIANA ||
           diana_alloc(b, X, rank, K);
}

/* Partial Fisher-Yates: idx[0..B) becomes a uniform B-subset of [0, m)
 * without replacement (idx keeps a permutation between calls). */
static void sample_rows(uint32_t *idx, size_t m, size_t B, deft_rng_t *r)
{
    for (size_t i = 0; i < B; i++) {
        size_t j = i + (size_t)deft_rng_below(r, m - i);
        uint32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* P(model) from the shards' losses: each worker evaluates its own rows
 * and the doubles are allgathered (not a float allreduce: the sums must
 * resolve suboptimalities far below float precision). Every worker gets
 * the same value, summed in rank order. */
static deft_status_t evaluate(deft_comm_t *comm, const ctx_t *X, wk_t *b,
                              double *P)
{
    const deft_logreg_t *p = X->prob;
    int K = deft_comm_size(comm);
    double mine = deft_logreg_loss_f32(p, b->lo, b->lo + b->m, b->model);
    deft_status_t st = deft_comm_allgather(comm, &mine, sizeof mine,
                                           b->shard_loss);
    if (st != DEFT_OK)
        return st;
    double s = 0, r = 0;
    for (int k = 0; k < K; k++)
        s += b->shard_loss[k];
    for (size_t j = 0; j < p->d; j++)
        r += (double)b->model[j] * b->model[j];
    *P = s / K + 0.5 * X->c->mu * r;
    return DEFT_OK;
}

static void log_round(const ctx_t *X, long t, double P, double rel)
{
    deft_convex_result_t *R = X->res;
    const deft_convex_config_t *c = X->c;
    if (X->log) {
        fprintf(X->log,
                "{\"round\": %ld, \"rel_subopt\": %.6e, \"subopt\": %.6e, "
                "\"objective\": %.17g, \"bits_per_worker\": %llu, "
                "\"wire_bytes_per_worker\": %llu, \"method\": \"%s\", "
                "\"compressor\": \"%s\", \"ratio\": %g}\n",
                t, rel, P - X->pstar, P, (unsigned long long)R->bits,
                (unsigned long long)R->wire_bytes, method_names[c->method],
                deft_compressor_name(c->compressor),
                deft_convex_ratio_shown(c));
        fflush(X->log); /* long runs can be followed with tail -f */
    }
    for (int i = 0; i < DEFT_CONVEX_N_LEVELS; i++)
        if (R->level_round[i] < 0 && rel <= deft_convex_levels[i]) {
            R->level_round[i] = t;
            R->level_bits[i] = R->bits;
        }
    if (rel < R->best_rel)
        R->best_rel = rel;
}

/* Evaluates the output model at round t and logs it (rank 0). Sets *stop
 * when the run is over; DEFT_ERR_DIVERGED on every worker together (they
 * all see the same P). */
static deft_status_t checkpoint_round(deft_comm_t *comm, const ctx_t *X,
                                      wk_t *b, long t, int *stop)
{
    double P;
    deft_status_t st;
    if ((st = evaluate(comm, X, b, &P)) != DEFT_OK)
        return st;
    double rel = (P - X->pstar) / (X->p0 - X->pstar);
    if (deft_comm_rank(comm) == 0) {
        X->res->bits = b->bits;
        X->res->wire_bytes = b->wire;
        X->res->rounds_done = t;
        X->res->final_rel = rel;
        log_round(X, t, P, rel);
    }
    if (!isfinite(P) || rel > 1e6) {
        if (deft_comm_rank(comm) == 0)
            X->res->diverged_round = t;
        return deft_fail(DEFT_ERR_DIVERGED, "the relative suboptimality "
                         "reached %g at round %ld", rel, t);
    }
    *stop = t == X->c->rounds || (X->c->target > 0 && rel <= X->c->target);
    return DEFT_OK;
}

/* Brings a_k(w) (and grad f_k(w) for full gradients) up to date after the
 * anchor moved: grad f_k(w) on this shard and, for the global form, its
 * average over the workers (one dense float allreduce, counted). */
static deft_status_t refresh_anchor(deft_comm_t *comm, const ctx_t *X,
                                    wk_t *b, const float *w)
{
    const size_t d = b->d;
    const int K = deft_comm_size(comm);
    deft_logreg_loss_grad_f32(X->prob, b->lo, b->lo + b->m, w, b->ga);
    if (!X->s->anchor_global)
        return DEFT_OK;
    memcpy(b->gw, b->ga, sizeof(double) * d);
    float *sum = b->model; /* scratch between evaluations */
    for (size_t j = 0; j < d; j++)
        sum[j] = (float)b->ga[j];
    deft_comm_stats_t s0, s1;
    deft_comm_get_stats(comm, &s0);
    deft_status_t st = deft_comm_allreduce_sum_f32(comm, sum, d);
    if (st != DEFT_OK)
        return st;
    deft_comm_get_stats(comm, &s1);
    for (size_t j = 0; j < d; j++)
        b->ga[j] = (double)sum[j] / K;
    b->bits += 32 * (uint64_t)d;
    b->wire += s1.bytes_sent - s0.bytes_sent;
    return DEFT_OK;
}

/* b->g = this worker's estimate at x for round t (see run.h); w is the
 * anchor (NULL for methods without one). */
static deft_status_t estimate(deft_comm_t *comm, const ctx_t *X, wk_t *b,
                              long t, const float *x, const float *w)
{
    const deft_logreg_t *p = X->prob;
    const size_t d = b->d, lo = b->lo;
    const int full = b->B == b->m;
    deft_status_t st;
    if (w && !(full && !X->s->anchor_global) && b->w_version != b->w_seen) {
        if ((st = refresh_anchor(comm, X, b, w)) != DEFT_OK)
            return st;
        b->w_seen = b->w_version;
    }
    if (full) {
        deft_logreg_loss_grad_f32(p, lo, lo + b->m, x, b->g);
        if (w && X->s->anchor_global)
            for (size_t j = 0; j < d; j++)
                b->g[j] += b->ga[j] - b->gw[j];
        return DEFT_OK;
    }
    deft_rng_t r = deft_rng_make(X->c->seed, (uint64_t)t, 0,
                                 DEFT_STREAM_PRIVATE(DEFT_STREAM_DATA,
                                                     deft_comm_rank(comm)));
    sample_rows(b->idx, b->m, b->B, &r);
    if (w)
        memcpy(b->g, b->ga, sizeof(double) * d);
    else
        memset(b->g, 0, sizeof(double) * d);
    const double inv = 1.0 / (double)b->B;
    for (size_t s = 0; s < b->B; s++) {
        deft_logreg_row_grad_add(p, lo + b->idx[s], x, inv, b->g);
        if (w)
            deft_logreg_row_grad_add(p, lo + b->idx[s], w, -inv, b->g);
    }
    return DEFT_OK;
}

/* EC-LSVRG-DIANA's shifts (Gorbunov, Kovalev, Makarenko & Richtarik 2020,
 * as in the authors' code): with ghat = b->grad (the regularized estimate)
 * b->grad becomes ghat - h_k + h, the vector EF then compresses; Q(ghat -
 * h_k) is allgathered and h_k += alpha Q_k, h += alpha avg_j Q_j. */
static deft_status_t diana_shift(deft_comm_t *comm, const ctx_t *X, wk_t *b,
                                 long t)
{
    const size_t d = b->d, mb = deft_compressor_msg_bytes(b->q);
    const int K = deft_comm_size(comm), rank = deft_comm_rank(comm);
    const double alpha = X->s->alpha;
    for (size_t j = 0; j < d; j++) {
        double ghat = b->grad[j];
        b->qv[j] = (float)(ghat - b->h_own[j]);
        b->grad[j] = (float)(ghat - b->h_own[j] + b->h_avg[j]);
    }
    unsigned char *mine = b->qmsg + (size_t)rank * mb;
    deft_compressor_encode(b->q, (uint64_t)t, b->qv, mine);
    deft_comm_stats_t s0, s1;
    deft_comm_get_stats(comm, &s0);
    deft_status_t st = deft_comm_allgather(comm, mine, mb, b->qmsg);
    if (st != DEFT_OK)
        return st;
    deft_comm_get_stats(comm, &s1);
    b->bits += 8 * (uint64_t)mb;
    b->wire += s1.bytes_sent - s0.bytes_sent;
    for (int k = 0; k < K; k++) {
        const unsigned char *msg = b->qmsg + (size_t)k * mb;
        if (!deft_compressor_msg_finite(b->q, msg))
            return deft_fail(DEFT_ERR_DIVERGED, "eclsvrg-diana: worker %d's "
                             "shift update is not finite at round %ld", k, t);
        memset(b->qdec, 0, sizeof(float) * d);
        deft_compressor_decode_add(b->q, msg, 1.0f, b->qdec);
        for (size_t j = 0; j < d; j++) {
            b->h_avg[j] += alpha / K * b->qdec[j];
            if (k == rank)
                b->h_own[j] += alpha * b->qdec[j];
        }
    }
    return DEFT_OK;
}

static deft_optim_config_t optim_config(const ctx_t *X)
{
    const deft_convex_config_t *c = X->c;
    const deft_convex_setup_t *s = X->s;
    deft_optim_config_t oc = DEFT_OPTIM_CONFIG_INIT;
    oc.compressor = c->compressor;
    oc.ratio = c->ratio;
    oc.momentum = 0.0f;
    oc.weight_decay = 0.0f; /* mu x is part of every gradient passed */
    oc.seed = c->seed;
    oc.lr = (float)(s->lr > 0 ? s->lr : 0.1); /* unused by eclk */
    if (c->method == DEFT_CONVEX_GD)
        oc.algo = DEFT_ALGO_SGD;
    else if (is_eclk(c->method)) {
        oc.algo = DEFT_ALGO_ECLK;
        oc.eclk_L = s->L;
        oc.eclk_mu = c->mu;
        oc.eclk_p = s->p;
        oc.eclk_theta1 = s->theta1;
        oc.eclk_n = 1;
    } else
        oc.algo = DEFT_ALGO_EF;
    return oc;
}

/* eclsvrg's anchor coin (tensor 1 of eclk's coin stream, which eclk
 * itself keys with tensor 0): heads moves w to the point of round t. Each
 * worker flips its own with the local anchor gradient (as L-SVRG's
 * distributed form does); the global form needs one anchor for all, so
 * the coin is shared then. */
static int anchor_coin(const ctx_t *X, long t, int rank)
{
    uint64_t purpose = X->s->anchor_global
                           ? DEFT_STREAM_ECLK_COIN
                           : DEFT_STREAM_PRIVATE(DEFT_STREAM_ECLK_COIN, rank);
    deft_rng_t r = deft_rng_make(X->c->seed, (uint64_t)t, 1, purpose);
    return deft_rng_uniform_f64(&r) < X->s->p;
}

static deft_status_t worker(deft_comm_t *comm, void *arg)
{
    const ctx_t *X = arg;
    const deft_convex_config_t *c = X->c;
    const int rank = deft_comm_rank(comm), K = deft_comm_size(comm);
    const double mu = c->mu;
    size_t sizes[1] = {X->prob->d};
    deft_layout_t layout = {1, sizes, NULL};
    deft_optim_config_t oc = optim_config(X);
    deft_optim_t *opt = NULL;
    deft_status_t st;
    wk_t b;
    if (!wk_alloc(&b, X, rank, K)) {
        /* Still enter create (refused for the NULL x0) so that every
         * worker fails instead of waiting for this one. */
        deft_optim_create(&opt, comm, &layout, NULL, &oc);
        st = deft_fail(DEFT_ERR_NOMEM, "no memory for a worker's buffers "
                       "(%zu features)", b.d);
        goto done;
    }
    if ((st = deft_optim_create(&opt, comm, &layout, b.x0, &oc)) != DEFT_OK)
        goto done;
    const int eclk = is_eclk(c->method), anchored = has_anchor(c->method);
    for (long t = 0;; t++) {
        if (t % c->log_every == 0 || t == c->rounds) {
            int stop = 0;
            if ((st = deft_optim_output(opt, b.model)) != DEFT_OK ||
                (st = checkpoint_round(comm, X, &b, t, &stop)) !=
                    DEFT_OK || stop)
                goto done;
        }
        const float *pt, *w = NULL;
        deft_optim_ask(opt, &pt);
        if (eclk)
            deft_optim_eclk_anchor(opt, &w, &b.w_version);
        else if (anchored)
            w = b.w;
        if ((st = estimate(comm, X, &b, t, pt, w)) != DEFT_OK)
            goto done;
        for (size_t j = 0; j < b.d; j++)
            b.grad[j] = (float)(b.g[j] + mu * pt[j]);
        if (b.q && (st = diana_shift(comm, X, &b, t)) != DEFT_OK) {
            if (st == DEFT_ERR_DIVERGED && rank == 0)
                X->res->diverged_round = t + 1;
            goto done;
        }
        if (anchored && !eclk && anchor_coin(X, t, rank)) {
            memcpy(b.w, pt, sizeof(float) * b.d); /* w = x^t */
            b.w_version++;
        }
        deft_step_info_t info;
        if ((st = deft_optim_tell(opt, b.grad, &info)) != DEFT_OK) {
            if (st == DEFT_ERR_DIVERGED && rank == 0)
                X->res->diverged_round = t + 1;
            goto done;
        }
        b.bits += 8 * (uint64_t)info.msg_bytes;
        b.wire += info.bytes_sent;
    }
done:
    deft_optim_destroy(opt);
    wk_free(&b);
    return st;
}

deft_status_t deft_convex_run(const deft_logreg_t *prob,
                              const deft_convex_config_t *c,
                              const deft_convex_setup_t *s, double pstar,
                              double p0, FILE *log, deft_convex_result_t *out)
{
    const char *fn = "deft_convex_run";
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: out is NULL", fn);
    memset(out, 0, sizeof *out);
    out->best_rel = INFINITY;
    out->diverged_round = -1;
    for (int i = 0; i < DEFT_CONVEX_N_LEVELS; i++)
        out->level_round[i] = -1;
    deft_status_t st = check_config(fn, prob, c);
    if (st != DEFT_OK)
        return st;
    if (!s || s->m != prob->n / (size_t)c->workers || s->B < 1 ||
        s->B > s->m)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: s %s; make it with "
                         "deft_convex_setup for this problem and config", fn,
                         !s ? "is NULL" : "does not match the problem");
    ctx_t X = {prob, c, s, pstar, p0, log, out};
    double t0 = deft_wall_s();
    st = deft_run_threads(c->workers, worker, &X);
    out->wall_s = deft_wall_s() - t0;
    return st;
}

/* ---- the log --------------------------------------------------------- */

static void batch_str(const deft_convex_setup_t *s, char *out, size_t n)
{
    if (s->B == s->m)
        snprintf(out, n, "\"full\"");
    else
        snprintf(out, n, "%zu", s->B);
}

/* A short name of the run for plots: "eclk topk/16 full global". */
static void run_label(const deft_convex_config_t *c,
                      const deft_convex_setup_t *s, char *out, size_t n)
{
    size_t ln = (size_t)snprintf(out, n, "%s", method_names[c->method]);
#define APPEND(...)                                                        \
    do {                                                                   \
        if (ln < n)                                                        \
            ln += (size_t)snprintf(out + ln, n - ln, __VA_ARGS__);         \
    } while (0)
    if (c->compressor != DEFT_COMP_NONE)
        APPEND(" %s/%g", deft_compressor_name(c->compressor), c->ratio);
    if (deft_convex_method_samples(c->method))
        APPEND(s->B == s->m ? " full" : " B=%zu", s->B);
    if (has_anchor(c->method) && !(s->B == s->m && !s->anchor_global))
        APPEND(" %s", s->anchor_global ? "global" : "local");
    if (c->lkatyusha_params)
        APPEND(" lkatyusha-params");
    if (c->theta1 > 0)
        APPEND(" theta1=%g", c->theta1);
    if (c->lscale > 0)
        APPEND(" lscale=%g", c->lscale);
    if (c->p > 0)
        APPEND(" p=%g", c->p);
    if (c->alpha > 0)
        APPEND(" alpha=%g", c->alpha);
    if (c->delta_exp_set)
        APPEND(" E=%g", c->delta_exp);
    if (c->lr > 0)
        APPEND(" lr=%g", c->lr);
#undef APPEND
}

/* desc with '"' and '\\' escaped and control characters dropped, so that
 * the log stays JSON whatever the path. */
static void json_escape(const char *in, char *out, size_t n)
{
    size_t o = 0;
    for (; *in && o + 3 < n; in++) {
        if ((unsigned char)*in < 0x20)
            continue;
        if (*in == '"' || *in == '\\')
            out[o++] = '\\';
        out[o++] = *in;
    }
    out[o] = '\0';
}

void deft_convex_log_config(FILE *log, const deft_logreg_t *prob,
                            const deft_convex_config_t *c,
                            const deft_convex_setup_t *s, const char *desc,
                            double pstar, double p0)
{
    char batch[32], label[192], data[2048];
    json_escape(desc, data, sizeof data);
    batch_str(s, batch, sizeof batch);
    run_label(c, s, label, sizeof label);
    fprintf(log,
            "{\"config\": true, \"method\": \"%s\", \"compressor\": \"%s\", "
            "\"ratio\": %g, \"delta\": %.6g, \"workers\": %d, \"batch\": %s, "
            "\"data\": \"%s\", \"n\": %zu, \"d\": %zu, \"rows_per_worker\": "
            "%zu, \"mu\": %.17g, \"L_max\": %.17g, \"L_f\": %.17g, "
            "\"L_local\": %.17g, \"L_batch\": %.17g, \"pstar\": %.17g, "
            "\"p0\": %.17g, \"lr\": %.17g, \"L\": %.17g, \"theta1\": %.17g, "
            "\"p\": %.17g, \"eta\": %.17g, \"alpha\": %.17g, \"delta_exp\": %g, "
            "\"L_mask\": %.17g, \"lscale\": %.17g, \"seed\": %llu, "
            "\"log_every\": %ld, \"anchor_grad\": \"%s\", \"params\": \"%s\", "
            "\"label\": \"%s\"}\n",
            method_names[c->method], deft_compressor_name(c->compressor),
            deft_convex_ratio_shown(c), s->delta, c->workers, batch, data, prob->n,
            prob->d, s->m, c->mu, s->L_max, s->L_f, s->L_loc, s->L_B, pstar,
            p0, s->lr, s->L, s->theta1, s->p, s->eta, s->alpha, s->delta_exp,
            s->L_mask, s->lscale, (unsigned long long)c->seed, c->log_every,
            !has_anchor(c->method) ? "none"
            : s->anchor_global     ? "global"
                                   : "local",
            !is_eclk(c->method)  ? "none"
            : c->lkatyusha_params ? "lkatyusha"
                                  : "compressor-aware", label);
}

void deft_convex_log_final(FILE *log, const deft_convex_config_t *c,
                           const deft_convex_setup_t *s,
                           const deft_convex_result_t *r, deft_status_t st)
{
    char batch[32];
    batch_str(s, batch, sizeof batch);
    const int diverged = st == DEFT_ERR_DIVERGED;
    fprintf(log, "{\"final\": true, \"status\": \"%s\", \"method\": \"%s\", "
            "\"compressor\": \"%s\", \"ratio\": %g, \"batch\": %s, "
            "\"rounds\": %ld, \"rel_subopt\": %.6e, \"best_rel_subopt\": "
            "%.6e, \"bits_per_worker\": %llu, \"diverged\": %s, "
            "\"diverged_round\": %ld, \"wall_s\": %.3f",
            st == DEFT_OK ? "ok" : diverged ? "diverged" : deft_status_str(st),
            method_names[c->method], deft_compressor_name(c->compressor),
            deft_convex_ratio_shown(c), batch, r->rounds_done, r->final_rel, r->best_rel,
            (unsigned long long)r->bits, diverged ? "true" : "false",
            r->diverged_round, r->wall_s);
    for (int i = 0; i < DEFT_CONVEX_N_LEVELS; i++) {
        const char *name = deft_convex_level_names[i];
        if (r->level_round[i] >= 0)
            fprintf(log, ", \"rounds_%s\": %ld, \"bits_%s\": %llu", name,
                    r->level_round[i], name,
                    (unsigned long long)r->level_bits[i]);
        else
            fprintf(log, ", \"rounds_%s\": null, \"bits_%s\": null", name,
                    name);
    }
    fprintf(log, "}\n");
}

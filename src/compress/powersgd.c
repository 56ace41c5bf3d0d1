/* powersgd: rank-r PowerSGD (Vogels, Karimireddy & Jaggi 2019, Algorithm 1
 * with one power iteration per step, warm-started).
 *
 * Tensor t of the layout with rows m >= 2 (deft_layout_t.rows) is the
 * row-major matrix M (m x n, n = size / m); its rank is q = min(r, m, n).
 * It is compressed when q (m + n) < m n, else sent whole, as are vectors
 * (biases). A step, on every worker k with the same warm start Q (n x q):
 *   round 0: P_k = M_k Q                         (m x q, sgemm)
 *            allreduce: P = sum_k P_k
 *            P^ = orthonormal columns of P       (Gram-Schmidt, in place)
 *   round 1: Q_k = M_k^T P^                      (n x q, sgemm)
 *            C(M_k) = P^ Q_k^T = P^ P^^T M_k,  residual M_k - C(M_k)
 *            allreduce: Qs = sum_k Q_k
 *   decode:  sum_k C(M_k) = P^ Qs^T              (sgemm)
 *   finish:  Q = Qs, the next step's warm start.
 * Given P^, C is linear (the projection onto P^'s columns), so each
 * worker's residual is its own M_k - P^ P^^T M_k and the residuals sum to
 * sum_k M_k - P^ Qs^T, the error of the averaged approximation that the
 * paper's error feedback keeps. Vectors travel in round 0 and are sent
 * exactly (residual 0).
 *
 * The first Q is uniform in [-1, 1) from the shared stream (seed, 0,
 * tensor). A column of Q that is all zero (M was 0, or P was rank
 * deficient) is drawn again from (seed, step + 1, tensor) before round 0;
 * all workers hold the same Q, so they agree. Q is the state that
 * deft_compressor_state_get/set carry through checkpoints.
 *
 * Message (floats): round 0 = the vectors, in layout order, then P_t for
 * each compressed matrix; round 1 = Q_t for each compressed matrix. Bytes
 * per step: 4 (sum over matrices of q (m + n) + the vectors' sizes). */
#include "compress/compress_impl.h"
#include "core/rng.h"

#include <cblas.h>
#include <math.h>

typedef struct {
    size_t off;   /* first element of M in the flat vector                */
    size_t m, n;  /* rows, cols                                           */
    size_t q;     /* rank of the approximation                            */
    size_t p_off; /* P's float offset in the message (round 0)            */
    size_t q_off; /* Q's float offset in the message (round 1)            */
    size_t w_off; /* Q's offset in warm                                   */
    size_t seg;   /* segment index, the tensor of its random streams      */
} psgd_mat_t;

typedef struct {
    size_t n_mat;
    psgd_mat_t *mat;  /* (n_mat,)                                          */
    size_t r0, r1;    /* floats in round 0 and round 1                     */
    float *warm;      /* (sum n q,): the Qs, round 1's layout              */
    size_t *vec_off;  /* (n_seg,): a vector segment's float offset in the
                         message, SENT_AS_MATRIX for compressed ones      */
} psgd_t;

#define SENT_AS_MATRIX ((size_t)-1)

/* The rank a segment gets, 0 when it is sent whole. */
static size_t psgd_rank_of(const deft_segment_t *s, int r)
{
    if (s->rows < 2)
        return 0;
    size_t m = s->rows, n = s->n / s->rows;
    size_t q = (size_t)r;
    q = q < m ? q : m;
    q = q < n ? q : n;
    return n >= 2 && q * (m + n) < m * n ? q : 0;
}

static void draw_column(float *Q, size_t n, size_t q, size_t j, deft_rng_t *g)
{
    for (size_t i = 0; i < n; i++)
        Q[i * q + j] = 2.0f * deft_rng_uniform(g) - 1.0f;
}

static deft_status_t psgd_init(deft_compressor_t *c)
{
    psgd_t *ps = deft_alloc(sizeof *ps);
    if (!ps)
        return deft_fail(DEFT_ERR_NOMEM, "deft_compressor_create: out of memory");
    c->impl = ps;
    size_t vec = 0, nm = 0, np = 0, nq = 0;
    for (size_t t = 0; t < c->n_seg; t++) {
        size_t q = psgd_rank_of(&c->seg[t], c->p.powersgd_rank);
        if (!q) {
            vec += c->seg[t].n;
            continue;
        }
        nm++;
        np += c->seg[t].rows * q;
        nq += c->seg[t].n / c->seg[t].rows * q;
    }
    ps->n_mat = nm;
    ps->r0 = vec + np;
    ps->r1 = nq;
    ps->mat = deft_alloc((nm ? nm : 1) * sizeof *ps->mat);
    ps->warm = deft_alloc((nq ? nq : 1) * sizeof(float));
    ps->vec_off = deft_alloc(c->n_seg * sizeof(size_t));
    if (!ps->mat || !ps->warm || !ps->vec_off)
        return deft_fail(DEFT_ERR_NOMEM, "deft_compressor_create: out of memory "
                         "for powersgd's %zu warm-start floats", nq);
    size_t pi = vec, qi = 0, k = 0, vi = 0;
    for (size_t t = 0; t < c->n_seg; t++) {
        size_t q = psgd_rank_of(&c->seg[t], c->p.powersgd_rank);
        ps->vec_off[t] = q ? SENT_AS_MATRIX : vi;
        if (!q) {
            vi += c->seg[t].n;
            continue;
        }
        psgd_mat_t *a = &ps->mat[k++];
        a->off = c->seg[t].off;
        a->m = c->seg[t].rows;
        a->n = c->seg[t].n / a->m;
        a->q = q;
        a->p_off = pi;
        a->q_off = ps->r0 + qi;
        a->w_off = qi;
        a->seg = t;
        pi += a->m * q;
        qi += a->n * q;
        deft_rng_t g = deft_rng_make(c->p.seed, 0, t, DEFT_STREAM_POWERSGD);
        for (size_t j = 0; j < q; j++)
            draw_column(ps->warm + a->w_off, a->n, q, j, &g);
    }
    c->msg_bytes = (ps->r0 + ps->r1) * sizeof(float);
    c->float_off = 0;
    c->float_count = ps->r0 + ps->r1;
    return DEFT_OK;
}

static void psgd_fini(deft_compressor_t *c)
{
    psgd_t *ps = c->impl;
    if (!ps)
        return;
    deft_free(ps->mat);
    deft_free(ps->warm);
    deft_free(ps->vec_off);
    deft_free(ps);
}

/* Round 0: the vectors as they are, and P_k = M_k Q. v is not changed. */
static void psgd_encode(deft_compressor_t *c, uint64_t step, float *v,
                        void *msg)
{
    psgd_t *ps = c->impl;
    float *out = msg;
    for (size_t t = 0; t < c->n_seg; t++)
        if (ps->vec_off[t] != SENT_AS_MATRIX)
            memcpy(out + ps->vec_off[t], v + c->seg[t].off,
                   c->seg[t].n * sizeof(float));
    for (size_t k = 0; k < ps->n_mat; k++) {
        const psgd_mat_t *a = &ps->mat[k];
        float *Q = ps->warm + a->w_off; /* (n, q) */
        for (size_t j = 0; j < a->q; j++) {
            double s = 0;
            for (size_t i = 0; i < a->n; i++)
                s += fabs((double)Q[i * a->q + j]);
            if (s == 0.0) {
                deft_rng_t g = deft_rng_make(c->p.seed, step + 1, a->seg,
                                             DEFT_STREAM_POWERSGD);
                draw_column(Q, a->n, a->q, j, &g);
            }
        }
        /* P (m, q) = M (m, n) Q (n, q) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a->m,
                    (int)a->q, (int)a->n, 1.0f, v + a->off, (int)a->n, Q,
                    (int)a->q, 0.0f, out + a->p_off, (int)a->q);
    }
}

/* Orthonormal columns of P (m, q) by modified Gram-Schmidt in double
 * sums. A column left with less than 1e-5 of its norm after removing the
 * earlier ones, or with a norm below 1e-30, is set to zero: that rank is
 * dropped this step (and its Q column drawn again next step). */
static void orthonormalize(float *P, size_t m, size_t q)
{
    for (size_t j = 0; j < q; j++) {
        double before = 0;
        for (size_t r = 0; r < m; r++)
            before += (double)P[r * q + j] * P[r * q + j];
        for (size_t i = 0; i < j; i++) {
            double dot = 0;
            for (size_t r = 0; r < m; r++)
                dot += (double)P[r * q + i] * P[r * q + j];
            const float f = (float)dot;
            for (size_t r = 0; r < m; r++)
                P[r * q + j] -= f * P[r * q + i];
        }
        double after = 0;
        for (size_t r = 0; r < m; r++)
            after += (double)P[r * q + j] * P[r * q + j];
        /* A norm below 1e-30 is no direction worth keeping (and 1/norm
         * would overflow float): dropped like a dependent column. */
        const int keep = isfinite(after) && after > 1e-10 * before &&
                         after > 1e-60;
        const double inv = keep ? 1.0 / sqrt(after) : 0.0;
        for (size_t r = 0; r < m; r++)
            P[r * q + j] = (float)(P[r * q + j] * inv);
    }
}

/* Round 1, after round 0 was summed: P^ in place, Q_k = M_k^T P^, and the
 * residuals. */
static void psgd_encode_round(deft_compressor_t *c, uint64_t step, int r,
                              float *v, void *msg, float *own_out)
{
    (void)step;
    if (r != 1)
        return;
    psgd_t *ps = c->impl;
    float *buf = msg;
    for (size_t k = 0; k < ps->n_mat; k++) {
        const psgd_mat_t *a = &ps->mat[k];
        const int m = (int)a->m, n = (int)a->n, q = (int)a->q;
        float *P = buf + a->p_off, *Q = buf + a->q_off, *M = v + a->off;
        orthonormalize(P, a->m, a->q);
        /* Q_k (n, q) = M^T (n, m) P^ (m, q) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, q, m, 1.0f, M,
                    n, P, q, 0.0f, Q, q);
        /* own += P^ Q_k^T, M -= P^ Q_k^T (m, n) */
        if (own_out)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, q, 1.0f,
                        P, q, Q, q, 1.0f, own_out + a->off, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, q, -1.0f, P,
                    q, Q, q, 1.0f, M, n);
    }
    for (size_t t = 0; t < c->n_seg; t++) {
        if (ps->vec_off[t] == SENT_AS_MATRIX)
            continue;
        float *x = v + c->seg[t].off;
        if (own_out)
            for (size_t i = 0; i < c->seg[t].n; i++)
                own_out[c->seg[t].off + i] += x[i];
        memset(x, 0, c->seg[t].n * sizeof(float));
    }
}

static void psgd_finish(deft_compressor_t *c, const void *msg)
{
    psgd_t *ps = c->impl;
    memcpy(ps->warm, (const float *)msg + ps->r0, ps->r1 * sizeof(float));
}

/* out += alpha (vectors + P^ Qs^T), from a summed (or one worker's)
 * message after round 1. */
static void psgd_decode_add(const deft_compressor_t *c, const void *msg,
                            float alpha, float *out)
{
    const psgd_t *ps = c->impl;
    const float *buf = msg;
    for (size_t t = 0; t < c->n_seg; t++) {
        if (ps->vec_off[t] == SENT_AS_MATRIX)
            continue;
        const float *src = buf + ps->vec_off[t];
        float *o = out + c->seg[t].off;
        for (size_t i = 0; i < c->seg[t].n; i++)
            o[i] += alpha * src[i];
    }
    for (size_t k = 0; k < ps->n_mat; k++) {
        const psgd_mat_t *a = &ps->mat[k];
        const int m = (int)a->m, n = (int)a->n, q = (int)a->q;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, q, alpha,
                    buf + a->p_off, q, buf + a->q_off, q, 1.0f, out + a->off,
                    n);
    }
}

static void psgd_round_span(const deft_compressor_t *c, int r, size_t *off,
                            size_t *n)
{
    const psgd_t *ps = c->impl;
    *off = r == 0 ? 0 : ps->r0;
    *n = r == 0 ? ps->r0 : r == 1 ? ps->r1 : 0;
}

static size_t psgd_state_floats(const deft_compressor_t *c)
{
    return ((const psgd_t *)c->impl)->r1;
}

static void psgd_state_get(const deft_compressor_t *c, void *state)
{
    const psgd_t *ps = c->impl;
    memcpy(state, ps->warm, ps->r1 * sizeof(float));
}

static void psgd_state_set(deft_compressor_t *c, const void *state)
{
    psgd_t *ps = c->impl;
    memcpy(ps->warm, state, ps->r1 * sizeof(float));
}

static const deft_option_def_t powersgd_rank = DEFT_OPTION_DEF(
    deft_optim_config_t, powersgd_rank, INT, 1, 1024, 0,
    .flag = "powersgd-rank", .metavar = "R",
    .help = "powersgd: rank of each weight matrix's approximation (capped "
            "at min(rows, cols))");
static const deft_option_def_t *const powersgd_params[] = {&powersgd_rank,
                                                           NULL};

/* It approximates each matrix of the layout: one flattened vector has no
 * matrices. */
static deft_status_t powersgd_validate(const deft_optim_config_t *cfg,
                                       const char *pre)
{
    char label[128];
    if (cfg->scope != DEFT_SCOPE_TENSOR)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s global: powersgd "
                         "approximates each matrix of the layout and needs "
                         "scope tensor", deft_option_label("scope", pre, label));
    return DEFT_OK;
}

DEFT_COMPRESSOR(deft_compress_powersgd_ops) = {
    .kind = DEFT_COMP_POWERSGD,
    .name = "powersgd",
    .help = "rank-r PowerSGD of every weight matrix, warm-started; two allreduces",
    .wire = DEFT_WIRE_ROUNDS,
    .params = powersgd_params,
    .uses_rows = 1,
    .validate = powersgd_validate,
    .uses_ratio = 0,
    .init = psgd_init,
    .fini = psgd_fini,
    .encode = psgd_encode,
    .decode_add = psgd_decode_add,
    .round_span = psgd_round_span,
    .encode_round = psgd_encode_round,
    .finish = psgd_finish,
    .state_floats = psgd_state_floats,
    .state_get = psgd_state_get,
    .state_set = psgd_state_set,
};

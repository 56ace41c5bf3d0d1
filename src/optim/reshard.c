/* Re-sharding: the states of a run's K workers become the states of K'
 * workers of the same run (deft_optim_state_reshard in deft.h).
 *
 * What each algorithm keeps, and why it is enough:
 * - Vectors every worker holds the same copy of (x for sgd, the error
 *   feedback family, ef21 and eclk; eclk's z and w; ef21's g; sgd's
 *   momentum, taken on the averaged gradient; powersgd's warm start Q) and
 *   the step, the groups and the momentum flags are copied from worker 0:
 *   the model, the schedule and the shared random choices keyed by (seed,
 *   step, tensor) go on as they were.
 * - Vectors local to a worker (the algorithm's ops->local: errors e_k,
 *   momenta m_k, ef21's g_k, psync's models x_k) keep their mean over the
 *   workers: new worker j takes the mean of the old workers mapped to it,
 *   plus one correction shared by all new workers that makes the new mean
 *   the old mean. With the mean of e kept, DEF's output x - avg(e) is kept,
 *   and so is the uncompressed path it follows (y+ = y - lr avg(m_k)); with
 *   the mean of m kept, that path's direction is kept; with the mean of g_k
 *   kept, ef21's invariant g = avg(g_k) holds; psync's output avg(x_k) is
 *   kept.
 * Old worker k maps to new worker floor(k K' / K) when K' < K (contiguous
 * groups whose sizes differ by at most one); new worker j copies old worker
 * floor(j K / K') when K' > K. The means and the correction are computed in
 * double and rounded to float once, so the mean is kept to within the
 * rounding of one float per element; when one count divides the other the
 * correction is zero (up to double rounding) and K' > K gives exact copies.
 * K' = K copies every state: the identity. */
#include "core/internal.h"
#include "optim/optim_internal.h"

#include <stdlib.h>


static float get_f(const char *p, size_t i)
{
    float v;
    memcpy(&v, p + i * sizeof v, sizeof v);
    return v;
}

static void put_f(char *p, size_t i, float v)
{
    memcpy(p + i * sizeof v, &v, sizeof v);
}

/* Each of k_out float vectors of n elements (at out + j out_stride, any
 * alignment) gets its share of the k_in vectors at in + k in_stride by the
 * rule above; k_in, k_out in [1, DEFT_MAX_WORKERS]. */
void deft_reshard_mean_f32(const char *in, size_t in_stride, int k_in,
                           char *out, size_t out_stride, int k_out, size_t n)
{
    if (k_in == k_out) {
        for (int k = 0; k < k_in; k++)
            memcpy(out + (size_t)k * out_stride, in + (size_t)k * in_stride,
                   n * sizeof(float));
        return;
    }
    const int m = k_out < k_in ? k_out : k_in;
    double sum[DEFT_MAX_WORKERS]; /* (m,) each group's sum, count */
    int cnt[DEFT_MAX_WORKERS];
    /* Equal groups, or copies: the mean is kept without a correction. */
    const int even = k_in % k_out == 0 || k_out % k_in == 0;
    for (size_t i = 0; i < n; i++) {
        double all = 0;
        for (int g = 0; g < m; g++) {
            sum[g] = 0;
            cnt[g] = 0;
        }
        for (int k = 0; k < k_in; k++) {
            const double v = get_f(in + (size_t)k * in_stride, i);
            all += v;
            const int g = k_out < k_in ? (int)((long long)k * k_out / k_in) : k;
            sum[g] += v;
            cnt[g]++;
        }
        const double mu = all / k_in;
        double new_mean = 0;
        for (int j = 0; j < k_out; j++) {
            const int g = k_out < k_in ? j : (int)((long long)j * k_in / k_out);
            new_mean += sum[g] / cnt[g];
        }
        const double c = even ? 0.0 : mu - new_mean / k_out;
        for (int j = 0; j < k_out; j++) {
            const int g = k_out < k_in ? j : (int)((long long)j * k_in / k_out);
            put_f(out + (size_t)j * out_stride, i, (float)(sum[g] / cnt[g] + c));
        }
    }
}

/* Checks that worker k's state belongs to the same run as worker 0's:
 * the same header, layout, groups and flags, and the same sizes. */
static deft_status_t same_run(const char *b0, const char *bk, size_t tables_end,
                              int k, const char *fn)
{
    if (memcmp(b0, bk, tables_end) == 0)
        return DEFT_OK;
    return deft_fail(DEFT_ERR_FORMAT, "%s: worker %d's state differs from "
                     "worker 0's in its step, layout or hyperparameters: the "
                     "states are not from one run at one step", fn, k);
}

/* The vectors a ZERO re-shard resets: errors, momenta, ef21's estimates. */
enum { ZEROED = DEFT_BUF_E | DEFT_BUF_M | DEFT_BUF_GK | DEFT_BUF_G };

deft_status_t deft_state_reshard(const char *in, size_t in_stride, size_t size,
                                 int k_in, char *out, size_t out_stride,
                                 int k_out, deft_reshard_t mode)
{
    const char *fn = "deft_optim_state_reshard";
    if (!in || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !in ? "in" : "out");
    if (k_in < 1 || k_in > DEFT_MAX_WORKERS || k_out < 1 ||
        k_out > DEFT_MAX_WORKERS)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s = %d, must be in [1, %d]",
                         fn, k_in < 1 || k_in > DEFT_MAX_WORKERS ? "k_in" : "k_out",
                         k_in < 1 || k_in > DEFT_MAX_WORKERS ? k_in : k_out,
                         DEFT_MAX_WORKERS);
    if (mode != DEFT_RESHARD_MEAN && mode != DEFT_RESHARD_ZERO)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: mode = %d, must be "
                         "DEFT_RESHARD_MEAN or DEFT_RESHARD_ZERO", fn, (int)mode);
    const char *src = in;
    deft_state_view_t v;
    deft_status_t st = deft_state_view(src, size, &v, fn);
    if (st != DEFT_OK)
        return st;
    for (int k = 1; k < k_in && st == DEFT_OK; k++) {
        deft_state_view_t vk;
        st = deft_state_view(src + (size_t)k * in_stride, size, &vk, fn);
        if (st == DEFT_OK)
            st = same_run(src, src + (size_t)k * in_stride, v.vec_off, k, fn);
    }
    if (st != DEFT_OK)
        return st;
    const int local = deft_algo_ops((deft_algo_t)v.algo)->local;
    char *dst = out;
    for (int j = 0; j < k_out; j++) /* header, tables, Q: worker 0's */
        memcpy(dst + (size_t)j * out_stride, src, size);
    size_t off = v.vec_off;
    const size_t vbytes = v.d * sizeof(float);
    for (int bit = 1; bit < 128; bit <<= 1) {
        if (!(v.mask & (uint32_t)bit))
            continue;
        if (mode == DEFT_RESHARD_ZERO && (bit & ZEROED))
            for (int j = 0; j < k_out; j++)
                memset(dst + (size_t)j * out_stride + off, 0, vbytes);
        else if (local & bit)
            deft_reshard_mean_f32(src + off, in_stride, k_in, dst + off,
                                  out_stride, k_out, v.d);
        off += vbytes;
    }
    for (int j = 0; j < k_out; j++) {
        char *b = dst + (size_t)j * out_stride;
        if (mode == DEFT_RESHARD_ZERO && (v.mask & DEFT_BUF_M))
            memset(b + v.flags_off, 0, v.n_tensors); /* fresh momentum */
        deft_state_seal(b, size);
    }
    return DEFT_OK;
}

deft_status_t deft_optim_state_reshard(const void *in, size_t size, int k_in,
                                       void *out, int k_out, deft_reshard_t mode)
{
    return deft_state_reshard(in, size, size, k_in, out, size, k_out, mode);
}

static const char *const reshard_names[] = {"none", "mean", "zero"};

const char *deft_reshard_name(deft_reshard_t mode)
{
    return (unsigned)mode < 3 ? reshard_names[mode] : "?";
}

deft_status_t deft_reshard_parse(const char *name, deft_reshard_t *out)
{
    if (!name || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_reshard_parse: %s is NULL",
                         !name ? "name" : "out");
    for (int i = DEFT_RESHARD_MEAN; i <= DEFT_RESHARD_ZERO; i++)
        if (!strcmp(name, reshard_names[i])) {
            *out = (deft_reshard_t)i;
            return DEFT_OK;
        }
    return deft_fail(DEFT_ERR_INVALID_ARG, "re-sharding rule '%s': the rules "
                     "are mean (keep the mean of errors and momenta) and zero "
                     "(reset them)", name);
}

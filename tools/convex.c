/* deft convex: eclk and its baselines on L2-regularized logistic regression
 * (SPEC §2, eclk), with K workers on the threads backend.
 *
 *   P(x) = (1/K) sum_k f_k(x) + (mu/2) ||x||^2, f_k = average logistic loss
 *   over worker k's shard of m rows (the data are shuffled with a fixed seed
 *   and cut to K*m rows, so that P is also the average over all rows).
 *
 * Methods, all started from x0 = 0 with step sizes from the exact
 * smoothness constants (src/convex/convex.h):
 *   gd         uncompressed gradient descent (deft's sgd, momentum 0),
 *              lr = 1/(L_f + mu)
 *   ecgd       error-compensated GD (deft's ef, momentum 0, full local
 *              gradients), lr = 1/(L_f + mu)
 *   ecsgd      error-compensated SGD (ef, momentum 0, B sampled rows per
 *              worker), lr = 1/(2 (L_B + mu))  (Gower et al. 2019, SGD with
 *              expected smoothness L_B: linear rate to a noise floor)
 *   eclk       error-compensated loopless Katyusha, parameters from theory
 *              with parts of smoothness L_B + mu (src/optim/eclk.c)
 *   lkatyusha  eclk with compressor none: L-Katyusha
 * L_B is the expected smoothness of a B-row sample without replacement
 * from m rows (Gower et al. 2019, Prop. 3.8):
 *   L_B = m (B-1) / (B (m-1)) L_loc + (m - B) / (B (m-1)) L_max,
 * with L_max the largest row constant ||a_i||^2/4 and L_loc the largest
 * shard average constant; L_1 = L_max, L_m = L_loc.
 *
 * P* is computed once by Newton's method in double and cached next to the
 * log in pstar-<key>.txt, key = hash of (data bits, mu). The log holds JSON
 * lines: a config object, one object per logged round with "round",
 * "rel_subopt" = (P(x_t) - P*)/(P(x_0) - P*), "bits_per_worker" (the
 * cumulative size of the worker's compressed messages), and a final one.
 *
 * Exit codes as deft train: 0 ok, 1 failed, 2 bad usage, 3 diverged. */
#include "cli.h"
#include "deft.h"
#include "convex/convex.h"
#include "core/internal.h"
#include "core/rng.h"
#include "data/data.h"
#include "optim/optim_internal.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_RUN_FAILED = 1, EXIT_USAGE = DEFT_EXIT_USAGE, EXIT_DIVERGED = 3 };

/* The data are shuffled with this fixed seed, not --seed, so that runs
 * with different algorithm seeds solve the same problem. */
#define DATA_SEED 20201001u

typedef enum { M_ECLK, M_ECGD, M_ECSGD, M_GD, M_LKATYUSHA } method_t;
static const char *const method_names[] = {"eclk", "ecgd", "ecsgd", "gd",
                                           "lkatyusha"};
#define N_METHODS 5

/* Suboptimality levels whose first crossing the final line reports. */
static const double levels[] = {1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8};
static const char *const level_names[] = {"1e-2", "1e-3", "1e-4", "1e-5",
                                          "1e-6", "1e-7", "1e-8"};
#define N_LEVELS 7

typedef struct {
    method_t method;
    deft_compressor_kind_t compressor;
    int compressor_given;
    double ratio;
    int workers;
    long rounds, log_every;
    long batch;        /* rows per worker and round; 0 = the full shard   */
    double mu, target, lr, theta1, p;
    uint64_t seed;
    int normalize, quiet;
    int global_anchor; /* eclk: average grad f_k(w) over workers (dense)  */
    const char *log_path, *data, *data_dir;
} opts_t;

typedef struct {
    const opts_t *o;
    const deft_logreg_t *prob;
    size_t m;              /* rows per worker                             */
    double pstar, p0;      /* P*, P(x0)                                   */
    deft_optim_config_t ocfg;
    FILE *log;
    /* Filled by rank 0. */
    long level_round[N_LEVELS];
    uint64_t level_bits[N_LEVELS];
    long rounds_done, diverged_round;
    double final_rel, best_rel;
    uint64_t bits, wire_bytes;
} run_t;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: deft convex [options]\n"
        "\n"
        "Runs eclk or a baseline on L2-regularized logistic regression,\n"
        "P(x) = (1/K) sum_k f_k(x) + (mu/2)||x||^2, with K workers (threads),\n"
        "and logs the relative suboptimality (P(x_t) - P*)/(P(x_0) - P*)\n"
        "against communication rounds and bits sent.\n"
        "\n"
        "problem:\n"
        "  --data SRC           fmnist (default: Fashion-MNIST T-shirt/top\n"
        "                       (+1) vs Shirt (-1), pixels in [0,1] + bias)\n"
        "                       or libsvm:PATH (two classes)\n"
        "  --data-dir DIR       IDX files (default " DEFT_FASHION_MNIST_DIR ")\n"
        "  --normalize          scale every example to unit norm (L = 1/4)\n"
        "  --mu MU              L2 regularization, > 0 (default 1e-3)\n"
        "method:\n"
        "  --algo NAME          eclk (default), ecgd, ecsgd, gd, lkatyusha\n"
        "  --compressor NAME    none, rbgs, randk, topk, sign, qsgd, scale\n"
        "                       (default topk; gd and lkatyusha use none)\n"
        "  --ratio R            compression ratio n/k, >= 1 (default 16)\n"
        "  --batch B            rows per worker and round for eclk,\n"
        "                       lkatyusha and ecsgd, or 'full' for the whole\n"
        "                       shard (default 1; ecgd and gd use full)\n"
        "  --lr LR              step of gd, ecgd, ecsgd (default from theory)\n"
        "  --theta1 T           eclk: theta1 in (0, 1/2] (default theory)\n"
        "  --p P                eclk: anchor probability (default B/m)\n"
        "  --anchor-grad A      eclk: local (default, SPEC: each worker adds\n"
        "                       its own grad f_k(w)) or global (the workers\n"
        "                       average grad f_k(w) with a dense allreduce\n"
        "                       when the anchor moves, counted in the bits;\n"
        "                       what each worker compresses then vanishes\n"
        "                       at the optimum)\n"
        "  --seed N             (default 0)\n"
        "run:\n"
        "  --workers K          (default 8)\n"
        "  --rounds N           communication rounds (default 2000)\n"
        "  --target EPS         stop once the relative suboptimality is <= EPS\n"
        "  --log FILE           JSON lines; P* is cached next to it\n"
        "  --log-every N        evaluate and log every N rounds (default 10)\n"
        "  --quiet              print only the final line\n"
        "  -h, --help           this help\n"
        "\n"
        "exit status: 0 ok, 1 failed, 2 bad usage, 3 diverged\n");
}


static int uses_batch(method_t m)
{
    return m == M_ECLK || m == M_LKATYUSHA || m == M_ECSGD;
}

/* ---- P* cache -------------------------------------------------------- */

/* dir(log)/pstar-<key>.txt, or "" without a log. */
static void cache_path(const char *log, uint64_t key, char *out, size_t n)
{
    out[0] = '\0';
    if (!log)
        return;
    const char *slash = strrchr(log, '/');
    int dlen = slash ? (int)(slash - log) : 1;
    snprintf(out, n, "%.*s/pstar-%016llx.txt", dlen, slash ? log : ".",
             (unsigned long long)key);
}

static int cache_read(const char *path, uint64_t key, double *pstar)
{
    FILE *f = path[0] ? fopen(path, "r") : NULL;
    if (!f)
        return 0;
    char line[512];
    int have_key = 0, have_p = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long k;
        char *end;
        if (sscanf(line, "key %llx", &k) == 1)
            have_key = (uint64_t)k == key;
        else if (!strncmp(line, "pstar ", 6)) {
            errno = 0;
            *pstar = strtod(line + 6, &end);
            have_p = end != line + 6 && errno == 0 && isfinite(*pstar);
        }
    }
    fclose(f);
    return have_key && have_p;
}

static void cache_write(const char *path, uint64_t key, const char *desc,
                        const deft_logreg_t *p, double mu,
                        const deft_logreg_solution_t *s)
{
    if (!path[0])
        return;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "deft convex: cannot write the P* cache %s: %s\n", path,
                strerror(errno));
        return;
    }
    fprintf(f, "# deft convex: optimum of L2-regularized logistic regression\n"
            "# (Newton in double, %d iterations, ||grad P|| = %.3g)\n"
            "key %016llx\ndata %s\nn %zu\nd %zu\nmu %.17g\npstar %.17g\n",
            s->iters, s->grad_norm, (unsigned long long)key, desc, p->n, p->d,
            mu, s->pstar);
    if (fclose(f) != 0)
        fprintf(stderr, "deft convex: cannot write the P* cache %s\n", path);
}

/* ---- the workers ----------------------------------------------------- */

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
static deft_status_t evaluate(deft_comm_t *comm, const run_t *R, size_t lo,
                              const float *model, double *shard_loss,
                              double *P)
{
    const deft_logreg_t *p = R->prob;
    int K = deft_comm_size(comm);
    double mine = deft_logreg_loss_f32(p, lo, lo + R->m, model);
    deft_status_t st = deft_comm_allgather(comm, &mine, sizeof mine, shard_loss);
    if (st != DEFT_OK)
        return st;
    double s = 0, r = 0;
    for (int k = 0; k < K; k++)
        s += shard_loss[k];
    for (size_t j = 0; j < p->d; j++)
        r += (double)model[j] * model[j];
    *P = s / K + 0.5 * R->o->mu * r;
    return DEFT_OK;
}

static void log_round(run_t *R, long t, double P, double rel)
{
    const opts_t *o = R->o;
    if (R->log)
        fprintf(R->log,
                "{\"round\": %ld, \"rel_subopt\": %.6e, \"subopt\": %.6e, "
                "\"objective\": %.17g, \"bits_per_worker\": %llu, "
                "\"wire_bytes_per_worker\": %llu, \"method\": \"%s\", "
                "\"compressor\": \"%s\", \"ratio\": %g}\n",
                t, rel, P - R->pstar, P, (unsigned long long)R->bits,
                (unsigned long long)R->wire_bytes, method_names[o->method],
                deft_compressor_name(R->ocfg.compressor),
                R->ocfg.compressor == DEFT_COMP_NONE ? 1.0 : R->ocfg.ratio);
    for (int i = 0; i < N_LEVELS; i++)
        if (R->level_round[i] < 0 && rel <= levels[i]) {
            R->level_round[i] = t;
            R->level_bits[i] = R->bits;
        }
    if (rel < R->best_rel)
        R->best_rel = rel;
    if (R->log)
        fflush(R->log); /* long runs can be followed with tail -f */
}

static deft_status_t worker(deft_comm_t *comm, void *arg)
{
    run_t *R = arg;
    const opts_t *o = R->o;
    const deft_logreg_t *p = R->prob;
    const int rank = deft_comm_rank(comm), K = deft_comm_size(comm);
    const size_t d = p->d, m = R->m, lo = (size_t)rank * m;
    const size_t B = o->batch <= 0 || (size_t)o->batch >= m ? m : (size_t)o->batch;
    const int full = B == m;
    const double mu = o->mu;
    size_t sizes[1] = {d};
    deft_layout_t layout = {1, sizes, NULL};

    float *x0 = calloc(d, sizeof(float)), *grad = malloc(sizeof(float) * d);
    float *model = malloc(sizeof(float) * d);
    double *g = malloc(sizeof(double) * d), *ganchor = malloc(sizeof(double) * d);
    double *shard_loss = malloc(sizeof(double) * (size_t)K);
    uint32_t *idx = malloc(sizeof(uint32_t) * m);
    deft_optim_t *opt = NULL;
    deft_status_t st;
    if (!x0 || !grad || !model || !g || !ganchor || !shard_loss || !idx) {
        /* Still enter create (refused for the NULL x0) so that every
         * worker fails instead of waiting for this one. */
        deft_optim_create(&opt, comm, &layout, NULL, &R->ocfg);
        st = deft_fail(DEFT_ERR_NOMEM, "no memory for a worker's buffers");
        goto done;
    }
    for (size_t i = 0; i < m; i++)
        idx[i] = (uint32_t)i;
    st = deft_optim_create(&opt, comm, &layout, x0, &R->ocfg);
    if (st != DEFT_OK)
        goto done;

    uint64_t anchor_seen = 0, bits = 0, wire = 0;
    float *anchor_sum = model; /* scratch between evaluations */
    for (long t = 0;; t++) {
        if (t % o->log_every == 0 || t == o->rounds) {
            double P;
            if ((st = deft_optim_output(opt, model)) != DEFT_OK ||
                (st = evaluate(comm, R, lo, model, shard_loss, &P)) != DEFT_OK)
                goto done;
            double rel = (P - R->pstar) / (R->p0 - R->pstar);
            if (rank == 0) {
                R->bits = bits;
                R->wire_bytes = wire;
                R->rounds_done = t;
                R->final_rel = rel;
                log_round(R, t, P, rel);
            }
            /* Every worker has the same P: they stop together. */
            if (!isfinite(P) || rel > 1e6) {
                if (rank == 0)
                    R->diverged_round = t;
                st = deft_fail(DEFT_ERR_DIVERGED, "the relative suboptimality "
                               "reached %g at round %ld", rel, t);
                goto done;
            }
            if (t == o->rounds || (o->target > 0 && rel <= o->target))
                break;
        }
        const float *pt;
        deft_optim_ask(opt, &pt);
        if (full) {
            deft_logreg_loss_grad_f32(p, lo, lo + m, pt, g);
        } else {
            deft_rng_t r = deft_rng_make(o->seed, (uint64_t)t, 0,
                                         DEFT_STREAM_PRIVATE(DEFT_STREAM_DATA,
                                                             rank));
            sample_rows(idx, m, B, &r);
            const float *w = NULL;
            if (o->method == M_ECSGD) {
                for (size_t j = 0; j < d; j++)
                    g[j] = 0;
            } else {
                /* eclk: g_k = grad f_k(w) + (1/B) sum_i (grad f_ki(x) -
                 * grad f_ki(w)); grad f_k(w) is recomputed when w moved. */
                uint64_t version;
                deft_optim_eclk_anchor(opt, &w, &version);
                if (version != anchor_seen) {
                    deft_logreg_loss_grad_f32(p, lo, lo + m, w, ganchor);
                    anchor_seen = version;
                    if (o->global_anchor) {
                        /* grad f(w) = avg_k grad f_k(w): one dense float
                         * message per worker. */
                        deft_comm_stats_t s0, s1;
                        deft_comm_get_stats(comm, &s0);
                        for (size_t j = 0; j < d; j++)
                            anchor_sum[j] = (float)ganchor[j];
                        st = deft_comm_allreduce_sum_f32(comm, anchor_sum, d);
                        if (st != DEFT_OK)
                            goto done;
                        deft_comm_get_stats(comm, &s1);
                        for (size_t j = 0; j < d; j++)
                            ganchor[j] = (double)anchor_sum[j] / K;
                        bits += 32 * (uint64_t)d;
                        wire += s1.bytes_sent - s0.bytes_sent;
                    }
                }
                memcpy(g, ganchor, sizeof(double) * d);
            }
            for (size_t s = 0; s < B; s++) {
                deft_logreg_row_grad_add(p, lo + idx[s], pt, 1.0 / (double)B, g);
                if (w)
                    deft_logreg_row_grad_add(p, lo + idx[s], w,
                                             -1.0 / (double)B, g);
            }
        }
        for (size_t j = 0; j < d; j++)
            grad[j] = (float)(g[j] + mu * pt[j]);
        deft_step_info_t info;
        st = deft_optim_tell(opt, grad, &info);
        if (st != DEFT_OK) {
            if (st == DEFT_ERR_DIVERGED && rank == 0)
                R->diverged_round = t + 1;
            goto done;
        }
        bits += 8 * (uint64_t)info.msg_bytes;
        wire += info.bytes_sent;
    }
done:
    deft_optim_destroy(opt);
    free(x0);
    free(grad);
    free(model);
    free(g);
    free(ganchor);
    free(shard_loss);
    free(idx);
    return st;
}

/* ---- setup ----------------------------------------------------------- */

static int load_problem(const opts_t *o, deft_logreg_t *prob, char *desc,
                        size_t desc_n)
{
    deft_dataset_t ds = {0};
    deft_status_t st;
    if (!strcmp(o->data, "fmnist")) {
        st = deft_dataset_load_mnist_dir(&ds, NULL, o->data_dir);
        /* Shirt (6) -> class 0 -> label -1, T-shirt/top (0) -> +1. */
        const int32_t keep[2] = {6, 0};
        if (st == DEFT_OK)
            st = deft_dataset_filter_labels(&ds, keep, 2);
        snprintf(desc, desc_n, "fmnist:%s classes T-shirt/top(+1),Shirt(-1)%s",
                 o->data_dir ? o->data_dir : DEFT_FASHION_MNIST_DIR,
                 o->normalize ? " normalized" : "");
    } else {
        st = deft_dataset_load_libsvm(&ds, o->data + 7, 0);
        snprintf(desc, desc_n, "%s%s", o->data, o->normalize ? " normalized" : "");
    }
    if (st == DEFT_OK)
        st = deft_logreg_from_dataset(prob, &ds, o->normalize);
    deft_dataset_free(&ds);
    if (st != DEFT_OK) {
        fprintf(stderr, "deft convex: %s\n", deft_last_error());
        return EXIT_RUN_FAILED;
    }
    deft_logreg_shuffle(prob, DATA_SEED);
    size_t m = prob->n / (size_t)o->workers;
    if (m < 2) {
        fprintf(stderr, "deft convex: %zu examples cannot be split over %d "
                "workers (at least 2 each)\n", prob->n, o->workers);
        deft_logreg_free(prob);
        return EXIT_USAGE;
    }
    deft_logreg_truncate(prob, m * (size_t)o->workers);
    return 0;
}

static int parse(int argc, char **argv, opts_t *o)
{
    enum {
        O_ALGO = 256, O_COMP, O_RATIO, O_WORKERS, O_ROUNDS, O_LOG, O_LOG_EVERY,
        O_SEED, O_MU, O_DATA, O_DATA_DIR, O_HELP, O_BATCH, O_NORMALIZE,
        O_TARGET, O_LR, O_THETA1, O_P, O_QUIET, O_ANCHOR
    };
    static const struct option opts[] = {
        {"algo", required_argument, 0, O_ALGO},
        {"compressor", required_argument, 0, O_COMP},
        {"ratio", required_argument, 0, O_RATIO},
        {"workers", required_argument, 0, O_WORKERS},
        {"rounds", required_argument, 0, O_ROUNDS},
        {"log", required_argument, 0, O_LOG},
        {"log-every", required_argument, 0, O_LOG_EVERY},
        {"seed", required_argument, 0, O_SEED},
        {"mu", required_argument, 0, O_MU},
        {"data", required_argument, 0, O_DATA},
        {"data-dir", required_argument, 0, O_DATA_DIR},
        {"batch", required_argument, 0, O_BATCH},
        {"normalize", no_argument, 0, O_NORMALIZE},
        {"target", required_argument, 0, O_TARGET},
        {"lr", required_argument, 0, O_LR},
        {"theta1", required_argument, 0, O_THETA1},
        {"p", required_argument, 0, O_P},
        {"quiet", no_argument, 0, O_QUIET},
        {"anchor-grad", required_argument, 0, O_ANCHOR},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 0; /* glibc: a full reset, also of a half-parsed "-xy" */
    int c, rc;
    long iv = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        const char *flag = argv[optind - 1];
        switch (c) {
        case O_ALGO: {
            int found = 0;
            for (int i = 0; i < N_METHODS; i++)
                if (!strcmp(optarg, method_names[i]))
                    o->method = (method_t)i, found = 1;
            if (!found)
                return deft_cli_usage_error("--algo '%s': expected eclk, ecgd, ecsgd, "
                                   "gd or lkatyusha", optarg);
            break;
        }
        case O_COMP:
            if (deft_compressor_parse(optarg, &o->compressor) != DEFT_OK)
                return deft_cli_usage_error("--compressor '%s': expected none, rbgs, "
                                   "randk, topk, sign, qsgd or scale", optarg);
            o->compressor_given = 1;
            break;
        case O_RATIO:
            if ((rc = deft_cli_parse_double("--ratio", optarg, 1, 1e12, &o->ratio)))
                return rc;
            break;
        case O_WORKERS:
            if ((rc = deft_cli_parse_long("--workers", optarg, 1, 1024, &iv)))
                return rc;
            o->workers = (int)iv;
            break;
        case O_ROUNDS:
            if ((rc = deft_cli_parse_long("--rounds", optarg, 1, 1L << 40, &o->rounds)))
                return rc;
            break;
        case O_LOG:
            o->log_path = optarg;
            break;
        case O_LOG_EVERY:
            if ((rc = deft_cli_parse_long("--log-every", optarg, 1, 1L << 40,
                                 &o->log_every)))
                return rc;
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (end == optarg || *end || errno || optarg[0] == '-')
                return deft_cli_usage_error("--seed '%s': not a non-negative integer",
                                   optarg);
            o->seed = v;
            break;
        }
        case O_MU:
            if ((rc = deft_cli_parse_double("--mu", optarg, 1e-300, 1e6, &o->mu)))
                return rc;
            break;
        case O_DATA:
            if (strcmp(optarg, "fmnist") && strncmp(optarg, "libsvm:", 7))
                return deft_cli_usage_error("--data '%s': expected fmnist or "
                                   "libsvm:PATH", optarg);
            if (!strncmp(optarg, "libsvm:", 7) && !optarg[7])
                return deft_cli_usage_error("--data libsvm: needs a path "
                                   "(libsvm:PATH)");
            o->data = optarg;
            break;
        case O_DATA_DIR:
            o->data_dir = optarg;
            break;
        case O_BATCH:
            if (!strcmp(optarg, "full"))
                o->batch = 0;
            else if ((rc = deft_cli_parse_long("--batch", optarg, 1, 1L << 40,
                                      &o->batch)))
                return rc;
            break;
        case O_NORMALIZE:
            o->normalize = 1;
            break;
        case O_TARGET:
            if ((rc = deft_cli_parse_double("--target", optarg, 0, 1, &o->target)))
                return rc;
            break;
        case O_LR:
            if ((rc = deft_cli_parse_double("--lr", optarg, 1e-12, 1e6, &o->lr)))
                return rc;
            break;
        case O_THETA1:
            if ((rc = deft_cli_parse_double("--theta1", optarg, 1e-9, 0.5, &o->theta1)))
                return rc;
            break;
        case O_P:
            if ((rc = deft_cli_parse_double("--p", optarg, 1e-12, 1, &o->p)))
                return rc;
            break;
        case O_QUIET:
            o->quiet = 1;
            break;
        case O_ANCHOR:
            if (!strcmp(optarg, "local") || !strcmp(optarg, "global"))
                o->global_anchor = !strcmp(optarg, "global");
            else
                return deft_cli_usage_error("--anchor-grad '%s': expected local or "
                                   "global", optarg);
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            return -1;
        case ':':
            return deft_cli_usage_error("%s needs a value", flag);
        default:
            return deft_cli_usage_error("unknown option '%s' (see deft convex --help)",
                               flag);
        }
    }
    if (optind < argc)
        return deft_cli_usage_error("unexpected argument '%s'", argv[optind]);
    if ((o->method == M_GD || o->method == M_LKATYUSHA) && o->compressor_given &&
        o->compressor != DEFT_COMP_NONE)
        return deft_cli_usage_error("--compressor %s: --algo %s sends dense vectors "
                           "(use eclk or ecgd to compress)",
                           deft_compressor_name(o->compressor),
                           method_names[o->method]);
    if (o->method == M_GD || o->method == M_LKATYUSHA)
        o->compressor = DEFT_COMP_NONE;
    if ((o->theta1 > 0 || o->p > 0) && o->method != M_ECLK &&
        o->method != M_LKATYUSHA)
        return deft_cli_usage_error("--%s is a parameter of eclk and lkatyusha",
                           o->theta1 > 0 ? "theta1" : "p");
    if (o->global_anchor &&
        ((o->method != M_ECLK && o->method != M_LKATYUSHA) || o->batch == 0))
        return deft_cli_usage_error("--anchor-grad global: only for eclk and lkatyusha "
                           "with sampled rows (--batch B, not full)");
    if (o->lr > 0 && (o->method == M_ECLK || o->method == M_LKATYUSHA))
        return deft_cli_usage_error("--lr: eclk's steps follow from L and mu (set "
                           "--theta1 or --p instead)");
    return 0;
}

int deft_cli_convex(int argc, char **argv);

int deft_cli_convex(int argc, char **argv)
{
    deft_cli_cmd = "convex";
    opts_t o = {M_ECLK, DEFT_COMP_TOPK, 0, 16.0, 8, 2000, 10, 1, 1e-3, 0, 0,
                0, 0, 0, 0, 0, 0, NULL, "fmnist", NULL};
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (deft_cli_dry_run)
        return 0;
    if (!uses_batch(o.method))
        o.batch = 0;

    deft_logreg_t prob = {0};
    char desc[1024];
    if ((rc = load_problem(&o, &prob, desc, sizeof desc)))
        return rc;
    const int K = o.workers;
    const size_t m = prob.n / (size_t)K;
    const size_t B = o.batch <= 0 || (size_t)o.batch >= m ? m : (size_t)o.batch;
    if (o.global_anchor && B == m) {
        deft_logreg_free(&prob);
        return deft_cli_usage_error("--anchor-grad global: --batch %ld covers the "
                           "whole shard of %zu rows; use a smaller batch",
                           o.batch, m);
    }

    /* Exact constants (without mu; add mu for the regularized ones). */
    double t0 = deft_wall_s();
    double L_max = deft_logreg_smooth_max(&prob, 0, prob.n);
    int it_f;
    double L_f = deft_logreg_smooth_avg(&prob, 0, prob.n, 1e-10, 5000, &it_f);
    double L_loc = 0;
    for (int k = 0; k < K; k++) {
        double l = deft_logreg_smooth_avg(&prob, (size_t)k * m,
                                          (size_t)(k + 1) * m, 1e-10, 5000, NULL);
        L_loc = l > L_loc ? l : L_loc;
    }
    double L_B = B == m ? L_loc
                        : ((double)m * (double)(B - 1) * L_loc +
                           (double)(m - B) * L_max) /
                              ((double)B * (double)(m - 1));

    /* P*, from the cache next to the log or by Newton's method. */
    uint64_t mu_bits;
    memcpy(&mu_bits, &o.mu, sizeof mu_bits);
    uint64_t key = deft_mix64(deft_logreg_hash(&prob) ^ deft_mix64(mu_bits));
    char cpath[4096];
    cache_path(o.log_path, key, cpath, sizeof cpath);
    run_t R;
    memset(&R, 0, sizeof R);
    int cached = cache_read(cpath, key, &R.pstar);
    if (!cached) {
        double *xs = calloc(prob.d, sizeof(double));
        deft_logreg_solution_t sol;
        deft_status_t st = xs ? deft_logreg_solve(&prob, o.mu, DEFT_NEWTON_AUTO,
                                                  xs, &sol)
                              : DEFT_ERR_NOMEM;
        free(xs);
        if (st != DEFT_OK) {
            fprintf(stderr, "deft convex: computing P*: %s\n",
                    st == DEFT_ERR_NOMEM ? "out of memory" : deft_last_error());
            deft_logreg_free(&prob);
            return EXIT_RUN_FAILED;
        }
        R.pstar = sol.pstar;
        cache_write(cpath, key, desc, &prob, o.mu, &sol);
    }
    double *zero = calloc(prob.d, sizeof(double));
    R.p0 = zero ? deft_logreg_objective(&prob, o.mu, zero) : NAN;
    free(zero);
    double setup_s = deft_wall_s() - t0;

    /* The optimizer's configuration. */
    deft_optim_config_t c = DEFT_OPTIM_CONFIG_INIT;
    c.compressor = o.compressor;
    c.ratio = o.ratio;
    c.momentum = 0.0f;
    c.weight_decay = 0.0f; /* mu x is part of every gradient we pass */
    c.seed = o.seed;
    double lr = o.lr, eclk_p = 0, eclk_theta1 = 0, eclk_eta = 0;
    switch (o.method) {
    case M_GD:
    case M_ECGD:
        c.algo = o.method == M_GD ? DEFT_ALGO_SGD : DEFT_ALGO_EF;
        if (!(lr > 0))
            lr = 1.0 / (L_f + o.mu);
        break;
    case M_ECSGD:
        c.algo = DEFT_ALGO_EF;
        if (!(lr > 0))
            lr = 1.0 / (2.0 * (L_B + o.mu));
        break;
    case M_ECLK:
    case M_LKATYUSHA:
        c.algo = DEFT_ALGO_ECLK;
        c.eclk_L = L_B + o.mu;
        c.eclk_mu = o.mu;
        c.eclk_n = (uint64_t)(m / B); /* parts of B rows: p = B/m */
        c.eclk_p = o.p;
        c.eclk_theta1 = o.theta1;
        deft_eclk_theory(c.eclk_L, c.eclk_mu, c.eclk_n, c.eclk_p,
                         c.eclk_theta1, &eclk_p, &eclk_theta1);
        eclk_eta = 0.5 / (1.5 * eclk_theta1);
        lr = 0.1; /* unused by eclk */
        break;
    }
    c.lr = (float)lr;
    R.o = &o;
    R.prob = &prob;
    R.m = m;
    R.ocfg = c;
    R.best_rel = INFINITY;
    R.diverged_round = -1;
    for (int i = 0; i < N_LEVELS; i++)
        R.level_round[i] = -1;

    char batch_s[32];
    if (B == m)
        snprintf(batch_s, sizeof batch_s, "\"full\"");
    else
        snprintf(batch_s, sizeof batch_s, "%zu", B);
    const double ratio_shown = c.compressor == DEFT_COMP_NONE ? 1.0 : c.ratio;
    /* A short name of the run for plots: "eclk topk/16 B=1 global". */
    char label[128];
    int ln = snprintf(label, sizeof label, "%s", method_names[o.method]);
    if (c.compressor != DEFT_COMP_NONE)
        ln += snprintf(label + ln, sizeof label - (size_t)ln, " %s/%g",
                       deft_compressor_name(c.compressor), c.ratio);
    if (uses_batch(o.method))
        ln += snprintf(label + ln, sizeof label - (size_t)ln, B == m ? " full"
                       : " B=%zu", B);
    if (o.global_anchor)
        ln += snprintf(label + ln, sizeof label - (size_t)ln, " global");
    if (o.theta1 > 0)
        ln += snprintf(label + ln, sizeof label - (size_t)ln, " theta1=%g",
                       o.theta1);
    if (o.p > 0)
        ln += snprintf(label + ln, sizeof label - (size_t)ln, " p=%g", o.p);
    if (o.lr > 0)
        snprintf(label + ln, sizeof label - (size_t)ln, " lr=%g", o.lr);
    if (o.log_path) {
        R.log = fopen(o.log_path, "w");
        if (!R.log) {
            fprintf(stderr, "deft convex: cannot open the log %s: %s\n",
                    o.log_path, strerror(errno));
            deft_logreg_free(&prob);
            return EXIT_RUN_FAILED;
        }
        fprintf(R.log,
                "{\"config\": true, \"method\": \"%s\", \"compressor\": \"%s\", "
                "\"ratio\": %g, \"workers\": %d, \"batch\": %s, \"data\": "
                "\"%s\", \"n\": %zu, \"d\": %zu, \"rows_per_worker\": %zu, "
                "\"mu\": %.17g, \"L_max\": %.17g, \"L_f\": %.17g, \"L_local\": "
                "%.17g, \"L_batch\": %.17g, \"pstar\": %.17g, \"p0\": %.17g, "
                "\"lr\": %.17g, \"theta1\": %.17g, \"p\": %.17g, \"eta\": %.17g, "
                "\"seed\": %llu, \"log_every\": %ld, \"anchor_grad\": "
                "\"%s\", \"label\": \"%s\"}\n",
                method_names[o.method], deft_compressor_name(c.compressor),
                ratio_shown, K, batch_s, desc, prob.n, prob.d, m, o.mu, L_max,
                L_f, L_loc, L_B, R.pstar, R.p0,
                c.algo == DEFT_ALGO_ECLK ? 0.0 : lr, eclk_theta1, eclk_p,
                eclk_eta, (unsigned long long)o.seed, o.log_every,
                o.global_anchor ? "global" : "local", label);
    }
    if (!o.quiet) {
        printf("deft convex: %s, n = %zu, d = %zu, %d workers x %zu rows, "
               "mu = %g\n", desc, prob.n, prob.d, K, m, o.mu);
        printf("  L_max = %.6g, L_f = %.6g (power iteration, %d its), L_local "
               "= %.6g, L_B(B = %zu) = %.6g\n", L_max, L_f, it_f, L_loc, B, L_B);
        printf("  P* = %.15g (%s), P(x0) = %.15g; setup %.1f s\n", R.pstar,
               cached ? "cached" : "Newton", R.p0, setup_s);
        if (c.algo == DEFT_ALGO_ECLK)
            printf("  %s + %s (ratio %g), batch %s: theta1 = %.4g, theta2 = "
                   "0.5, p = %.4g, eta = %.4g, eta/L = %.4g\n",
                   method_names[o.method], deft_compressor_name(c.compressor),
                   ratio_shown, batch_s, eclk_theta1, eclk_p, eclk_eta,
                   eclk_eta / c.eclk_L);
        else
            printf("  %s + %s (ratio %g), batch %s: lr = %.6g\n",
                   method_names[o.method], deft_compressor_name(c.compressor),
                   ratio_shown, batch_s, lr);
        fflush(stdout);
    }

    t0 = deft_wall_s();
    deft_status_t st = deft_run_threads(K, worker, &R);
    double wall = deft_wall_s() - t0;
    if (st != DEFT_OK && st != DEFT_ERR_DIVERGED)
        fprintf(stderr, "deft convex: %s: %s\n", deft_status_str(st),
                deft_last_error());
    rc = st == DEFT_OK ? 0 : st == DEFT_ERR_DIVERGED ? EXIT_DIVERGED
                                                     : EXIT_RUN_FAILED;
    if (R.log) {
        fprintf(R.log, "{\"final\": true, \"method\": \"%s\", \"compressor\": "
                "\"%s\", \"ratio\": %g, \"batch\": %s, \"rounds\": %ld, "
                "\"rel_subopt\": %.6e, \"best_rel_subopt\": %.6e, "
                "\"bits_per_worker\": %llu, \"diverged\": %s, \"wall_s\": %.3f",
                method_names[o.method], deft_compressor_name(c.compressor),
                ratio_shown, batch_s, R.rounds_done, R.final_rel, R.best_rel,
                (unsigned long long)R.bits,
                st == DEFT_ERR_DIVERGED ? "true" : "false", wall);
        for (int i = 0; i < N_LEVELS; i++) {
            if (R.level_round[i] >= 0)
                fprintf(R.log, ", \"rounds_%s\": %ld, \"bits_%s\": %llu",
                        level_names[i], R.level_round[i], level_names[i],
                        (unsigned long long)R.level_bits[i]);
            else
                fprintf(R.log, ", \"rounds_%s\": null, \"bits_%s\": null",
                        level_names[i], level_names[i]);
        }
        fprintf(R.log, "}\n");
        if (fclose(R.log) != 0 && rc == 0) {
            fprintf(stderr, "deft convex: cannot write %s\n", o.log_path);
            rc = EXIT_RUN_FAILED;
        }
    }
    printf("%s + %s (ratio %g), batch %s: ", method_names[o.method],
           deft_compressor_name(c.compressor), ratio_shown, batch_s);
    if (st == DEFT_ERR_DIVERGED)
        printf("diverged at round %ld (%s)\n", R.diverged_round,
               deft_last_error());
    else {
        char at4[32], at6[32];
        snprintf(at4, sizeof at4, R.level_round[2] < 0 ? "never" : "round %ld",
                 R.level_round[2]);
        snprintf(at6, sizeof at6, R.level_round[4] < 0 ? "never" : "round %ld",
                 R.level_round[4]);
        printf("rel. suboptimality %.3g after %ld rounds (best %.3g); 1e-4 at "
               "%s, 1e-6 at %s; %.4g Mbit sent per worker, %.1f s\n",
               R.final_rel, R.rounds_done, R.best_rel, at4, at6,
               (double)R.bits / 1e6, wall);
    }
    deft_logreg_free(&prob);
    return rc;
}

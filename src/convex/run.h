/* The convex experiment: eclk and its baselines on L2-regularized logistic
 * regression (convex.h) with K workers on the threads backend, logged
 * against communication rounds and bits. tools/convex.c only parses flags
 * and prints; the loop lives here, as the training loop lives in
 * src/train/, and the problem and its cached optimum P* in problem.c.
 *
 *   P(x) = (1/K) sum_k f_k(x) + (mu/2) ||x||^2, f_k = average logistic loss
 *   over worker k's shard of m rows (contiguous rows k m .. (k+1) m - 1).
 *
 * Methods (all from x0 = 0; "EF" is deft's ef algorithm with momentum 0,
 * x <- x - avg_k C(lr g_k + e_k)):
 *   gd          uncompressed gradient descent, full local gradients
 *   ecgd        EF with full local gradients (EC-GD)
 *   ecsgd       EF with B sampled rows per worker (EC-SGD)
 *   eclsvrg     EF with the loopless-SVRG estimator (EC-LSVRG)
 *   eclsvrg-diana  EC-LSVRG with DIANA shifts (Gorbunov, Kovalev, Makarenko
 *               & Richtarik 2020): each worker learns a shift h_k of its
 *               estimator from unbiased compressed differences, and EF
 *               compresses the estimator minus the shift, which vanishes at
 *               the optimum (see run.c)
 *   eclk        error-compensated loopless Katyusha (src/optim/eclk.c)
 *   lkatyusha   eclk with compressor none: L-Katyusha
 *
 * The loopless-SVRG estimator of worker k at x with anchor w:
 *   g_k = (1/B) sum_{i in S} (grad f_ki(x) - grad f_ki(w)) + a_k(w)
 * with S a uniform B-subset of the shard (the whole shard for --batch
 * full) and a_k(w) = grad f(w) = avg_j grad f_j(w) (anchor "global": one
 * dense allreduce each time w moves, counted in the bits) or grad f_k(w)
 * (anchor "local"). The global form is what vanishes at the optimum for
 * every worker, so error feedback has nothing left to carry there. */
#ifndef DEFT_CONVEX_RUN_H
#define DEFT_CONVEX_RUN_H

#include "convex/convex.h"
#include "deft.h"

#include "core/options.h"

#include <stdint.h>
#include <stdio.h>

typedef enum {
    DEFT_CONVEX_ECLK = 0,
    DEFT_CONVEX_ECGD,
    DEFT_CONVEX_ECSGD,
    DEFT_CONVEX_GD,
    DEFT_CONVEX_LKATYUSHA,
    DEFT_CONVEX_ECLSVRG,
    DEFT_CONVEX_ECLSVRG_DIANA,
    DEFT_CONVEX_N_METHODS
} deft_convex_method_t;

typedef enum {
    DEFT_ANCHOR_DEFAULT = 0, /* global for eclk with a compressor, local
                                otherwise (no compressor: the estimate
                                needs no dense refresh to vanish)        */
    DEFT_ANCHOR_GLOBAL,
    DEFT_ANCHOR_LOCAL
} deft_anchor_grad_t;

/* Suboptimality levels whose first crossing is reported. */
enum { DEFT_CONVEX_N_LEVELS = 7 };
extern const double deft_convex_levels[DEFT_CONVEX_N_LEVELS];
extern const char *const deft_convex_level_names[DEFT_CONVEX_N_LEVELS];

typedef struct {
    deft_convex_method_t method;
    deft_compressor_kind_t compressor; /* none for gd and lkatyusha        */
    double ratio;
    int workers;           /* K >= 1                                        */
    long rounds;           /* communication rounds                          */
    long log_every;        /* evaluate every N rounds                       */
    long batch;            /* rows per worker and round; 0 = the shard      */
    double mu;             /* L2 regularization > 0                         */
    double target;         /* stop at this relative suboptimality; 0 = no   */
    double lr;             /* gd/ec*: step; 0 = default                     */
    double theta1, p;      /* eclk: 0 = default (compressor-aware)          */
    double lscale;         /* eclk: z step eta/(lscale L); 0 = default      */
    double alpha;          /* diana: shift step in (0, 1]; 0 = default      */
    uint64_t seed;
    deft_anchor_grad_t anchor;
    int lkatyusha_params;  /* eclk: L-Katyusha's constants, which ignore
                              the compressor (the former default)           */
    int delta_exp_set;     /* eclk: 1 to use delta_exp instead of the
                              default exponent (run.c)                      */
    double delta_exp;      /* eclk: L_eff = L / delta^delta_exp in the
                              constants, in [0, 4]                          */
    /* The problem and the run's files (deft convex): */
    const char *data;      /* "fmnist" or "libsvm:PATH"                     */
    const char *data_dir;  /* IDX files; NULL: DEFT_FASHION_MNIST_DIR       */
    int normalize;         /* scale every example to unit norm              */
    const char *log_path;  /* JSON lines (P* is cached next to it), or NULL */
    int compressor_set;    /* 1: compressor was given (gd and lkatyusha
                              refuse one; without it they take none)        */
} deft_convex_config_t;

/* deft convex's defaults: eclk, topk at ratio 16, 8 workers, 2000 rounds
 * logged every 10, batch 1, mu 1e-3, the Fashion-MNIST problem. */
void deft_convex_config_init(deft_convex_config_t *c);

/* The run's options as a table (core/options.h; options.c): the CLI's
 * flags, help and range errors, and the checks of deft_convex_setup. The
 * compressor's, ratio's, seed's, theta1's and p's descriptions are the
 * optimizer's (deft_optim_option). */
size_t deft_convex_option_defs(const deft_option_def_t **defs);
/* Sets the option called name (field name or flag) from text. */
deft_status_t deft_convex_config_set(deft_convex_config_t *c, const char *name,
                                     const char *value);
/* The option's value as text. */
deft_status_t deft_convex_config_get(const deft_convex_config_t *c,
                                     const char *name, char *buf, size_t n);
/* Ranges of every field, and the rules between them: a parameter of
 * another method (theta1 for ecgd), a compressor for a dense method, the
 * data's form. Fields are named as pre + name, or as flags when pre is
 * "--". Without compressor_set, gd and lkatyusha take compressor none. */
deft_status_t deft_convex_config_check(deft_convex_config_t *c, const char *pre);

/* Constants of the problem and the parameters a run uses. */
typedef struct {
    size_t m, B;           /* rows per worker, rows per round (B = m: full) */
    double L_max;          /* max_i ||a_i||^2 / 4                           */
    double L_f;            /* smoothness of the average loss                */
    double L_loc;          /* largest smoothness of a shard's average loss  */
    double L_B;            /* expected smoothness of a B-row sample         */
    int power_iters;       /* power iterations for L_f                      */
    double L_mask;         /* eclk under Rand-K: the smoothness seen through
                              a k-of-d mask, deft_logreg_smooth_masked over
                              all rows with q = (k - 1)/(d - 1); else 0     */
    double delta;          /* the compressor's contraction, see
                              deft_convex_delta                             */
    int anchor_global;     /* the anchor form in effect                     */
    /* gd, ecgd, ecsgd, eclsvrg(-diana): */
    double lr, alpha;
    /* eclk (and the anchor coin of eclsvrg): */
    double L;              /* the L given to eclk (parts' smoothness + mu)  */
    double theta1, p, eta, delta_exp;
    double lscale;         /* the L given to eclk over the parts' (>= 1: a
                              shorter z step, the Rand-K rule)              */
} deft_convex_setup_t;

typedef struct {
    long level_round[DEFT_CONVEX_N_LEVELS]; /* -1: never reached           */
    uint64_t level_bits[DEFT_CONVEX_N_LEVELS];
    long rounds_done;
    long diverged_round;   /* -1 unless the run diverged                    */
    double final_rel, best_rel;
    uint64_t bits;         /* per worker: messages, + dense anchor grads    */
    uint64_t wire_bytes;   /* per worker, what the backend counted          */
    double wall_s;
} deft_convex_result_t;

/* The ratio a run reports: c->ratio, or 1 for compressor none. */
double deft_convex_ratio_shown(const deft_convex_config_t *c);

/* "eclk", "ecgd", ...; NULL for a value out of range. */
const char *deft_convex_method_name(deft_convex_method_t m);

/* Finds a method by name; DEFT_ERR_INVALID_ARG if there is none. */
deft_status_t deft_convex_method_parse(const char *name,
                                       deft_convex_method_t *out);

/* 1 if the method samples rows (takes a batch). */
int deft_convex_method_samples(deft_convex_method_t m);

/* The contraction delta of a compressor at a ratio for one tensor of d
 * values, in (0, 1]: ||C(v) - v||^2 <= (1 - delta) ||v||^2 for every v:
 * k/d with the compressors' own k = max(1, floor(d / ratio)) for topk,
 * randk, randk-private and rbgs; 1 - (1 - 1/ratio)^2 for scale; 1 for none,
 * powersgd on a vector and the 16-bit casts (up to rounding); 1/(1 + omega)
 * for qsgd scaled as a contraction; 1/d for sign's worst case. */
double deft_convex_delta(deft_compressor_kind_t kind, double ratio,
                         int qsgd_levels, size_t d);

/* Computes the problem's constants over the K m rows that are trained on
 * and the run's parameters (defaults for the fields of c left 0; see run.c
 * for the rules). Checks c and names a bad field: DEFT_ERR_INVALID_ARG.
 * DEFT_ERR_NOMEM. */
deft_status_t deft_convex_setup(const deft_logreg_t *prob,
                                const deft_convex_config_t *c,
                                deft_convex_setup_t *out);

/* Writes the config line of a JSON-lines log (desc names the data). */
void deft_convex_log_config(FILE *log, const deft_logreg_t *prob,
                            const deft_convex_config_t *c,
                            const deft_convex_setup_t *s, const char *desc,
                            double pstar, double p0);

/* Runs c's method with K threads from x0 = 0 and fills *out (always
 * initialized); with a log, one JSON line per evaluation. s must come from
 * deft_convex_setup(prob, c). pstar = P*, p0 = P(0).
 * Deterministic: the same c gives the same bits. Errors: those of the
 * optimizer and communicator; DEFT_ERR_DIVERGED when the relative
 * suboptimality exceeds 1e6 or is not finite (out->diverged_round says
 * when). */
deft_status_t deft_convex_run(const deft_logreg_t *prob,
                              const deft_convex_config_t *c,
                              const deft_convex_setup_t *s, double pstar,
                              double p0, FILE *log, deft_convex_result_t *out);

/* Writes the final line of a JSON-lines log; st is the run's status
 * ("status": "ok", "diverged" or the error's name). */
void deft_convex_log_final(FILE *log, const deft_convex_config_t *c,
                           const deft_convex_setup_t *s,
                           const deft_convex_result_t *r, deft_status_t st);

/* ---- the problem and its optimum (problem.c) -------------------------- */

/* The data are shuffled with this fixed seed, not the run's seed, so that
 * runs with different algorithm seeds solve the same problem. */
#define DEFT_CONVEX_DATA_SEED 20201001u

/* Loads the problem deft convex solves into *out and cuts it into equal
 * shards: data is "fmnist" (Fashion-MNIST from data_dir, NULL for
 * DEFT_FASHION_MNIST_DIR, training set, T-shirt/top (0) -> +1 and Shirt (6)
 * -> -1) or "libsvm:PATH" (deft_logreg_load_libsvm); rows are normalized
 * if normalize, shuffled with DEFT_CONVEX_DATA_SEED, then truncated to
 * workers * floor(n / workers) rows. desc (may be NULL) receives a line
 * naming the data for the output and the log. Errors:
 * DEFT_ERR_INVALID_ARG only for the caller's arguments (NULL out or data,
 * workers < 1, data neither fmnist nor libsvm:PATH) and for more workers
 * than the data have pairs of rows (the message names the largest
 * --workers that works): a usage error; the data's own failures are
 * DEFT_ERR_IO (a missing file or directory), DEFT_ERR_FORMAT (a malformed
 * file, not two classes, fewer than 2 examples) or DEFT_ERR_NOMEM. On
 * error *out is left empty. */
deft_status_t deft_convex_problem_load(deft_logreg_t *out, const char *data,
                                       const char *data_dir, int normalize,
                                       int workers, char *desc,
                                       size_t desc_n);

/* The identity of (prob, mu) in the P* cache: a hash of the data's bits
 * (deft_logreg_hash) and mu's. */
uint64_t deft_convex_pstar_key(const deft_logreg_t *prob, double mu);

/* The cache file of key next to the log: dir(log_path)/pstar-<key>.txt
 * (16 hex digits; "./" for a log without a directory), or "" when
 * log_path is NULL. */
void deft_convex_pstar_path(const char *log_path, uint64_t key, char *out,
                            size_t n);

/* 1 and *pstar when path is a readable cache file holding key and a finite
 * P* ("key <hex>" and "pstar <value>" lines); 0 otherwise (no file, a
 * different key, a corrupt value), *pstar then undefined. Never fails. */
int deft_convex_pstar_read(const char *path, uint64_t key, double *pstar);

/* Writes the cache file at path (nothing for ""): key, desc, the
 * problem's size, mu and s's P* with the accuracy of the solve, values in
 * %.17g so that they read back bitwise. DEFT_ERR_IO naming the file when
 * it cannot be written. */
deft_status_t deft_convex_pstar_write(const char *path, uint64_t key,
                                      const char *desc,
                                      const deft_logreg_t *prob, double mu,
                                      const deft_logreg_solution_t *s);

/* P* = min P for (prob, mu): read from the cache next to log_path (may be
 * NULL: no cache) when it holds this problem's key (*cached = 1), else
 * computed by Newton's method in double (deft_logreg_solve) and written to
 * the cache (*cached = 0). A cache that cannot be written does not fail
 * the call: *cache_st (may be NULL, as may cached) gets DEFT_ERR_IO and
 * deft_last_error() says why, a warning for the caller; else DEFT_OK.
 * Errors, with messages that start "computing P*: ": those of
 * deft_logreg_solve, DEFT_ERR_NOMEM; DEFT_ERR_INVALID_ARG for NULL prob or
 * pstar. */
deft_status_t deft_convex_optimum(const deft_logreg_t *prob, double mu,
                                  const char *log_path, const char *desc,
                                  double *pstar, int *cached,
                                  deft_status_t *cache_st);

/* ---- the whole run (job.c) --------------------------------------------- */

/* What deft_convex_job prepared and did. */
typedef struct {
    char desc[1024];           /* the data, as the log names it            */
    size_t n, d;               /* the problem's rows (trained on) and size */
    deft_convex_setup_t setup;
    double pstar, p0;          /* P* and P(x0)                             */
    int cached;                /* 1: P* came from the cache                */
    double setup_s;            /* constants and P*, seconds                */
    char warning[512];         /* the P* cache could not be written, or "" */
    int ran;                   /* 1 once the rounds started: result holds  */
    deft_status_t run_status;  /*   the run's outcome, and its message     */
    char run_error[512];
    deft_convex_result_t result;
} deft_convex_job_t;

/* Called once the problem is ready, before the first round (a header). */
typedef void (*deft_convex_on_start)(const deft_convex_config_t *c,
                                     const deft_convex_job_t *job, void *user);

/* deft convex's run from a checked config (deft_convex_config_check):
 * loads the problem (deft_convex_problem_load), computes its constants
 * and the run's parameters, P* (cached next to c->log_path), opens the
 * log, calls on_start, runs the rounds and closes the log. The status is
 * the first failure: DEFT_ERR_INVALID_ARG for a config the data cannot
 * take (too many workers), the loaders' and the run's errors,
 * DEFT_ERR_DIVERGED, DEFT_ERR_IO for a log that cannot be written; with
 * job->ran the run's own outcome is in job->run_status. */
deft_status_t deft_convex_job(const deft_convex_config_t *c,
                              deft_convex_job_t *job,
                              deft_convex_on_start on_start, void *user);

#endif

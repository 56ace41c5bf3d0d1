/* The training loop of one worker. Each step: this worker's part of the
 * global batch -> ask the optimizer where to take the gradient -> forward
 * and backward -> tell. Each epoch: the output model (def: x - avg(e)) is
 * evaluated with the test set split across workers, rank 0 logs, and the
 * checkpoint is written. */
#include "train/train.h"

#include "core/internal.h"
#include "optim/optim_internal.h"
#include "train/checkpoint.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>


void deft_train_config_init(deft_train_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    deft_optim_config_t o = DEFT_OPTIM_CONFIG_INIT;
    o.weight_decay = 5e-4f;
    o.lr = 0.05f;
    o.avg_period = 0;
    cfg->optim = o;
    cfg->model = DEFT_MODEL_LENET;
    cfg->workers = 8;
    cfg->batch = 128;
    cfg->epochs = 10;
    cfg->n_decays = 2;
    cfg->decay_at[0] = 0.5;
    cfg->decay_at[1] = 0.75;
    cfg->decay_factor = 0.1f;
    cfg->bn_recalibrate = DEFT_TRAIN_BN_AUTO;
}

/* The rules between the run's fields (each one's range is its entry's in
 * options.c). */
static deft_status_t check_rules(const deft_train_config_t *cfg)
{
    if (cfg->batch % cfg->workers != 0)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "--batch %d is not divisible by --workers %d: each "
                         "worker takes an equal part of the global batch%s",
                         cfg->batch, cfg->workers,
                         cfg->reshard ? " (a re-shard keeps the checkpoint's "
                         "batch: continue on a worker count that divides it; "
                         "deft checkpoint FILE lists them)" : "");
    if (cfg->bn_recalibrate > 0 && !deft_model_kind_has_bn(cfg->model))
        return deft_fail(DEFT_ERR_INVALID_ARG, "--bn-recalibrate: %s has no "
                         "batch norm (preresnet20 and vgg11bn have)",
                         deft_model_name(cfg->model));
    if (cfg->n_decays < 0 || cfg->n_decays > DEFT_TRAIN_MAX_DECAYS)
        return deft_fail(DEFT_ERR_INVALID_ARG, "--lr-decay: at most %d points",
                         DEFT_TRAIN_MAX_DECAYS);
    for (int i = 0; i < cfg->n_decays; i++)
        if (!(cfg->decay_at[i] > 0.0 && cfg->decay_at[i] < 1.0))
            return deft_fail(DEFT_ERR_INVALID_ARG,
                             "--lr-decay: %g is not a fraction in (0, 1)",
                             cfg->decay_at[i]);
    if (cfg->backend == DEFT_TRAIN_MPI && !deft_have_mpi())
        return deft_fail(DEFT_ERR_INVALID_ARG, "--backend mpi: this build has "
                         "no MPI backend (install libopenmpi-dev and rebuild)");
    if (cfg->reshard && !cfg->resume_path)
        return deft_fail(DEFT_ERR_INVALID_ARG, "--reshard applies to --resume "
                         "FILE: give the checkpoint to continue");
    return DEFT_OK;
}

deft_status_t deft_train_config_check(const deft_train_config_t *cfg,
                                      const deft_dataset_t *train)
{
    if (!cfg)
        return deft_fail(DEFT_ERR_INVALID_ARG, "train: cfg is NULL");
    const deft_option_def_t *t;
    const size_t n = deft_train_option_defs(&t);
    for (size_t i = 0; i < n; i++)
        if (deft_option_check(&t[i], cfg, "--") != DEFT_OK)
            return DEFT_ERR_INVALID_ARG;
    if (cfg->optim.algo == DEFT_ALGO_ECLK)
        return deft_fail(DEFT_ERR_INVALID_ARG, "--algo eclk is for convex "
                         "problems and is not available in 'deft train' (see "
                         "deft convex)");
    if (deft_optim_config_check_as(&cfg->optim, "--") != DEFT_OK)
        return DEFT_ERR_INVALID_ARG; /* the optimizer's flags, in their names */
    deft_status_t st = check_rules(cfg);
    if (st != DEFT_OK)
        return st;
    if (train && (size_t)cfg->batch > train->n)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "--batch %d is larger than the training set (%zu "
                         "examples)", cfg->batch, train->n);
    if (train && cfg->bn_recalibrate > 0 &&
        (size_t)cfg->bn_recalibrate > train->n / (size_t)cfg->batch)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "--bn-recalibrate %d: more batches than the %zu "
                         "steps of an epoch", cfg->bn_recalibrate,
                         train->n / (size_t)cfg->batch);
    return DEFT_OK;
}

/* Learning rate in effect at `step` of `total`: the base rate times the
 * factor for every decay point already passed. */
static float lr_at(const deft_train_config_t *cfg, uint64_t step, uint64_t total)
{
    float lr = cfg->optim.lr;
    for (int i = 0; i < cfg->n_decays; i++)
        if ((double)step >= cfg->decay_at[i] * (double)total)
            lr *= cfg->decay_factor;
    return lr;
}

typedef struct {
    deft_model_t *model;
    deft_optim_t *opt;
    deft_sampler_t sampler;
    float *xb;       /* (b, C, H, W) this worker's batch        */
    int32_t *yb;     /* (b,)                                    */
    float *grad;     /* (P,)                                    */
    float *eval;     /* (P,) output model                       */
    float *bufs;     /* (NB,) BN running statistics, saved while
                        the recalibrated ones are evaluated     */
    float *eval_bufs;/* (NB,) the statistics the last evaluation
                        used                                    */
    size_t n_bufs;
    void *states;    /* (K, state_size) for checkpoints         */
    size_t state_size;
    FILE *log;
} worker_state_t;

static void worker_free(worker_state_t *w)
{
    deft_optim_destroy(w->opt);
    deft_model_destroy(w->model);
    deft_sampler_free(&w->sampler);
    free(w->xb);
    free(w->yb);
    free(w->grad);
    free(w->eval);
    free(w->bufs);
    free(w->eval_bufs);
    free(w->states);
    if (w->log)
        fclose(w->log);
}

/* Rank 0's status decides for all: other ranks learn it by broadcast, so a
 * file error on rank 0 stops every worker instead of leaving them waiting. */
static deft_status_t agree(deft_comm_t *comm, deft_status_t st)
{
    int32_t s[2] = {(int32_t)st, 0};
    char msg[256];
    snprintf(msg, sizeof msg, "%s", st == DEFT_OK ? "" : deft_last_error());
    deft_status_t cst = deft_comm_broadcast(comm, s, sizeof s, 0);
    if (cst != DEFT_OK)
        return cst;
    cst = deft_comm_broadcast(comm, msg, sizeof msg, 0);
    if (cst != DEFT_OK)
        return cst;
    if (s[0] != DEFT_OK && deft_comm_rank(comm) != 0)
        return deft_fail((deft_status_t)s[0], "%s", msg);
    return (deft_status_t)s[0];
}

/* DEFT_OK on every worker if st is DEFT_OK on all of them; otherwise the
 * failing workers keep their status and message and the others get
 * DEFT_ERR_COMM naming how many failed. */
static deft_status_t all_ok(deft_comm_t *comm, deft_status_t st)
{
    float bad = st != DEFT_OK;
    deft_status_t cst = deft_comm_allreduce_sum_f32(comm, &bad, 1);
    if (cst != DEFT_OK)
        return cst;
    if (st != DEFT_OK)
        return st;
    if (bad > 0)
        return deft_fail(DEFT_ERR_COMM, "train: %d other worker(s) failed to "
                         "set up (see their errors)", (int)bad);
    return DEFT_OK;
}

/* Evaluates w->eval on this worker's share of the test set and sums the
 * results over workers: *acc and *loss are means over the whole set. */
static deft_status_t evaluate(deft_comm_t *comm, worker_state_t *w,
                              const deft_dataset_t *test, int max_batch,
                              double *acc, double *loss)
{
    int K = deft_comm_size(comm), r = deft_comm_rank(comm);
    size_t lo = test->n * (size_t)r / (size_t)K;
    size_t hi = test->n * (size_t)(r + 1) / (size_t)K;
    size_t per = (size_t)test->c * test->h * test->w;
    double loss_sum = 0;
    long correct = 0;
    for (size_t i = lo; i < hi; i += (size_t)max_batch) {
        int b = (int)(hi - i < (size_t)max_batch ? hi - i : (size_t)max_batch);
        double ls;
        int c;
        deft_status_t st = deft_model_evaluate(w->model, w->eval, test->x + i * per,
                                               test->y + i, b, &ls, &c);
        if (st != DEFT_OK)
            return st;
        loss_sum += ls;
        correct += c;
    }
    /* Counts up to 2^24 are exact in float; the loss sum is split in two
     * floats to keep double precision through a float allreduce. */
    float sums[3] = {(float)correct, (float)loss_sum,
                     (float)(loss_sum - (double)(float)loss_sum)};
    deft_status_t st = deft_comm_allreduce_sum_f32(comm, sums, 3);
    if (st != DEFT_OK)
        return st;
    *acc = (double)sums[0] / (double)test->n;
    *loss = ((double)sums[1] + (double)sums[2]) / (double)test->n;
    return DEFT_OK;
}

/* bufs (n) = their mean over the workers. */
static deft_status_t average_bufs(deft_comm_t *comm, float *bufs, size_t n)
{
    deft_status_t st = deft_comm_allreduce_sum_f32(comm, bufs, n);
    const float inv_k = 1.0f / (float)deft_comm_size(comm);
    for (size_t i = 0; st == DEFT_OK && i < n; i++)
        bufs[i] *= inv_k;
    return st;
}

/* How many batches prepare_bn recalibrates over: 0 for a model without BN
 * statistics, else bn_recalibrate, or with DEFT_TRAIN_BN_AUTO,
 * DEFT_TRAIN_BN_BATCHES (at most spe, an epoch's steps) when the output
 * model is not the training point, else 0. */
static int bn_batches(const deft_train_config_t *cfg, const worker_state_t *w,
                      uint64_t spe)
{
    if (!w->n_bufs)
        return 0;
    if (cfg->bn_recalibrate != DEFT_TRAIN_BN_AUTO)
        return cfg->bn_recalibrate;
    if (deft_optim_output_is_point(w->opt))
        return 0;
    return spe < DEFT_TRAIN_BN_BATCHES ? (int)spe : DEFT_TRAIN_BN_BATCHES;
}

/* The BN statistics every worker evaluates with: each worker's running
 * statistics averaged over workers (and kept: training goes on from the
 * average). With n > 0 batches, the statistics are then recomputed at the
 * output model w->eval over n of this worker's training batches (those
 * of the epoch's first steps) and averaged in turn; the running ones are
 * saved in w->bufs and restored by restore_bn(). *used names the
 * statistics. */
static deft_status_t prepare_bn(deft_comm_t *comm, worker_state_t *w,
                                const deft_train_config_t *cfg, int n,
                                const deft_dataset_t *train, uint64_t step0,
                                const char **used)
{
    *used = "none";
    if (!w->n_bufs)
        return DEFT_OK;
    float *bufs = deft_model_buffers(w->model);
    deft_status_t st = average_bufs(comm, bufs, w->n_bufs);
    if (st != DEFT_OK)
        return st;
    *used = "running";
    if (n == 0)
        return DEFT_OK;
    memcpy(w->bufs, bufs, w->n_bufs * sizeof(float));
    deft_model_reset_buffers(w->model);
    const int b = cfg->batch / deft_comm_size(comm);
    for (int j = 0; j < n && st == DEFT_OK; j++) {
        const uint64_t step = step0 + (uint64_t)j;
        const uint32_t *idx = deft_sampler_batch(&w->sampler, step);
        deft_dataset_gather(train, idx, b, cfg->augment, cfg->optim.seed, step,
                            deft_comm_rank(comm), w->xb, w->yb);
        st = deft_model_recalibrate(w->model, w->eval, w->xb, b, j);
    }
    // all workers learn whether all recalibrated before the allreduce
    if ((st = all_ok(comm, st)) != DEFT_OK ||
        (st = average_bufs(comm, bufs, w->n_bufs)) != DEFT_OK)
        return st;
    *used = "recalibrated";
    return DEFT_OK;
}

/* Puts back the running statistics prepare_bn() replaced, if it did. */
static void restore_bn(worker_state_t *w, const char *used)
{
    if (strcmp(used, "recalibrated") == 0)
        memcpy(deft_model_buffers(w->model), w->bufs, w->n_bufs * sizeof(float));
}

static void log_epoch(FILE *f, const deft_train_config_t *cfg,
                      const deft_epoch_report_t *r)
{
    if (!f)
        return;
    fprintf(f,
            "{\"epoch\": %d, \"step\": %llu, \"train_loss\": %.6f, "
            "\"test_loss\": %.6f, \"test_acc\": %.6f, \"bytes_per_worker\": "
            "%llu, \"payload_bytes_per_worker\": %llu, \"lr\": %.6g, "
            "\"wall_s\": %.3f, \"images_per_s\": %.1f, \"compute_s\": %.3f, "
            "\"comm_s\": %.3f, \"comm_modeled_s\": %.4f, \"modeled_s\": %.3f, "
            "\"algo\": \"%s\", "
            "\"compressor\": \"%s\", \"ratio\": %g, \"powersgd_rank\": %d, "
            "\"workers\": %d, \"model\": \"%s\", \"init\": \"%s\", "
            "\"bn_stats\": \"%s\", \"bn_batches\": %d, \"eval_s\": %.3f, "
            "\"convs\": \"%s\"}\n",
            r->epoch, (unsigned long long)r->step, r->train_loss, r->test_loss,
            r->test_acc, (unsigned long long)r->bytes_per_worker,
            (unsigned long long)r->payload_per_worker, r->lr, r->wall_s,
            r->images_per_s, r->compute_s, r->comm_s, r->comm_modeled_s,
            r->modeled_s, deft_algo_name(cfg->optim.algo),
            deft_compressor_name(cfg->optim.compressor), cfg->optim.ratio,
            cfg->optim.compressor == DEFT_COMP_POWERSGD ? cfg->optim.powersgd_rank
                                                        : 0,
            cfg->workers, deft_model_name(cfg->model), deft_init_name(cfg->init),
            r->bn_stats, r->bn_batches, r->eval_s, r->convs);
    fflush(f);
}

static void log_final(FILE *f, const deft_train_result_t *res)
{
    if (!f)
        return;
    fprintf(f,
            "{\"final\": true, \"status\": \"%s\", \"epochs\": %d, \"step\": "
            "%llu, \"test_acc\": %.6f, \"best_test_acc\": %.6f, "
            "\"bytes_per_worker\": %llu, \"wall_s\": %.3f",
            res->diverged ? "diverged" : "ok", res->epochs_done,
            (unsigned long long)res->steps, res->final_test_acc,
            res->best_test_acc, (unsigned long long)res->bytes_per_worker,
            res->wall_s);
    if (res->diverged)
        fprintf(f, ", \"diverged_step\": %llu",
                (unsigned long long)res->diverged_step);
    fprintf(f, "}\n");
    fflush(f);
}

static void fill_meta(deft_ckpt_meta_t *m, const deft_train_config_t *cfg,
                      size_t dim)
{
    memset(m, 0, sizeof *m);
    m->model = (uint32_t)cfg->model;
    m->algo = (uint32_t)cfg->optim.algo;
    m->compressor = (uint32_t)cfg->optim.compressor;
    m->workers = (uint32_t)cfg->workers;
    m->dim = dim;
    m->batch = (uint32_t)cfg->batch;
    m->seed = cfg->optim.seed;
    m->ratio = cfg->optim.ratio;
    m->lambda = cfg->optim.lambda;
}

/* Refuses a checkpoint from another kind of run, naming the difference. */
static deft_status_t check_meta(const char *path, const deft_ckpt_meta_t *have,
                                const deft_ckpt_meta_t *want, deft_reshard_t rs)
{
    char h[64] = "", w[64] = "";
    const char *flag = NULL;
    if (have->model != want->model) {
        flag = "--model";
        snprintf(h, sizeof h, "%s", deft_model_name((deft_model_kind_t)have->model));
        snprintf(w, sizeof w, "%s", deft_model_name((deft_model_kind_t)want->model));
    } else if (have->algo != want->algo) {
        flag = "--algo";
        snprintf(h, sizeof h, "%s", deft_algo_name((deft_algo_t)have->algo));
        snprintf(w, sizeof w, "%s", deft_algo_name((deft_algo_t)want->algo));
    } else if (have->compressor != want->compressor) {
        flag = "--compressor";
        snprintf(h, sizeof h, "%s",
                 deft_compressor_name((deft_compressor_kind_t)have->compressor));
        snprintf(w, sizeof w, "%s",
                 deft_compressor_name((deft_compressor_kind_t)want->compressor));
    } else if (have->ratio != want->ratio || have->lambda != want->lambda) {
        flag = have->ratio != want->ratio ? "--ratio" : "--lambda";
        snprintf(h, sizeof h, "%g", have->ratio != want->ratio ? have->ratio
                                                              : have->lambda);
        snprintf(w, sizeof w, "%g", have->ratio != want->ratio ? want->ratio
                                                              : want->lambda);
    } else if (have->batch != want->batch) {
        flag = "--batch";
        snprintf(h, sizeof h, "%u", have->batch);
        snprintf(w, sizeof w, "%u", want->batch);
    } else if (have->seed != want->seed) {
        flag = "--seed";
        snprintf(h, sizeof h, "%llu", (unsigned long long)have->seed);
        snprintf(w, sizeof w, "%llu", (unsigned long long)want->seed);
    } else if (have->dim != want->dim) {
        flag = "the model size";
        snprintf(h, sizeof h, "%llu", (unsigned long long)have->dim);
        snprintf(w, sizeof w, "%llu", (unsigned long long)want->dim);
    }
    if (flag)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "cannot resume from %s: it was written with %s %s, "
                         "this run has %s %s", path, flag, h, flag, w);
    if (have->workers != want->workers && rs == DEFT_RESHARD_NONE)
        return deft_fail(DEFT_ERR_INVALID_ARG, "cannot resume from %s as it "
                         "is: it was written by %u workers and this run has "
                         "%u; add --reshard to continue on %u (errors and "
                         "momenta keep their mean over the workers)", path,
                         have->workers, want->workers, want->workers);
    return DEFT_OK;
}

/* What a worker's loop needs and does not change: the job, its shape and
 * its schedule. */
typedef struct {
    deft_comm_t *comm;
    const deft_train_config_t *cfg;
    const deft_dataset_t *train, *test;
    int K, r;           /* workers, this worker's rank                    */
    int b, eval_batch;  /* examples per worker per step, per eval batch   */
    uint64_t spe, total;/* steps per epoch, steps in the whole run        */
    size_t P;           /* parameters                                     */
    size_t optim_size;  /* bytes of the optimizer's checkpoint state      */
    double t_start;     /* wall clock at the worker's start               */
} run_t;

/* Totals that carry over epochs and over a resume (in the checkpoint). */
typedef struct {
    int epoch0;                        /* epochs done before this run     */
    uint64_t bytes, payload;           /* per worker                      */
    double wall_before, best_acc;      /* from the resumed run            */
    double compute, comm_wall, comm_model;
    int32_t resharded_from;            /* the checkpoint's workers, if it
                                          was re-sharded, else 0          */
} totals_t;

/* Allocates this worker's model, buffers and optimizer, and fills the
 * run's P and optim_size. Every worker learns whether all could, so none
 * is left waiting in the optimizer's first collective. On error the
 * caller frees w. */
static deft_status_t worker_setup(run_t *run, worker_state_t *w)
{
    const deft_train_config_t *cfg = run->cfg;
    const deft_dataset_t *train = run->train;
    const size_t per = (size_t)train->c * train->h * train->w;
    const int b = run->b;
    deft_status_t st = deft_model_create_sized(
        &w->model, cfg->model, train->c, train->h, train->w, train->n_classes,
        run->eval_batch, b);
    if (st == DEFT_OK && b < deft_model_min_train_batch(w->model))
        st = deft_fail(DEFT_ERR_INVALID_ARG, "--batch %d over %d workers "
                       "leaves %d example(s) per worker; %s needs at least %d "
                       "per worker (a batch-norm layer sees a 1x1 map)",
                       cfg->batch, run->K, b, deft_model_name(cfg->model),
                       deft_model_min_train_batch(w->model));
    if (st == DEFT_OK)
        deft_model_set_convs(w->model, cfg->convs);
    const size_t P = st == DEFT_OK ? deft_model_num_params(w->model) : 1;
    w->xb = malloc(sizeof(float) * per * (size_t)b);
    w->yb = malloc(sizeof(int32_t) * (size_t)b);
    w->grad = malloc(sizeof(float) * P);
    w->eval = malloc(sizeof(float) * P);
    w->n_bufs = st == DEFT_OK ? deft_model_num_buffers(w->model) : 0;
    w->bufs = malloc(sizeof(float) * (w->n_bufs ? w->n_bufs : 1));
    w->eval_bufs = malloc(sizeof(float) * (w->n_bufs ? w->n_bufs : 1));
    if (st == DEFT_OK && (!w->xb || !w->yb || !w->grad || !w->eval ||
                          !w->bufs || !w->eval_bufs))
        st = deft_fail(DEFT_ERR_NOMEM, "train: out of memory");
    if ((st = all_ok(run->comm, st)) != DEFT_OK)
        return st;
    run->P = P;
    deft_model_init_params(w->model, w->eval, cfg->optim.seed, cfg->init);
    st = deft_optim_create(&w->opt, run->comm, deft_model_layout(w->model),
                           w->eval, &cfg->optim);
    if (st == DEFT_OK)
        st = deft_sampler_init(&w->sampler, train->n, cfg->batch, run->K,
                               run->r, cfg->optim.seed);
    if (st != DEFT_OK)
        return st;
    /* A worker's checkpoint state: the optimizer's, then its BN running
     * statistics (none for models without BN). */
    run->optim_size = deft_optim_state_size(w->opt);
    w->state_size = run->optim_size + w->n_bufs * sizeof(float);
    if (cfg->checkpoint_path || cfg->resume_path) {
        w->states = malloc(w->state_size * (size_t)run->K);
        if (!w->states)
            return deft_fail(DEFT_ERR_NOMEM, "train: no memory for checkpoints");
    }
    run->spe = deft_sampler_steps_per_epoch(&w->sampler);
    run->total = run->spe * (uint64_t)cfg->epochs;
    return DEFT_OK;
}

/* Resume: rank 0 reads the checkpoint and broadcasts it, so that only
 * rank 0 needs to see the file system. Loads this worker's state and
 * fills tot from the checkpoint's meta. */
static deft_status_t resume(const run_t *run, worker_state_t *w,
                            const deft_ckpt_meta_t *meta, totals_t *tot)
{
    const deft_train_config_t *cfg = run->cfg;
    const size_t all = w->state_size * (size_t)run->K;
    deft_ckpt_meta_t got;
    memset(&got, 0, sizeof got);
    deft_status_t st = DEFT_OK;
    if (run->r == 0) {
        void *states = NULL;
        size_t ssz = 0;
        st = deft_checkpoint_read(cfg->resume_path, &got, &states, &ssz);
        if (st == DEFT_OK)
            st = check_meta(cfg->resume_path, &got, meta, cfg->reshard);
        if (st == DEFT_OK && got.workers != (uint32_t)run->K) {
            void *re = NULL;
            tot->resharded_from = (int32_t)got.workers;
            if (got.optim_bytes == 0) /* version 1: this run's own size */
                got.optim_bytes = run->optim_size;
            st = deft_checkpoint_reshard_states(&got, states, ssz, run->K,
                                                cfg->reshard, &re);
            free(states);
            states = re;
        }
        if (st == DEFT_OK && ssz != w->state_size)
            st = deft_fail(DEFT_ERR_FORMAT, "cannot resume from %s: its "
                           "worker states have %zu bytes, expected %zu",
                           cfg->resume_path, ssz, w->state_size);
        if (st == DEFT_OK && got.epochs_done >= (uint32_t)cfg->epochs)
            st = deft_fail(DEFT_ERR_INVALID_ARG, "cannot resume from %s: it "
                           "already finished %u epochs and --epochs is %d",
                           cfg->resume_path, got.epochs_done, cfg->epochs);
        if (st == DEFT_OK)
            memcpy(w->states, states, all);
        free(states);
    }
    if ((st = agree(run->comm, st)) == DEFT_OK)
        st = deft_comm_broadcast(run->comm, &got, sizeof got, 0);
    if (st == DEFT_OK)
        st = deft_comm_broadcast(run->comm, &tot->resharded_from,
                                 sizeof tot->resharded_from, 0);
    if (st == DEFT_OK)
        st = deft_comm_broadcast(run->comm, w->states, all, 0);
    const char *mine = (char *)w->states + (size_t)run->r * w->state_size;
    if (st == DEFT_OK)
        st = deft_optim_state_load(w->opt, mine, run->optim_size);
    if (st != DEFT_OK)
        return st;
    if (w->n_bufs)
        memcpy(deft_model_buffers(w->model), mine + run->optim_size,
               w->n_bufs * sizeof(float));
    tot->epoch0 = (int)got.epochs_done;
    tot->bytes = got.bytes_per_worker;
    tot->payload = got.payload_per_worker;
    tot->wall_before = got.wall_s;
    tot->best_acc = got.best_test_acc;
    tot->compute = got.compute_s;
    tot->comm_wall = got.comm_s;
    tot->comm_model = got.comm_modeled_s;
    return DEFT_OK;
}

/* Rank 0 reports progress every cfg->progress_every steps of the epoch. */
static void report_progress(const run_t *run, int epoch, uint64_t s,
                            double t_epoch, double *recent, int *recent_n,
                            int epoch0)
{
    const deft_train_config_t *cfg = run->cfg;
    if (run->r != 0 || !cfg->on_progress || cfg->progress_every <= 0 ||
        ((s + 1) % (uint64_t)cfg->progress_every != 0 && s + 1 != run->spe))
        return;
    const uint64_t step = (uint64_t)epoch * run->spe + s;
    const double el = deft_wall_s() - t_epoch;
    const double done = (double)(step + 1 - (uint64_t)epoch0 * run->spe);
    const double left = (double)(run->total - step - 1);
    deft_progress_t p = {epoch + 1, cfg->epochs, s + 1, run->spe,
                         *recent / *recent_n,
                         (double)(s + 1) * cfg->batch / el,
                         (deft_wall_s() - run->t_start) / done * left};
    cfg->on_progress(&p, cfg->user);
    *recent = 0;
    *recent_n = 0;
}

/* The steps of one epoch, begun at wall time t_epoch: *loss_sum gets this
 * worker's summed loss, *lr follows the schedule. A divergence is marked
 * in res and returned as DEFT_ERR_DIVERGED. */
static deft_status_t train_epoch(const run_t *run, worker_state_t *w,
                                 int epoch, double t_epoch, float *lr,
                                 double *loss_sum, totals_t *tot,
                                 deft_train_result_t *res)
{
    const deft_train_config_t *cfg = run->cfg;
    double recent = 0;
    int recent_n = 0;
    *loss_sum = 0;
    for (uint64_t s = 0; s < run->spe; s++) {
        const uint64_t step = (uint64_t)epoch * run->spe + s;
        const float want_lr = lr_at(cfg, step, run->total);
        if (want_lr != *lr) {
            deft_optim_set_lr(w->opt, want_lr);
            *lr = want_lr;
        }
        const double c0 = deft_thread_cpu_s();
        deft_comm_stats_t s0, s1;
        deft_comm_get_stats(run->comm, &s0);
        const uint32_t *idx = deft_sampler_batch(&w->sampler, step);
        deft_dataset_gather(run->train, idx, run->b, cfg->augment,
                            cfg->optim.seed, step, run->r, w->xb, w->yb);
        const float *point;
        deft_optim_ask(w->opt, &point);
        double loss;
        deft_status_t st = deft_model_loss_grad(w->model, point, w->xb, w->yb,
                                                run->b, w->grad, &loss, NULL);
        deft_step_info_t info;
        if (st == DEFT_OK)
            st = deft_optim_tell(w->opt, w->grad, &info);
        if (st == DEFT_ERR_DIVERGED) {
            res->diverged = 1;
            res->diverged_step = step;
        }
        if (st != DEFT_OK)
            return st;
        deft_comm_get_stats(run->comm, &s1);
        tot->compute += deft_thread_cpu_s() - c0 - (s1.comm_cpu_s - s0.comm_cpu_s);
        tot->comm_wall += s1.comm_s - s0.comm_s;
        tot->comm_model += s1.modeled_s - s0.modeled_s;
        *loss_sum += loss;
        recent += loss;
        recent_n++;
        tot->bytes += info.bytes_sent;
        tot->payload += info.payload_bytes;
        report_progress(run, epoch, s, t_epoch, &recent, &recent_n, tot->epoch0);
    }
    return DEFT_OK;
}

/* The output model's test accuracy and loss, with the BN statistics that
 * prepare_bn chooses for the epoch `epoch` (0-based, the one whose first
 * batches a recalibration uses): *bn_stats names them, *n_bn counts the
 * batches. w->eval and w->eval_bufs keep the model and statistics. The
 * model is the one at the end of that epoch; a non-finite test loss is a
 * divergence there, marked in res. */
static deft_status_t eval_output(const run_t *run, worker_state_t *w, int epoch,
                                 double *acc, double *test_loss,
                                 const char **bn_stats, int *n_bn,
                                 deft_train_result_t *res)
{
    *bn_stats = "none";
    *n_bn = bn_batches(run->cfg, w, run->spe);
    deft_status_t st = deft_optim_output(w->opt, w->eval);
    if (st != DEFT_OK ||
        (st = prepare_bn(run->comm, w, run->cfg, *n_bn, run->train,
                         (uint64_t)epoch * run->spe, bn_stats)) != DEFT_OK)
        return st;
    st = evaluate(run->comm, w, run->test, run->eval_batch, acc, test_loss);
    if (w->n_bufs)
        memcpy(w->eval_bufs, deft_model_buffers(w->model),
               w->n_bufs * sizeof(float));
    restore_bn(w, *bn_stats);
    if (st == DEFT_OK && !isfinite(*test_loss)) {
        res->diverged = 1;
        res->diverged_step = (uint64_t)(epoch + 1) * run->spe;
        return deft_fail(DEFT_ERR_DIVERGED, "diverged by step %llu: the "
                         "model evaluates to a non-finite test loss",
                         (unsigned long long)res->diverged_step);
    }
    return st;
}

/* After an epoch's steps: the mean training loss over the workers and the
 * output model's test accuracy and loss (eval_output) go into rep. A
 * non-finite test loss is a divergence. */
static deft_status_t end_epoch(const run_t *run, worker_state_t *w, int epoch,
                               double loss_sum, double t_train, float lr,
                               const totals_t *tot, deft_epoch_report_t *rep,
                               deft_train_result_t *res)
{
    const uint64_t spe = run->spe;
    float ls[2] = {(float)loss_sum, (float)(loss_sum - (double)(float)loss_sum)};
    deft_status_t st = deft_comm_allreduce_sum_f32(run->comm, ls, 2);
    double acc = 0, test_loss = 0;
    const char *bn_stats = "none";
    int n_bn = 0;
    const double t_eval = deft_wall_s();
    if (st != DEFT_OK || (st = eval_output(run, w, epoch, &acc, &test_loss,
                                           &bn_stats, &n_bn, res)) != DEFT_OK)
        return st;
    const deft_epoch_report_t r = {
        epoch + 1, run->cfg->epochs, (uint64_t)(epoch + 1) * spe,
        ((double)ls[0] + (double)ls[1]) / (double)(spe * (uint64_t)run->K),
        test_loss, acc, tot->bytes, tot->payload, lr,
        tot->wall_before + deft_wall_s() - run->t_start,
        (double)spe * run->cfg->batch / t_train, tot->compute, tot->comm_wall,
        tot->comm_model, tot->compute + tot->comm_model, bn_stats, n_bn,
        deft_wall_s() - t_eval, deft_model_onednn(w->model) ? "onednn" : "own",
    };
    *rep = r;
    res->epochs_done = epoch + 1;
    res->steps = rep->step;
    res->final_test_acc = acc;
    res->final_train_loss = rep->train_loss;
    if (acc > res->best_test_acc)
        res->best_test_acc = acc;
    return DEFT_OK;
}

/* Gathers every worker's state (optimizer, then BN statistics) and rank 0
 * writes the checkpoint with the run's totals after rep. */
static deft_status_t save_checkpoint(const run_t *run, worker_state_t *w,
                                     deft_ckpt_meta_t *meta,
                                     const deft_epoch_report_t *rep,
                                     const totals_t *tot,
                                     const deft_train_result_t *res)
{
    void *mine = (char *)w->states + (size_t)run->r * w->state_size;
    deft_status_t st = deft_optim_state_save(w->opt, mine, run->optim_size);
    if (st == DEFT_OK && w->n_bufs)
        memcpy((char *)mine + run->optim_size, deft_model_buffers(w->model),
               w->n_bufs * sizeof(float));
    if (st == DEFT_OK)
        st = deft_comm_allgather(run->comm, mine, w->state_size, w->states);
    if (st != DEFT_OK)
        return st;
    if (run->r == 0) {
        meta->epochs_done = (uint32_t)rep->epoch;
        meta->optim_bytes = run->optim_size;
        meta->step = rep->step;
        meta->bytes_per_worker = tot->bytes;
        meta->payload_per_worker = tot->payload;
        meta->wall_s = rep->wall_s;
        meta->best_test_acc = res->best_test_acc;
        meta->compute_s = tot->compute;
        meta->comm_s = tot->comm_wall;
        meta->comm_modeled_s = tot->comm_model;
        st = deft_checkpoint_write(run->cfg->checkpoint_path, meta, w->states,
                                   w->state_size);
    }
    return agree(run->comm, st);
}

/* Rank 0 logs the final record and copies the result, the output model
 * and its BN statistics to the job. */
static void finish(const run_t *run, worker_state_t *w, deft_train_job_t *job,
                   deft_train_result_t *res)
{
    if (run->r != 0)
        return;
    log_final(w->log, res);
    if (!job->result)
        return;
    float *model = job->result->model, *buffers = job->result->buffers;
    *job->result = *res;
    job->result->model = model;
    job->result->buffers = buffers;
    if (model && !res->diverged)
        memcpy(model, w->eval, sizeof(float) * run->P);
    if (buffers && !res->diverged && w->n_bufs)
        memcpy(buffers, w->eval_bufs, sizeof(float) * w->n_bufs);
}

/* After a re-sharded resume: the output model evaluated before any step,
 * as the checkpoint's last evaluation did (a BN recalibration over the
 * same steps' global batches, now split over this run's workers), logged
 * by rank 0. */
static deft_status_t eval_resharded(const run_t *run, worker_state_t *w,
                                    const totals_t *tot, deft_train_result_t *res)
{
    double acc = 0, loss = 0;
    const char *bn_stats;
    int n_bn;
    deft_status_t st = eval_output(run, w, tot->epoch0 > 0 ? tot->epoch0 - 1 : 0,
                                   &acc, &loss, &bn_stats, &n_bn, res);
    if (st != DEFT_OK)
        return st;
    res->resharded_from = tot->resharded_from;
    res->resumed_test_acc = acc;
    if (run->r == 0 && w->log) {
        fprintf(w->log,
                "{\"resharded\": true, \"from_workers\": %d, \"workers\": %d, "
                "\"reshard\": \"%s\", \"epoch\": %d, \"step\": %llu, "
                "\"test_loss\": %.6f, \"test_acc\": %.6f, \"bn_stats\": "
                "\"%s\", \"bn_batches\": %d}\n",
                tot->resharded_from, run->K,
                deft_reshard_name(run->cfg->reshard),
                tot->epoch0, (unsigned long long)((uint64_t)tot->epoch0 * run->spe),
                loss, acc, bn_stats, n_bn);
        fflush(w->log);
    }
    return DEFT_OK;
}

/* Rank 0 opens the log (appending on a resume); every worker learns
 * whether it could. */
static deft_status_t open_log(const run_t *run, worker_state_t *w)
{
    const deft_train_config_t *cfg = run->cfg;
    deft_status_t st = DEFT_OK;
    if (run->r == 0 && cfg->log_path) {
        w->log = fopen(cfg->log_path, cfg->resume_path ? "a" : "w");
        if (!w->log)
            st = deft_fail(DEFT_ERR_IO, "cannot open log %s: %s", cfg->log_path,
                           strerror(errno));
    }
    return agree(run->comm, st);
}

deft_status_t deft_train_worker(deft_comm_t *comm, void *arg)
{
    deft_train_job_t *job = arg;
    const deft_train_config_t *cfg = job->cfg;
    run_t run = {comm, cfg, job->train, job->test, deft_comm_size(comm),
                 deft_comm_rank(comm), 0, 0, 0, 0, 0, 0, deft_wall_s()};
    run.b = cfg->batch / run.K;
    run.eval_batch = run.b > 100 ? run.b : 100;
    if (run.K != cfg->workers)
        return deft_fail(DEFT_ERR_INVALID_ARG, "train: the communicator has %d "
                         "workers but --workers is %d", run.K, cfg->workers);
    deft_status_t st = deft_comm_set_timeout(comm, cfg->comm_timeout_s);
    if (st != DEFT_OK)
        return st;
    worker_state_t w;
    memset(&w, 0, sizeof w);
    totals_t tot;
    memset(&tot, 0, sizeof tot);
    deft_ckpt_meta_t meta;
    if ((st = worker_setup(&run, &w)) == DEFT_OK) {
        fill_meta(&meta, cfg, run.P);
        st = deft_comm_set_link(comm, cfg->net_gbps, cfg->net_latency_us);
    }
    if (st == DEFT_OK && cfg->resume_path)
        st = resume(&run, &w, &meta, &tot);
    if (st == DEFT_OK)
        st = open_log(&run, &w);
    if (st != DEFT_OK) {
        worker_free(&w);
        return st;
    }

    deft_train_result_t res;
    memset(&res, 0, sizeof res);
    res.best_test_acc = tot.best_acc;
    res.epochs_done = tot.epoch0;
    if (tot.resharded_from)
        st = eval_resharded(&run, &w, &tot, &res);
    int epoch_end = cfg->epochs;
    if (cfg->stop_after > 0 && tot.epoch0 + cfg->stop_after < epoch_end)
        epoch_end = tot.epoch0 + cfg->stop_after;
    float lr = -1;
    for (int epoch = tot.epoch0; epoch < epoch_end && st == DEFT_OK; epoch++) {
        double loss_sum;
        const double t_epoch = deft_wall_s();
        deft_epoch_report_t rep;
        if ((st = train_epoch(&run, &w, epoch, t_epoch, &lr, &loss_sum, &tot,
                              &res)) ||
            (st = end_epoch(&run, &w, epoch, loss_sum, deft_wall_s() - t_epoch,
                            lr, &tot, &rep, &res)))
            break;
        if (run.r == 0) {
            log_epoch(w.log, cfg, &rep);
            if (cfg->on_epoch)
                cfg->on_epoch(&rep, cfg->user);
        }
        if (cfg->checkpoint_path)
            st = save_checkpoint(&run, &w, &meta, &rep, &tot, &res);
    }

    res.bytes_per_worker = tot.bytes;
    res.wall_s = tot.wall_before + deft_wall_s() - run.t_start;
    if (res.diverged)
        res.steps = res.diverged_step;
    if (st == DEFT_OK || res.diverged)
        finish(&run, &w, job, &res);
    worker_free(&w);
    return st;
}

/* Checks what both entry points take; one OpenBLAS thread per worker, since
 * each worker already is a thread (or a process on a shared node). */
static deft_status_t prepare(const deft_train_config_t *cfg,
                             const deft_dataset_t *train,
                             const deft_dataset_t *test)
{
    deft_status_t st = deft_train_config_check(cfg, train);
    if (st != DEFT_OK)
        return st;
    if (!train || !test)
        return deft_fail(DEFT_ERR_INVALID_ARG, "train: the %s set is NULL",
                         !train ? "training" : "test");
    openblas_set_num_threads(1);
    return DEFT_OK;
}

deft_status_t deft_train_run_comm(const deft_train_config_t *cfg,
                                  deft_comm_t *comm,
                                  const deft_dataset_t *train,
                                  const deft_dataset_t *test,
                                  deft_train_result_t *result)
{
    if (!comm)
        return deft_fail(DEFT_ERR_INVALID_ARG, "train: comm is NULL");
    deft_status_t st = prepare(cfg, train, test);
    if (st != DEFT_OK)
        return st;
    deft_train_job_t job = {cfg, train, test, result};
    return deft_train_worker(comm, &job);
}

/* The threads backend's job: the worker's, and rank 0's outcome. */
typedef struct {
    deft_train_job_t job;
    deft_status_t r0_status;
    char r0_error[1024];
} threads_job_t;

static deft_status_t thread_worker(deft_comm_t *comm, void *arg)
{
    threads_job_t *tj = arg;
    deft_status_t st = deft_train_worker(comm, &tj->job);
    if (deft_comm_rank(comm) == 0) {
        tj->r0_status = st;
        snprintf(tj->r0_error, sizeof tj->r0_error, "%s", deft_last_error());
    }
    return st;
}

deft_status_t deft_train_run_threads(const deft_train_config_t *cfg,
                                     const deft_dataset_t *train,
                                     const deft_dataset_t *test,
                                     deft_train_result_t *result)
{
    deft_status_t st = prepare(cfg, train, test);
    if (st != DEFT_OK)
        return st;
    threads_job_t job = {{cfg, train, test, result}, DEFT_OK, ""};
    st = deft_run_threads(cfg->workers, thread_worker, &job);
    /* An error every worker agreed on (a checkpoint that does not fit, a
     * divergence) is said once, as rank 0 says it, without a rank. */
    if (st != DEFT_OK && st == job.r0_status && st != DEFT_ERR_COMM)
        deft_set_last_error_text(job.r0_error);
    return st;
}

/* Data-parallel training of a classifier: K workers, each with its own
 * model object and optimizer, one global batch split across them, the right
 * output model evaluated after every epoch, JSON-lines logs and
 * checkpoints. The worker function runs on any communicator backend. */
#ifndef DEFT_TRAIN_H
#define DEFT_TRAIN_H

#include "core/options.h"
#include "data/data.h"
#include "deft.h"
#include "nn/nn.h"

#include <stdint.h>
#include <stdio.h>

enum {
    DEFT_TRAIN_MAX_DECAYS = 8,
    /* bn_recalibrate's default: recalibrate over DEFT_TRAIN_BN_BATCHES
     * batches (at most an epoch's) when the model has BN and the
     * algorithm's output model is not its training point
     * (deft_optim_output_is_point), else keep the running statistics. */
    DEFT_TRAIN_BN_AUTO = -1,
};
#define DEFT_TRAIN_BN_BATCHES 20 /* a macro: the option's help quotes it */

/* Where the workers run (deft_train_job). */
typedef enum {
    DEFT_TRAIN_THREADS = 0, /* cfg->workers threads of this process        */
    DEFT_TRAIN_MPI          /* one worker per rank of the MPI job          */
} deft_train_backend_t;

/* One epoch's results, as logged. */
typedef struct {
    int epoch;                 /* 1-based epoch just finished             */
    int epochs;                /* total epochs of the run                 */
    uint64_t step;             /* steps done so far                       */
    double train_loss;         /* mean over the epoch and all workers     */
    double test_loss, test_acc;/* of the output model                     */
    uint64_t bytes_per_worker; /* cumulative wire bytes worker 0 sent     */
    uint64_t payload_per_worker; /* cumulative message bytes of worker 0  */
    double lr;
    double wall_s;             /* since the start of this run             */
    double images_per_s;       /* training throughput over the epoch      */
    /* Cumulative over training steps (evaluation excluded), worker 0: */
    double compute_s;          /* CPU time outside collectives            */
    double comm_s;             /* wall time inside the steps' collectives */
    double comm_modeled_s;     /* alpha-beta time of those collectives on
                                  the --net-gbps link (0 without one)     */
    double modeled_s;          /* compute_s + comm_modeled_s: the time on
                                  a cluster with one core per worker      */
    const char *bn_stats;      /* statistics the evaluation used: "none"
                                  (no BN), "running" or "recalibrated"    */
    int bn_batches;            /* batches per worker recalibrated over    */
    double eval_s;             /* wall time of this evaluation, with the
                                  recalibration                          */
    const char *convs;         /* the kernels worker 0's convs ran on:
                                  "onednn" or "own" (--convs auto takes
                                  oneDNN's where it can)                  */
} deft_epoch_report_t;

/* Progress inside an epoch (for a terminal display). */
typedef struct {
    int epoch, epochs;
    uint64_t step_in_epoch, steps_per_epoch;
    double loss;               /* mean of worker 0's recent batches       */
    double images_per_s;
    double eta_s;              /* whole run                               */
} deft_progress_t;

typedef struct deft_train_config deft_train_config_t;
struct deft_train_config {
    deft_model_kind_t model;
    deft_init_t init;          /* default DEFT_INIT_TORCH                 */
    deft_convs_t convs;        /* the conv kernels; default DEFT_CONVS_AUTO */
    int bn_recalibrate;        /* models with BN: before each evaluation,
                                  recompute the running statistics at the
                                  output model over this many training
                                  batches per worker, those of the epoch's
                                  first steps (at most an epoch's; 0 = off:
                                  evaluate with the statistics training
                                  gathered, averaged over workers;
                                  DEFT_TRAIN_BN_AUTO, the default: see
                                  there)                                  */
    deft_optim_config_t optim; /* algo, compressor, ratio, lambda, lr...  */
    int workers;               /* K >= 1                                   */
    int batch;                 /* global batch B, B % K == 0               */
    int epochs;
    int n_decays;
    double decay_at[DEFT_TRAIN_MAX_DECAYS]; /* fractions of training      */
    float decay_factor;        /* lr *= factor at each; default 0.1       */
    int augment;               /* random crop + flip                       */
    double net_gbps;           /* link for the network model; 0 = none    */
    double net_latency_us;
    double comm_timeout_s;     /* collective watchdog (deft_comm_set_timeout)
                                  on every worker; 0 = off (the default)  */
    int stop_after;            /* run at most this many epochs now (0 =
                                  all); the schedule still spans `epochs` */
    const char *log_path;      /* JSON lines, or NULL                      */
    const char *checkpoint_path; /* written at epoch ends, or NULL         */
    const char *resume_path;   /* continue from this checkpoint, or NULL   */
    deft_reshard_t reshard;    /* a checkpoint of another worker count:
                                  DEFT_RESHARD_NONE (the default) refuses
                                  it, MEAN or ZERO re-shard it
                                  (deft_optim_state_reshard) and evaluate
                                  the output model before going on        */
    /* The whole job (deft_train_job): */
    deft_train_backend_t backend;
    int workers_set;           /* 1: workers was given (with MPI it must
                                  then equal the job's size)               */
    const char *data_dir;      /* IDX files; NULL: DEFT_FASHION_MNIST_DIR  */
    uint64_t limit_train;      /* use the first N training examples; 0: all */
    uint64_t limit_test;       /* evaluate on the first N; 0: all          */
    const char *save_model_path; /* the final output model (P floats, then
                                  the BN statistics its evaluation used),
                                  or NULL                                 */
    /* Called on rank 0 before the first step of deft_train_job, when the
     * worker count is known. */
    void (*on_start)(const deft_train_config_t *cfg, void *user);
    /* Called on rank 0 after every epoch and (when set) every
     * progress_every steps. The library itself never prints. */
    void (*on_epoch)(const deft_epoch_report_t *r, void *user);
    void (*on_progress)(const deft_progress_t *p, void *user);
    int progress_every;
    void *user;
};

/* Defaults: lenet, def/rbgs(256), K = 8, B = 128, 10 epochs, lr 0.05,
 * momentum 0.9, wd 5e-4, decay x0.1 at 50% and 75%. */
void deft_train_config_init(deft_train_config_t *cfg);

typedef struct {
    int epochs_done;
    uint64_t steps;
    double final_test_acc, best_test_acc, final_train_loss;
    uint64_t bytes_per_worker;
    double wall_s;
    int diverged;              /* 1 if the run stopped with NaN/Inf        */
    uint64_t diverged_step;
    int resharded_from;        /* workers of the checkpoint re-sharded at
                                  the start, 0 if none                    */
    double resumed_test_acc;   /* then the output model's test accuracy
                                  right after re-sharding                 */
    float *model;              /* if not NULL (P floats, caller's): the
                                  final output model                      */
    float *buffers;            /* if not NULL (deft_model_num_buffers
                                  floats, caller's): the BN statistics the
                                  final evaluation used                   */
} deft_train_result_t;

/* Everything one worker needs; shared read-only by all workers. */
typedef struct {
    const deft_train_config_t *cfg;
    const deft_dataset_t *train, *test;
    deft_train_result_t *result; /* written by rank 0 */
} deft_train_job_t;

/* The worker body: call it with every worker's communicator (threads:
 * deft_run_threads; MPI: once per rank). Returns DEFT_ERR_DIVERGED when
 * the run diverged (after logging it), other errors as they come. */
deft_status_t deft_train_worker(deft_comm_t *comm, void *job);

/* Validates cfg and runs it on the threads backend with cfg->workers
 * threads. */
deft_status_t deft_train_run_threads(const deft_train_config_t *cfg,
                                     const deft_dataset_t *train,
                                     const deft_dataset_t *test,
                                     deft_train_result_t *result);

/* Validates cfg and runs this process's worker on comm (any backend: with
 * MPI, every rank calls it). cfg->workers must equal the communicator's
 * size. Sets OpenBLAS to one thread: each worker is one thread. */
deft_status_t deft_train_run_comm(const deft_train_config_t *cfg,
                                  deft_comm_t *comm,
                                  const deft_dataset_t *train,
                                  const deft_dataset_t *test,
                                  deft_train_result_t *result);

/* The training run's options (deft train's flags), as a table like the
 * optimizer's (core/options.h): model, workers, batch, epochs, ... Their
 * ranges are checked by deft_train_config_check. */
size_t deft_train_option_defs(const deft_option_def_t **defs);
/* Sets the option called name ("--workers", "workers", or any optimizer
 * option: "--ratio") from text; errors name it as given. */
deft_status_t deft_train_config_set(deft_train_config_t *cfg,
                                    const char *name, const char *value);

/* The option's value as text (as deft_optim_config_get). */
deft_status_t deft_train_config_get(const deft_train_config_t *cfg,
                                    const char *name, char *buf, size_t n);

/* What deft_train_job did, from this process's view. */
typedef struct {
    deft_train_result_t run;   /* rank 0's results                        */
    int rank, workers;         /* this process's rank, and the run's K     */
    int report;                /* 1 when this process should show the
                                  error (rank 0's for what all ranks agree
                                  on; any rank's own data or communication
                                  failure)                                 */
    int end_job;               /* MPI: a peer may be stuck in a collective:
                                  the caller should end the job
                                  (MPI_Abort) instead of returning        */
} deft_train_job_result_t;

/* A whole training run as deft train does it: with cfg->backend MPI,
 * initializes MPI and takes the job's ranks as workers; loads Fashion-MNIST
 * from cfg->data_dir, keeps the first limit_train / limit_test examples and
 * standardizes them; checks cfg against the data on every rank and agrees
 * on the outcome before any training collective; trains (threads or MPI);
 * rank 0 writes cfg->save_model_path; finalizes MPI. Errors name the
 * flags; DEFT_ERR_DIVERGED when the run diverged (out->run says where). */
deft_status_t deft_train_job(deft_train_config_t *cfg,
                             deft_train_job_result_t *out);

/* Checks cfg against the data (batch divisible, epochs >= 1, ...), naming
 * the bad field. */
deft_status_t deft_train_config_check(const deft_train_config_t *cfg,
                                      const deft_dataset_t *train);

#endif

/*
 * deft — communication-efficient distributed SGD with error feedback.
 *
 * One public header. Every fallible call returns deft_status_t; on failure
 * deft_last_error() holds a sentence that names the bad argument or value.
 * The library never prints and never exits.
 *
 * The optimizer works on one flat float vector (the model). Its layout, a
 * list of tensor sizes, tells per-tensor compressors where tensors begin.
 *
 * Typical worker (runs unchanged on every communicator backend):
 *
 *     deft_optim_t *opt;
 *     deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
 *     deft_optim_create(&opt, comm, &layout, x0, &cfg);
 *     for (step...) {
 *         const float *point;
 *         deft_optim_ask(opt, &point);         // where to take the gradient
 *         compute_gradient(point, grad);       // your model, your data
 *         deft_optim_tell(opt, grad, &info);   // compress, communicate, update
 *     }
 *     deft_optim_output(opt, model);           // the model to evaluate/save
 *     deft_optim_destroy(opt);
 */
#ifndef DEFT_H
#define DEFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DEFT_BUILDING_SHARED) && defined(__GNUC__)
#define DEFT_API __attribute__((visibility("default")))
#else
#define DEFT_API
#endif

#define DEFT_VERSION_MAJOR 0
#define DEFT_VERSION_MINOR 1
#define DEFT_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Status                                                                   */
/* ------------------------------------------------------------------------ */

typedef enum {
    DEFT_OK = 0,
    DEFT_ERR_INVALID_ARG,   /* a bad argument: NULL, out of range, ...      */
    DEFT_ERR_INVALID_USAGE, /* calls in the wrong order (tell without ask)  */
    DEFT_ERR_NOMEM,         /* an allocation failed                         */
    DEFT_ERR_IO,            /* a file could not be opened, read or written  */
    DEFT_ERR_FORMAT,        /* a file's contents are malformed              */
    DEFT_ERR_COMM,          /* a collective failed or a peer went away      */
    DEFT_ERR_UNSUPPORTED,   /* a valid request this build or mode can't do  */
    DEFT_ERR_DIVERGED,      /* NaN or Inf appeared during training          */
    DEFT_ERR_INTERNAL       /* a bug in deft: please report it              */
} deft_status_t;

/* A short description of a status and what to do next. Never NULL; the
 * string is static. Unknown values give a generic string. */
DEFT_API const char *deft_status_str(deft_status_t status);

/* Detail of the last failure on the calling thread, e.g.
 * "deft_optim_create: cfg->ratio = 0.5, must be >= 1". Never NULL ("" when
 * nothing failed yet). Valid until the next deft call on this thread. */
DEFT_API const char *deft_last_error(void);

/* "MAJOR.MINOR.PATCH". Static, never NULL. */
DEFT_API const char *deft_version(void);

/* ------------------------------------------------------------------------ */
/* Layout of the flat parameter vector                                      */
/* ------------------------------------------------------------------------ */

/* The parameter vector is the concatenation of n_tensors tensors; tensor t
 * has sizes[t] floats. rows is optional (NULL: every tensor is a plain
 * vector): when set, tensor t is a row-major rows[t] x (sizes[t] / rows[t])
 * matrix, rows[t] dividing sizes[t]; rows[t] = 0 or 1 marks a vector (a
 * bias). A dense weight (out, in) has rows = out; a conv weight (oc, c, kh,
 * kw) is oc x (c kh kw). Only low-rank compressors (powersgd) read rows.
 * The caller owns sizes and rows; deft copies what it needs. */
typedef struct {
    size_t n_tensors;
    const size_t *sizes;
    const size_t *rows;
} deft_layout_t;

/* ------------------------------------------------------------------------ */
/* Communicator                                                             */
/* ------------------------------------------------------------------------ */

/* A group of workers that run the same sequence of collectives. Every
 * collective must be called by all workers of the group, in the same order,
 * with the same sizes. A communicator is used by one thread (its worker). */
typedef struct deft_comm deft_comm_t;

/* The most workers a run may have, on any backend. */
enum { DEFT_MAX_WORKERS = 1024 };

/* Traffic of this rank, cumulative since creation or the last reset.
 * bytes_sent counts what this rank puts on the wire under bandwidth-optimal
 * algorithms (ring allreduce: 2(K-1)/K of the buffer; ring allgather:
 * (K-1) times its block; chain broadcast: the buffer, except the last rank
 * of the chain), so it is 0 when K = 1. payload_bytes counts the bytes this
 * rank handed to collectives, whatever K is. */
typedef struct {
    uint64_t bytes_sent;
    uint64_t payload_bytes;
    uint64_t n_allreduce;
    uint64_t n_allgather;
    uint64_t n_broadcast;
    uint64_t n_barrier;
    double comm_s;     /* wall-clock seconds spent inside collectives        */
    double comm_cpu_s; /* CPU seconds this thread spent inside collectives   */
    double modeled_s;  /* alpha-beta time of the same collectives on the link
                          set by deft_comm_set_link (0 when none is set)    */
} deft_comm_stats_t;

/* Rank in [0, size) and size of the group; -1 for a NULL comm. */
DEFT_API int deft_comm_rank(const deft_comm_t *comm);
DEFT_API int deft_comm_size(const deft_comm_t *comm);

/* Sums buf element-wise over all workers, in place: on return every
 * worker's buf holds the same sum, bitwise. The order of the additions is
 * fixed by rank, so results are reproducible. n may be 0. */
DEFT_API deft_status_t deft_comm_allreduce_sum_f32(deft_comm_t *comm,
                                                   float *buf, size_t n);

/* Each worker contributes `bytes` bytes from send; on return recv holds
 * size * bytes bytes, worker r's block at offset r * bytes. send and recv
 * must not overlap. */
DEFT_API deft_status_t deft_comm_allgather(deft_comm_t *comm, const void *send,
                                           size_t bytes, void *recv);

/* Copies root's buf (bytes bytes) into every other worker's buf. */
DEFT_API deft_status_t deft_comm_broadcast(deft_comm_t *comm, void *buf,
                                           size_t bytes, int root);

/* Returns when every worker has entered the barrier. */
DEFT_API deft_status_t deft_comm_barrier(deft_comm_t *comm);

/* Sets the link of the alpha-beta cost model: bandwidth beta = gbps
 * Gbit/s and latency alpha = latency_us microseconds. From then on every
 * collective adds its modeled time to stats.modeled_s, with n the bytes
 * per worker and K workers:
 *   allreduce  2(K-1) (alpha + n / (K beta))   (ring)
 *   allgather  (K-1) (alpha + n / beta)        (ring; n = one block)
 *   broadcast  ceil(log2 K) (alpha + n / beta) (binomial tree)
 *   barrier    ceil(log2 K) alpha
 * so the communication time of a run on a slower cluster link can be
 * estimated next to what was measured. gbps > 0, latency_us >= 0; gbps = 0
 * turns the model off. Not collective. */
DEFT_API deft_status_t deft_comm_set_link(deft_comm_t *comm, double gbps,
                                          double latency_us);

/* Sets the collective watchdog: from now on a collective of comm that has
 * not completed `seconds` after it began (a peer stopped, dead or behind a
 * broken link) ends the run instead of waiting forever. It fires between
 * seconds and 1.1 x seconds, with a message that names the collective,
 * its sequence number, this rank and the timeout:
 *   threads backend: the collective (and every other worker's) returns
 *     DEFT_ERR_COMM with that message in deft_last_error();
 *   MPI backend: a blocked MPI call cannot be interrupted, so the watchdog
 *     writes the message to stderr (the one place the library writes) and
 *     calls MPI_Abort, which ends the whole job, as NCCL's watchdog does
 *     (below MPI_THREAD_MULTIPLE: _exit(1), and the launcher ends the job).
 * A threads worker stuck outside collectives (in its own code) is not
 * interrupted: the others fail, but deft_run_threads still joins it.
 * seconds in [0, 1e7]; 0 turns the watchdog off (the default). Costs one
 * sleeping thread per communicator and a few atomic stores per
 * collective. Call it between collectives, not during one. Errors:
 * DEFT_ERR_INVALID_ARG, DEFT_ERR_UNSUPPORTED (a custom backend of more
 * than one rank: its callbacks cannot be interrupted; use the engine's own
 * timeout), DEFT_ERR_NOMEM. */
DEFT_API deft_status_t deft_comm_set_timeout(deft_comm_t *comm, double seconds);

/* Copies this rank's traffic counters into *out. */
DEFT_API deft_status_t deft_comm_get_stats(const deft_comm_t *comm,
                                           deft_comm_stats_t *out);
/* Sets this rank's traffic counters to zero. NULL-safe. */
DEFT_API void deft_comm_reset_stats(deft_comm_t *comm);

/* Threads backend: runs fn(comm, arg) on nworkers threads of this process,
 * each with its own communicator (rank 0..nworkers-1), and waits for all.
 * Collectives go through shared memory with a fixed reduction order.
 * Returns DEFT_OK if every worker returned DEFT_OK; otherwise the status of
 * the first worker to fail, and deft_last_error() on the calling thread
 * holds that worker's message prefixed by its rank. When one worker fails
 * or returns early, the others' pending and later collectives return
 * DEFT_ERR_COMM instead of waiting forever. nworkers is in
 * [1, DEFT_MAX_WORKERS]. */
typedef deft_status_t (*deft_worker_fn)(deft_comm_t *comm, void *arg);
DEFT_API deft_status_t deft_run_threads(int nworkers, deft_worker_fn fn,
                                        void *arg);

/* 1 if this build of the library has the MPI backend (see the end of this
 * header), 0 if not. */
DEFT_API int deft_have_mpi(void);

/* Custom backend: collectives supplied by the caller, so that deft can ride
 * on any engine (torch.distributed, NCCL, a job's own transport). Each
 * callback gets the ctx given at create and must behave like the deft
 * collective of the same name, with the same arguments (see above: sum in
 * place; rank r's block at recv + r * bytes; root's buf copied to all) and
 * return DEFT_OK, or any other status on failure. deft still checks the
 * arguments, counts bytes, keeps the statistics and the link model, and
 * turns a failure into DEFT_ERR_COMM whose message names the collective,
 * its sequence number and this rank, plus describe_error(ctx)'s text when
 * that optional callback is set (it may return NULL). Callbacks are called
 * only from the thread that calls the deft collective. A worker whose
 * callback fails should stop; ending the other workers' pending
 * collectives (a timeout, an abort, a closed connection) is the engine's
 * part. */
typedef struct {
    deft_status_t (*allreduce_sum_f32)(void *ctx, float *buf, size_t n);
    deft_status_t (*allgather)(void *ctx, const void *send, size_t bytes,
                               void *recv);
    deft_status_t (*broadcast)(void *ctx, void *buf, size_t bytes, int root);
    deft_status_t (*barrier)(void *ctx);
    const char *(*describe_error)(void *ctx); /* optional, may be NULL */
} deft_comm_ops_t;

/* Creates a communicator for worker `rank` of `size` (1 <= size <= 2^20,
 * 0 <= rank < size) whose collectives call ops (copied) with ctx (not
 * owned; it must outlive the communicator). Every callback but
 * describe_error is required. Not collective: the engine behind ops is
 * assumed to be set up already. Free it with deft_comm_destroy. */
DEFT_API deft_status_t deft_comm_create_custom(deft_comm_t **out,
                                               const deft_comm_ops_t *ops,
                                               void *ctx, int rank, int size);

/* A communicator of this worker alone (rank 0 of 1, like MPI_COMM_SELF):
 * collectives are local copies, so one process can use the optimizer with
 * no engine. Free it with deft_comm_destroy. */
DEFT_API deft_status_t deft_comm_create_self(deft_comm_t **out);

/* Frees a communicator from deft_comm_create_custom, deft_comm_create_self,
 * deft_comm_create_mpi or deft_comm_create_mpi_world (for MPI collective,
 * as MPI_Comm_free:
 * call it before MPI_Finalize, after which it only frees deft's memory).
 * NULL-safe; does nothing for the communicators that deft_run_threads
 * hands to its workers. */
DEFT_API void deft_comm_destroy(deft_comm_t *comm);

/* MPI without MPI's header (for bindings such as Python's): initializes
 * MPI (asking for MPI_THREAD_MULTIPLE, which the watchdog of
 * deft_comm_set_timeout uses) if it is not initialized yet, then does
 * deft_comm_create_mpi(out, MPI_COMM_WORLD). Collective over all ranks of
 * the job. DEFT_ERR_UNSUPPORTED when the build has no MPI,
 * DEFT_ERR_INVALID_USAGE when MPI was already finalized. */
DEFT_API deft_status_t deft_comm_create_mpi_world(deft_comm_t **out);

/* Finalizes MPI if deft_comm_create_mpi_world initialized it and it is not
 * finalized yet; otherwise does nothing (MPI initialized by the caller is
 * the caller's to finalize). Collective. Destroy deft's MPI communicators
 * first. */
DEFT_API deft_status_t deft_mpi_finalize(void);

/* ------------------------------------------------------------------------ */
/* Optimizer (ask / tell)                                                   */
/* ------------------------------------------------------------------------ */

typedef enum {
    DEFT_ALGO_SGD = 0, /* full-precision momentum SGD (dense allreduce)      */
    DEFT_ALGO_EF,      /* error feedback (momentum variant)                  */
    DEFT_ALGO_DEF,     /* detached error feedback; output x - avg(e)         */
    DEFT_ALGO_DEFA,    /* DEF-A: DEF's steps, output x                       */
    DEFT_ALGO_SAEF,    /* step-ahead EF (lambda = 1) with error averaging    */
    DEFT_ALGO_PSYNC,   /* partial synchronization of local models (CSER)     */
    DEFT_ALGO_EF21,    /* EF21: compressed gradient differences (no momentum) */
    DEFT_ALGO_ECLK     /* error-compensated loopless Katyusha (convex)       */
} deft_algo_t;

typedef enum {
    DEFT_COMP_NONE = 0, /* send everything                                  */
    DEFT_COMP_RBGS,     /* one random contiguous block (shared seed)        */
    DEFT_COMP_RANDK,    /* k random coordinates (shared seed)               */
    DEFT_COMP_TOPK,     /* k largest magnitudes, with indices (allgather)   */
    DEFT_COMP_SIGN,     /* sign bits scaled by mean magnitude (allgather)   */
    DEFT_COMP_QSGD,     /* stochastic s-level quantization (allgather)      */
    DEFT_COMP_SCALE,    /* C(v) = v / ratio, dense: realizes SGD with
                           iterate averaging (DEF paper, Lemma C.1); it
                           saves no traffic                                 */
    DEFT_COMP_POWERSGD, /* rank-r PowerSGD (Vogels et al. 2019) per matrix
                           of the layout, warm-started; two allreduces     */
    DEFT_COMP_FP16,     /* IEEE half precision, round to nearest even       */
    DEFT_COMP_BF16,     /* bfloat16, round to nearest even                  */
    DEFT_COMP_RANDK_PRIVATE /* randk with each worker's own k coordinates
                           (stream keyed by seed, step, tensor and rank),
                           with indices (allgather)                         */
} deft_compressor_kind_t;

typedef enum {
    DEFT_SCOPE_TENSOR = 0, /* compress each tensor of the layout on its own */
    DEFT_SCOPE_GLOBAL      /* compress the flattened vector as one tensor   */
} deft_scope_t;

typedef struct {
    deft_algo_t algo;
    deft_compressor_kind_t compressor;
    double ratio;        /* n/k for rbgs, randk, topk, randk-private;
                            1/delta for scale                               */
    deft_scope_t scope;
    int randk_scaled;    /* randk, randk-private: 1 multiplies kept values
                            by n/k                                          */
    int qsgd_levels;     /* qsgd: number of levels s, 1..127                */
    float lambda;        /* def/defa: gradient at x - lambda*e, in [0, 1]   */
    float lr;            /* learning rate eta > 0                           */
    float momentum;      /* mu in [0, 1)                                    */
    float weight_decay;  /* wd >= 0, added as wd * point to the gradient    */
    int avg_period;      /* saef: average errors every P steps; 0 = never   */
    uint64_t seed;       /* shared seed of all random choices               */
    /* eclk only (ignored by the other algorithms), for a problem
     * min (1/K) sum_k f_k(x) whose f_k are averages of eclk_n parts, each
     * convex and L-smooth, and whose average is mu-strongly convex:   */
    double eclk_L;       /* smoothness L of the parts, > 0 (required)       */
    double eclk_mu;      /* strong convexity mu, in (0, L] (required)       */
    double eclk_p;       /* anchor update probability in (0, 1];
                            0 = the theory's 1/eclk_n                        */
    double eclk_theta1;  /* momentum weight in (0, 1/2]; 0 = the theory's
                            min(sqrt(2 mu / (3 L p)), 1/2), which is
                            min(sqrt(2 mu n / (3 L)), 1/2) for p = 1/n     */
    uint64_t eclk_n;     /* parts per worker (local samples), >= 1; needed
                            when eclk_p or eclk_theta1 is 0                  */
    int powersgd_rank;   /* powersgd: rank r in [1, 1024] of each matrix's
                            approximation (capped at min(rows, cols))       */
    float dampening;     /* tau in [0, 1]: m = mu m + (1 - tau) g, except a
                            tensor's first step, which takes m = g (as
                            torch.optim.SGD); ignored when momentum is 0    */
    int nesterov;        /* 1: step along g + mu m instead of m (the form of
                            torch.optim.SGD); needs momentum > 0 and
                            dampening 0                                     */
} deft_optim_config_t;

/* The DEF paper's defaults: DEF with RBGS at ratio 256, lambda 0.3,
 * momentum 0.9, lr 0.1; the eclk fields are 0 (eclk needs L and mu);
 * powersgd rank 1; no dampening, no Nesterov. Fields not named are 0.
 * This is the one place the defaults are written: the option table below,
 * the CLI's help and the Python binding read them from a config it
 * initialized. */
#define DEFT_OPTIM_CONFIG_INIT                                              \
    {                                                                       \
        .algo = DEFT_ALGO_DEF, .compressor = DEFT_COMP_RBGS, .ratio = 256.0, \
        .scope = DEFT_SCOPE_TENSOR, .qsgd_levels = 16, .lambda = 0.3f,      \
        .lr = 0.1f, .momentum = 0.9f, .powersgd_rank = 1                    \
    }

/* Fills *cfg with DEFT_OPTIM_CONFIG_INIT, for bindings that cannot use the
 * macro. NULL-safe. */
DEFT_API void deft_optim_config_init(deft_optim_config_t *cfg);

/* sizeof(deft_optim_config_t), for bindings that hold a config as opaque
 * bytes and fill it through deft_optim_config_set. */
DEFT_API size_t deft_optim_config_size(void);

/* The configuration, described: one entry per deft_optim_config_t field,
 * with its name, type, range and help, in one table that the library's
 * checks, the CLI's flags, help and errors, and the Python binding's
 * keywords all read. Each algorithm's and compressor's own parameters are
 * declared in its file and joined to the table. */
typedef enum {
    DEFT_OPTION_FLAG = 0, /* int, 0 or 1 (a flag without a value in the CLI) */
    DEFT_OPTION_INT,      /* int                                            */
    DEFT_OPTION_LONG,     /* long                                           */
    DEFT_OPTION_UINT64,   /* uint64_t                                       */
    DEFT_OPTION_FLOAT,    /* float                                          */
    DEFT_OPTION_DOUBLE,   /* double                                         */
    DEFT_OPTION_CHOICE,   /* an enum, set and shown by name                 */
    DEFT_OPTION_STRING,   /* const char *, the text given (not copied)      */
    DEFT_OPTION_LIST      /* a comma-separated list (the training run's
                             lr decay points)                               */
} deft_option_type_t;

/* deft_option_t.bounds: the bound itself is not allowed. */
enum { DEFT_OPTION_MIN_OPEN = 1, DEFT_OPTION_MAX_OPEN = 2 };

typedef struct {
    const char *name;     /* the field's name, the Python keyword           */
    const char *flag;     /* the CLI's flag, without "--" ("wd")            */
    const char *metavar;  /* the value in help ("R"); NULL for a FLAG       */
    deft_option_type_t type;
    double min, max;      /* numbers: the allowed range (finite values)     */
    int bounds;           /* DEFT_OPTION_MIN_OPEN | DEFT_OPTION_MAX_OPEN     */
    const char *zero;     /* non-NULL: 0 is allowed too, and means this     */
    const char *word;     /* non-NULL: this word is allowed too ("auto")    */
    int word_value;       /*   and sets the field to this value             */
    const char *implicit; /* the value the CLI flag means without one
                             (FLAG: "1"), or NULL: a value is required     */
    int required;         /* 1: 0 means "not given", and the algorithms
                             that read it refuse to run without it (eclk's
                             L and mu); a field of an algorithm that is
                             not running is then not checked at all        */
    /* CHOICE: the name of value v (0, 1, ...), NULL when v is not one. */
    const char *(*choice)(int v);
    uint32_t algos;       /* bit a: algorithm a reads the field             */
    uint32_t compressors; /* bit c: compressor c reads it                   */
    const char *help;     /* one line                                       */
} deft_option_t;

/* The number of options, and option i (NULL for i >= the number). */
DEFT_API size_t deft_optim_option_count(void);
DEFT_API const deft_option_t *deft_optim_option(size_t i);
/* For bindings that read no structs: option i's name (NULL for i >= the
 * number), and the name of value v of the choice option called name
 * ("algo", "compressor", "scope"; NULL past the last value or for another
 * option). */
DEFT_API const char *deft_optim_option_name(size_t i);
DEFT_API const char *deft_optim_option_choice(const char *name, int v);
/* The type of the option called name as a word: "flag", "int", "long",
 * "uint64", "float", "double", "choice", "string" or "list" (NULL for an
 * unknown name), for bindings that read no structs. */
DEFT_API const char *deft_optim_option_type(const char *name);
/* The option called name: its field name or its flag, with or without a
 * leading "--", '-' and '_' alike ("weight_decay", "--wd"); NULL if none. */
DEFT_API const deft_option_t *deft_optim_option_find(const char *name);

/* What o allows, as a phrase for messages and help: "a number >= 1",
 * "an integer in [1, 127]", "0 or 1", "one of tensor or global" (with
 * ", or 0 (derive from theory)" when o->zero is set, ", or auto" for a
 * word). Writes at most n bytes (NUL included) into buf and returns buf
 * ("" for NULL o). */
DEFT_API const char *deft_option_allowed(const deft_option_t *o, char *buf,
                                         size_t n);

/* Sets the field called name (as deft_optim_option_find) from text: a
 * number, an integer, 0/1/true/false for flags, or a choice's name.
 * Checks the type and the range and leaves cfg unchanged on error:
 * DEFT_ERR_INVALID_ARG with a message that starts with name as given and
 * the value, and says what is allowed, e.g. "--ratio '0.5': must be a
 * number >= 1", or for an unknown name the list of valid ones. */
DEFT_API deft_status_t deft_optim_config_set(deft_optim_config_t *cfg,
                                             const char *name,
                                             const char *value);
/* Writes the field called name into buf (n bytes) as text that set reads
 * back to the same value (a choice by its name). DEFT_ERR_INVALID_ARG for
 * an unknown name or a buffer too small. */
DEFT_API deft_status_t deft_optim_config_get(const deft_optim_config_t *cfg,
                                             const char *name, char *buf,
                                             size_t n);
/* A config's method in words, for logs and messages: "def + rbgs (ratio
 * 256)", "def + powersgd (powersgd-rank 2)", "sgd (no compression)": the
 * algorithm, the compressor and the values of the compressor's own
 * options, from the table. Writes at most n bytes into buf; returns buf. */
DEFT_API const char *deft_optim_config_describe(const deft_optim_config_t *cfg,
                                                char *buf, size_t n);

/* Checks a whole config as deft_optim_create does: every field is in its
 * range, also one the chosen algorithm or compressor does not read (a
 * value that cannot be honoured is refused, not ignored), except the
 * required fields of another algorithm (eclk's L and mu, 0 until given);
 * then the algorithm's and compressor's own rules (psync needs a
 * selecting compressor, eclk needs L and mu with mu <= L, ...).
 * DEFT_ERR_INVALID_ARG naming the field. */
DEFT_API deft_status_t deft_optim_config_check(const deft_optim_config_t *cfg);

/* What one step did, from this worker's view. */
typedef struct {
    uint64_t step;          /* index of the step just taken, from 0          */
    uint64_t bytes_sent;    /* wire bytes this worker sent in the step       */
    uint64_t payload_bytes; /* bytes this worker handed to collectives       */
    uint64_t msg_bytes;     /* size of this worker's compressed message      */
} deft_step_info_t;

typedef struct deft_optim deft_optim_t;

/* Creates an optimizer for the model x0 (layout->sizes summed floats).
 * Collective: every worker of comm calls it with the same layout and cfg
 * (fields the chosen algorithm and compressor ignore may differ);
 * rank 0's x0 is broadcast so that all workers start from the same model.
 * All buffers are allocated here; steps allocate nothing. If any worker's
 * arguments are invalid, every worker gets an error (no one is left
 * waiting). The optimizer keeps comm (not owned; it must outlive the
 * optimizer) and copies x0, layout and cfg. */
DEFT_API deft_status_t deft_optim_create(deft_optim_t **out, deft_comm_t *comm,
                                         const deft_layout_t *layout,
                                         const float *x0,
                                         const deft_optim_config_t *cfg);

/* Frees everything the optimizer allocated. NULL-safe. Not collective. */
DEFT_API void deft_optim_destroy(deft_optim_t *opt);

/* Sets *point to where this worker must evaluate its gradient for the next
 * step (for def/defa/saef the detached point x - lambda*e_k; for eclk the
 * coupled point x, see deft_optim_eclk_anchor). The buffer is owned by the
 * optimizer; its contents are valid until the next tell. Its address is
 * the same on every call for the life of the optimizer, so a framework may
 * keep views into it (its parameters): tell and state_load change what it
 * holds, ask brings it to the next point. Calling ask twice without tell
 * returns the same point. Not collective. */
DEFT_API deft_status_t deft_optim_ask(deft_optim_t *opt, const float **point);

/* Takes this worker's gradient at the point from ask (dim floats, read
 * only; not kept; for eclk the variance-reduced estimate g_k described at
 * deft_optim_eclk_anchor), adds weight decay, compresses, communicates and
 * updates the model. Collective. info may be NULL. Returns
 * DEFT_ERR_INVALID_USAGE without a preceding ask, and DEFT_ERR_DIVERGED on
 * every worker if any worker's gradient or the averaged update holds a NaN
 * or Inf; after that the optimizer's state is undefined and it should be
 * destroyed. */
DEFT_API deft_status_t deft_optim_tell(deft_optim_t *opt, const float *grad,
                                       deft_step_info_t *info);

/* Writes the model to evaluate or save into model (dim floats): def ->
 * x - avg(e), psync -> avg(x_k), eclk -> y, all others -> x. Collective
 * (def and psync allreduce a dense vector; that traffic is not part of any
 * step). */
DEFT_API deft_status_t deft_optim_output(deft_optim_t *opt, float *model);

/* eclk, error-compensated loopless Katyusha (Qian, Richtarik & Zhang
 * 2020), keeps three shared sequences y (the output), z and the anchor w,
 * all x0 at create, and this worker's error e_k. A step:
 *   ask:  x = theta1 z + theta2 w + (1 - theta1 - theta2) y   (theta2 = 1/2)
 *   the caller computes at x, for one of its parts i drawn at random,
 *         g_k = grad f_{k,i}(x) - grad f_{k,i}(w) + grad f_k(w)
 *         (grad f_k(w), its full local gradient at the anchor, is cached by
 *         the caller and recomputed whenever the anchor version changes)
 *   tell(g_k): g_k += wd x; d_k = C((eta/L) g_k + e_k);
 *         e_k += (eta/L) g_k - d_k; z+ = (eta sigma x + z - avg(d_k)) /
 *         (1 + eta sigma); y+ = x + theta1 (z+ - z); z = z+; and with
 *         probability p (a coin shared by all workers, drawn from (seed,
 *         step)) the anchor moves to the y of before the step, w = y.
 * sigma = mu/L, eta = theta2 / ((1 + theta2) theta1). With compressor none
 * it is L-Katyusha (Kovalev, Horvath & Richtarik 2020) on the averaged
 * problem. cfg->lr is not used; deft_optim_params returns y. */

/* The anchor w (dim floats, owned by the optimizer, valid until destroy;
 * its contents change only inside tell and state_load) and its version,
 * a number that changes whenever w does (and on state_load), so that a
 * caller keeping grad f_k(w) knows when to recompute it: it is 1 after
 * create. eclk only: other algorithms give DEFT_ERR_INVALID_ARG, as do
 * NULL arguments. Not collective. */
DEFT_API deft_status_t deft_optim_eclk_anchor(const deft_optim_t *opt,
                                              const float **w,
                                              uint64_t *version);

/* Changes the learning rate of every group (see below) for the following
 * steps (lr > 0). Not collective: every worker sets the same lr between
 * the same steps. */
DEFT_API deft_status_t deft_optim_set_lr(deft_optim_t *opt, float lr);
/* The learning rate of group 0 (cfg->lr, set_lr's, set_groups' or a loaded
 * state's); 0 for NULL. */
DEFT_API float deft_optim_get_lr(const deft_optim_t *opt);

/* Per-tensor hyperparameters, as torch.optim's parameter groups: a table
 * of groups, and each tensor of the layout in one of them. Where an
 * algorithm has an element-wise step, tensor t's elements use their
 * group's values:
 *   g = grad + weight_decay * point
 *   m = momentum * m + (1 - dampening) g   (m = g on the tensor's first
 *                                           step, or when momentum is 0)
 *   u = nesterov ? g + momentum * m : m
 *   and the algorithm's step with lr * u (sgd: x -= lr u with u from the
 *   averaged g; ef/def/defa/saef: p = lr u + e; psync: x_k -= lr u).
 * ef21 uses lr and weight_decay (it has no momentum), eclk weight_decay
 * only. The compressors are unchanged: they see the whole vector. After
 * create there is one group, cfg's lr, momentum, dampening, weight_decay
 * and nesterov, holding every tensor. */
typedef struct {
    float lr;           /* >= 0, finite (0 leaves the tensors where they
                           are, as torch allows)                             */
    float momentum;     /* in [0, 1)                                         */
    float dampening;    /* in [0, 1]                                         */
    float weight_decay; /* >= 0, finite                                      */
    int nesterov;       /* 0 or 1; 1 needs momentum > 0 and dampening 0      */
} deft_group_t;

/* Replaces the group table with n_groups groups (1 <= n_groups <= 65536;
 * a group may hold no tensor) and puts tensor t in group tensor_group[t]
 * (n_tensors entries, each < n_groups; NULL keeps each tensor's group,
 * which must then exist).
 * Takes effect from the next tell; momentum and error are kept. Checks
 * every value first and changes nothing on error (DEFT_ERR_INVALID_ARG
 * naming the group and field). Not collective, like set_lr: every worker
 * makes the same calls between the same steps (schedulers do). */
DEFT_API deft_status_t deft_optim_set_groups(deft_optim_t *opt,
                                             size_t n_groups,
                                             const deft_group_t *groups,
                                             const uint32_t *tensor_group);
/* The number of groups (0 for NULL), group g's values into *out, and the
 * group of tensor t. */
DEFT_API size_t deft_optim_num_groups(const deft_optim_t *opt);
DEFT_API deft_status_t deft_optim_get_group(const deft_optim_t *opt, size_t g,
                                            deft_group_t *out);
DEFT_API deft_status_t deft_optim_tensor_group(const deft_optim_t *opt,
                                               size_t t, uint32_t *group);

/* Creates in *out the optimizer of a grown model: from's tensors followed
 * by those of `added` (added->rows as in a layout), whose initial values
 * are x0_added (their sizes summed; rank 0's are broadcast). Every vector
 * of from (model, error, momentum, EF21's estimates, eclk's z and w,
 * powersgd's warm start) is carried over bitwise, with the group table,
 * the tensors' groups and the step counter; the new tensors start with
 * zero error, momentum and estimates, in group 0, and take their first
 * momentum step as a new tensor does. from is not changed (destroy it
 * when its buffers are no longer viewed), and *out uses from's
 * communicator and config. Collective like create: every worker passes
 * the same layout, and an invalid argument on any worker fails every
 * worker (*out NULL). Errors: DEFT_ERR_INVALID_ARG, DEFT_ERR_NOMEM,
 * DEFT_ERR_COMM. */
DEFT_API deft_status_t deft_optim_create_grown(deft_optim_t **out,
                                               const deft_optim_t *from,
                                               const deft_layout_t *added,
                                               const float *x0_added);

/* 1 when the model deft_optim_output gives is the point where this
 * worker takes its gradients (sgd, ef, ef21; defa with lambda 0), so that
 * statistics gathered in training forward passes (batch norm's running
 * mean and variance) describe it; 0 otherwise (def, defa and saef
 * evaluate x or x - avg(e) but train at x - lambda e_k, psync averages
 * the x_k, eclk outputs y but trains at the coupled point). 0 for NULL. */
DEFT_API int deft_optim_output_is_point(const deft_optim_t *opt);

/* Read-only views of internal state, valid until the next tell or destroy:
 * the model this worker steps (x, x_k for psync, y for eclk) and this
 * worker's compression error e_k (NULL for algorithms that keep none: sgd,
 * ef21, and psync, whose error x_k - avg(x_k) is implicit). */
DEFT_API deft_status_t deft_optim_params(const deft_optim_t *opt,
                                         const float **x);
DEFT_API deft_status_t deft_optim_error(const deft_optim_t *opt,
                                        const float **e);

/* Number of floats in the model; 0 for NULL. */
DEFT_API size_t deft_optim_dim(const deft_optim_t *opt);
/* Number of steps taken so far; 0 for NULL. */
DEFT_API uint64_t deft_optim_steps(const deft_optim_t *opt);

/* Checkpointing. This worker's optimizer state -- the step counter, the
 * group table (lr, momentum, dampening, weight decay, nesterov) and each
 * tensor's group, which tensors have taken their first momentum step, and
 * every vector it keeps (model, error, momentum, EF21's estimates, eclk's z
 * and anchor w, powersgd's warm start) -- as a self-describing byte blob of
 * deft_optim_state_size() bytes (it changes with the number of groups),
 * ending with a CRC-32 of everything before it. Random choices are keyed
 * by (seed, step), so a state restored on an optimizer made with the same
 * layout, config and worker count continues bitwise as if never
 * interrupted. save writes size bytes into buf (size must equal
 * deft_optim_state_size). load checks the blob (magic, version, checksum,
 * algorithm, compressor, the layout's tensor sizes, length, the groups'
 * values) and returns DEFT_ERR_FORMAT naming the mismatch, leaving the
 * optimizer unchanged; a changed byte anywhere fails the checksum. Blobs
 * of the earlier version 1 (one learning rate, no groups, no checksum)
 * still load, into one group with this optimizer's config values and the
 * blob's lr. Not collective: every worker saves and loads its own state. */
DEFT_API size_t deft_optim_state_size(const deft_optim_t *opt);
DEFT_API deft_status_t deft_optim_state_save(const deft_optim_t *opt, void *buf,
                                             size_t size);
DEFT_API deft_status_t deft_optim_state_load(deft_optim_t *opt, const void *buf,
                                             size_t size);

/* How deft_optim_state_reshard fills what differs between workers. */
typedef enum {
    DEFT_RESHARD_NONE = 0, /* (deft_train_config_t) refuse another count */
    DEFT_RESHARD_MEAN = 1, /* keep the mean over workers of every vector */
    DEFT_RESHARD_ZERO = 2  /* reset errors, momenta and ef21's estimates */
} deft_reshard_t;

/* Re-sharding: the states of a run's k_in workers (in: k_in blobs of size
 * bytes back to back, as deft_optim_state_save wrote them at one step)
 * become k_out states (out: k_out * size bytes) that k_out workers of an
 * optimizer made with the same layout and config load to continue the run.
 * What every worker holds the same copy of is kept bitwise: the step (so
 * the lr schedule and the shared random choices continue), the groups, the
 * shared model x (eclk's y, z, w; ef21's g; sgd's momentum), powersgd's Q.
 * Vectors local to a worker -- errors e_k, momenta m_k, ef21's g_k,
 * psync's models x_k -- with DEFT_RESHARD_MEAN keep their mean over
 * workers: with K' < K new worker j takes the mean of old workers
 * floor(k K'/K) = j, with K' > K new worker j copies old worker
 * floor(j K/K'), and unless one count divides the other every new worker
 * adds the one correction (computed in double) that makes the new mean
 * the old one. So DEF's output x - avg(e), psync's avg(x_k) and the average
 * momentum are kept, to within one float rounding per element. With
 * DEFT_RESHARD_ZERO errors, momenta and ef21's estimates restart at zero
 * (momenta as fresh buffers), as systems that drop them on a restart do;
 * psync's models still keep their mean. k_out = k_in copies the states.
 * Errors: DEFT_ERR_INVALID_ARG for a NULL pointer, a count outside
 * [1, 1024] or another mode; DEFT_ERR_FORMAT for a blob that is corrupt,
 * of version 1, or not from the same run and step as worker 0's. */
DEFT_API deft_status_t deft_optim_state_reshard(const void *in, size_t size,
                                                int k_in, void *out, int k_out,
                                                deft_reshard_t mode);
/* The rules' names ("none", "mean", "zero"; "?" for others) and their
 * inverse (DEFT_ERR_INVALID_ARG naming the valid ones). */
DEFT_API const char *deft_reshard_name(deft_reshard_t mode);
DEFT_API deft_status_t deft_reshard_parse(const char *name, deft_reshard_t *out);

/* Names used by the CLI and logs ("def", "rbgs", ...), and their inverse.
 * The name functions never return NULL ("?" for unknown values); the parse
 * functions return DEFT_ERR_INVALID_ARG for unknown names, listing the
 * valid ones. The names come from the algorithms' and compressors' own
 * files; iterate them with deft_algo_name(0, 1, ...) until "?". */
DEFT_API const char *deft_algo_name(deft_algo_t algo);
DEFT_API const char *deft_compressor_name(deft_compressor_kind_t kind);
DEFT_API deft_status_t deft_algo_parse(const char *name, deft_algo_t *out);
/* One line on what an algorithm or compressor is, from its file ("" for
 * unknown values). */
DEFT_API const char *deft_algo_describe(deft_algo_t algo);
DEFT_API const char *deft_compressor_describe(deft_compressor_kind_t kind);
DEFT_API deft_status_t deft_compressor_parse(const char *name,
                                             deft_compressor_kind_t *out);

#ifdef __cplusplus
}
#endif

#endif /* DEFT_H */

/* ------------------------------------------------------------------------ */
/* MPI backend                                                              */
/* ------------------------------------------------------------------------ */

/* Declared when <mpi.h> was included before this header (it may also be
 * included again after <mpi.h>). The library must have been built with MPI
 * (deft_have_mpi() == 1) and against the same MPI implementation. */
#if defined(MPI_VERSION) && !defined(DEFT_H_MPI)
#define DEFT_H_MPI

#ifdef __cplusplus
extern "C" {
#endif

/* Creates a communicator whose workers are the ranks of comm (rank and size
 * as in comm). Collective over comm; call it between MPI_Init and
 * MPI_Finalize. deft works on a duplicate of comm (MPI_Comm_dup) with
 * MPI_ERRORS_RETURN, so its traffic never mixes with the caller's and an
 * MPI error becomes DEFT_ERR_COMM with MPI's description in
 * deft_last_error(); the caller's comm is not changed. Each collective is
 * one MPI call (MPI_Allreduce with MPI_IN_PLACE and MPI_SUM, MPI_Allgather,
 * MPI_Bcast, MPI_Barrier; split only when a count exceeds INT_MAX), so the
 * order of the additions is MPI's: Open MPI's algorithms give every rank
 * the same bits (the MPI standard only recommends it), which may differ in
 * the last bits from the threads backend's sums. Unlike the threads
 * backend, a rank that fails or returns early is not detected: the others
 * wait in their next collective. A failing rank should call MPI_Abort; a
 * rank that dies makes the MPI launcher end the whole job. A communicator
 * used from a thread other than MPI's main thread needs MPI initialized
 * with MPI_Init_thread at MPI_THREAD_SERIALIZED or higher; the watchdog
 * (deft_comm_set_timeout) calls MPI_Abort only at MPI_THREAD_MULTIPLE and
 * otherwise ends the rank with _exit(1). Errors:
 * DEFT_ERR_INVALID_ARG (out NULL, comm MPI_COMM_NULL or an
 * intercommunicator), DEFT_ERR_INVALID_USAGE (MPI not initialized or
 * already finalized), DEFT_ERR_COMM, DEFT_ERR_NOMEM (on every rank). */
DEFT_API deft_status_t deft_comm_create_mpi(deft_comm_t **out, MPI_Comm comm);

/* deft_comm_destroy (declared above) frees such a communicator and its
 * duplicate of the MPI communicator. */

#ifdef __cplusplus
}
#endif

#endif /* MPI_VERSION && !DEFT_H_MPI */

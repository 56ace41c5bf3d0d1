/* The optimizer's state and the table each algorithm fills in. One file per
 * algorithm in src/optim/ defines its deft_algo_ops_t; optim.c does argument
 * checks, allocation and dispatch. */
#ifndef DEFT_OPTIM_INTERNAL_H
#define DEFT_OPTIM_INTERNAL_H

#include "compress/compress.h"
#include "core/options.h"
#include "deft.h"

typedef struct deft_algo_ops deft_algo_ops_t;

enum { DEFT_MAX_GROUPS = 65536 }; /* see deft_optim_set_groups */

struct deft_optim {
    deft_comm_t *comm;
    int rank, nworkers;
    deft_optim_config_t cfg;
    const deft_algo_ops_t *ops;
    size_t d;          /* dimension of the model                            */
    size_t n_tensors;
    size_t *sizes;     /* (n_tensors,) copy of the layout                   */
    size_t *rows;      /* (n_tensors,) the layout's rows, 0s when it had none */
    size_t *offs;      /* (n_tensors + 1,) tensor t is [offs[t], offs[t+1]) */

    /* Per-tensor hyperparameters (deft_optim_set_groups), at most
     * DEFT_MAX_GROUPS groups. */
    size_t n_groups;
    deft_group_t *groups; /* (n_groups,) group 0 starts as cfg's values    */
    uint32_t *tgroup;  /* (n_tensors,) each tensor's group                 */
    uint8_t *m_started; /* (n_tensors,) 1 once the tensor's momentum took a
                           step (its first step takes m = g, no dampening) */

    /* Every vector below is (d,) floats, allocated at create when the
     * algorithm's ops ask for it, else NULL. */
    float *x;          /* the model this worker steps (x, or x_k for psync) */
    float *e;          /* local compression error e_k                       */
    float *m;          /* local momentum m_k                                */
    float *point;      /* detached point x - lambda*e; scratch for others   */
    float *gk;         /* ef21: this worker's gradient estimate g_k         */
    float *g;          /* ef21: the shared estimate g = avg(g_k)            */
    float *z;          /* eclk: the mirror sequence z (x holds y)           */
    float *w;          /* eclk: the anchor w                                */
    float *delta;      /* eclk: scratch for avg(C(p_k)); not state          */

    deft_compressor_t *comp;
    void *msg;         /* (msg_bytes,) this worker's message                */
    void *gathered;    /* (nworkers, msg_bytes) for non-linear compressors  */
    size_t msg_bytes;

    float lambda;      /* the lambda in effect (saef: 1)                    */
    /* eclk: the parameters in effect (cfg's, or derived from theory) and
     * the anchor's version, bumped whenever w changes. */
    double eclk_theta1, eclk_theta2, eclk_p, eclk_eta, eclk_sigma;
    uint64_t anchor_version;
    uint64_t step;
    int asked;
};

/* The constants of tensor t's element-wise step: lr, momentum mu, the
 * factor dc of the new gradient in m = mu m + dc g (1 - dampening, or 1 on
 * the tensor's first step or without momentum), weight decay, nesterov. */
typedef struct {
    float lr, mu, dc, wd;
    int nesterov;
} deft_hp_t;

static inline deft_hp_t deft_tensor_hp(const deft_optim_t *o, size_t t)
{
    const deft_group_t *g = &o->groups[o->tgroup[t]];
    deft_hp_t h = {g->lr, g->momentum, 1.0f, g->weight_decay, g->nesterov};
    if (g->momentum != 0.0f && o->m_started[t])
        h.dc = 1.0f - g->dampening;
    return h;
}

/* One element's momentum step: m = mu m + dc g, and the direction u the
 * model moves along (g + mu m with Nesterov, else m). */
static inline float deft_momentum(const deft_hp_t *h, float g, float *m)
{
    float mi = h->mu * *m + h->dc * g;
    *m = mi;
    return h->nesterov ? g + h->mu * mi : mi;
}

/* The group a config describes: its lr, momentum, dampening, weight
 * decay and nesterov (every tensor's group 0 at creation). */
static inline deft_group_t deft_config_group(const deft_optim_config_t *cfg)
{
    deft_group_t g = {cfg->lr, cfg->momentum, cfg->dampening,
                      cfg->weight_decay, cfg->nesterov};
    return g;
}

/* Checks one group's values; fn and what name the call and the group in
 * the message ("deft_optim_create", "cfg->"). */
deft_status_t deft_group_check(const deft_group_t *g, const char *fn,
                               const char *what);

/* Buffers an algorithm needs, as flags. */
enum {
    DEFT_NEED_E = 1,
    DEFT_NEED_M = 2,
    DEFT_NEED_POINT = 4,
    DEFT_NEED_EF21 = 8,
    DEFT_NEED_COMPRESSOR = 16,
    DEFT_NEED_LINEAR = 32, /* only allreduce-compatible compressors */
    DEFT_NEED_ECLK = 64    /* z, w and the delta scratch */
};

/* The state's vectors, as bits in the state blob's order (state.c). */
enum {
    DEFT_BUF_X = 1,   /* x: the model (x_k for psync, y for eclk) */
    DEFT_BUF_E = 2,   /* e_k */
    DEFT_BUF_M = 4,   /* m_k */
    DEFT_BUF_GK = 8,  /* ef21's g_k */
    DEFT_BUF_G = 16,  /* ef21's g */
    DEFT_BUF_Z = 32,  /* eclk's z */
    DEFT_BUF_W = 64   /* eclk's w */
};

/* An algorithm registers itself by defining its table entry with
 *     DEFT_ALGORITHM(deft_algo_NAME) = { .algo = ..., .name = "...", ... };
 * in its own file: the build collects every such line of src/optim/ into
 * the registry (deft_algo_registry), which the front end, the names, the
 * option table and the CLI loop over. Nothing else lists the algorithms. */
#define DEFT_ALGORITHM(sym) const deft_algo_ops_t sym

struct deft_algo_ops {
    deft_algo_t algo;  /* its number: stable, it is stored in states      */
    const char *name;
    const char *help;  /* one line, for deft list                         */
    int needs;
    /* Returns the point for the next gradient. */
    const float *(*ask)(deft_optim_t *opt);
    /* One step with this worker's gradient at the asked point. */
    deft_status_t (*tell)(deft_optim_t *opt, const float *grad);
    /* The model to evaluate, into model (d,). Collective. */
    deft_status_t (*output)(deft_optim_t *opt, float *model);
    /* The vectors (DEFT_BUF_* bits) that differ between workers; every
     * other vector of the state is the same on all of them. Re-sharding
     * (reshard.c) keeps the mean over workers of the local ones and the
     * others as they are. */
    int local;
    /* The config fields only some algorithms read that this one reads
     * (its own, declared in its file, or shared: lambda), and the general
     * fields it does not read (sgd: the compressor's), by name; NULL-
     * terminated lists, or NULL. The option table (config.c) joins them. */
    const deft_option_def_t *const *params;
    const char *const *ignores;
    /* Optional: rules beyond each field's range (eclk: mu <= L). pre is
     * the message's prefix for field names ("cfg->", or "--": flags). */
    deft_status_t (*validate)(const deft_optim_config_t *cfg, const char *pre);
    /* Optional: called by create after the broadcast of x0. */
    void (*setup)(deft_optim_t *opt);
    /* 1 when ask gives a point other than the model even with lambda 0
     * (eclk's coupled point), so that training statistics do not describe
     * the output (deft_optim_output_is_point). */
    int coupled_point;
};

/* Every algorithm's entry, NULL-terminated (generated by the build from
 * the DEFT_ALGORITHM lines, see CMakeLists.txt). */
extern const deft_algo_ops_t *const deft_algo_registry[];

/* The table entry of an algorithm; NULL for an unknown value. */
const deft_algo_ops_t *deft_algo_ops(deft_algo_t algo);

/* The option table (config.c): every option, its definition, and whether
 * it applies to cfg's algorithm and compressor. */
size_t deft_optim_option_defs(const deft_option_def_t **defs);
int deft_option_applies(const deft_option_t *o, const deft_optim_config_t *cfg);
/* deft_optim_config_check with field names prefixed by pre (see above). */
deft_status_t deft_optim_config_check_as(const deft_optim_config_t *cfg,
                                         const char *pre);
/* The shared option lambda (def, defa). */
extern const deft_option_def_t deft_option_lambda;
/* eclk's parameter choice (see eclk.c): p = p_in, or 1/n when p_in is 0;
 * theta1 = theta1_in, or min(sqrt(2 (mu/L) / (3 p)), 1/2) when it is 0.
 * Also used by tools to report the parameters in effect. */
void deft_eclk_theory(double L, double mu, uint64_t n, double p_in,
                      double theta1_in, double *p_out, double *theta1_out);

/* Compresses v in place (v becomes v - C(v), the new error), communicates,
 * and adds alpha * sum_k C(v_k) into out. If own_out is not NULL, first
 * adds this worker's C(v) into it. local_bad says this worker saw a NaN or
 * Inf; then, or if the communicated sum is not finite, every worker returns
 * DEFT_ERR_DIVERGED. */
deft_status_t deft_optim_exchange(deft_optim_t *opt, float *v, int local_bad,
                                  float alpha, float *out, float *own_out);

/* The error-feedback step shared by ef, def, defa and saef: with the
 * gradient at the asked point, m = mu*m + grad + wd*point,
 * p = lr*m + e (in e), e = p - C(p), x -= avg(C(p)). */
deft_status_t deft_ef_step(deft_optim_t *opt, const float *grad);
/* ask for the error-feedback family: x when lambda = 0, else x - lambda*e. */
const float *deft_ef_ask(deft_optim_t *opt);
/* Output x (defa, ef, saef, ef21, sgd). */
deft_status_t deft_output_x(deft_optim_t *opt, float *model);
/* Output x - avg(e) (def). Collective. */
deft_status_t deft_output_x_minus_avg_e(deft_optim_t *opt, float *model);

/* A version 2 state blob read in place (state.c): its identity, where its
 * momentum flags (n_tensors bytes) and its vectors (one d-float vector per
 * set bit of mask below bit 7, in bit order, then comp_floats floats of
 * compressor state) start. */
typedef struct {
    uint32_t algo, compressor, mask;
    uint64_t d, step, n_tensors;
    uint32_t n_groups;
    size_t flags_off, vec_off, comp_floats;
} deft_state_view_t;

/* Checks a version 2 blob of size bytes (magic, version, checksum, header,
 * length) and fills v; DEFT_ERR_FORMAT naming fn otherwise. */
deft_status_t deft_state_view(const void *buf, size_t size,
                              deft_state_view_t *v, const char *fn);
/* k_out float vectors of n elements (at out + j out_stride, any alignment)
 * from k_in (at in + k in_stride) by re-sharding's mean rule (reshard.c);
 * counts in [1, DEFT_MAX_WORKERS]. */
void deft_reshard_mean_f32(const char *in, size_t in_stride, int k_in,
                           char *out, size_t out_stride, int k_out, size_t n);
/* The length of the version 2 blob at the start of buf (at most max
 * bytes; a checkpoint stores more after it), found by its checksum: the
 * first 4 bytes that equal the CRC of all before them. A float of a
 * compressor's state can match by chance (about 2^-32 per float), so only
 * version 1 checkpoints, which do not record the length, rely on this.
 * fn names the caller in errors. */
deft_status_t deft_state_blob_size(const void *buf, size_t max, size_t *size,
                                   const char *fn);
/* deft_optim_state_reshard over blobs of size bytes placed in_stride and
 * out_stride bytes apart. */
deft_status_t deft_state_reshard(const char *in, size_t in_stride, size_t size,
                                 int k_in, char *out, size_t out_stride,
                                 int k_out, deft_reshard_t mode);
/* Rewrites the checksum in a blob's last 4 bytes after it was changed. */
void deft_state_seal(void *buf, size_t size);

/* DEFT_ERR_DIVERGED with a message naming the step. */
deft_status_t deft_optim_diverged(const deft_optim_t *opt, const char *what);

#endif

/* The training run's options (deft train's flags) as a table: what each
 * is, its range and its help, once; deft_train_config_check and the CLI
 * read it. The optimizer's options are the optimizer's table
 * (src/optim/config.c). */
#include "train/train.h"

#include "core/internal.h"
#include "optim/optim_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define STR_(x) #x
#define STR(x) STR_(x)

/* Choices are enums read and written as int. */
_Static_assert(sizeof(deft_model_kind_t) == sizeof(int), "enum size");
_Static_assert(sizeof(deft_init_t) == sizeof(int), "enum size");
_Static_assert(sizeof(deft_convs_t) == sizeof(int), "enum size");
_Static_assert(sizeof(deft_train_backend_t) == sizeof(int), "enum size");
_Static_assert(sizeof(deft_reshard_t) == sizeof(int), "enum size");

static const char *model_choice(int v)
{
    const char *name = deft_model_name((deft_model_kind_t)v);
    return strcmp(name, "?") ? name : NULL;
}

static const char *init_choice(int v)
{
    const char *name = deft_init_name((deft_init_t)v);
    return strcmp(name, "?") ? name : NULL;
}

static const char *convs_choice(int v)
{
    const char *name = deft_convs_name((deft_convs_t)v);
    return strcmp(name, "?") ? name : NULL;
}

static const char *backend_choice(int v)
{
    return v == DEFT_TRAIN_THREADS ? "threads" : v == DEFT_TRAIN_MPI ? "mpi"
                                                                     : NULL;
}

static const char *reshard_choice(int v)
{
    const char *name = deft_reshard_name((deft_reshard_t)v);
    return strcmp(name, "?") ? name : NULL;
}

/* --lr-decay F,F,...: fractions of training in (0, 1), or none. */
static deft_status_t parse_decays(const deft_option_def_t *d, void *base,
                                  const char *given, const char *text)
{
    (void)d;
    deft_train_config_t *cfg = base;
    double at[DEFT_TRAIN_MAX_DECAYS];
    int n = 0;
    if (strcasecmp(text, "none") != 0) {
        for (const char *p = text;; p++) {
            char *end;
            double v = strtod(p, &end);
            if (end == p || (*end && *end != ',') || !(v > 0.0 && v < 1.0))
                return deft_fail(DEFT_ERR_INVALID_ARG, "%s '%s': must be "
                                 "fractions of training in (0, 1), separated "
                                 "by commas, or none", given, text);
            if (n == DEFT_TRAIN_MAX_DECAYS)
                return deft_fail(DEFT_ERR_INVALID_ARG, "%s '%s': at most %d "
                                 "points", given, text, DEFT_TRAIN_MAX_DECAYS);
            at[n++] = v;
            if (!*end)
                break;
            p = end;
        }
    }
    cfg->n_decays = n;
    memcpy(cfg->decay_at, at, (size_t)n * sizeof at[0]);
    return DEFT_OK;
}

static int format_decays(const deft_option_def_t *d, const void *base,
                         char *buf, size_t n)
{
    (void)d;
    const deft_train_config_t *cfg = base;
    int len = snprintf(buf, n, "%s", cfg->n_decays ? "" : "none");
    for (int i = 0; i < cfg->n_decays && len >= 0 && (size_t)len < n; i++)
        len += snprintf(buf + len, n - (size_t)len, "%s%g", i ? "," : "",
                        cfg->decay_at[i]);
    return len;
}

#define CFG deft_train_config_t
#define OPT DEFT_OPTION_DEF
static const deft_option_def_t options[] = {
    OPT(CFG, model, CHOICE, 0, 0, 0, .flag = "model", .metavar = "NAME",
        .choice = model_choice,
        .help = "the network ('deft list' shows their sizes)"),
    OPT(CFG, init, CHOICE, 0, 0, 0, .flag = "init", .metavar = "NAME",
        .choice = init_choice,
        .help = "torch: PyTorch's (nn's default; the DEF paper code's for "
                "preresnet20 and vgg11bn), or he: He normal, zero biases"),
    OPT(CFG, convs, CHOICE, 0, 0, 0, .flag = "convs", .metavar = "NAME",
        .choice = convs_choice,
        .help = "auto: oneDNN's convs where the CPU has AVX2 or AVX-512 and "
                "the model's convs fit its blocked layout (preresnet20, "
                "vgg11bn), deft's own elsewhere; own: deft's own kernels "
                "(computing the same function up to rounding)"),
    OPT(CFG, bn_recalibrate, INT, 0, 100000, 0, .flag = "bn-recalibrate",
        .metavar = "N", .word = "auto", .word_value = DEFT_TRAIN_BN_AUTO,
        .help = "models with batch norm: evaluate with BN statistics "
                "recomputed at the output model over N training batches per "
                "worker; 0: the running statistics, averaged over workers; "
                "auto: " STR(DEFT_TRAIN_BN_BATCHES) " batches when the output "
                "model is not the training point (def, defa, saef, psync)"),
    OPT(CFG, data_dir, STRING, 0, 0, 0, .flag = "data-dir", .metavar = "DIR",
        .help = "IDX files (default " DEFT_FASHION_MNIST_DIR ")"),
    OPT(CFG, augment, FLAG, 0, 1, 0, .flag = "augment", .implicit = "1",
        .help = "random crop (2-pixel padding) and flip"),
    OPT(CFG, limit_train, UINT64, 1, INFINITY, 0, .flag = "limit-train",
        .metavar = "N", .zero = "all",
        .help = "use only the first N training examples"),
    OPT(CFG, limit_test, UINT64, 1, INFINITY, 0, .flag = "limit-test",
        .metavar = "N", .zero = "all",
        .help = "evaluate on only the first N test examples"),
    OPT(CFG, n_decays, LIST, 0, 0, 0, .flag = "lr-decay", .metavar = "F,F,...",
        .help = "multiply lr by the decay factor at these fractions of "
                "training ('none' for a constant rate)"),
    OPT(CFG, decay_factor, FLOAT, 0, 1, DEFT_OPTION_MIN_OPEN,
        .flag = "lr-decay-factor", .metavar = "X",
        .help = "the lr decay factor"),
    OPT(CFG, workers, INT, 1, DEFT_MAX_WORKERS, 0, .flag = "workers",
        .metavar = "K", .help = "workers"),
    OPT(CFG, batch, INT, 1, 1 << 20, 0, .flag = "batch", .metavar = "B",
        .help = "global batch, split across workers"),
    OPT(CFG, epochs, INT, 1, 100000, 0, .flag = "epochs", .metavar = "E",
        .help = "epochs of the schedule"),
    OPT(CFG, stop_after, INT, 1, 100000, 0, .flag = "stop-after",
        .metavar = "N", .zero = "all",
        .help = "stop after N epochs of this invocation (resume later with "
                "--resume)"),
    OPT(CFG, backend, CHOICE, 0, 0, 0, .flag = "backend", .metavar = "NAME",
        .choice = backend_choice,
        .help = "threads: K threads in this process, or mpi: one worker per "
                "rank (mpirun -np K deft train --backend mpi ...)"),
    OPT(CFG, log_path, STRING, 0, 0, 0, .flag = "log", .metavar = "FILE",
        .help = "JSON lines, one object per epoch + a final one"),
    OPT(CFG, checkpoint_path, STRING, 0, 0, 0, .flag = "checkpoint",
        .metavar = "FILE", .help = "save at every epoch end"),
    OPT(CFG, resume_path, STRING, 0, 0, 0, .flag = "resume", .metavar = "FILE",
        .help = "continue a run from its checkpoint"),
    OPT(CFG, reshard, CHOICE, 0, 0, 0, .flag = "reshard", .metavar = "RULE",
        .choice = reshard_choice, .implicit = "mean",
        .help = "with --resume: continue a checkpoint of another worker "
                "count (a lost host) on this run's workers. mean (without a "
                "rule): errors and momenta keep their mean over workers, the "
                "model and schedule go on exactly; zero: restart errors and "
                "momenta at zero"),
    OPT(CFG, net_gbps, DOUBLE, 0, 1e6, DEFT_OPTION_MIN_OPEN,
        .flag = "net-gbps", .metavar = "G", .zero = "no link model",
        .help = "model the steps' collectives on a G Gbit/s link "
                "(alpha-beta): logs comm_modeled_s and modeled_s = compute "
                "+ modeled communication"),
    OPT(CFG, net_latency_us, DOUBLE, 0, 1e9, 0, .flag = "net-latency-us",
        .metavar = "A", .help = "the link's latency, with --net-gbps"),
    OPT(CFG, comm_timeout_s, DOUBLE, 0, 1e7, 0, .flag = "comm-timeout",
        .metavar = "S",
        .help = "end the run (all ranks under MPI) when a collective has not "
                "completed after S seconds: a peer is stopped, dead or "
                "unreachable (0 = wait forever)"),
    OPT(CFG, save_model_path, STRING, 0, 0, 0, .flag = "save-model",
        .metavar = "FILE",
        .help = "write the final output model: P float32 values in the "
                "model's layout order, then, for models with batch norm, the "
                "BN statistics its last evaluation used (mean, variance per "
                "BN layer)"),
};
#undef OPT
#undef CFG

/* The LIST entry's hooks (a designated initializer cannot follow the
 * macro's braces). */
static deft_option_def_t table[sizeof options / sizeof options[0]];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build(void)
{
    memcpy(table, options, sizeof options);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].o.type == DEFT_OPTION_LIST) {
            table[i].parse = parse_decays;
            table[i].format = format_decays;
        }
}

size_t deft_train_option_defs(const deft_option_def_t **defs)
{
    pthread_once(&once, build);
    if (defs)
        *defs = table;
    return sizeof table / sizeof table[0];
}

deft_status_t deft_train_config_set(deft_train_config_t *cfg,
                                    const char *name, const char *value)
{
    if (!cfg || !name || !value)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_train_config_set: %s is "
                         "NULL", !cfg ? "cfg" : !name ? "name" : "value");
    const deft_option_def_t *t;
    const size_t count = deft_train_option_defs(&t);
    const deft_option_def_t *d = deft_option_find(t, count, name);
    if (!d)
        return deft_optim_config_set(&cfg->optim, name, value);
    deft_status_t st = deft_option_parse(d, cfg, name, value);
    if (st == DEFT_OK && !strcmp(d->o.name, "workers"))
        cfg->workers_set = 1;
    return st;
}

deft_status_t deft_train_config_get(const deft_train_config_t *cfg,
                                    const char *name, char *buf, size_t n)
{
    if (!cfg || !name || !buf || n == 0)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_train_config_get: a "
                         "NULL argument or an empty buffer");
    const deft_option_def_t *t;
    const size_t count = deft_train_option_defs(&t);
    const deft_option_def_t *d = deft_option_find(t, count, name);
    return d ? deft_option_format(d, cfg, buf, n)
             : deft_optim_config_get(&cfg->optim, name, buf, n);
}

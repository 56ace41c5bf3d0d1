/* deft convex's options as a table (core/options.h): the run's fields
 * described once, for the CLI's flags, help and errors and for the checks
 * of deft_convex_setup. The optimizer's fields among them (compressor,
 * ratio, seed, and eclk's theta1 and p) take their description from the
 * optimizer's table. */
#include "convex/run.h"

#include "core/internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const char *method_choice(int v)
{
    return deft_convex_method_name((deft_convex_method_t)v);
}

static const char *compressor_choice(int v)
{
    return deft_optim_option_choice("compressor", v);
}

static const char *params_choice(int v)
{
    return v == 0 ? "compressor" : v == 1 ? "lkatyusha" : NULL;
}

static const char *anchor_choice(int v)
{
    return v == DEFT_ANCHOR_DEFAULT ? "default"
           : v == DEFT_ANCHOR_GLOBAL ? "global"
           : v == DEFT_ANCHOR_LOCAL  ? "local" : NULL;
}

#define CFG deft_convex_config_t
#define OPT DEFT_OPTION_DEF
static const deft_option_def_t options[] = {
    OPT(CFG, data, STRING, 0, 0, 0, .flag = "data", .metavar = "SRC",
        .help = "fmnist (Fashion-MNIST T-shirt/top (+1) vs Shirt (-1), "
                "pixels in [0,1] + bias) or libsvm:PATH (two labels; stored "
                "sparse, features that never occur are dropped)"),
    OPT(CFG, data_dir, STRING, 0, 0, 0, .flag = "data-dir", .metavar = "DIR",
        .help = "IDX files (default " DEFT_FASHION_MNIST_DIR ")"),
    OPT(CFG, normalize, FLAG, 0, 1, 0, .flag = "normalize",
        .help = "scale every example to unit norm (L = 1/4)"),
    OPT(CFG, mu, DOUBLE, 0, 1e6, DEFT_OPTION_MIN_OPEN, .flag = "mu",
        .metavar = "MU", .help = "L2 regularization"),
    OPT(CFG, method, CHOICE, 0, 0, 0, .flag = "algo", .metavar = "NAME",
        .choice = method_choice, .help = "the method"),
    /* compressor, ratio, seed, theta1, p: the optimizer's (build below) */
    OPT(CFG, compressor, CHOICE, 0, 0, 0, .flag = "compressor",
        .choice = compressor_choice),
    OPT(CFG, ratio, DOUBLE, 0, 0, 0, .flag = "ratio"),
    OPT(CFG, batch, LONG, 1, 1e12, 0, .flag = "batch",
        .metavar = "B", .word = "full", .word_value = 0,
        .help = "rows per worker and round for eclk, lkatyusha, ecsgd and "
                "eclsvrg(-diana), or full for the whole shard (ecgd and gd "
                "use full)"),
    OPT(CFG, lr, DOUBLE, 0, 1e6, DEFT_OPTION_MIN_OPEN, .flag = "lr",
        .metavar = "LR", .zero = "the method's default",
        .help = "step of gd and ecgd (default 1/(L_f + mu)), ecsgd "
                "(1/(2(L_B + mu))), eclsvrg(-diana) (1/(L_B + mu))"),
    OPT(CFG, theta1, DOUBLE, 0, 0, 0, .flag = "theta1", .metavar = "T",
        .zero = "the compressor-aware rule, see docs/eclk.md",
        .help = "eclk, lkatyusha: theta1"),
    OPT(CFG, lscale, DOUBLE, 0, 1e6, DEFT_OPTION_MIN_OPEN, .flag = "lscale",
        .metavar = "S",
        .zero = "1, or under Rand-K without --theta1 the rule's, see "
                "docs/eclk.md",
        .help = "eclk, lkatyusha: the z step is eta/(S L)"),
    OPT(CFG, p, DOUBLE, 0, 0, 0, .flag = "p", .metavar = "P",
        .zero = "B/m; eclk with full gradients and the global anchor: "
                "delta (delta/2 under Rand-K)",
        .help = "eclk, lkatyusha, eclsvrg(-diana): anchor probability"),
    OPT(CFG, alpha, DOUBLE, 0, 1, DEFT_OPTION_MIN_OPEN, .flag = "alpha",
        .metavar = "A", .zero = "k/d = 1/(omega + 1) of its quantizer",
        .help = "eclsvrg-diana: shift step"),
    OPT(CFG, lkatyusha_params, CHOICE, 0, 0, 0, .flag = "params",
        .metavar = "RULE", .choice = params_choice,
        .help = "eclk's constants: compressor (they know the compressor's "
                "contraction) or lkatyusha (L-Katyusha's, which ignore it)"),
    OPT(CFG, delta_exp, DOUBLE, 0, 4, 0, .flag = "delta-exp", .metavar = "E",
        .help = "eclk: use L / delta^E for L in the constants (delta: the "
                "compressor's contraction; the default is in docs/eclk.md)"),
    OPT(CFG, anchor, CHOICE, 0, 0, 0, .flag = "anchor-grad", .metavar = "A",
        .choice = anchor_choice,
        .help = "global (eclk's default: the workers average grad f_k(w) "
                "with a dense allreduce when the anchor moves, counted in "
                "the bits; what each worker compresses then vanishes at the "
                "optimum) or local (SPEC's grad f_k(w); eclsvrg's default)"),
    OPT(CFG, seed, UINT64, 0, 0, 0, .flag = "seed"),
    OPT(CFG, workers, INT, 1, DEFT_MAX_WORKERS, 0, .flag = "workers",
        .metavar = "K", .help = "workers (threads)"),
    OPT(CFG, rounds, LONG, 1, 1e12, 0, .flag = "rounds",
        .metavar = "N", .help = "communication rounds"),
    OPT(CFG, target, DOUBLE, 0, 1, 0, .flag = "target", .metavar = "EPS",
        .help = "stop once the relative suboptimality is <= EPS (0: run all "
                "rounds)"),
    OPT(CFG, log_path, STRING, 0, 0, 0, .flag = "log", .metavar = "FILE",
        .help = "JSON lines; P* is cached next to it"),
    OPT(CFG, log_every, LONG, 1, 1e12, 0, .flag = "log-every",
        .metavar = "N", .help = "evaluate and log every N rounds"),
};
#undef OPT
#undef CFG
#define N_OPTIONS (sizeof options / sizeof options[0])

static deft_option_def_t table[N_OPTIONS];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The optimizer's description of the fields it shares with this table. */
static void build(void)
{
    static const char *const from[][2] = {
        {"compressor", "compressor"}, {"ratio", "ratio"}, {"seed", "seed"},
        {"theta1", "eclk_theta1"},    {"p", "eclk_p"}};
    memcpy(table, options, sizeof options);
    for (size_t i = 0; i < N_OPTIONS; i++)
        for (size_t k = 0; k < sizeof from / sizeof from[0]; k++) {
            const deft_option_t *o = deft_optim_option_find(from[k][1]);
            if (strcmp(table[i].o.name, from[k][0]) != 0 || !o)
                continue;
            deft_option_t mine = table[i].o;
            table[i].o = *o;
            table[i].o.name = mine.name;
            table[i].o.flag = mine.flag;
            table[i].o.metavar = o->metavar ? o->metavar : mine.metavar;
            table[i].o.help = mine.help ? mine.help : o->help;
            table[i].o.zero = mine.zero ? mine.zero : o->zero;
        }
}

size_t deft_convex_option_defs(const deft_option_def_t **defs)
{
    pthread_once(&once, build);
    if (defs)
        *defs = table;
    return N_OPTIONS;
}

static const deft_option_def_t *find(const char *name)
{
    const deft_option_def_t *t;
    const size_t n = deft_convex_option_defs(&t);
    return deft_option_find(t, n, name);
}

void deft_convex_config_init(deft_convex_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->method = DEFT_CONVEX_ECLK;
    c->compressor = DEFT_COMP_TOPK;
    c->ratio = 16.0;
    c->workers = 8;
    c->rounds = 2000;
    c->log_every = 10;
    c->batch = 1;
    c->mu = 1e-3;
    c->data = "fmnist";
}

deft_status_t deft_convex_config_set(deft_convex_config_t *c, const char *name,
                                     const char *value)
{
    const deft_option_def_t *d = c && name && value ? find(name) : NULL;
    if (!d)
        return deft_fail(DEFT_ERR_INVALID_ARG, "unknown option '%s' (see deft "
                         "convex --help)", name ? name : "(null)");
    deft_status_t st = deft_option_parse(d, c, name, value);
    if (st == DEFT_OK && !strcmp(d->o.name, "compressor"))
        c->compressor_set = 1;
    if (st == DEFT_OK && !strcmp(d->o.name, "delta_exp"))
        c->delta_exp_set = 1;
    return st;
}

deft_status_t deft_convex_config_get(const deft_convex_config_t *c,
                                     const char *name, char *buf, size_t n)
{
    const deft_option_def_t *d = c && name && buf && n ? find(name) : NULL;
    if (!d)
        return deft_fail(DEFT_ERR_INVALID_ARG, "unknown option '%s'",
                         name ? name : "(null)");
    return deft_option_format(d, c, buf, n);
}

/* The field called name, as a flag when pre is "--". */
static const char *label(const char *name, const char *pre, char *buf)
{
    const deft_option_def_t *t;
    const size_t n = deft_convex_option_defs(&t);
    return deft_option_label_in(t, n, name, pre, buf);
}

/* Fields set for a method that does not read them. */
static deft_status_t check_applies(const deft_convex_config_t *c,
                                   const char *pre)
{
    const char *algo = deft_convex_method_name(c->method);
    const int eclk = c->method == DEFT_CONVEX_ECLK ||
                     c->method == DEFT_CONVEX_LKATYUSHA;
    const int svrg = c->method == DEFT_CONVEX_ECLSVRG ||
                     c->method == DEFT_CONVEX_ECLSVRG_DIANA;
    const char *name = NULL, *why = NULL;
    if (c->theta1 > 0 && !eclk)
        name = "theta1", why = "is a parameter of eclk and lkatyusha";
    else if (c->lscale > 0 && !eclk)
        name = "lscale", why = "is a parameter of eclk and lkatyusha";
    else if (c->p > 0 && !eclk && !svrg)
        name = "p", why = "is a parameter of eclk, lkatyusha and eclsvrg(-diana)";
    else if (c->alpha > 0 && c->method != DEFT_CONVEX_ECLSVRG_DIANA)
        name = "alpha", why = "is a parameter of eclsvrg-diana";
    else if (c->lkatyusha_params && !eclk)
        name = "lkatyusha_params", why = "is a parameter of eclk";
    else if (c->delta_exp_set && (!eclk || c->lkatyusha_params))
        name = "delta_exp", why = "is a parameter of eclk's compressor-aware "
                                  "constants";
    char a[128], b[128], t[128], p[128];
    if (!name && c->lr > 0 && eclk)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s does not apply: eclk's "
                         "steps follow from L and mu (set %s or %s instead)",
                         label("lr", pre, a), label("theta1", pre, t),
                         label("p", pre, p));
    if (name)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s %s", label(name, pre, a), why);
    if (c->anchor != DEFT_ANCHOR_DEFAULT && !eclk && !svrg)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s: %s %s has no anchor",
                         label("anchor", pre, a), label("method", pre, b), algo);
    return DEFT_OK;
}

deft_status_t deft_convex_config_check(deft_convex_config_t *c, const char *pre)
{
    char a[128], b[128];
    const deft_option_def_t *t;
    const size_t n = deft_convex_option_defs(&t);
    for (size_t i = 0; c && i < n; i++)
        if (deft_option_check(&t[i], c, pre) != DEFT_OK)
            return DEFT_ERR_INVALID_ARG;
    if (!c)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%sc is NULL", pre);
    if (c->data && strcmp(c->data, "fmnist") && strncmp(c->data, "libsvm:", 7))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s '%s': expected fmnist or "
                         "libsvm:PATH", label("data", pre, a), c->data);
    if (c->data && !strcmp(c->data, "libsvm:"))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s libsvm: needs a path "
                         "(libsvm:PATH)", label("data", pre, a));
    const int dense = c->method == DEFT_CONVEX_GD ||
                      c->method == DEFT_CONVEX_LKATYUSHA;
    if (dense && c->compressor_set && c->compressor != DEFT_COMP_NONE)
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s %s: %s %s sends dense "
                         "vectors (use eclk or ecgd to compress)",
                         label("compressor", pre, a),
                         deft_compressor_name(c->compressor),
                         label("method", pre, b),
                         deft_convex_method_name(c->method));
    if (dense)
        c->compressor = DEFT_COMP_NONE;
    return check_applies(c, pre);
}

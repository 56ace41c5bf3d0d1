/* The optimizer's configuration as a table (deft.h, "The configuration,
 * described"): the general fields here, each algorithm's and compressor's
 * own in its file, joined once into one table with which algorithms and
 * compressors read each field. Names, ranges, checks, by-name access and
 * the algorithm and compressor names all come from it. */
#include "compress/compress_impl.h"
#include "core/internal.h"
#include "optim/optim_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <strings.h>

/* Choices are enums read and written as int. */
_Static_assert(sizeof(deft_algo_t) == sizeof(int), "enum size");
_Static_assert(sizeof(deft_compressor_kind_t) == sizeof(int), "enum size");
_Static_assert(sizeof(deft_scope_t) == sizeof(int), "enum size");

static const char *algo_choice(int v);
static const char *compressor_choice(int v);
static const char *scope_choice(int v)
{
    return v == DEFT_SCOPE_TENSOR ? "tensor" : v == DEFT_SCOPE_GLOBAL ? "global"
                                                                      : NULL;
}

#define CFG deft_optim_config_t
/* The fields every algorithm may read. */
static const deft_option_def_t general[] = {
    DEFT_OPTION_DEF(CFG, algo, CHOICE, 0, 0, 0, .flag = "algo",
                    .metavar = "NAME", .choice = algo_choice,
                    .help = "the algorithm"),
    DEFT_OPTION_DEF(CFG, compressor, CHOICE, 0, 0, 0, .flag = "compressor",
                    .metavar = "NAME", .choice = compressor_choice,
                    .help = "what each worker does to what it sends"),
    DEFT_OPTION_DEF(CFG, ratio, DOUBLE, 1, INFINITY, 0, .flag = "ratio",
                    .metavar = "R",
                    .help = "compression ratio n/k (scale: 1/delta)"),
    DEFT_OPTION_DEF(CFG, scope, CHOICE, 0, 0, 0, .flag = "scope",
                    .metavar = "S", .choice = scope_choice,
                    .help = "compress each tensor on its own, or the "
                            "flattened vector as one"),
    DEFT_OPTION_DEF(CFG, lr, FLOAT, 0, INFINITY, DEFT_OPTION_MIN_OPEN,
                    .flag = "lr", .metavar = "LR", .help = "learning rate"),
    DEFT_OPTION_DEF(CFG, momentum, FLOAT, 0, 1, DEFT_OPTION_MAX_OPEN,
                    .flag = "momentum", .metavar = "MU", .help = "momentum"),
    DEFT_OPTION_DEF(CFG, nesterov, FLAG, 0, 1, 0, .flag = "nesterov",
                    .help = "Nesterov momentum, torch.optim.SGD's form"),
    DEFT_OPTION_DEF(CFG, dampening, FLOAT, 0, 1, 0, .flag = "dampening",
                    .metavar = "D", .help = "momentum dampening"),
    DEFT_OPTION_DEF(CFG, weight_decay, FLOAT, 0, INFINITY, 0, .flag = "wd",
                    .metavar = "WD", .help = "weight decay"),
    DEFT_OPTION_DEF(CFG, seed, UINT64, 0, INFINITY, 0, .flag = "seed",
                    .metavar = "N", .help = "the shared seed of all random "
                                            "choices"),
};
#undef CFG
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

enum { MAX_OPTIONS = 64 };
static deft_option_def_t table[MAX_OPTIONS];
static size_t n_table;
static uint32_t all_comps; /* a bit for every compressor */
static const deft_option_t *comp_option; /* the entry "compressor" */
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static uint32_t bit(int v)
{
    return v >= 0 && v < 32 ? 1u << v : 0;
}

/* The entry called name in the table built so far, else a new copy of d. */
static deft_option_def_t *join(const deft_option_def_t *d)
{
    for (size_t i = 0; i < n_table; i++)
        if (strcmp(table[i].o.name, d->o.name) == 0)
            return &table[i];
    if (n_table == MAX_OPTIONS)
        return NULL; /* a build with more fields: MAX_OPTIONS is too small */
    table[n_table] = *d;
    table[n_table].o.algos = table[n_table].o.compressors = 0;
    return &table[n_table++];
}

static void build_table(void)
{
    uint32_t all_algos = 0, ratio_comps = 0;
    for (const deft_algo_ops_t *const *a = deft_algo_registry; *a; a++)
        all_algos |= bit((int)(*a)->algo);
    for (const deft_compressor_ops_t *const *c = deft_compressor_registry; *c; c++) {
        all_comps |= bit((int)(*c)->kind);
        if ((*c)->uses_ratio)
            ratio_comps |= bit((int)(*c)->kind);
    }
    for (size_t i = 0; i < COUNT(general); i++)
        join(&general[i]);
    const size_t n_general = n_table;
    for (const deft_algo_ops_t *const *a = deft_algo_registry; *a; a++)
        for (const deft_option_def_t *const *p = (*a)->params; p && *p; p++) {
            deft_option_def_t *e = join(*p);
            if (e)
                e->o.algos |= bit((int)(*a)->algo);
        }
    for (const deft_compressor_ops_t *const *c = deft_compressor_registry; *c; c++)
        for (const deft_option_def_t *const *p = (*c)->params; p && *p; p++) {
            deft_option_def_t *e = join(*p);
            if (e)
                e->o.compressors |= bit((int)(*c)->kind);
        }
    for (size_t i = 0; i < n_table; i++) {
        deft_option_t *o = &table[i].o;
        if (!o->algos) { /* general or a compressor's: all but who ignores it */
            o->algos = all_algos;
            for (const deft_algo_ops_t *const *a = deft_algo_registry; *a; a++)
                for (const char *const *g = (*a)->ignores; g && *g; g++)
                    if (i < n_general && strcmp(*g, o->name) == 0)
                        o->algos &= ~bit((int)(*a)->algo);
        }
        if (!o->compressors)
            o->compressors = strcmp(o->name, "ratio") == 0 ? ratio_comps
                                                           : all_comps;
        if (strcmp(o->name, "compressor") == 0)
            comp_option = o;
    }
}

size_t deft_optim_option_defs(const deft_option_def_t **defs)
{
    pthread_once(&table_once, build_table);
    if (defs)
        *defs = table;
    return n_table;
}

size_t deft_optim_option_count(void)
{
    return deft_optim_option_defs(NULL);
}

const deft_option_t *deft_optim_option(size_t i)
{
    const deft_option_def_t *t;
    return i < deft_optim_option_defs(&t) ? &t[i].o : NULL;
}

const char *deft_optim_option_name(size_t i)
{
    const deft_option_t *o = deft_optim_option(i);
    return o ? o->name : NULL;
}

const char *deft_optim_option_type(const char *name)
{
    static const char *const words[] = {"flag",   "int",    "long",
                                        "uint64", "float",  "double",
                                        "choice", "string", "list"};
    const deft_option_t *o = deft_optim_option_find(name);
    return o && (size_t)o->type < sizeof words / sizeof words[0]
               ? words[o->type] : NULL;
}

const char *deft_optim_option_choice(const char *name, int v)
{
    const deft_option_t *o = deft_optim_option_find(name);
    return o && o->type == DEFT_OPTION_CHOICE && v >= 0 ? o->choice(v) : NULL;
}

static const deft_option_def_t *find_def(const char *name)
{
    const deft_option_def_t *t;
    const size_t n = deft_optim_option_defs(&t);
    return deft_option_find(t, n, name);
}

const deft_option_t *deft_optim_option_find(const char *name)
{
    const deft_option_def_t *d = find_def(name);
    return d ? &d->o : NULL;
}

/* "unknown option 'x': the options are algo, compressor, ..." */
static deft_status_t unknown(const char *name)
{
    char list[1024];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < deft_optim_option_count(); i++) {
        int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                         deft_optim_option(i)->name);
        if (w < 0 || (size_t)w >= sizeof list - len)
            break;
        len += (size_t)w;
    }
    return deft_fail(DEFT_ERR_INVALID_ARG, "unknown option '%s': the options "
                     "are %s", name ? name : "(null)", list);
}

deft_status_t deft_optim_config_set(deft_optim_config_t *cfg, const char *name,
                                    const char *value)
{
    if (!cfg || !value)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_config_set: %s is "
                         "NULL", !cfg ? "cfg" : "value");
    const deft_option_def_t *d = find_def(name ? name : "");
    return d ? deft_option_parse(d, cfg, name, value) : unknown(name);
}

deft_status_t deft_optim_config_get(const deft_optim_config_t *cfg,
                                    const char *name, char *buf, size_t n)
{
    if (!cfg || !buf || n == 0)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_config_get: %s",
                         !cfg ? "cfg is NULL" : !buf ? "buf is NULL" : "n is 0");
    const deft_option_def_t *d = find_def(name ? name : "");
    return d ? deft_option_format(d, cfg, buf, n) : unknown(name);
}

int deft_option_applies(const deft_option_t *o, const deft_optim_config_t *cfg)
{
    deft_optim_option_defs(NULL); /* the table is built */
    const deft_option_t *comp = comp_option;
    if (!(o->algos & bit((int)cfg->algo)))
        return 0;
    if (o == comp)
        return 1;
    if (!(comp->algos & bit((int)cfg->algo))) /* no compressor: only the */
        return o->compressors == all_comps;   /* fields of every one      */
    return (o->compressors & bit((int)cfg->compressor)) != 0;
}

/* The algorithm's and the compressor's rules between fields. */
static deft_status_t check_rules(const deft_optim_config_t *cfg,
                                 const char *pre)
{
    const deft_algo_ops_t *ops = deft_algo_ops(cfg->algo);
    const deft_compressor_ops_t *cops = deft_compressor_ops_of(cfg->compressor);
    const deft_group_t g0 = deft_config_group(cfg);
    deft_status_t st = deft_group_check(&g0, NULL, pre);
    if (st == DEFT_OK && ops->validate)
        st = ops->validate(cfg, pre);
    if (st != DEFT_OK || !deft_option_applies(comp_option, cfg))
        return st;
    if (cops->validate && (st = cops->validate(cfg, pre)) != DEFT_OK)
        return st;
    if ((ops->needs & DEFT_NEED_LINEAR) && !(cops->selects && cops->selects(cfg))) {
        char names[256] = "", a[128], c[128];
        size_t len = 0;
        const deft_compressor_ops_t *r;
        for (int k = 0; (r = deft_compressor_ops_of((deft_compressor_kind_t)k)); k++)
            if (r->selects && len < sizeof names)
                len += (size_t)snprintf(names + len, sizeof names - len, "%s%s",
                                        len ? ", " : "", r->name);
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "%s %s averages blocks of the models and needs a "
                         "compressor that keeps shared coordinates unscaled "
                         "(%s), not %s %s as configured",
                         deft_option_label("algo", pre, a), ops->name, names,
                         deft_option_label("compressor", pre, c), cops->name);
    }
    return DEFT_OK;
}

deft_status_t deft_optim_config_check_as(const deft_optim_config_t *cfg,
                                         const char *pre)
{
    char label[128];
    if (!cfg)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_optim_config_check: cfg "
                         "is NULL");
    if (!deft_algo_ops(cfg->algo))
        return deft_fail(DEFT_ERR_INVALID_ARG, "%s = %d is not an algorithm",
                         deft_option_label("algo", pre, label), (int)cfg->algo);
    const deft_option_def_t *t;
    const size_t n = deft_optim_option_defs(&t);
    for (size_t i = 0; i < n; i++) {
        /* A field the run does not read is still refused out of range,
         * except a required one of another algorithm (eclk's L and mu),
         * which is not looked at. */
        const int applies = deft_option_applies(&t[i].o, cfg);
        if (!applies && t[i].o.required)
            continue;
        if (applies && t[i].o.required && deft_option_value(&t[i], cfg) == 0)
            return deft_fail(DEFT_ERR_INVALID_ARG, "%s = 0: not given, and "
                             "%s needs it (%s)",
                             deft_option_label(t[i].o.name, pre, label),
                             deft_algo_name(cfg->algo), t[i].o.help);
        deft_status_t st = deft_option_check(&t[i], cfg, pre);
        if (st != DEFT_OK)
            return st;
    }
    return check_rules(cfg, pre);
}

const char *deft_optim_config_describe(const deft_optim_config_t *cfg,
                                       char *buf, size_t n)
{
    if (!buf || n == 0)
        return buf;
    buf[0] = '\0';
    if (!cfg)
        return buf;
    const deft_option_def_t *t;
    const size_t count = deft_optim_option_defs(&t);
    if (!deft_option_applies(comp_option, cfg)) {
        snprintf(buf, n, "%s (no compression)", deft_algo_name(cfg->algo));
        return buf;
    }
    size_t len = (size_t)snprintf(buf, n, "%s + %s", deft_algo_name(cfg->algo),
                                  deft_compressor_name(cfg->compressor));
    const char *sep = " (";
    for (size_t i = 0; i < count && len < n; i++) {
        const deft_option_t *o = &t[i].o;
        char v[40];
        if (o->compressors == all_comps || o->type == DEFT_OPTION_FLAG ||
            !(o->compressors & bit((int)cfg->compressor)) ||
            deft_option_format(&t[i], cfg, v, sizeof v) != DEFT_OK)
            continue; /* not one of the compressor's own knobs */
        len += (size_t)snprintf(buf + len, n - len, "%s%s %s", sep,
                                o->flag ? o->flag : o->name, v);
        sep = ", ";
    }
    if (sep[0] == ',' && len < n)
        snprintf(buf + len, n - len, ")");
    return buf;
}

deft_status_t deft_optim_config_check(const deft_optim_config_t *cfg)
{
    return deft_optim_config_check_as(cfg, "");
}

void deft_optim_config_init(deft_optim_config_t *cfg)
{
    if (cfg)
        *cfg = (deft_optim_config_t)DEFT_OPTIM_CONFIG_INIT;
}

size_t deft_optim_config_size(void)
{
    return sizeof(deft_optim_config_t);
}

/* ---- names ------------------------------------------------------------- */

const deft_algo_ops_t *deft_algo_ops(deft_algo_t a)
{
    for (const deft_algo_ops_t *const *r = deft_algo_registry; *r; r++)
        if ((*r)->algo == a)
            return *r;
    return NULL;
}

static const char *algo_choice(int v)
{
    const deft_algo_ops_t *ops = deft_algo_ops((deft_algo_t)v);
    return ops ? ops->name : NULL;
}

static const char *compressor_choice(int v)
{
    const deft_compressor_ops_t *ops = deft_compressor_ops_of((deft_compressor_kind_t)v);
    return ops ? ops->name : NULL;
}

const char *deft_algo_name(deft_algo_t algo)
{
    const char *name = algo_choice((int)algo);
    return name ? name : "?";
}

const char *deft_compressor_name(deft_compressor_kind_t kind)
{
    const char *name = compressor_choice((int)kind);
    return name ? name : "?";
}

const char *deft_algo_describe(deft_algo_t algo)
{
    const deft_algo_ops_t *ops = deft_algo_ops(algo);
    return ops && ops->help ? ops->help : "";
}

const char *deft_compressor_describe(deft_compressor_kind_t kind)
{
    const deft_compressor_ops_t *ops = deft_compressor_ops_of(kind);
    return ops && ops->help ? ops->help : "";
}

/* Parses a choice option's value by name, with its message. */
static deft_status_t parse_choice(const char *option, const char *what,
                                  const char *name, int *out)
{
    const deft_option_def_t *d = find_def(option);
    deft_optim_config_t tmp = DEFT_OPTIM_CONFIG_INIT;
    if (!name || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_%s_parse: %s is NULL",
                         option, !name ? "name" : "out");
    if (deft_option_parse(d, &tmp, option, name) != DEFT_OK) {
        char names[512];
        return deft_fail(DEFT_ERR_INVALID_ARG, "unknown %s '%s' (expected one "
                         "of %s)", what, name,
                         deft_option_choices(&d->o, names, sizeof names));
    }
    *out = *(const int *)((const char *)&tmp + d->offset);
    return DEFT_OK;
}

deft_status_t deft_algo_parse(const char *name, deft_algo_t *out)
{
    int v = 0;
    deft_status_t st = parse_choice("algo", "algorithm", name, out ? &v : NULL);
    if (st == DEFT_OK)
        *out = (deft_algo_t)v;
    return st;
}

deft_status_t deft_compressor_parse(const char *name,
                                    deft_compressor_kind_t *out)
{
    int v = 0;
    deft_status_t st = parse_choice("compressor", "compressor", name,
                                    out ? &v : NULL);
    if (st == DEFT_OK)
        *out = (deft_compressor_kind_t)v;
    return st;
}

/* deft convex: eclk and its baselines on L2-regularized logistic regression
 * (SPEC §2, eclk), with K workers on the threads backend. The experiment
 * loop, the constants and the parameter rules are the library's
 * (src/convex/run.h), as are the problem and its optimum P*
 * (src/convex/problem.c); this file parses flags and prints.
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
#include "convex/run.h"
#include "core/internal.h"
#include "data/data.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_RUN_FAILED = 1, EXIT_USAGE = DEFT_EXIT_USAGE, EXIT_DIVERGED = 3 };

typedef struct {
    deft_convex_config_t c;
    int compressor_given, quiet, normalize;
    const char *log_path, *data, *data_dir;
} opts_t;

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
        "                       or libsvm:PATH (two labels; stored sparse,\n"
        "                       features that never occur are dropped)\n"
        "  --data-dir DIR       IDX files (default " DEFT_FASHION_MNIST_DIR ")\n"
        "  --normalize          scale every example to unit norm (L = 1/4)\n"
        "  --mu MU              L2 regularization, > 0 (default 1e-3)\n"
        "method:\n"
        "  --algo NAME          eclk (default), lkatyusha, ecgd, ecsgd,\n"
        "                       eclsvrg, eclsvrg-diana, gd\n"
        "  --compressor NAME    none, rbgs, randk, randk-private, topk, sign,\n"
        "                       qsgd, scale (default topk; gd and lkatyusha\n"
        "                       use none)\n"
        "  --ratio R            compression ratio n/k, >= 1 (default 16)\n"
        "  --batch B            rows per worker and round for eclk,\n"
        "                       lkatyusha, ecsgd and eclsvrg(-diana), or\n"
        "                       'full' for the whole shard (default 1; ecgd\n"
        "                       and gd use full)\n"
        "  --lr LR              step of gd and ecgd (default 1/(L_f + mu)),\n"
        "                       ecsgd (1/(2(L_B + mu))), eclsvrg(-diana)\n"
        "                       (1/(L_B + mu))\n"
        "  --theta1 T           eclk: theta1 in (0, 1/2] (default: the\n"
        "                       compressor-aware rule, see docs/eclk.md)\n"
        "  --p P                eclk, eclsvrg: anchor probability (default\n"
        "                       B/m; eclk with full gradients: delta)\n"
        "  --alpha A            eclsvrg-diana: shift step in (0, 1] (default\n"
        "                       k/d = 1/(omega + 1) of its quantizer)\n"
        "  --params RULE        eclk: compressor (default: constants that\n"
        "                       know the compressor's contraction) or\n"
        "                       lkatyusha (L-Katyusha's, which ignore it)\n"
        "  --delta-exp E        eclk: use L / delta^E for L in the constants\n"
        "                       (delta: the compressor's contraction; the\n"
        "                       default is in docs/eclk.md)\n"
        "  --anchor-grad A      global (eclk's default: the workers average\n"
        "                       grad f_k(w) with a dense allreduce when the\n"
        "                       anchor moves, counted in the bits; what each\n"
        "                       worker compresses then vanishes at the\n"
        "                       optimum) or local (SPEC's grad f_k(w);\n"
        "                       eclsvrg's default)\n"
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

/* ---- setup ----------------------------------------------------------- */

/* The problem (src/convex/problem.c): 0, or the exit code after saying
 * why not (too many workers for the data is bad usage). */
static int load_problem(const opts_t *o, deft_logreg_t *prob, char *desc,
                        size_t desc_n)
{
    deft_status_t st = deft_convex_problem_load(prob, o->data, o->data_dir,
                                                o->normalize, o->c.workers,
                                                desc, desc_n);
    if (st == DEFT_OK)
        return 0;
    fprintf(stderr, "deft convex: %s\n", deft_last_error());
    return st == DEFT_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
}

/* P*, from the cache next to the log or by Newton's method; a cache that
 * cannot be written is a warning. */
static int optimum(const opts_t *o, const deft_logreg_t *prob,
                   const char *desc, double *pstar, int *cached)
{
    deft_status_t cache_st;
    deft_status_t st = deft_convex_optimum(prob, o->c.mu, o->log_path, desc,
                                           pstar, cached, &cache_st);
    if (st != DEFT_OK || cache_st != DEFT_OK)
        fprintf(stderr, "deft convex: %s\n", deft_last_error());
    return st == DEFT_OK ? 0 : EXIT_RUN_FAILED;
}

static int parse_opt(int code, const char *flag, opts_t *o);

static int parse(int argc, char **argv, opts_t *o)
{
    static const struct option opts[] = {
        {"algo", required_argument, 0, 'a'},
        {"compressor", required_argument, 0, 'c'},
        {"ratio", required_argument, 0, 'r'},
        {"workers", required_argument, 0, 'K'},
        {"rounds", required_argument, 0, 'R'},
        {"log", required_argument, 0, 'l'},
        {"log-every", required_argument, 0, 'e'},
        {"seed", required_argument, 0, 's'},
        {"mu", required_argument, 0, 'm'},
        {"data", required_argument, 0, 'D'},
        {"data-dir", required_argument, 0, 'd'},
        {"batch", required_argument, 0, 'B'},
        {"normalize", no_argument, 0, 'N'},
        {"target", required_argument, 0, 'T'},
        {"lr", required_argument, 0, 'L'},
        {"theta1", required_argument, 0, 't'},
        {"p", required_argument, 0, 'p'},
        {"alpha", required_argument, 0, 'A'},
        {"params", required_argument, 0, 'P'},
        {"delta-exp", required_argument, 0, 'X'},
        {"quiet", no_argument, 0, 'q'},
        {"anchor-grad", required_argument, 0, 'g'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 0; /* glibc: a full reset, also of a half-parsed "-xy" */
    int code, rc;
    while ((code = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        const char *flag = argv[optind - 1];
        if (code == 'h') {
            usage(stdout);
            return -1;
        }
        if (code == ':')
            return deft_cli_usage_error("%s needs a value", flag);
        if (code == '?')
            return deft_cli_usage_error("unknown option '%s' (see deft convex "
                                        "--help)", flag);
        if ((rc = parse_opt(code, flag, o)))
            return rc;
    }
    if (optind < argc)
        return deft_cli_usage_error("unexpected argument '%s'", argv[optind]);
    return 0;
}

enum { PARSE_NOT_MINE = -2 };

/* The problem's and the run's options; PARSE_NOT_MINE for others. */
static int parse_problem_opt(int code, opts_t *o)
{
    deft_convex_config_t *c = &o->c;
    long iv = 0;
    int rc = 0;
    switch (code) {
    case 'K':
        rc = deft_cli_parse_long("--workers", optarg, 1, DEFT_MAX_WORKERS, &iv);
        c->workers = (int)iv;
        return rc;
    case 'R':
        return deft_cli_parse_long("--rounds", optarg, 1, 1L << 40, &c->rounds);
    case 'l':
        o->log_path = optarg;
        return 0;
    case 'e':
        return deft_cli_parse_long("--log-every", optarg, 1, 1L << 40,
                                   &c->log_every);
    case 'm':
        return deft_cli_parse_double("--mu", optarg, 1e-300, 1e6, &c->mu);
    case 'D':
        if (strcmp(optarg, "fmnist") && strncmp(optarg, "libsvm:", 7))
            return deft_cli_usage_error("--data '%s': expected fmnist or "
                                        "libsvm:PATH", optarg);
        if (!strncmp(optarg, "libsvm:", 7) && !optarg[7])
            return deft_cli_usage_error("--data libsvm: needs a path "
                                        "(libsvm:PATH)");
        o->data = optarg;
        return 0;
    case 'd':
        o->data_dir = optarg;
        return 0;
    case 'N':
        o->normalize = 1;
        return 0;
    case 'T':
        return deft_cli_parse_double("--target", optarg, 0, 1, &c->target);
    case 'q':
        o->quiet = 1;
        return 0;
    default:
        return PARSE_NOT_MINE;
    }
}

/* The method's options; PARSE_NOT_MINE for others. */
static int parse_method_opt(int code, opts_t *o)
{
    deft_convex_config_t *c = &o->c;
    switch (code) {
    case 'a':
        if (deft_convex_method_parse(optarg, &c->method) != DEFT_OK)
            return deft_cli_usage_error("--algo '%s': expected eclk, "
                                        "lkatyusha, ecgd, ecsgd, eclsvrg, "
                                        "eclsvrg-diana or gd", optarg);
        return 0;
    case 'c':
        if (deft_compressor_parse(optarg, &c->compressor) != DEFT_OK)
            return deft_cli_usage_error("--compressor '%s': expected none, "
                                        "rbgs, randk, randk-private, topk, "
                                        "sign, qsgd or scale", optarg);
        o->compressor_given = 1;
        return 0;
    case 'r':
        return deft_cli_parse_double("--ratio", optarg, 1, 1e12, &c->ratio);
    case 's': {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (end == optarg || *end || errno || optarg[0] == '-')
            return deft_cli_usage_error("--seed '%s': not a non-negative "
                                        "integer", optarg);
        c->seed = v;
        return 0;
    }
    case 'B':
        if (!strcmp(optarg, "full")) {
            c->batch = 0;
            return 0;
        }
        return deft_cli_parse_long("--batch", optarg, 1, 1L << 40, &c->batch);
    case 'L':
        return deft_cli_parse_double("--lr", optarg, 1e-12, 1e6, &c->lr);
    case 't':
        return deft_cli_parse_double("--theta1", optarg, 1e-9, 0.5, &c->theta1);
    case 'p':
        return deft_cli_parse_double("--p", optarg, 1e-12, 1, &c->p);
    case 'A':
        return deft_cli_parse_double("--alpha", optarg, 1e-12, 1, &c->alpha);
    case 'X':
        c->delta_exp_set = 1;
        return deft_cli_parse_double("--delta-exp", optarg, 0, 4,
                                     &c->delta_exp);
    case 'P':
        if (strcmp(optarg, "compressor") && strcmp(optarg, "lkatyusha"))
            return deft_cli_usage_error("--params '%s': expected compressor "
                                        "or lkatyusha", optarg);
        c->lkatyusha_params = !strcmp(optarg, "lkatyusha");
        return 0;
    case 'g':
        if (strcmp(optarg, "local") && strcmp(optarg, "global"))
            return deft_cli_usage_error("--anchor-grad '%s': expected local "
                                        "or global", optarg);
        c->anchor = !strcmp(optarg, "global") ? DEFT_ANCHOR_GLOBAL
                                              : DEFT_ANCHOR_LOCAL;
        return 0;
    default:
        return PARSE_NOT_MINE;
    }
}

static int parse_opt(int code, const char *flag, opts_t *o)
{
    int rc = parse_problem_opt(code, o);
    if (rc == PARSE_NOT_MINE)
        rc = parse_method_opt(code, o);
    if (rc == PARSE_NOT_MINE)
        return deft_cli_usage_error("unknown option '%s'", flag);
    return rc;
}

/* Flags that do not apply to the chosen method. */
static int check_combination(opts_t *o)
{
    deft_convex_config_t *c = &o->c;
    const char *algo = deft_convex_method_name(c->method);
    int eclk = c->method == DEFT_CONVEX_ECLK ||
               c->method == DEFT_CONVEX_LKATYUSHA;
    int svrg = c->method == DEFT_CONVEX_ECLSVRG ||
               c->method == DEFT_CONVEX_ECLSVRG_DIANA;
    if ((c->method == DEFT_CONVEX_GD || c->method == DEFT_CONVEX_LKATYUSHA) &&
        o->compressor_given && c->compressor != DEFT_COMP_NONE)
        return deft_cli_usage_error("--compressor %s: --algo %s sends dense "
                                    "vectors (use eclk or ecgd to compress)",
                                    deft_compressor_name(c->compressor), algo);
    if (c->method == DEFT_CONVEX_GD || c->method == DEFT_CONVEX_LKATYUSHA)
        c->compressor = DEFT_COMP_NONE;
    if (c->theta1 > 0 && !eclk)
        return deft_cli_usage_error("--theta1 is a parameter of eclk and "
                                    "lkatyusha");
    if (c->p > 0 && !eclk && !svrg)
        return deft_cli_usage_error("--p is a parameter of eclk, lkatyusha "
                                    "and eclsvrg(-diana)");
    if (c->alpha > 0 && c->method != DEFT_CONVEX_ECLSVRG_DIANA)
        return deft_cli_usage_error("--alpha is a parameter of "
                                    "eclsvrg-diana");
    if (c->lkatyusha_params && !eclk)
        return deft_cli_usage_error("--params is a parameter of eclk");
    if (c->delta_exp_set && (!eclk || c->lkatyusha_params))
        return deft_cli_usage_error("--delta-exp is a parameter of eclk's "
                                    "compressor-aware constants");
    if (c->anchor != DEFT_ANCHOR_DEFAULT && !eclk && !svrg)
        return deft_cli_usage_error("--anchor-grad: --algo %s has no anchor",
                                    algo);
    if (c->lr > 0 && eclk)
        return deft_cli_usage_error("--lr: eclk's steps follow from L and mu "
                                    "(set --theta1 or --p instead)");
    return 0;
}

/* "eclk + topk (ratio 16), batch full", no newline. */
static void print_run_name(const deft_convex_config_t *c,
                           const deft_convex_setup_t *s)
{
    printf("%s + %s (ratio %g), batch ", deft_convex_method_name(c->method),
           deft_compressor_name(c->compressor), deft_convex_ratio_shown(c));
    if (s->B == s->m)
        printf("full");
    else
        printf("%zu", s->B);
}

static void print_header(const opts_t *o, const deft_logreg_t *prob,
                         const deft_convex_setup_t *s, const char *desc,
                         double pstar, double p0, int cached, double setup_s)
{
    const deft_convex_config_t *c = &o->c;
    printf("deft convex: %s, n = %zu, d = %zu, %d workers x %zu rows, "
           "mu = %g\n", desc, prob->n, prob->d, c->workers, s->m, c->mu);
    printf("  L_max = %.6g, L_f = %.6g (power iteration, %d its), L_local "
           "= %.6g, L_B(B = %zu) = %.6g\n", s->L_max, s->L_f, s->power_iters,
           s->L_loc, s->B, s->L_B);
    printf("  P* = %.15g (%s), P(x0) = %.15g; setup %.1f s\n  ", pstar,
           cached ? "cached" : "Newton", p0, setup_s);
    print_run_name(c, s);
    if (c->method == DEFT_CONVEX_ECLK || c->method == DEFT_CONVEX_LKATYUSHA)
        printf(", delta %.4g, anchor grad %s, %s parameters: L = %.4g, "
               "theta1 = %.4g, theta2 = 0.5, p = %.4g, eta = %.4g, eta/L = "
               "%.4g", s->delta, s->anchor_global ? "global" : "local",
               c->lkatyusha_params ? "L-Katyusha's" : "compressor-aware",
               s->L, s->theta1, s->p, s->eta, s->eta / s->L);
    else {
        printf(": lr = %.6g", s->lr);
        if (s->p > 0)
            printf(", anchor grad %s, p = %.4g",
                   s->anchor_global ? "global" : "local", s->p);
        if (s->alpha > 0)
            printf(", alpha = %.4g", s->alpha);
    }
    printf("\n");
    fflush(stdout);
}

static void print_result(const opts_t *o, const deft_convex_setup_t *s,
                         const deft_convex_result_t *r, deft_status_t st)
{
    print_run_name(&o->c, s);
    printf(": ");
    if (st == DEFT_ERR_DIVERGED) {
        printf("diverged at round %ld (%s)\n", r->diverged_round,
               deft_last_error());
        return;
    }
    char at4[32], at6[32];
    snprintf(at4, sizeof at4, r->level_round[2] < 0 ? "never" : "round %ld",
             r->level_round[2]);
    snprintf(at6, sizeof at6, r->level_round[4] < 0 ? "never" : "round %ld",
             r->level_round[4]);
    printf("rel. suboptimality %.3g after %ld rounds (best %.3g); 1e-4 at "
           "%s, 1e-6 at %s; %.4g Mbit sent per worker, %.1f s\n",
           r->final_rel, r->rounds_done, r->best_rel, at4, at6,
           (double)r->bits / 1e6, r->wall_s);
}

int deft_cli_convex(int argc, char **argv);

int deft_cli_convex(int argc, char **argv)
{
    deft_cli_cmd = "convex";
    opts_t o;
    memset(&o, 0, sizeof o);
    o.c.method = DEFT_CONVEX_ECLK;
    o.c.compressor = DEFT_COMP_TOPK;
    o.c.ratio = 16.0;
    o.c.workers = 8;
    o.c.rounds = 2000;
    o.c.log_every = 10;
    o.c.batch = 1;
    o.c.mu = 1e-3;
    o.data = "fmnist";
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    if ((rc = check_combination(&o)))
        return rc;
    if (deft_cli_dry_run)
        return 0;

    deft_logreg_t prob = {0};
    char desc[1024];
    if ((rc = load_problem(&o, &prob, desc, sizeof desc)))
        return rc;
    double t0 = deft_wall_s();
    deft_convex_setup_t s;
    deft_status_t st = deft_convex_setup(&prob, &o.c, &s);
    double pstar = 0, p0 = NAN;
    int cached = 0;
    if (st != DEFT_OK) {
        fprintf(stderr, "deft convex: %s\n", deft_last_error());
        deft_logreg_free(&prob);
        return st == DEFT_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    if ((rc = optimum(&o, &prob, desc, &pstar, &cached))) {
        deft_logreg_free(&prob);
        return rc;
    }
    double *zero = calloc(prob.d, sizeof(double));
    if (zero)
        p0 = deft_logreg_objective(&prob, o.c.mu, zero);
    free(zero);
    FILE *log = NULL;
    if (o.log_path && !(log = fopen(o.log_path, "w"))) {
        fprintf(stderr, "deft convex: cannot open the log %s: %s\n",
                o.log_path, strerror(errno));
        deft_logreg_free(&prob);
        return EXIT_RUN_FAILED;
    }
    if (log)
        deft_convex_log_config(log, &prob, &o.c, &s, desc, pstar, p0);
    if (!o.quiet)
        print_header(&o, &prob, &s, desc, pstar, p0, cached,
                     deft_wall_s() - t0);

    deft_convex_result_t r;
    st = deft_convex_run(&prob, &o.c, &s, pstar, p0, log, &r);
    if (st != DEFT_OK && st != DEFT_ERR_DIVERGED)
        fprintf(stderr, "deft convex: %s: %s\n", deft_status_str(st),
                deft_last_error());
    rc = st == DEFT_OK ? 0 : st == DEFT_ERR_DIVERGED ? EXIT_DIVERGED
                                                     : EXIT_RUN_FAILED;
    if (log) {
        deft_convex_log_final(log, &o.c, &s, &r, st);
        if (fclose(log) != 0 && rc == 0) {
            fprintf(stderr, "deft convex: cannot write %s\n", o.log_path);
            rc = EXIT_RUN_FAILED;
        }
    }
    print_result(&o, &s, &r, st);
    deft_logreg_free(&prob);
    return rc;
}

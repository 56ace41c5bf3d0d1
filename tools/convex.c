/* deft convex: eclk and its baselines on L2-regularized logistic regression
 * (SPEC §2, eclk), with K workers on the threads backend. The experiment
 * loop, the constants, the parameter rules, the options, the problem, its
 * optimum P* and the whole run (deft_convex_job) are the library's
 * (src/convex/); this file parses flags and prints.
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

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_RUN_FAILED = 1, EXIT_USAGE = DEFT_EXIT_USAGE, EXIT_DIVERGED = 3 };

typedef struct {
    deft_convex_config_t c;
    int quiet;
} opts_t;

/* deft convex's flags: the run's table (src/convex/options.c). */
static void convex_flags(deft_cli_flags_t *f)
{
    memset(f, 0, sizeof *f);
    const deft_option_def_t *t;
    const size_t n = deft_convex_option_defs(&t);
    for (size_t i = 0; i < n; i++)
        deft_cli_flags_add(f, &t[i].o);
}

static void usage(FILE *f, const deft_cli_flags_t *flags)
{
    fprintf(f,
        "usage: deft convex [options]\n"
        "\n"
        "Runs eclk or a baseline on L2-regularized logistic regression,\n"
        "P(x) = (1/K) sum_k f_k(x) + (mu/2)||x||^2, with K workers (threads),\n"
        "and logs the relative suboptimality (P(x_t) - P*)/(P(x_0) - P*)\n"
        "against communication rounds and bits sent.\n");
    deft_convex_config_t c;
    deft_convex_config_init(&c);
    for (size_t i = 0; i < flags->n; i++) {
        const deft_option_t *o = flags->opt[i];
        if (i == 0 || !strcmp(o->name, "method") || !strcmp(o->name, "workers"))
            fprintf(f, "%s:\n", i == 0 ? "\nproblem"
                                 : !strcmp(o->name, "method") ? "method" : "run");
        char deflt[128] = "";
        if (o->type != DEFT_OPTION_FLAG && strcmp(o->name, "data_dir"))
            deft_convex_config_get(&c, o->name, deflt, sizeof deflt);
        if (!strcmp(deflt, "default"))
            deflt[0] = '\0'; /* --anchor-grad: the method's */
        if (!strcmp(o->name, "compressor"))
            strcat(deflt, "; gd and lkatyusha use none");
        deft_cli_print_option(f, o, deflt);
    }
    fprintf(f, "  --quiet              print only the final line\n"
            "  -h, --help           this help\n"
            "\n"
            "exit status: 0 ok, 1 failed, 2 bad usage, 3 diverged\n");
}

static deft_status_t set_convex(void *cfg, const char *name, const char *value)
{
    return deft_convex_config_set(cfg, name, value);
}

/* Parses the flags into o; 0 to go on, -1 after --help, else the exit
 * status. */
static int parse(int argc, char **argv, opts_t *o)
{
    deft_cli_flags_t flags;
    convex_flags(&flags);
    int rc = deft_cli_parse(argc, argv, &flags, set_convex, &o->c, &o->quiet);
    if (rc == DEFT_CLI_HELP)
        return usage(stdout, &flags), -1;
    if (rc != DEFT_CLI_GO)
        return rc;
    if (optind < argc)
        return deft_cli_usage_error("unexpected argument '%s'", argv[optind]);
    if (deft_convex_config_check(&o->c, "--") != DEFT_OK)
        return deft_cli_usage_error("%s", deft_last_error());
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

/* The problem, its constants and the run's parameters (on_start). */
static void print_header(const deft_convex_config_t *c,
                         const deft_convex_job_t *job, void *user)
{
    const deft_convex_setup_t *s = &job->setup;
    if (job->warning[0])
        fprintf(stderr, "deft convex: %s\n", job->warning);
    if (((const opts_t *)user)->quiet)
        return;
    printf("deft convex: %s, n = %zu, d = %zu, %d workers x %zu rows, "
           "mu = %g\n", job->desc, job->n, job->d, c->workers, s->m, c->mu);
    printf("  L_max = %.6g, L_f = %.6g (power iteration, %d its), L_local "
           "= %.6g, L_B(B = %zu) = %.6g\n", s->L_max, s->L_f, s->power_iters,
           s->L_loc, s->B, s->L_B);
    printf("  P* = %.15g (%s), P(x0) = %.15g; setup %.1f s\n  ", job->pstar,
           job->cached ? "cached" : "Newton", job->p0, job->setup_s);
    print_run_name(c, s);
    if (c->method == DEFT_CONVEX_ECLK || c->method == DEFT_CONVEX_LKATYUSHA) {
        printf(", delta %.4g, anchor grad %s, %s parameters: L = %.4g, "
               "theta1 = %.4g, theta2 = 0.5, p = %.4g, eta = %.4g, eta/L = "
               "%.4g", s->delta, s->anchor_global ? "global" : "local",
               c->lkatyusha_params ? "L-Katyusha's" : "compressor-aware",
               s->L, s->theta1, s->p, s->eta, s->eta / s->L);
        if (s->L_mask > 0)
            printf("\n  Rand-K rule: L_mask = %.4g, rho = sqrt(L_mask / L_f) "
                   "= %.4g, z step eta/(s L_parts) with s = %.4g", s->L_mask,
                   sqrt(fmin(s->L_mask / s->L_f, 1.0)), s->lscale);
        else if (s->lscale != 1)
            printf("\n  z step eta/(s L_parts) with s = %.4g", s->lscale);
    } else {
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

static void print_result(const deft_convex_config_t *c,
                         const deft_convex_job_t *job)
{
    const deft_convex_result_t *r = &job->result;
    print_run_name(c, &job->setup);
    printf(": ");
    if (job->run_status == DEFT_ERR_DIVERGED) {
        printf("diverged at round %ld (%s)\n", r->diverged_round,
               job->run_error);
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
    deft_convex_config_init(&o.c);
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (deft_cli_dry_run)
        return 0;
    deft_convex_job_t *job = malloc(sizeof *job);
    if (!job)
        return deft_cli_usage_error("out of memory"), EXIT_RUN_FAILED;
    deft_status_t st = deft_convex_job(&o.c, job, print_header, &o);
    if (!job->ran) { /* the data cannot take this config: bad usage */
        if (job->warning[0]) /* the P* cache, before what stopped the run */
            fprintf(stderr, "deft convex: %s\n", job->warning);
        fprintf(stderr, "deft convex: %s\n", deft_last_error());
        free(job);
        return st == DEFT_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    const deft_status_t rs = job->run_status;
    if (rs != DEFT_OK && rs != DEFT_ERR_DIVERGED)
        fprintf(stderr, "deft convex: %s: %s\n", deft_status_str(rs),
                job->run_error);
    else if (st != DEFT_OK && st != DEFT_ERR_DIVERGED) /* the log */
        fprintf(stderr, "deft convex: %s\n", deft_last_error());
    rc = st == DEFT_OK ? 0 : st == DEFT_ERR_DIVERGED ? EXIT_DIVERGED
                                                     : EXIT_RUN_FAILED;
    print_result(&o.c, job);
    free(job);
    return rc;
}

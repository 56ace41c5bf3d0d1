/* The convex experiment loop of the library (src/convex/run.h): eclk's
 * compressor-aware defaults keep an accelerated rate under Top-K where
 * EC-GD crawls, and under Rand-K where Top-K's rule swings back up, the
 * global anchor gradient and DIANA's shifts reach the optimum on
 * heterogeneous shards where the local forms stall, the bits
 * are counted, runs repeat bitwise, and bad configurations are refused by
 * name. */
#include "testutil.h"

#include "convex/run.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { K = 4, M = 60, D = 12 };

/* K shards of M rows, d = D features (the last a bias 1), heterogeneous:
 * shard k's rows are c_k + 0.05 v_i with its own centre c_k, so that
 * grad f_k(x*) differs from shard to shard, and nearly collinear within a
 * shard, so that A^T A has a few large and many small eigenvalues: with
 * mu = 1e-4 the problem is ill-conditioned (kappa ~ 4000). Labels from a
 * noisy linear teacher. */
static deft_logreg_t make_problem(uint64_t seed)
{
    const size_t n = (size_t)K * M, d = D;
    deft_logreg_t p;
    memset(&p, 0, sizeof p);
    p.n = n;
    p.d = d;
    p.a = malloc(sizeof(float) * n * d);
    p.b = malloc(sizeof(float) * n);
    float centre[D], teacher[D];
    deft_test_fill(teacher, d, seed + 1);
    deft_rng_t r = deft_rng_make(seed, 1, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < n; i++) {
        if (i % M == 0)
            deft_test_fill(centre, d, seed + 10 + i / M);
        float *a = p.a + i * d;
        double t = 0;
        for (size_t j = 0; j + 1 < d; j++) {
            a[j] = centre[j] + 0.05f * (2.0f * deft_rng_uniform(&r) - 1.0f);
            t += (double)a[j] * teacher[j];
        }
        a[d - 1] = 1.0f;
        t += 0.3 * (2.0 * deft_rng_uniform_f64(&r) - 1.0);
        p.b[i] = t > 0 ? 1.0f : -1.0f;
    }
    return p;
}

static deft_convex_config_t config(deft_convex_method_t m,
                                   deft_compressor_kind_t comp, double ratio)
{
    deft_convex_config_t c;
    memset(&c, 0, sizeof c);
    c.method = m;
    c.compressor = comp;
    c.ratio = ratio;
    c.workers = K;
    c.rounds = 20000;
    c.log_every = 20;
    c.batch = 0;
    c.mu = 1e-4;
    c.target = 1e-8;
    c.seed = 3;
    return c;
}

typedef struct {
    deft_logreg_t prob;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->prob = make_problem(7);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    deft_logreg_free(&f->prob);
    free(f);
    return 0;
}

/* Runs c, logging to log (may be NULL), and returns the result; the
 * status must be want. */
static deft_convex_result_t run_logged(const fixture_t *f,
                                       const deft_convex_config_t *c,
                                       deft_convex_setup_t *s_out,
                                       deft_status_t want, FILE *log)
{
    double *x = calloc(f->prob.d, sizeof *x), *zero = calloc(f->prob.d,
                                                             sizeof *zero);
    deft_logreg_solution_t sol;
    assert_status(deft_logreg_solve(&f->prob, c->mu, DEFT_NEWTON_AUTO, x,
                                    &sol), DEFT_OK);
    double p0 = deft_logreg_objective(&f->prob, c->mu, zero);
    free(x);
    free(zero);
    deft_convex_setup_t s;
    assert_status(deft_convex_setup(&f->prob, c, &s), DEFT_OK);
    deft_convex_result_t r;
    assert_status(deft_convex_run(&f->prob, c, &s, sol.pstar, p0, log, &r),
                  want);
    if (s_out)
        *s_out = s;
    return r;
}

static deft_convex_result_t run(const fixture_t *f,
                                const deft_convex_config_t *c,
                                deft_convex_setup_t *s_out,
                                deft_status_t want)
{
    return run_logged(f, c, s_out, want, NULL);
}

/* The largest factor by which a logged relative suboptimality exceeds the
 * lowest one logged before it: how far the run swung back up. */
static double largest_rise(FILE *log)
{
    char line[4096];
    double low = INFINITY, rise = 1;
    rewind(log);
    while (fgets(line, sizeof line, log)) {
        const char *k = strstr(line, "\"rel_subopt\": ");
        if (!k || strstr(line, "\"final\""))
            continue;
        double v = strtod(k + strlen("\"rel_subopt\": "), NULL);
        if (v / low > rise)
            rise = v / low;
        low = v < low ? v : low;
    }
    return rise;
}

/* The round at which 1e-6 was first logged, or the rounds run + 1. */
static long rounds_to_1e6(const deft_convex_result_t *r)
{
    return r->level_round[4] >= 0 ? r->level_round[4] : r->rounds_done + 1;
}

static void test_problem_is_ill_conditioned(void **state)
{
    fixture_t *f = *state;
    deft_convex_config_t c = config(DEFT_CONVEX_GD, DEFT_COMP_NONE, 1);
    deft_convex_setup_t s;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    double kappa = (s.L_f + c.mu) / c.mu;
    printf("  L_f = %.4g, L_max = %.4g, kappa_f = %.3g\n", s.L_f, s.L_max,
           kappa);
    assert_true(kappa > 1e3);
}

/* The acceptance test: with Top-K (k = 3 of 12) and full local gradients,
 * eclk with its default constants reaches 1e-6 in clearly fewer rounds
 * than EC-GD at GD's step, and is linear (1e-8 reached). */
static void test_eclk_topk_accelerated_against_ecgd(void **state)
{
    fixture_t *f = *state;
    deft_convex_config_t c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    deft_convex_setup_t s;
    deft_convex_result_t ek = run(f, &c, &s, DEFT_OK);
    c = config(DEFT_CONVEX_ECGD, DEFT_COMP_TOPK, 4);
    deft_convex_result_t gd = run(f, &c, NULL, DEFT_OK);
    long re = rounds_to_1e6(&ek), rg = rounds_to_1e6(&gd);
    printf("  rounds to 1e-6: eclk %ld (theta1 %.4g, p %.4g, best %.3g), "
           "ecgd %ld (best %.3g)\n", re, s.theta1, s.p, ek.best_rel, rg,
           gd.best_rel);
    assert_true(ek.level_round[6] >= 0); /* 1e-8: linear, no floor */
    assert_true(3 * re < rg);
}

/* K2 shards of M2 rows, D2 features whose scales fall from 1 to e^-4
 * (the last a bias 1, uniform entries), labels from a noisy linear
 * teacher: a problem of the kind of scripts/eclk_restate.py's small one,
 * where eclk under Rand-K with Top-K's rule swings back up. */
enum { K2 = 4, M2 = 100, D2 = 64 };

static deft_logreg_t make_scaled_problem(uint64_t seed)
{
    const size_t n = (size_t)K2 * M2, d = D2;
    deft_logreg_t p;
    memset(&p, 0, sizeof p);
    p.n = n;
    p.d = d;
    p.a = malloc(sizeof(float) * n * d);
    p.b = malloc(sizeof(float) * n);
    float teacher[D2];
    deft_test_fill(teacher, d, seed + 1);
    deft_rng_t r = deft_rng_make(seed, 2, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < n; i++) {
        float *a = p.a + i * d;
        double t = 0;
        for (size_t j = 0; j + 1 < d; j++) {
            double u = 2.0 * deft_rng_uniform_f64(&r) - 1.0;
            a[j] = (float)(1.7 * u * exp(-4.0 * (double)j / (double)(d - 2)));
            t += (double)a[j] * teacher[j];
        }
        a[d - 1] = 1.0f;
        t += 0.3 * (2.0 * deft_rng_uniform_f64(&r) - 1.0);
        p.b[i] = t > 0 ? 1.0f : -1.0f;
    }
    return p;
}

/* eclk under Rand-K/16 (shared seed, full local gradients). With the
 * former default (Top-K's rule: p = delta, L-Katyusha's theta1 for it, no
 * bound on the z step) the run swings back up by orders of magnitude;
 * the Rand-K rule (docs/eclk.md) reaches 1e-8. The same
 * for Rand-K with each worker's own coordinates. */
static void test_eclk_randk_rule_does_not_swing_back(void **state)
{
    (void)state;
    fixture_t g = {.prob = make_scaled_problem(11)};
    const deft_compressor_kind_t comps[] = {DEFT_COMP_RANDK,
                                            DEFT_COMP_RANDK_PRIVATE};
    for (int i = 0; i < 2; i++) {
        deft_convex_config_t c = config(DEFT_CONVEX_ECLK, comps[i], 16);
        c.workers = K2;
        c.batch = 0;
        c.rounds = 20000;
        c.log_every = 100;
        deft_convex_setup_t s;
        deft_convex_result_t rule = run(&g, &c, &s, DEFT_OK);
        /* the former default, Top-K's rule: p = delta, L-Katyusha's
         * theta1 for it, the z step eta/L */
        double L = s.L / s.lscale;
        c.p = s.delta;
        c.theta1 = sqrt(2.0 * (c.mu / L) / (3.0 * c.p));
        c.lscale = 1;
        c.target = 0;
        FILE *log = tmpfile();
        assert_non_null(log);
        deft_convex_result_t old = run_logged(&g, &c, NULL, DEFT_OK, log);
        double rise = largest_rise(log);
        fclose(log);
        printf("  %s: rule theta1 %.4g, z step scale %.3g (rho %.3g): 1e-8 "
               "at %ld, final %.3g; former theta1 %.4g: best %.3g, final "
               "%.3g, rose %.3gx above its low\n",
               deft_compressor_name(comps[i]), s.theta1, s.lscale,
               sqrt(s.L_mask / s.L_f), rule.level_round[6], rule.final_rel,
               c.theta1, old.best_rel, old.final_rel, rise);
        assert_true(rule.level_round[6] >= 0);
        assert_true(rule.final_rel <= 1e-8);
        assert_true(rise > 100.0);
        assert_true(old.final_rel > 1e4 * rule.final_rel);
    }
    deft_logreg_free(&g.prob);
}

/* On heterogeneous shards Top-K's messages must vanish at the optimum:
 * the global anchor gradient (eclk's default) and DIANA's shifts get
 * there; EC-LSVRG with local anchors (= EC-GD with full gradients) stalls
 * far above. */
static void test_vanishing_messages_reach_the_optimum(void **state)
{
    fixture_t *f = *state;
    deft_convex_config_t c = config(DEFT_CONVEX_ECLSVRG, DEFT_COMP_TOPK, 4);
    c.rounds = 6000;
    c.mu = 1e-2; /* kappa ~ 40: DIANA is not accelerated */
    deft_convex_result_t plain = run(f, &c, NULL, DEFT_OK);
    c.method = DEFT_CONVEX_ECLSVRG_DIANA;
    deft_convex_setup_t s;
    deft_convex_result_t diana = run(f, &c, &s, DEFT_OK);
    printf("  eclsvrg best %.3g, eclsvrg-diana best %.3g (alpha %.3g)\n",
           plain.best_rel, diana.best_rel, s.alpha);
    assert_close(s.alpha, 0.25, 0, 0); /* 1/(omega + 1), omega = 3 */
    assert_true(diana.best_rel <= 1e-8);
    assert_true(plain.best_rel > 100 * diana.best_rel);
}

/* eclk's own default: the global anchor gradient gets to the optimum; SPEC
 * §2's local one (with full gradients: each worker's grad f_k(x), which
 * does not vanish at x*) leaves Top-K a floor. */
static void test_eclk_global_anchor_against_local(void **state)
{
    fixture_t *f = *state;
    deft_convex_config_t c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    c.mu = 1e-2;
    c.rounds = 4000;
    c.target = 0;
    deft_convex_result_t global = run(f, &c, NULL, DEFT_OK);
    c.anchor = DEFT_ANCHOR_LOCAL;
    deft_convex_result_t local = run(f, &c, NULL, DEFT_OK);
    printf("  eclk best: global %.3g, local %.3g\n", global.best_rel,
           local.best_rel);
    assert_true(global.best_rel <= 1e-8);
    assert_true(local.best_rel > 100 * global.best_rel);
}

/* Bits: eclk with the global anchor counts each worker's Top-K messages
 * (64 bits per kept entry) plus one dense message per anchor move; DIANA
 * counts C's and Q's messages every round. */
static void test_bits_are_counted(void **state)
{
    fixture_t *f = *state;
    deft_convex_config_t c = config(DEFT_CONVEX_ECLSVRG_DIANA, DEFT_COMP_TOPK, 4);
    c.rounds = 100;
    c.target = 0;
    deft_convex_result_t r = run(f, &c, NULL, DEFT_OK);
    /* k = 3: C sends 3 indices + 3 floats, Q (randk-private) the same. */
    assert_int_equal(r.bits, (uint64_t)100 * (3 * 64 + 3 * 64));
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    c.rounds = 100;
    c.target = 0;
    deft_convex_result_t e = run(f, &c, NULL, DEFT_OK);
    uint64_t msgs = (uint64_t)100 * 3 * 64, dense = 32 * D;
    assert_true(e.bits > msgs);
    assert_int_equal((e.bits - msgs) % dense, 0);
    printf("  eclk: %llu anchor refreshes in 100 rounds\n",
           (unsigned long long)((e.bits - msgs) / dense));
}

static void test_runs_repeat_bitwise(void **state)
{
    fixture_t *f = *state;
    deft_convex_method_t ms[3] = {DEFT_CONVEX_ECLK, DEFT_CONVEX_ECLSVRG_DIANA,
                                  DEFT_CONVEX_ECSGD};
    for (int i = 0; i < 3; i++) {
        deft_convex_config_t c = config(ms[i], DEFT_COMP_TOPK, 4);
        c.rounds = 300;
        c.target = 0;
        c.batch = i == 0 ? 0 : 5;
        deft_convex_result_t a = run(f, &c, NULL, DEFT_OK);
        deft_convex_result_t b = run(f, &c, NULL, DEFT_OK);
        assert_memory_equal(&a.final_rel, &b.final_rel, sizeof(double));
        assert_int_equal(a.bits, b.bits);
    }
}

/* The parameter rules: L-Katyusha's constants for compressor none; with a
 * compressor the default and --delta-exp scale L by delta^-E; full local
 * gradients with the global anchor move the anchor with probability
 * delta. */
static void test_parameter_rules(void **state)
{
    fixture_t *f = *state;
    deft_convex_config_t c = config(DEFT_CONVEX_LKATYUSHA, DEFT_COMP_NONE, 1);
    deft_convex_setup_t s;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    double L = s.L_loc + c.mu;
    assert_close(s.L, L, 1e-12, 0);
    assert_close(s.theta1, sqrt(2.0 * c.mu / (3.0 * L)), 1e-12, 0);
    assert_close(s.eta, 0.5 / (1.5 * s.theta1), 1e-12, 0);
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    c.delta_exp_set = 1;
    c.delta_exp = 1;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    assert_close(s.delta, 0.25, 0, 0);
    assert_close(s.L, 4 * L, 1e-12, 0);
    assert_close(s.p, 0.25, 0, 0);
    c.lkatyusha_params = 1;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    assert_close(s.L, L, 1e-12, 0);
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    c.batch = 1;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    assert_close(s.p, 1.0 / M, 1e-12, 0);
    assert_close(s.L_B, s.L_max, 1e-12, 0);

    /* The Rand-K rule: p = delta / 2, theta1 L-Katyusha's for it, and the
     * z step eta/(s L) shortened (s > 1) where rho / (3 delta theta1)
     * exceeds one constant C, to exactly C; Top-K and --params lkatyusha
     * leave it out. */
    double cst[4], bound = 0;
    const double ratios[4] = {1.5, 2, 4, 12};
    for (int i = 0; i < 4; i++) {
        c = config(DEFT_CONVEX_ECLK, DEFT_COMP_RANDK, ratios[i]);
        assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
        double rho = sqrt(s.L_mask / s.L_f);
        double lk = sqrt(2.0 * c.mu / (3.0 * L * s.p));
        cst[i] = rho / (3.0 * s.delta * s.theta1 * s.lscale);
        printf("  randk/%g: delta %.4g, p %.4g, rho %.4g, theta1 %.4g, "
               "lscale %.4g, rho / (3 delta theta1 s) = %.4g\n", ratios[i],
               s.delta, s.p, rho, s.theta1, s.lscale, cst[i]);
        assert_close(s.p, s.delta / 2, 1e-15, 0);
        assert_true(s.L_mask > 0 && s.L_mask <= s.L_f * (1 + 1e-9));
        assert_close(s.theta1, fmin(lk, 0.5), 1e-12, 0);
        assert_true(s.lscale >= 1);
        assert_close(s.L, s.lscale * L, 1e-12, 0);
        if (s.lscale > 1)
            bound = cst[i];
    }
    assert_true(bound > 0); /* some ratio shortened the z step */
    for (int i = 0; i < 4; i++)
        assert_true(cst[i] <= bound * (1 + 1e-12));
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    assert_true(s.L_mask == 0 && s.lscale == 1);
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_RANDK, 4);
    c.lkatyusha_params = 1;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    assert_true(s.L_mask == 0 && s.lscale == 1);
    c.lkatyusha_params = 0;
    c.lscale = 0.5; /* given: taken as it is */
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    assert_close(s.L, 0.5 * L, 1e-12, 0);
}

static void test_bad_configs_are_named(void **state)
{
    fixture_t *f = *state;
    deft_convex_setup_t s;
    deft_convex_config_t c = config(DEFT_CONVEX_GD, DEFT_COMP_TOPK, 4);
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("compressor must be none");
    c = config(DEFT_CONVEX_ECGD, DEFT_COMP_TOPK, 4);
    c.anchor = DEFT_ANCHOR_GLOBAL;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("no anchor");
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    c.workers = (int)f->prob.n; /* one row each */
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("cannot be split");
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    c.mu = 0;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("mu");
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    c.theta1 = 0.7;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("theta1 = 0.7");
    c = config(DEFT_CONVEX_ECGD, DEFT_COMP_RANDK, 4);
    c.lscale = 2;
    assert_status(deft_convex_config_check(&c, "--"), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--lscale is a parameter of eclk");
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_RANDK, 4);
    c.lscale = -1;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("lscale");
    /* a scale so small that the z step's L falls below mu: named as
     * lscale, not as the optimizer's eclk_L */
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_RANDK, 4);
    c.lscale = 1e-12;
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("lscale = 1e-12 makes the z step's smoothness");
    c = config(DEFT_CONVEX_ECLK, DEFT_COMP_TOPK, 4);
    assert_status(deft_convex_setup(&f->prob, &c, &s), DEFT_OK);
    c.workers = 2; /* s was made for 4 */
    deft_convex_result_t r;
    assert_status(deft_convex_run(&f->prob, &c, &s, 0, 1, NULL, &r),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("deft_convex_setup");
    assert_int_equal(r.diverged_round, -1);
    deft_convex_method_t m;
    assert_status(deft_convex_method_parse("eclsvrg-diana", &m), DEFT_OK);
    assert_int_equal(m, DEFT_CONVEX_ECLSVRG_DIANA);
    assert_status(deft_convex_method_parse("katyusha", &m),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("katyusha");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problem_is_ill_conditioned),
        cmocka_unit_test(test_eclk_topk_accelerated_against_ecgd),
        cmocka_unit_test(test_eclk_randk_rule_does_not_swing_back),
        cmocka_unit_test(test_vanishing_messages_reach_the_optimum),
        cmocka_unit_test(test_eclk_global_anchor_against_local),
        cmocka_unit_test(test_bits_are_counted),
        cmocka_unit_test(test_runs_repeat_bitwise),
        cmocka_unit_test(test_parameter_rules),
        cmocka_unit_test(test_bad_configs_are_named),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* The option tables: the optimizer's (deft.h), the training run's and deft
 * convex's. Every option reads back what it was set to; errors name the
 * option as given and the range; the registry and the tables agree with
 * the public enums; each algorithm's and compressor's own options apply to
 * them alone; the checks refuse what deft_optim_create refuses. */
#include "testutil.h"

#include "compress/compress_impl.h"
#include "convex/run.h"
#include "optim/optim_internal.h"
#include "train/train.h"

#include <stdio.h>
#include <string.h>

#define BIT(x) (1u << (x))

/* get -> set -> get gives the same text and the same bytes, for every
 * option of a table over a struct of `size` bytes. */
static void roundtrip(const deft_option_def_t *t, size_t n, void *base,
                      size_t size)
{
    unsigned char before[4096], after[4096];
    assert_true(size <= sizeof before);
    for (size_t i = 0; i < n; i++) {
        char text[256], again[256];
        assert_status(deft_option_format(&t[i], base, text, sizeof text), DEFT_OK);
        memcpy(before, base, size);
        if (t[i].o.type == DEFT_OPTION_STRING && !text[0])
            continue; /* NULL: nothing to set */
        if (deft_option_parse(&t[i], base, t[i].o.name, text) != DEFT_OK)
            fail_msg("%s: its own value '%s' does not parse: %s", t[i].o.name,
                     text, deft_last_error());
        memcpy(after, base, size);
        assert_status(deft_option_format(&t[i], base, again, sizeof again), DEFT_OK);
        if (strcmp(text, again) != 0 ||
            (t[i].o.type != DEFT_OPTION_STRING && memcmp(before, after, size)))
            fail_msg("%s: '%s' read back as '%s'", t[i].o.name, text, again);
        assert_non_null(t[i].o.help);
        assert_true(strlen(t[i].o.help) > 3);
    }
}

static void test_every_option_reads_back(void **state)
{
    (void)state;
    const deft_option_def_t *t;
    size_t n = deft_optim_option_defs(&t);
    assert_int_equal(n, deft_optim_option_count());
    assert_true(n >= 20); /* every field of deft_optim_config_t */
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.lr = 0.3f, cfg.ratio = 0.1 * 3 + 64, cfg.seed = UINT64_MAX;
    cfg.eclk_L = 1.0 / 3.0, cfg.eclk_mu = 1e-3, cfg.momentum = 0.99999994f;
    roundtrip(t, n, &cfg, sizeof cfg);

    deft_train_config_t tc;
    deft_train_config_init(&tc);
    tc.data_dir = "/tmp", tc.n_decays = 3, tc.decay_at[2] = 0.9;
    tc.bn_recalibrate = DEFT_TRAIN_BN_AUTO;
    n = deft_train_option_defs(&t);
    roundtrip(t, n, &tc, sizeof tc);

    deft_convex_config_t cc;
    deft_convex_config_init(&cc);
    cc.batch = 0, cc.theta1 = 0.125;
    n = deft_convex_option_defs(&t);
    roundtrip(t, n, &cc, sizeof cc);
}

static void test_set_names_the_option_and_range(void **state)
{
    (void)state;
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT, keep = cfg;
    assert_status(deft_optim_config_set(&cfg, "ratio", "0.5"),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("ratio '0.5': must be a number >= 1");
    assert_status(deft_optim_config_set(&cfg, "--ratio", "x"),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--ratio 'x'");
    assert_status(deft_optim_config_set(&cfg, "momentum", "1"),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("in [0, 1)");
    /* rounds to 1.0f: refused after rounding, not stored as 1 */
    assert_status(deft_optim_config_set(&cfg, "momentum", "0.99999999"),
                  DEFT_ERR_INVALID_ARG);
    assert_status(deft_optim_config_set(&cfg, "qsgd_levels", "128"),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("[1, 127]");
    assert_status(deft_optim_config_set(&cfg, "seed", "-1"),
                  DEFT_ERR_INVALID_ARG);
    assert_status(deft_optim_config_set(&cfg, "powersgd_rank", "99999999999"),
                  DEFT_ERR_INVALID_ARG);
    assert_status(deft_optim_config_set(&cfg, "algo", "adam"),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("one of sgd, ef, def, defa, saef, psync, ef21 or eclk");
    assert_status(deft_optim_config_set(&cfg, "nesterov", "maybe"),
                  DEFT_ERR_INVALID_ARG);
    assert_status(deft_optim_config_set(&cfg, "bogus", "1"), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("unknown option 'bogus'");
    assert_error_mentions("qsgd_levels");
    assert_memory_equal(&cfg, &keep, sizeof cfg); /* nothing changed */

    /* names: field, flag, with dashes */
    assert_status(deft_optim_config_set(&cfg, "--wd", "0.25"), DEFT_OK);
    assert_true(cfg.weight_decay == 0.25f);
    assert_status(deft_optim_config_set(&cfg, "weight-decay", "0.5"), DEFT_OK);
    assert_true(cfg.weight_decay == 0.5f);
    assert_status(deft_optim_config_set(&cfg, "compressor", "RANDK-PRIVATE"), DEFT_OK);
    assert_int_equal(cfg.compressor, DEFT_COMP_RANDK_PRIVATE);
    assert_status(deft_optim_config_set(&cfg, "randk_scaled", "true"), DEFT_OK);
    assert_int_equal(cfg.randk_scaled, 1);
    assert_status(deft_optim_config_set(&cfg, "eclk_p", "0"), DEFT_OK); /* zero */
    assert_status(deft_optim_config_set(&cfg, "eclk_p", "1.5"), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("or 0 (the theory's 1/eclk_n)");

    char buf[4];
    assert_status(deft_optim_config_get(&cfg, "compressor", buf, sizeof buf),
                  DEFT_ERR_INVALID_ARG); /* "randk-private" does not fit */
    assert_ptr_equal(deft_optim_option_find("--avg-period"),
                     deft_optim_option_find("avg_period"));
    assert_null(deft_optim_option_find("avg"));
}

/* The registry, the public enums and the names agree. */
static void test_registry_matches_the_enums(void **state)
{
    (void)state;
    static const struct { int v; const char *name; } algos[] = {
        {DEFT_ALGO_SGD, "sgd"},   {DEFT_ALGO_EF, "ef"},
        {DEFT_ALGO_DEF, "def"},   {DEFT_ALGO_DEFA, "defa"},
        {DEFT_ALGO_SAEF, "saef"}, {DEFT_ALGO_PSYNC, "psync"},
        {DEFT_ALGO_EF21, "ef21"}, {DEFT_ALGO_ECLK, "eclk"}};
    static const struct { int v; const char *name; } comps[] = {
        {DEFT_COMP_NONE, "none"},         {DEFT_COMP_RBGS, "rbgs"},
        {DEFT_COMP_RANDK, "randk"},       {DEFT_COMP_TOPK, "topk"},
        {DEFT_COMP_SIGN, "sign"},         {DEFT_COMP_QSGD, "qsgd"},
        {DEFT_COMP_SCALE, "scale"},       {DEFT_COMP_POWERSGD, "powersgd"},
        {DEFT_COMP_FP16, "fp16"},         {DEFT_COMP_BF16, "bf16"},
        {DEFT_COMP_RANDK_PRIVATE, "randk-private"}};
    size_t n = 0;
    for (const deft_algo_ops_t *const *r = deft_algo_registry; *r; r++, n++)
        assert_ptr_equal(deft_algo_ops((*r)->algo), *r); /* unique ids */
    assert_int_equal(n, sizeof algos / sizeof algos[0]);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(deft_algo_name((deft_algo_t)algos[i].v), algos[i].name);
        deft_algo_t a;
        assert_status(deft_algo_parse(algos[i].name, &a), DEFT_OK);
        assert_int_equal(a, algos[i].v);
        assert_true(strlen(deft_algo_describe(a)) > 5);
    }
    n = 0; /* a compressor added later may come after these */
    for (const deft_compressor_ops_t *const *r = deft_compressor_registry; *r; r++, n++)
        assert_ptr_equal(deft_compressor_ops_of((*r)->kind), *r);
    assert_true(n >= sizeof comps / sizeof comps[0]);
    for (size_t i = 0; i < sizeof comps / sizeof comps[0]; i++) {
        const deft_compressor_kind_t k = (deft_compressor_kind_t)comps[i].v;
        assert_string_equal(deft_compressor_name(k), comps[i].name);
        assert_string_equal(deft_optim_option_choice("compressor", comps[i].v),
                            comps[i].name);
        assert_true(strlen(deft_compressor_describe(k)) > 5);
    }
    assert_string_equal(deft_algo_name((deft_algo_t)99), "?");
    assert_null(deft_optim_option_choice("compressor", 31));
    deft_compressor_kind_t k;
    assert_status(deft_compressor_parse("zip", &k), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("randk-private");
}

static uint32_t algos_of(const char *name)
{
    return deft_optim_option_find(name)->algos;
}

/* The compressors of this test's time that read an option (a compressor
 * added later may read it too). */
static uint32_t comps_of(const char *name)
{
    return deft_optim_option_find(name)->compressors &
           (BIT(DEFT_COMP_RANDK_PRIVATE + 1) - 1);
}

/* An algorithm's and a compressor's own options apply to them alone. */
static void test_options_apply_where_they_are_read(void **state)
{
    (void)state;
    assert_int_equal(comps_of("algo"), BIT(DEFT_COMP_RANDK_PRIVATE + 1) - 1);
    assert_int_equal(algos_of("lambda"), BIT(DEFT_ALGO_DEF) | BIT(DEFT_ALGO_DEFA));
    assert_int_equal(algos_of("avg_period"), BIT(DEFT_ALGO_SAEF));
    assert_int_equal(algos_of("eclk_theta1"), BIT(DEFT_ALGO_ECLK));
    assert_int_equal(comps_of("qsgd_levels"), BIT(DEFT_COMP_QSGD));
    assert_int_equal(comps_of("powersgd_rank"), BIT(DEFT_COMP_POWERSGD));
    assert_int_equal(comps_of("randk_scaled"),
                     BIT(DEFT_COMP_RANDK) | BIT(DEFT_COMP_RANDK_PRIVATE));
    assert_int_equal(comps_of("ratio"),
                     BIT(DEFT_COMP_RBGS) | BIT(DEFT_COMP_RANDK) |
                     BIT(DEFT_COMP_TOPK) | BIT(DEFT_COMP_SCALE) |
                     BIT(DEFT_COMP_RANDK_PRIVATE));
    assert_false(algos_of("compressor") & BIT(DEFT_ALGO_SGD));
    assert_false(algos_of("momentum") & (BIT(DEFT_ALGO_EF21) | BIT(DEFT_ALGO_ECLK)));
    assert_false(algos_of("lr") & BIT(DEFT_ALGO_ECLK));
    assert_true(algos_of("lr") & BIT(DEFT_ALGO_EF21));

    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT; /* def + rbgs */
    assert_true(deft_option_applies(deft_optim_option_find("lambda"), &cfg));
    assert_false(deft_option_applies(deft_optim_option_find("qsgd_levels"), &cfg));
    cfg.algo = DEFT_ALGO_SGD, cfg.compressor = DEFT_COMP_QSGD;
    assert_false(deft_option_applies(deft_optim_option_find("qsgd_levels"), &cfg));
    assert_true(deft_option_applies(deft_optim_option_find("seed"), &cfg));
}

/* deft_optim_config_check refuses what create refuses, and names it. */
static void test_check_names_the_rule(void **state)
{
    (void)state;
    deft_optim_config_t c = DEFT_OPTIM_CONFIG_INIT;
    assert_status(deft_optim_config_check(&c), DEFT_OK);
    c.algo = DEFT_ALGO_PSYNC, c.compressor = DEFT_COMP_TOPK;
    assert_status(deft_optim_config_check(&c), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("psync averages blocks");
    assert_error_mentions("none, rbgs, randk");
    c.compressor = DEFT_COMP_RANDK;
    assert_status(deft_optim_config_check(&c), DEFT_OK);
    c.randk_scaled = 1;
    assert_status(deft_optim_config_check(&c), DEFT_ERR_INVALID_ARG);
    c = (deft_optim_config_t)DEFT_OPTIM_CONFIG_INIT;
    c.compressor = DEFT_COMP_POWERSGD, c.scope = DEFT_SCOPE_GLOBAL;
    assert_status(deft_optim_config_check(&c), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("scope global");
    c.algo = DEFT_ALGO_SGD; /* sgd sends the dense gradient */
    assert_status(deft_optim_config_check(&c), DEFT_OK);
    c = (deft_optim_config_t)DEFT_OPTIM_CONFIG_INIT;
    c.nesterov = 1, c.momentum = 0;
    assert_status(deft_optim_config_check(&c), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("nesterov = 1 needs momentum > 0");
    c = (deft_optim_config_t)DEFT_OPTIM_CONFIG_INIT;
    c.algo = DEFT_ALGO_ECLK;
    assert_status(deft_optim_config_check(&c), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("eclk_L = 0");
    c.eclk_L = 1, c.eclk_mu = 2, c.eclk_n = 10;
    assert_status(deft_optim_config_check(&c), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("eclk_mu = 2: must be at most eclk_L");
    c.algo = DEFT_ALGO_EF; /* eclk's fields are not read, L and mu unchecked */
    c.eclk_L = -1;
    assert_status(deft_optim_config_check(&c), DEFT_OK);
    c.lambda = 2; /* a set field out of range is refused even if unread */
    assert_status(deft_optim_config_check(&c), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("lambda = 2");
    /* CLI names */
    assert_status(deft_optim_config_check_as(&c, "--"), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--lambda = 2");
}

static void test_train_and_convex_tables(void **state)
{
    (void)state;
    deft_train_config_t tc;
    deft_train_config_init(&tc);
    assert_int_equal(tc.workers_set, 0);
    assert_status(deft_train_config_set(&tc, "--workers", "3"), DEFT_OK);
    assert_int_equal(tc.workers_set, 1);
    assert_status(deft_train_config_set(&tc, "--lr-decay", "0.3,0.6"), DEFT_OK);
    assert_int_equal(tc.n_decays, 2);
    assert_true(tc.decay_at[1] == 0.6);
    assert_status(deft_train_config_set(&tc, "--lr-decay", "0.3,1"),
                  DEFT_ERR_INVALID_ARG);
    assert_int_equal(tc.n_decays, 2); /* unchanged */
    assert_status(deft_train_config_set(&tc, "--lr-decay", "none"), DEFT_OK);
    assert_int_equal(tc.n_decays, 0);
    assert_status(deft_train_config_set(&tc, "--bn-recalibrate", "auto"), DEFT_OK);
    assert_int_equal(tc.bn_recalibrate, DEFT_TRAIN_BN_AUTO);
    assert_status(deft_train_config_set(&tc, "--ratio", "32"), DEFT_OK);
    assert_true(tc.optim.ratio == 32);
    assert_status(deft_train_config_set(&tc, "--batch", "0"), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--batch '0': must be an integer in [1, 1048576]");
    tc.epochs = 0;
    assert_status(deft_train_config_check(&tc, NULL), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--epochs = 0");

    deft_convex_config_t cc;
    deft_convex_config_init(&cc);
    assert_status(deft_convex_config_set(&cc, "--batch", "full"), DEFT_OK);
    assert_int_equal(cc.batch, 0);
    /* theta1's range is eclk_theta1's, from the optimizer's table */
    assert_status(deft_convex_config_set(&cc, "--theta1", "0.6"),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("(0, 0.5]");
    assert_status(deft_convex_config_set(&cc, "--compressor", "randk"), DEFT_OK);
    assert_int_equal(cc.compressor_set, 1);
    cc.method = DEFT_CONVEX_GD;
    assert_status(deft_convex_config_check(&cc, "--"), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--algo gd sends dense vectors");
}

/* Within a command, no two flags share a name. */
static void test_flags_are_unique(void **state)
{
    (void)state;
    const char *seen[256];
    size_t n_seen = 0;
    const deft_option_def_t *t;
    size_t n = deft_train_option_defs(&t);
    for (size_t i = 0; i < n; i++)
        seen[n_seen++] = t[i].o.flag;
    for (size_t i = 0; i < deft_optim_option_count(); i++)
        if (deft_optim_option(i)->flag)
            seen[n_seen++] = deft_optim_option(i)->flag;
    for (size_t i = 0; i < n_seen; i++)
        for (size_t j = i + 1; j < n_seen; j++)
            if (!strcmp(seen[i], seen[j]))
                fail_msg("deft train has two flags --%s", seen[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_option_reads_back),
        cmocka_unit_test(test_set_names_the_option_and_range),
        cmocka_unit_test(test_registry_matches_the_enums),
        cmocka_unit_test(test_options_apply_where_they_are_read),
        cmocka_unit_test(test_check_names_the_rule),
        cmocka_unit_test(test_train_and_convex_tables),
        cmocka_unit_test(test_flags_are_unique),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

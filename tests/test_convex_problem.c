/* The problem deft convex solves and its optimum (src/convex/problem.c):
 * equal shards after the fixed shuffle, the refusal of too many workers as
 * a usage error naming the largest --workers, the data's own failures as
 * IO or format errors, and the P* cache next to the log: written once and
 * read back bitwise, ignored (P* recomputed) for another key or a corrupt
 * value, and a cache that cannot be written only a warning. */
#include "testutil.h"

#include "convex/run.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];
static char svm[128];   /* an 11-row LIBSVM file, 3 features */
static const double MU = 1e-2;

static void tpath(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static void write_text(const char *path, const char *text)
{
    deft_test_write_file(path, text, strlen(text), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/deft-test-convex-problem-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    char text[1024] = "";
    for (int i = 0; i < 11; i++) {
        char line[96];
        snprintf(line, sizeof line, "%d 1:%g 2:%g 3:%g\n", i % 3 ? 1 : -1,
                 0.1 * i - 0.4, (i * 7 % 5) * 0.25 - 0.5, 1.0 + 0.05 * i);
        strcat(text, line);
    }
    tpath(svm, sizeof svm, "eleven.svm");
    write_text(svm, text);
    return 0;
}

/* Removes everything in tmpdir (files only) and tmpdir. */
static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
    return 0;
}

static deft_status_t load(deft_logreg_t *p, int workers, char *desc,
                          size_t desc_n)
{
    char data[160];
    snprintf(data, sizeof data, "libsvm:%s", svm);
    return deft_convex_problem_load(p, data, NULL, 0, workers, desc, desc_n);
}

/* ---- the problem ----------------------------------------------------- */

static void test_equal_shards(void **state)
{
    (void)state;
    /* workers -> rows kept: K floor(11 / K). */
    const int ks[] = {1, 2, 3, 4, 5};
    const size_t kept[] = {11, 10, 9, 8, 10};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        deft_logreg_t p, want;
        char desc[1024];
        assert_status(load(&p, ks[t], desc, sizeof desc), DEFT_OK);
        assert_int_equal(p.n, kept[t]);
        assert_int_equal(p.d, 4); /* 3 features + bias */
        char want_desc[1024];
        snprintf(want_desc, sizeof want_desc,
                 "libsvm:%s (3 features in the file)", svm);
        assert_string_equal(desc, want_desc);
        /* The same rows as the loader's, shuffled with the fixed seed,
         * then cut. */
        assert_status(deft_logreg_load_libsvm(&want, svm, 0, NULL), DEFT_OK);
        deft_logreg_shuffle(&want, DEFT_CONVEX_DATA_SEED);
        deft_logreg_truncate(&want, kept[t]);
        assert_int_equal(deft_logreg_hash(&p), deft_logreg_hash(&want));
        deft_logreg_free(&p);
        deft_logreg_free(&want);
    }
}

static void test_too_many_workers_is_usage(void **state)
{
    (void)state;
    deft_logreg_t p;
    char desc[1024];
    assert_status(load(&p, 6, desc, sizeof desc), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("11 examples cannot be split over 6 workers "
                          "(at least 2 rows each): use at most --workers 5");
    assert_int_equal(p.n, 0);
    assert_null(p.b);
    assert_status(load(&p, 1000, desc, sizeof desc), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("use at most --workers 5");
    assert_status(load(&p, 0, desc, sizeof desc), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--workers 0");
}

static void test_data_failures_are_not_usage(void **state)
{
    (void)state;
    deft_logreg_t p;
    char path[128], data[160];
    tpath(path, sizeof path, "missing.svm");
    snprintf(data, sizeof data, "libsvm:%s", path);
    assert_status(deft_convex_problem_load(&p, data, NULL, 0, 1, NULL, 0),
                  DEFT_ERR_IO);
    assert_error_mentions("missing.svm");
    tpath(path, sizeof path, "three-labels.svm");
    write_text(path, "1 1:1\n2 1:2\n3 1:3\n");
    snprintf(data, sizeof data, "libsvm:%s", path);
    assert_status(deft_convex_problem_load(&p, data, NULL, 0, 1, NULL, 0),
                  DEFT_ERR_FORMAT);
    tpath(path, sizeof path, "no-such-dir");
    assert_status(deft_convex_problem_load(&p, "fmnist", path, 0, 1, NULL, 0),
                  DEFT_ERR_IO);
    assert_int_equal(p.n, 0);
    assert_status(deft_convex_problem_load(&p, "mnist", NULL, 0, 1, NULL, 0),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("expected fmnist or libsvm:PATH");
}

/* ---- the P* cache ---------------------------------------------------- */

static void test_cache_path(void **state)
{
    (void)state;
    char out[256];
    deft_convex_pstar_path("/a/b/run.jsonl", 0x1234abcdull, out, sizeof out);
    assert_string_equal(out, "/a/b/pstar-000000001234abcd.txt");
    deft_convex_pstar_path("run.jsonl", 0xffull, out, sizeof out);
    assert_string_equal(out, "./pstar-00000000000000ff.txt");
    deft_convex_pstar_path(NULL, 1, out, sizeof out);
    assert_string_equal(out, "");
}

static int bitwise_equal(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static void test_cache_round_trip(void **state)
{
    (void)state;
    deft_logreg_t p;
    assert_status(load(&p, 2, NULL, 0), DEFT_OK);
    char log[128], cpath[256];
    tpath(log, sizeof log, "run.jsonl");
    uint64_t key = deft_convex_pstar_key(&p, MU);
    deft_convex_pstar_path(log, key, cpath, sizeof cpath);
    unlink(cpath);

    double pstar = 0, again = 0, read = 0;
    int cached = -1;
    deft_status_t cache_st = DEFT_ERR_INTERNAL;
    assert_status(deft_convex_optimum(&p, MU, log, "eleven", &pstar, &cached,
                                      &cache_st), DEFT_OK);
    assert_int_equal(cached, 0);
    assert_int_equal(cache_st, DEFT_OK);
    assert_true(pstar > 0 && pstar < 0.7); /* below P(0) = log 2 */
    assert_int_equal(deft_convex_pstar_read(cpath, key, &read), 1);
    if (!bitwise_equal(read, pstar))
        fail_msg("cache holds %.17g, P* = %.17g", read, pstar);
    assert_int_equal(deft_convex_pstar_read(cpath, key ^ 1, &read), 0);

    assert_status(deft_convex_optimum(&p, MU, log, "eleven", &again, &cached,
                                      &cache_st), DEFT_OK);
    assert_int_equal(cached, 1);
    if (!bitwise_equal(again, pstar))
        fail_msg("cached P* = %.17g, computed %.17g", again, pstar);

    /* Another mu is another key: another file, computed. */
    assert_true(deft_convex_pstar_key(&p, 2 * MU) != key);
    assert_status(deft_convex_optimum(&p, 2 * MU, log, "eleven", &again,
                                      &cached, NULL), DEFT_OK);
    assert_int_equal(cached, 0);
    assert_true(again > pstar);
    deft_logreg_free(&p);
}

static void test_cache_other_key_or_corrupt_is_recomputed(void **state)
{
    (void)state;
    deft_logreg_t p;
    assert_status(load(&p, 2, NULL, 0), DEFT_OK);
    char log[128], cpath[256], text[256];
    tpath(log, sizeof log, "run2.jsonl");
    uint64_t key = deft_convex_pstar_key(&p, MU);
    deft_convex_pstar_path(log, key, cpath, sizeof cpath);
    double want = 0, got = 0;
    int cached = -1;
    assert_status(deft_convex_optimum(&p, MU, NULL, NULL, &want, &cached,
                                      NULL), DEFT_OK);
    assert_int_equal(cached, 0); /* no log, no cache */

    /* A file at this key's path, with a matching key, is trusted. */
    snprintf(text, sizeof text, "key %016llx\npstar 0.125\n",
             (unsigned long long)key);
    write_text(cpath, text);
    assert_status(deft_convex_optimum(&p, MU, log, NULL, &got, &cached, NULL),
                  DEFT_OK);
    assert_int_equal(cached, 1);
    assert_true(got == 0.125);

    const char *bad[] = {"key %016llx\npstar 0.125\n",   /* other key */
                         "key %016llx\npstar nan\n",     /* not finite */
                         "not a cache file %016llx\n",  /* garbage */
                         "key %016llx\npstar \n",        /* no value */
                         "key %016llx\n"};               /* no pstar */
    for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
        snprintf(text, sizeof text, bad[t],
                 (unsigned long long)(t == 0 ? key + 1 : key));
        write_text(cpath, text);
        assert_status(deft_convex_optimum(&p, MU, log, NULL, &got, &cached,
                                          NULL), DEFT_OK);
        if (cached != 0 || !bitwise_equal(got, want))
            fail_msg("case %zu: cached = %d, P* = %.17g, want %.17g "
                     "recomputed", t, cached, got, want);
        /* and the file now holds the computed value */
        double read = 0;
        assert_int_equal(deft_convex_pstar_read(cpath, key, &read), 1);
        assert_true(bitwise_equal(read, want));
    }
    deft_logreg_free(&p);
}

static void test_cache_write_failure_is_a_warning(void **state)
{
    (void)state;
    deft_logreg_t p;
    assert_status(load(&p, 2, NULL, 0), DEFT_OK);
    char log[160];
    tpath(log, sizeof log, "no-such-dir/run.jsonl");
    double pstar = 0;
    int cached = -1;
    deft_status_t cache_st = DEFT_OK;
    assert_status(deft_convex_optimum(&p, MU, log, NULL, &pstar, &cached,
                                      &cache_st), DEFT_OK);
    assert_int_equal(cached, 0);
    assert_int_equal(cache_st, DEFT_ERR_IO);
    assert_error_mentions("cannot write the P* cache");
    assert_error_mentions("no-such-dir/pstar-");
    assert_true(pstar > 0);
    /* A bad mu fails the solve, with the message saying so. */
    assert_status(deft_convex_optimum(&p, 0, NULL, NULL, &pstar, &cached,
                                      NULL), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("computing P*: ");
    deft_logreg_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_shards),
        cmocka_unit_test(test_too_many_workers_is_usage),
        cmocka_unit_test(test_data_failures_are_not_usage),
        cmocka_unit_test(test_cache_path),
        cmocka_unit_test(test_cache_round_trip),
        cmocka_unit_test(test_cache_other_key_or_corrupt_is_recomputed),
        cmocka_unit_test(test_cache_write_failure_is_a_warning),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* The trainer on the real Fashion-MNIST data: a short logistic regression
 * learns, a resumed run ends bitwise equal to an uninterrupted one, bad
 * checkpoints are refused, and divergence is recorded rather than crashing. */
#include "testutil.h"

#include "data/data.h"
#include "nn/nn.h"
#include "train/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static deft_dataset_t train_set, test_set;
static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    deft_status_t st = deft_dataset_load_mnist_dir(&train_set, &test_set, NULL);
    if (st != DEFT_OK) {
        print_error("cannot load Fashion-MNIST (%s); run "
                    "scripts/install-deps.sh\n", deft_last_error());
        return -1;
    }
    deft_dataset_standardize(&train_set, &test_set);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/deft-test-train-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    deft_dataset_free(&train_set);
    deft_dataset_free(&test_set);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    return s;
}

static void test_logreg_one_epoch_learns(void **state)
{
    (void)state;
    deft_train_config_t cfg;
    deft_train_config_init(&cfg);
    cfg.model = DEFT_MODEL_LOGREG;
    cfg.optim.algo = DEFT_ALGO_SGD;
    cfg.optim.lr = 0.05f;
    cfg.workers = 2;
    cfg.epochs = 1;
    char log[300];
    snprintf(log, sizeof log, "%s/logreg.jsonl", tmpdir);
    cfg.log_path = log;
    deft_train_result_t res = {0};
    assert_status(deft_train_run_threads(&cfg, &train_set, &test_set, &res),
                  DEFT_OK);
    printf("  logreg, 1 epoch: test accuracy %.4f\n", res.final_test_acc);
    assert_true(res.final_test_acc > 0.80);
    assert_int_equal(res.epochs_done, 1);
    assert_int_equal(res.steps, 60000 / 128);
    char *s = slurp(log);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"epoch\": 1,"));
    assert_non_null(strstr(s, "\"test_acc\": 0.8"));
    assert_non_null(strstr(s, "\"final\": true, \"status\": \"ok\""));
    free(s);
}

static deft_train_config_t small_cfg(void)
{
    deft_train_config_t cfg;
    deft_train_config_init(&cfg);
    cfg.model = DEFT_MODEL_LOGREG;
    cfg.optim.algo = DEFT_ALGO_DEF;
    cfg.optim.ratio = 16;
    cfg.optim.lr = 0.05f;
    cfg.optim.seed = 7;
    cfg.workers = 3;
    cfg.batch = 96;
    cfg.epochs = 3;
    cfg.augment = 1;
    return cfg;
}

static void test_resume_is_bitwise_equal(void **state)
{
    (void)state;
    /* A tenth of the training set keeps this fast. */
    deft_dataset_t sub = train_set;
    sub.n = 6000;
    size_t P;
    {
        deft_model_t *m;
        assert_status(deft_model_create(&m, DEFT_MODEL_LOGREG, 1, 28, 28, 10, 1),
                      DEFT_OK);
        P = deft_model_num_params(m);
        deft_model_destroy(m);
    }
    float *full = calloc(P, sizeof(float)), *resumed = calloc(P, sizeof(float));
    char ckpt[300], log[300];
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", tmpdir);
    snprintf(log, sizeof log, "%s/run.jsonl", tmpdir);

    deft_train_config_t cfg = small_cfg();
    deft_train_result_t res = {0};
    res.model = full;
    assert_status(deft_train_run_threads(&cfg, &sub, &test_set, &res), DEFT_OK);
    assert_int_equal(res.epochs_done, 3);

    /* Interrupted after one epoch, then resumed twice (one epoch each). */
    cfg.checkpoint_path = ckpt;
    cfg.log_path = log;
    cfg.stop_after = 1;
    deft_train_result_t part = {0};
    assert_status(deft_train_run_threads(&cfg, &sub, &test_set, &part), DEFT_OK);
    assert_int_equal(part.epochs_done, 1);
    cfg.resume_path = ckpt;
    assert_status(deft_train_run_threads(&cfg, &sub, &test_set, &part), DEFT_OK);
    assert_int_equal(part.epochs_done, 2);
    cfg.stop_after = 0;
    part.model = resumed;
    assert_status(deft_train_run_threads(&cfg, &sub, &test_set, &part), DEFT_OK);
    assert_int_equal(part.epochs_done, 3);
    assert_int_equal(part.steps, res.steps);
    assert_memory_equal(full, resumed, P * sizeof(float));
    assert_int_equal(part.bytes_per_worker, res.bytes_per_worker);
    char *s = slurp(log); /* the log continues across resumes */
    assert_non_null(strstr(s, "\"epoch\": 1,"));
    assert_non_null(strstr(s, "\"epoch\": 3,"));
    free(s);

    /* Another worker count is refused, saying how to continue on it; with
     * --reshard it continues (from 3 workers on 2), evaluating the output
     * model first as it was at the checkpoint. A model or algorithm is
     * refused by name. */
    deft_train_config_t other = cfg;
    other.workers = 2;
    other.epochs = 4;
    assert_status(deft_train_run_threads(&other, &sub, &test_set, &part),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("written by 3 workers and this run has 2; add "
                          "--reshard");
    other.reshard = DEFT_RESHARD_MEAN;
    other.checkpoint_path = NULL;
    other.log_path = NULL;
    deft_train_result_t moved = {0};
    assert_status(deft_train_run_threads(&other, &sub, &test_set, &moved),
                  DEFT_OK);
    assert_int_equal(moved.resharded_from, 3);
    assert_int_equal(moved.epochs_done, 4);
    assert_close(moved.resumed_test_acc, part.final_test_acc, 0, 0);
    other = cfg;
    other.epochs = 4;
    other.optim.algo = DEFT_ALGO_EF;
    assert_status(deft_train_run_threads(&other, &sub, &test_set, &part),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--algo");
    /* A finished run cannot be resumed to the same epoch count. */
    assert_status(deft_train_run_threads(&cfg, &sub, &test_set, &part),
                  DEFT_ERR_INVALID_ARG);

    /* A corrupted or truncated checkpoint is refused. */
    other = cfg;
    other.epochs = 4;
    FILE *f = fopen(ckpt, "r+b");
    fseek(f, 200, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 200, SEEK_SET);
    fputc(c ^ 0x40, f);
    fclose(f);
    assert_status(deft_train_run_threads(&other, &sub, &test_set, &part),
                  DEFT_ERR_FORMAT);
    assert_error_mentions("checksum");
    assert_int_equal(truncate(ckpt, 100), 0);
    assert_status(deft_train_run_threads(&other, &sub, &test_set, &part),
                  DEFT_ERR_FORMAT);
    assert_error_mentions("truncated");
    free(full);
    free(resumed);
}

/* The test_loss field of the log line of `epoch` in log text s, as text
 * (printed with %.6f: equal text is equal to 1e-6). */
static void epoch_field(const char *s, int epoch, const char *key, char *out,
                        size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "{\"epoch\": %d,", epoch);
    const char *line = strstr(s, pat);
    assert_non_null(line);
    const char *f = strstr(line, key);
    assert_non_null(f);
    f += strlen(key);
    size_t i = 0;
    while (f[i] && f[i] != ',' && f[i] != '}' && i + 1 < n)
        i++;
    memcpy(out, f, i);
    out[i] = '\0';
}

/* A model with batch norm: its running statistics travel in the
 * checkpoint (a resumed run evaluates to the same test loss as an
 * uninterrupted one, which it would not from reset statistics), and the
 * log says which statistics each evaluation used. */
static void test_bn_model_resume_and_stats(void **state)
{
    (void)state;
    deft_dataset_t sub = train_set, tsub = test_set;
    sub.n = 384;
    tsub.n = 200;
    deft_train_config_t cfg;
    deft_train_config_init(&cfg);
    cfg.model = DEFT_MODEL_PRERESNET20;
    cfg.optim.ratio = 16;
    cfg.optim.lr = 0.05f;
    cfg.workers = 2;
    cfg.batch = 64;
    cfg.epochs = 2;
    cfg.bn_recalibrate = 0;  // the running statistics: they are checkpointed
    char ckpt[300], log_full[300], log_part[300];
    snprintf(ckpt, sizeof ckpt, "%s/bn.ckpt", tmpdir);
    snprintf(log_full, sizeof log_full, "%s/bn_full.jsonl", tmpdir);
    snprintf(log_part, sizeof log_part, "%s/bn_part.jsonl", tmpdir);
    deft_train_result_t res = {0}, part = {0};
    cfg.log_path = log_full;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &res), DEFT_OK);
    cfg.log_path = log_part;
    cfg.checkpoint_path = ckpt;
    cfg.stop_after = 1;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part), DEFT_OK);
    cfg.resume_path = ckpt;
    cfg.stop_after = 0;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part), DEFT_OK);
    assert_int_equal(part.epochs_done, 2);
    char *a = slurp(log_full), *b = slurp(log_part);
    char la[32], lb[32];
    epoch_field(a, 2, "\"test_loss\": ", la, sizeof la);
    epoch_field(b, 2, "\"test_loss\": ", lb, sizeof lb);
    printf("  preresnet20, epoch 2 test loss: uninterrupted %s, resumed %s\n",
           la, lb);
    assert_string_equal(la, lb);
    assert_non_null(strstr(a, "\"bn_stats\": \"running\""));
    assert_non_null(strstr(a, "\"model\": \"preresnet20\", \"init\": \"torch\""));
#if defined(__x86_64__) && defined(__GNUC__)
    // two workers on threads, each running oneDNN's convs at once (where
    // the CPU has its JIT kernels: AVX2 or AVX-512)
    if (__builtin_cpu_supports("avx2"))
        assert_non_null(strstr(a, "\"convs\": \"onednn\""));
#endif
    free(a), free(b);

    // recalibrated statistics are named in the log and returned with the
    // model; the model trained is the same either way, its statistics not
    deft_model_t *m;
    assert_status(deft_model_create(&m, cfg.model, 1, 28, 28, 10, 1), DEFT_OK);
    const size_t P = deft_model_num_params(m), NB = deft_model_num_buffers(m);
    deft_model_destroy(m);
    float *pa = calloc(P, sizeof(float)), *pb = calloc(P, sizeof(float));
    float *ba = calloc(NB, sizeof(float)), *bb = calloc(NB, sizeof(float));
    cfg.resume_path = NULL;
    cfg.checkpoint_path = NULL;
    cfg.epochs = 1;
    cfg.log_path = log_part;
    res.model = pa, res.buffers = ba;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &res), DEFT_OK);
    cfg.bn_recalibrate = 2;
    part.model = pb, part.buffers = bb;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part), DEFT_OK);
    assert_memory_equal(pa, pb, P * sizeof(float));
    assert_memory_not_equal(ba, bb, NB * sizeof(float));
    b = slurp(log_part);
    assert_non_null(strstr(b, "\"bn_stats\": \"recalibrated\""));
    res.model = part.model = NULL;  // freed below: later runs write none
    res.buffers = part.buffers = NULL;
    free(b), free(pa), free(pb), free(ba), free(bb);
    // more recalibration batches than an epoch's steps (6 here), or a model
    // without batch norm, are refused by name
    cfg.bn_recalibrate = 7;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--bn-recalibrate");
    cfg.bn_recalibrate = 1;
    cfg.model = DEFT_MODEL_LENET;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("no batch norm");
    // by default (auto) a model without BN has none to name, DEF's output
    // model is recalibrated over at most an epoch's batches (6 here, not
    // DEFT_TRAIN_BN_BATCHES), and SGD's, its training point, is not
    cfg.bn_recalibrate = DEFT_TRAIN_BN_AUTO;
    cfg.model = DEFT_MODEL_LOGREG;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part), DEFT_OK);
    b = slurp(log_part);
    assert_non_null(strstr(b, "\"bn_stats\": \"none\", \"bn_batches\": 0,"));
    free(b);
    cfg.model = DEFT_MODEL_PRERESNET20;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part), DEFT_OK);
    b = slurp(log_part);
    assert_non_null(strstr(b, "\"bn_stats\": \"recalibrated\", \"bn_batches\": 6,"));
    free(b);
    cfg.optim.algo = DEFT_ALGO_SGD;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part), DEFT_OK);
    b = slurp(log_part);
    assert_non_null(strstr(b, "\"bn_stats\": \"running\", \"bn_batches\": 0,"));
    free(b);
    cfg.optim.algo = DEFT_ALGO_DEF;
    // vgg11bn's last BN layers see a 1x1 map: one example per worker would
    // normalize them to beta; refused on every worker, naming the batch
    cfg.model = DEFT_MODEL_VGG11BN;
    cfg.batch = 2;
    assert_status(deft_train_run_threads(&cfg, &sub, &tsub, &part),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("per worker");
}

static void test_divergence_is_logged(void **state)
{
    (void)state;
    deft_dataset_t sub = train_set;
    sub.n = 3000;
    deft_train_config_t cfg = small_cfg();
    cfg.optim.algo = DEFT_ALGO_SGD;
    cfg.optim.lr = 1e6f;
    cfg.optim.momentum = 0.99f;
    char log[300];
    snprintf(log, sizeof log, "%s/div.jsonl", tmpdir);
    cfg.log_path = log;
    deft_train_result_t res = {0};
    assert_status(deft_train_run_threads(&cfg, &sub, &test_set, &res),
                  DEFT_ERR_DIVERGED);
    assert_error_mentions("step");
    assert_true(res.diverged);
    char *s = slurp(log);
    assert_non_null(strstr(s, "\"status\": \"diverged\""));
    assert_non_null(strstr(s, "\"diverged_step\""));
    free(s);
}

static void test_config_errors_name_the_flag(void **state)
{
    (void)state;
    deft_train_config_t cfg = small_cfg();
    deft_train_result_t res = {0};
    cfg.batch = 100; /* 3 workers */
    assert_status(deft_train_run_threads(&cfg, &train_set, &test_set, &res),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--batch 100");
    cfg = small_cfg();
    cfg.epochs = 0;
    assert_status(deft_train_config_check(&cfg, &train_set), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--epochs");
    cfg = small_cfg();
    cfg.n_decays = 1;
    cfg.decay_at[0] = 1.5;
    assert_status(deft_train_config_check(&cfg, &train_set), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("--lr-decay");
    cfg = small_cfg();
    cfg.log_path = "/nonexistent-dir/x.jsonl";
    assert_status(deft_train_run_threads(&cfg, &train_set, &test_set, &res),
                  DEFT_ERR_IO);
    assert_error_mentions("/nonexistent-dir/x.jsonl");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logreg_one_epoch_learns),
        cmocka_unit_test(test_resume_is_bitwise_equal),
        cmocka_unit_test(test_bn_model_resume_and_stats),
        cmocka_unit_test(test_divergence_is_logged),
        cmocka_unit_test(test_config_errors_name_the_flag),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

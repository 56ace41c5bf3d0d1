/* deft: command-line front end of libdeft.
 *
 * Exit codes: 0 success, 1 the run failed (I/O, bad data, ...), 2 bad
 * usage (unknown flag, impossible value), 3 the training diverged (the log
 * records it; divergence is a result, not a crash). */
#ifdef DEFT_HAVE_MPI
#include <mpi.h>
#endif
#include "cli.h"
#include "deft.h"
#include "data/data.h"
#include "nn/nn.h"
#include "train/train.h"

#include <cblas.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum { EXIT_RUN_FAILED = 1, EXIT_USAGE = DEFT_EXIT_USAGE, EXIT_DIVERGED = 3 };

/* deft convex: ECLK and its baselines on logistic regression (convex.c). */
int deft_cli_convex(int argc, char **argv);
/* deft checkpoint: show a checkpoint, re-shard it (checkpoint.c). */
int deft_cli_checkpoint(int argc, char **argv);

static void usage(FILE *f)
{
    fprintf(f,
            "usage: deft <command> [options]\n"
            "\n"
            "Communication-efficient distributed SGD with error feedback.\n"
            "\n"
            "commands:\n"
            "  train       train a network on Fashion-MNIST (deft train --help)\n"
            "  convex      ECLK and baselines on logistic regression, against\n"
            "              the optimum (deft convex --help)\n"
            "  checkpoint  show a training checkpoint, or re-shard it to\n"
            "              another worker count (deft checkpoint --help)\n"
            "  list        algorithms, compressors, models and backends\n"
            "\n"
            "options:\n"
            "  -h, --help     this help\n"
            "  -V, --version  print the version\n");
}

/* deft train's flags: the training run's table and the optimizer's
 * (without eclk's, a convex method), in three sections. */
typedef struct {
    deft_cli_flags_t flags;
    size_t optimizer, run; /* where the sections after "model and data" start */
} train_flags_t;

static void train_flags(train_flags_t *tf)
{
    memset(tf, 0, sizeof *tf);
    const deft_option_def_t *t;
    const size_t n = deft_train_option_defs(&t);
    size_t i = 0;
    for (; i < n && strcmp(t[i].o.name, "n_decays") != 0; i++)
        deft_cli_flags_add(&tf->flags, &t[i].o);
    tf->optimizer = tf->flags.n;
    const uint32_t eclk = 1u << DEFT_ALGO_ECLK;
    for (size_t k = 0; k < deft_optim_option_count(); k++)
        if (deft_optim_option(k)->algos & ~eclk)
            deft_cli_flags_add(&tf->flags, deft_optim_option(k));
    for (int d = 0; d < 2 && i < n; d++, i++) /* lr-decay, lr-decay-factor */
        deft_cli_flags_add(&tf->flags, &t[i].o);
    tf->run = tf->flags.n;
    for (; i < n; i++)
        deft_cli_flags_add(&tf->flags, &t[i].o);
}

/* The defaults deft train starts from: the library's, with a watchdog. */
static void train_defaults(deft_train_config_t *cfg)
{
    deft_train_config_init(cfg);
    cfg->comm_timeout_s = 300; /* the library default is off */
}

static void train_usage(FILE *f, const train_flags_t *tf)
{
    fprintf(f, "usage: deft train [options]\n\n"
            "Trains a model on Fashion-MNIST with K data-parallel workers, each\n"
            "compressing what it sends; evaluates after every epoch.\n");
    deft_train_config_t cfg;
    train_defaults(&cfg);
    for (size_t i = 0; i < tf->flags.n; i++) {
        if (i == 0 || i == tf->optimizer || i == tf->run)
            fprintf(f, "%s:\n", i == 0 ? "\nmodel and data"
                                 : i == tf->optimizer ? "optimizer" : "run");
        const deft_option_t *o = tf->flags.opt[i];
        char deflt[128] = "";
        if (o->type != DEFT_OPTION_FLAG && o->type != DEFT_OPTION_STRING &&
            !(o->implicit && o->type == DEFT_OPTION_CHOICE))
            deft_train_config_get(&cfg, o->flag, deflt, sizeof deflt);
        deft_cli_print_option(f, o, deflt);
    }
    fprintf(f, "  --quiet              print only the final line\n"
            "  -h, --help           this help\n\n"
            "exit status: 0 ok, 1 failed, 2 bad usage, 3 diverged\n");
}

typedef struct {
    int quiet, tty;
} ui_t;

static void fmt_bytes(double b, char *buf, size_t n)
{
    const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4)
        b /= 1000, i++;
    snprintf(buf, n, "%.*f %s", i ? 2 : 0, b, u[i]);
}

static void on_progress(const deft_progress_t *p, void *user)
{
    ui_t *ui = user;
    if (ui->quiet || !ui->tty)
        return;
    int eta = (int)p->eta_s;
    fprintf(stderr, "\r  epoch %d/%d  step %llu/%llu  loss %.4f  %.0f img/s  "
            "ETA %dm%02ds   ", p->epoch, p->epochs,
            (unsigned long long)p->step_in_epoch,
            (unsigned long long)p->steps_per_epoch, p->loss, p->images_per_s,
            eta / 60, eta % 60);
    fflush(stderr);
}

static void on_epoch(const deft_epoch_report_t *r, void *user)
{
    ui_t *ui = user;
    if (ui->quiet)
        return;
    char sent[32];
    fmt_bytes((double)r->bytes_per_worker, sent, sizeof sent);
    if (ui->tty)
        fprintf(stderr, "\r%80s\r", "");
    char bn[48] = "";
    if (r->bn_batches)
        snprintf(bn, sizeof bn, "  BN recalibrated (%d batches)", r->bn_batches);
    else if (strcmp(r->bn_stats, "running") == 0)
        snprintf(bn, sizeof bn, "  BN running stats");
    printf("epoch %3d/%d  train loss %.4f  test loss %.4f  test acc %6.2f%%  "
           "lr %.3g  sent %s/worker  %.0f img/s  %.1f s%s\n", r->epoch, r->epochs,
           r->train_loss, r->test_loss, 100 * r->test_acc, r->lr, sent,
           r->images_per_s, r->wall_s, bn);
    fflush(stdout);
}

/* "def + rbgs (ratio 256)", or "sgd (no compression)". */
static const char *method(const deft_train_config_t *cfg)
{
    static char buf[160];
    return deft_optim_config_describe(&cfg->optim, buf, sizeof buf);
}

/* A note when OPENBLAS_CORETYPE holds OpenBLAS to kernels without AVX-512
 * on a CPU that has it: the convs' sgemm calls then run at about half
 * speed (docs/models.md, Speed), and nothing else would say why. */
static void blas_note(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    const char *forced = getenv("OPENBLAS_CORETYPE");
    if (!forced || !*forced || !__builtin_cpu_supports("avx512f"))
        return;
    static const char *const avx512[] = {"skylakex", "cooperlake",
                                         "sapphirerapids"};
    const char *core = openblas_get_corename();
    for (size_t i = 0; i < sizeof avx512 / sizeof avx512[0]; i++)
        if (strcasecmp(core, avx512[i]) == 0)
            return;
    fflush(stdout);  // after the header, which goes to stdout
    fprintf(stderr,
            "deft: note: OPENBLAS_CORETYPE=%s holds OpenBLAS to its %s "
            "kernels on a CPU with AVX-512; unset it to let OpenBLAS pick "
            "its fastest (bench/bench_models.sh --openblas-core auto "
            "measures the difference)\n",
            forced, core);
#endif
}

static void on_start(const deft_train_config_t *cfg, void *user)
{
    const ui_t *ui = user;
    if (ui->quiet)
        return;
    printf("deft train: %s, %s, %d workers (%s), batch %d, %d epochs, "
           "lr %g\n", deft_model_name(cfg->model), method(cfg),
           cfg->workers, cfg->backend == DEFT_TRAIN_MPI ? "mpi" : "threads",
           cfg->batch, cfg->epochs, (double)cfg->optim.lr);
    blas_note();
}

/* The outcome of the job, in the CLI's words; the exit status. */
static int report(const deft_train_config_t *cfg, const ui_t *ui,
                  deft_status_t st, const deft_train_job_result_t *job)
{
    const deft_train_result_t *res = &job->run;
    if (st == DEFT_ERR_DIVERGED) {
        if (ui->tty && !ui->quiet)
            fprintf(stderr, "\r%80s\r", "");
        if (job->rank == 0)
            printf("%s: diverged at step %llu (%s)\n", method(cfg),
                   (unsigned long long)res->diverged_step, deft_last_error());
        return EXIT_DIVERGED;
    }
    if (st != DEFT_OK) {
        if (job->report && (st == DEFT_ERR_INVALID_ARG || st == DEFT_ERR_FORMAT ||
                            st == DEFT_ERR_IO))
            fprintf(stderr, "deft train: %s\n", deft_last_error());
        else if (job->report)
            fprintf(stderr, "deft train: %s: %s\n", deft_status_str(st),
                    deft_last_error());
        return st == DEFT_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    if (job->rank != 0)
        return 0;
    char sent[32];
    fmt_bytes((double)res->bytes_per_worker, sent, sizeof sent);
    if (res->resharded_from && !ui->quiet)
        printf("re-sharded from %d workers to %d: test accuracy %.2f%% right "
               "after, before any step\n", res->resharded_from, job->workers,
               100 * res->resumed_test_acc);
    printf("%s: test accuracy %.2f%% (best %.2f%%) after %d epochs, %s sent "
           "per worker, %.1f s\n", method(cfg), 100 * res->final_test_acc,
           100 * res->best_test_acc, res->epochs_done, sent, res->wall_s);
    return 0;
}

/* Parses deft train's flags into cfg and ui; -1 to go on, else the exit
 * status. */
static deft_status_t set_train(void *cfg, const char *name, const char *value)
{
    return deft_train_config_set(cfg, name, value);
}

static int parse_train(int argc, char **argv, deft_train_config_t *cfg,
                       ui_t *ui)
{
    train_flags_t tf;
    train_flags(&tf);
    int rc = deft_cli_parse(argc, argv, &tf.flags, set_train, cfg, &ui->quiet);
    if (rc == DEFT_CLI_HELP)
        return train_usage(stdout, &tf), 0;
    if (rc != DEFT_CLI_GO)
        return rc;
    if (optind < argc && cfg->reshard && (rc = deft_cli_stray_rule(argv[optind])))
        return rc;
    if (optind < argc)
        return deft_cli_usage_error("unexpected argument '%s'", argv[optind]);
    if (deft_train_config_check(cfg, NULL) != DEFT_OK)
        return deft_cli_usage_error("%s", deft_last_error());
    return -1;
}

static int cmd_train(int argc, char **argv)
{
    deft_cli_cmd = "train";
    deft_train_config_t cfg;
    train_defaults(&cfg);
    ui_t ui = {0, isatty(STDERR_FILENO)};
    int rc = parse_train(argc, argv, &cfg, &ui);
    if (rc >= 0 || deft_cli_dry_run)
        return rc >= 0 ? rc : 0;
    cfg.on_start = on_start;
    cfg.on_epoch = on_epoch;
    cfg.on_progress = on_progress;
    cfg.progress_every = 20;
    cfg.user = &ui;
    deft_train_job_result_t job;
    deft_status_t st = deft_train_job(&cfg, &job);
    if (job.rank != 0)
        ui.quiet = 1;
    rc = report(&cfg, &ui, st, &job);
#ifdef DEFT_HAVE_MPI
    if (job.end_job) /* a peer may be stuck in a collective: end them all */
        MPI_Abort(MPI_COMM_WORLD, EXIT_RUN_FAILED);
#endif
    return rc;
}
/* Each algorithm and compressor in a line, and the options only some of
 * them read (from their own files, through the option table). */
static void list_described(void)
{
    printf("\nalgorithms:\n");
    for (int a = 0; strcmp(deft_algo_name((deft_algo_t)a), "?"); a++)
        printf("  %-14s %s\n", deft_algo_name((deft_algo_t)a),
               deft_algo_describe((deft_algo_t)a));
    printf("\ncompressors (--ratio R keeps about n/R values of a tensor):\n");
    const deft_option_t *ratio = deft_optim_option_find("ratio");
    const uint32_t all = deft_optim_option_find("algo")->compressors;
    for (int c = 0; strcmp(deft_compressor_name((deft_compressor_kind_t)c), "?"); c++) {
        printf("  %-14s %s", deft_compressor_name((deft_compressor_kind_t)c),
               deft_compressor_describe((deft_compressor_kind_t)c));
        const char *sep = " [";
        if (ratio->compressors & (1u << c))
            printf("%s--ratio", sep), sep = ", ";
        for (size_t i = 0; i < deft_optim_option_count(); i++) {
            const deft_option_t *o = deft_optim_option(i);
            if (o->flag && o != ratio && o->compressors != all &&
                (o->compressors & (1u << c)))
                printf("%s--%s", sep, o->flag), sep = ", ";
        }
        printf("%s\n", sep[1] == ' ' ? "]" : "");
    }
}

static int cmd_list(void)
{
    printf("algorithms:");
    for (int a = 0; strcmp(deft_algo_name((deft_algo_t)a), "?"); a++)
        printf(" %s", deft_algo_name((deft_algo_t)a));
    printf("\ncompressors:");
    for (int c = 0; strcmp(deft_compressor_name((deft_compressor_kind_t)c), "?"); c++)
        printf(" %s", deft_compressor_name((deft_compressor_kind_t)c));
    printf("\nmodels:");
    for (int m = DEFT_MODEL_LOGREG; m <= DEFT_MODEL_VGG11BN; m++)
        printf(" %s", deft_model_name((deft_model_kind_t)m));
    printf("\nbackends: threads%s\n", deft_have_mpi() ? " mpi" : "");
    list_described();
    /* Each model's tensors on Fashion-MNIST (1x28x28, 10 classes), as
     * rows x cols for weight matrices (what powersgd compresses) and n
     * for vectors. */
    printf("\nmodel tensors (1x28x28 inputs, 10 classes):\n");
    for (int k = DEFT_MODEL_LOGREG; k <= DEFT_MODEL_VGG11BN; k++) {
        deft_model_t *m = NULL;
        if (deft_model_create(&m, (deft_model_kind_t)k, 1, 28, 28, 10, 1) != DEFT_OK) {
            fprintf(stderr, "deft list: %s\n", deft_last_error());
            return EXIT_FAILURE;
        }
        const deft_layout_t *l = deft_model_layout(m);
        size_t total = 0;
        for (size_t t = 0; t < l->n_tensors; t++)
            total += l->sizes[t];
        printf("  %-11s %8zu parameters in %zu tensors", deft_model_name((deft_model_kind_t)k),
               total, l->n_tensors);
        if (deft_model_num_buffers(m))
            printf(" (+ %zu BN running statistics)", deft_model_num_buffers(m));
        printf(":");
        for (size_t t = 0; t < l->n_tensors; t++)
            if (l->rows[t] > 1)
                printf(" %zux%zu", l->rows[t], l->sizes[t] / l->rows[t]);
            else
                printf(" %zu", l->sizes[t]);
        printf("\n");
        deft_model_destroy(m);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("deft %s\n", deft_version());
        return 0;
    }
    if (!strcmp(cmd, "train"))
        return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "convex"))
        return deft_cli_convex(argc - 1, argv + 1);
    if (!strcmp(cmd, "checkpoint"))
        return deft_cli_checkpoint(argc - 1, argv + 1);
    if (!strcmp(cmd, "list")) {
        if (argc > 2) {
            fprintf(stderr, "deft list: unexpected argument '%s'\n", argv[2]);
            return EXIT_USAGE;
        }
        return cmd_list();
    }
    fprintf(stderr, "deft: unknown command or option '%s' (try 'deft --help')\n",
            cmd);
    return EXIT_USAGE;
}

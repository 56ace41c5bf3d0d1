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

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void train_usage(FILE *f)
{
    fprintf(f,
        "usage: deft train [options]\n"
        "\n"
        "Trains a model on Fashion-MNIST with K data-parallel workers, each\n"
        "compressing what it sends; evaluates after every epoch.\n"
        "\n"
        "model and data:\n"
        "  --model NAME         logreg, mlp, lenet, vgg, preresnet20, vgg11bn\n"
        "                       (default lenet; 'deft list' shows their sizes)\n"
        "  --init NAME          torch: PyTorch's (nn's default; the DEF\n"
        "                       paper code's for preresnet20 and vgg11bn),\n"
        "                       or he: He normal, zero biases (default torch)\n"
        "  --bn-recalibrate N   models with batch norm: evaluate with BN\n"
        "                       statistics recomputed at the output model over\n"
        "                       N training batches per worker; 0: the running\n"
        "                       statistics, averaged over workers (default\n"
        "                       auto: %d batches when the output model is not\n"
        "                       the training point: def, defa, saef, psync)\n"
        "  --data-dir DIR       IDX files (default " DEFT_FASHION_MNIST_DIR ")\n"
        "  --augment            random crop (2-pixel padding) and flip\n"
        "optimizer:\n"
        "  --algo NAME          sgd, ef, def, defa, saef, psync, ef21 (default def)\n"
        "  --compressor NAME    none, rbgs, randk, topk, sign, qsgd, scale,\n"
        "                       powersgd, fp16, bf16, randk-private\n"
        "                       (default rbgs)\n"
        "  --ratio R            compression ratio n/k, >= 1 (default 256)\n"
        "  --scope S            tensor or global (default tensor)\n"
        "  --lambda L           DEF's detach coefficient in [0,1] (default 0.3)\n"
        "  --avg-period P       saef: average errors every P steps (default 0)\n"
        "  --qsgd-levels S      qsgd: levels, 1..127 (default 16)\n"
        "  --randk-scaled       randk, randk-private: scale kept values by n/k\n"
        "                       (unbiased)\n"
        "  --powersgd-rank R    powersgd: rank of each weight matrix's\n"
        "                       approximation, 1..1024 (default 1)\n"
        "  --lr LR              learning rate (default 0.05)\n"
        "  --lr-decay F,F,...   multiply lr by the decay factor at these\n"
        "                       fractions of training (default 0.5,0.75;\n"
        "                       'none' for a constant rate)\n"
        "  --lr-decay-factor X  (default 0.1)\n"
        "  --momentum MU        (default 0.9)\n"
        "  --nesterov           Nesterov momentum, torch.optim.SGD's form\n"
        "  --dampening D        momentum dampening in [0, 1] (default 0)\n"
        "  --wd WD              weight decay (default 5e-4)\n"
        "  --seed N             (default 0)\n"
        "run:\n"
        "  --workers K          workers (default 8)\n"
        "  --batch B            global batch, split across workers (default 128)\n"
        "  --epochs E           (default 10)\n"
        "  --stop-after N       stop after N epochs of this invocation\n"
        "                       (resume later with --resume)\n"
        "  --backend NAME       threads (default: K threads in this process)\n"
        "                       or mpi (one worker per rank: mpirun -np K\n"
        "                       deft train --backend mpi ...)\n"
        "  --log FILE           JSON lines, one object per epoch + a final one\n"
        "  --checkpoint FILE    save at every epoch end\n"
        "  --resume FILE        continue a run from its checkpoint\n"
        "  --reshard[=RULE]     with --resume: continue a checkpoint of\n"
        "                       another worker count (a lost host) on this\n"
        "                       run's workers. mean (default): errors and\n"
        "                       momenta keep their mean over workers, the\n"
        "                       model and schedule go on exactly; zero:\n"
        "                       restart errors and momenta at zero\n"
        "  --net-gbps G         model the steps' collectives on a G Gbit/s\n"
        "                       link (alpha-beta): logs comm_modeled_s and\n"
        "                       modeled_s = compute + modeled communication\n"
        "  --net-latency-us A   the link's latency (default 0 with --net-gbps)\n"
        "  --comm-timeout S     end the run (all ranks under MPI) when a\n"
        "                       collective has not completed after S seconds:\n"
        "                       a peer is stopped, dead or unreachable\n"
        "                       (default 300, 0 = wait forever)\n"
        "  --save-model FILE    write the final output model: P float32\n"
        "                       values in the model's layout order, then,\n"
        "                       for models with batch norm, the BN statistics\n"
        "                       its last evaluation used (mean, variance per\n"
        "                       BN layer)\n"
        "  --limit-train N      use only the first N training examples\n"
        "  --limit-test N       evaluate on only the first N test examples\n"
        "  --quiet              print only the final line\n"
        "\n"
        "exit status: 0 ok, 1 failed, 2 bad usage, 3 diverged\n",
        DEFT_TRAIN_BN_BATCHES);
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
    static char buf[96];
    if (cfg->optim.algo == DEFT_ALGO_SGD)
        snprintf(buf, sizeof buf, "sgd (no compression)");
    else if (cfg->optim.compressor == DEFT_COMP_POWERSGD)
        snprintf(buf, sizeof buf, "%s + powersgd (rank %d)",
                 deft_algo_name(cfg->optim.algo), cfg->optim.powersgd_rank);
    else if (cfg->optim.compressor == DEFT_COMP_FP16 ||
             cfg->optim.compressor == DEFT_COMP_BF16)
        snprintf(buf, sizeof buf, "%s + %s", deft_algo_name(cfg->optim.algo),
                 deft_compressor_name(cfg->optim.compressor));
    else
        snprintf(buf, sizeof buf, "%s + %s (ratio %g)",
                 deft_algo_name(cfg->optim.algo),
                 deft_compressor_name(cfg->optim.compressor), cfg->optim.ratio);
    return buf;
}

/* Loads the data, runs the training on the chosen backend and reports.
 * With MPI every rank runs this; rank 0 alone prints and writes files. */
static int run_training(deft_train_config_t *cfg, ui_t *ui,
                        const char *data_dir, const char *save_model,
                        long limit_train, long limit_test, int use_mpi,
                        int workers_given)
{
    int rank = 0, size = 1;
    deft_comm_t *comm = NULL;
#ifdef DEFT_HAVE_MPI
    if (use_mpi) {
        /* MULTIPLE: the collective watchdog (--comm-timeout) calls
         * MPI_Abort from its own thread while this one is blocked in MPI. */
        int provided;
        MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (workers_given && cfg->workers != size) {
            if (rank == 0)
                deft_cli_usage_error("--workers %d but mpirun started %d ranks (with "
                            "--backend mpi each rank is one worker)",
                            cfg->workers, size);
            MPI_Finalize();
            return EXIT_USAGE;
        }
        cfg->workers = size;
        if (rank != 0)
            ui->quiet = 1;
    }
#else
    (void)workers_given;
#endif
    deft_dataset_t train = {0}, test = {0};
    deft_status_t st = deft_dataset_load_mnist_dir(&train, &test, data_dir);
    if (st == DEFT_OK) {
        if (limit_train > 0 && (size_t)limit_train < train.n)
            train.n = (size_t)limit_train;
        if (limit_test > 0 && (size_t)limit_test < test.n)
            test.n = (size_t)limit_test;
        deft_dataset_standardize(&train, &test);
    }
    int rc = 0;
    if (st != DEFT_OK) {
        if (size > 1)
            fprintf(stderr, "deft train: rank %d: %s\n", rank, deft_last_error());
        else
            fprintf(stderr, "deft train: %s\n", deft_last_error());
        rc = EXIT_RUN_FAILED;
    } else if (deft_train_config_check(cfg, &train) != DEFT_OK) {
        if (rank == 0)
            deft_cli_usage_error("%s", deft_last_error());
        rc = EXIT_USAGE;
    }
#ifdef DEFT_HAVE_MPI
    if (use_mpi) { /* all ranks agree before any collective of training */
        int worst = rc;
        MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        rc = worst;
        if (rc == 0 && (st = deft_comm_create_mpi(&comm, MPI_COMM_WORLD))) {
            fprintf(stderr, "deft train: %s\n", deft_last_error());
            rc = EXIT_RUN_FAILED;
        }
    }
#endif
    deft_train_result_t res;
    memset(&res, 0, sizeof res);
    float *model = NULL;
    size_t n_save = 0;  /* P parameters, then the BN statistics */
    if (rc == 0 && save_model) {
        deft_model_t *m;
        if ((st = deft_model_create(&m, cfg->model, train.c, train.h, train.w,
                                    train.n_classes, 1)) == DEFT_OK) {
            const size_t P = deft_model_num_params(m);
            n_save = P + deft_model_num_buffers(m);
            model = calloc(n_save, sizeof(float));
            res.model = model;
            res.buffers = model ? model + P : NULL;
            deft_model_destroy(m);
        }
    }
    if (rc == 0) {
        cfg->on_epoch = on_epoch;
        cfg->on_progress = on_progress;
        cfg->progress_every = 20;
        cfg->user = ui;
        if (!ui->quiet)
            printf("deft train: %s, %s, %d workers (%s), batch %d, %d epochs, "
                   "lr %g\n", deft_model_name(cfg->model), method(cfg),
                   cfg->workers, use_mpi ? "mpi" : "threads", cfg->batch,
                   cfg->epochs, (double)cfg->optim.lr);
        st = use_mpi ? deft_train_run_comm(cfg, comm, &train, &test, &res)
                     : deft_train_run_threads(cfg, &train, &test, &res);
        char sent[32];
        fmt_bytes((double)res.bytes_per_worker, sent, sizeof sent);
        if (st == DEFT_ERR_DIVERGED) {
            if (ui->tty && !ui->quiet)
                fprintf(stderr, "\r%80s\r", "");
            if (rank == 0)
                printf("%s: diverged at step %llu (%s)\n", method(cfg),
                       (unsigned long long)res.diverged_step, deft_last_error());
            rc = EXIT_DIVERGED;
        } else if (st != DEFT_OK) {
            /* Errors are agreed between workers except communication
             * failures, after which a rank may be stuck: end the job. */
            if ((rank == 0 || st == DEFT_ERR_COMM) &&
                (st == DEFT_ERR_INVALID_ARG || st == DEFT_ERR_FORMAT))
                fprintf(stderr, "deft train: %s\n", deft_last_error());
            else if (rank == 0 || st == DEFT_ERR_COMM)
                fprintf(stderr, "deft train: %s: %s\n", deft_status_str(st),
                        deft_last_error());
#ifdef DEFT_HAVE_MPI
            if (use_mpi && (st == DEFT_ERR_COMM || st == DEFT_ERR_NOMEM ||
                            st == DEFT_ERR_INTERNAL))
                MPI_Abort(MPI_COMM_WORLD, EXIT_RUN_FAILED);
#endif
            rc = st == DEFT_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
        } else {
            if (rank == 0 && res.resharded_from && !ui->quiet)
                printf("re-sharded from %d workers to %d: test accuracy "
                       "%.2f%% right after, before any step\n",
                       res.resharded_from, cfg->workers,
                       100 * res.resumed_test_acc);
            if (rank == 0)
                printf("%s: test accuracy %.2f%% (best %.2f%%) after %d "
                       "epochs, %s sent per worker, %.1f s\n", method(cfg),
                       100 * res.final_test_acc, 100 * res.best_test_acc,
                       res.epochs_done, sent, res.wall_s);
            if (rank == 0 && model) {
                FILE *f = fopen(save_model, "wb");
                if (!f || fwrite(model, sizeof(float), n_save, f) != n_save) {
                    fprintf(stderr, "deft train: cannot write %s: %s\n",
                            save_model, strerror(errno));
                    rc = EXIT_RUN_FAILED;
                }
                if (f && fclose(f) != 0 && rc == 0) {
                    fprintf(stderr, "deft train: cannot write %s: %s\n",
                            save_model, strerror(errno));
                    rc = EXIT_RUN_FAILED;
                }
            }
        }
    }
    free(model);
    deft_dataset_free(&train);
    deft_dataset_free(&test);
#ifdef DEFT_HAVE_MPI
    if (use_mpi) {
        deft_comm_destroy(comm);
        MPI_Finalize();
    }
#endif
    return rc;
}

static int cmd_train(int argc, char **argv)
{
    deft_cli_cmd = "train";
    deft_train_config_t cfg;
    deft_train_config_init(&cfg);
    cfg.comm_timeout_s = 300; /* the library default is off */
    const char *data_dir = NULL, *save_model = NULL;
    long limit_train = 0, limit_test = 0;
    int use_mpi = 0, workers_given = 0;
    ui_t ui = {0, isatty(STDERR_FILENO)};
    enum {
        O_MODEL = 256, O_ALGO, O_COMP, O_RATIO, O_SCOPE, O_LAMBDA, O_AVG,
        O_QSGD, O_RANDK_SCALED, O_LR, O_DECAY, O_DECAY_FACTOR, O_MOMENTUM, O_WD,
        O_SEED, O_WORKERS, O_BATCH, O_EPOCHS, O_STOP, O_BACKEND, O_LOG, O_CKPT,
        O_RESUME, O_RESHARD, O_DATA, O_AUGMENT, O_QUIET, O_HELP, O_NET_GBPS, O_NET_LAT,
        O_COMM_TIMEOUT, O_PSGD_RANK,
        O_SAVE_MODEL, O_LIMIT_TRAIN, O_LIMIT_TEST, O_INIT, O_BN_RECAL,
        O_NESTEROV, O_DAMPENING
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"init", required_argument, 0, O_INIT},
        {"bn-recalibrate", required_argument, 0, O_BN_RECAL},
        {"algo", required_argument, 0, O_ALGO},
        {"compressor", required_argument, 0, O_COMP},
        {"ratio", required_argument, 0, O_RATIO},
        {"scope", required_argument, 0, O_SCOPE},
        {"lambda", required_argument, 0, O_LAMBDA},
        {"avg-period", required_argument, 0, O_AVG},
        {"qsgd-levels", required_argument, 0, O_QSGD},
        {"randk-scaled", no_argument, 0, O_RANDK_SCALED},
        {"powersgd-rank", required_argument, 0, O_PSGD_RANK},
        {"lr", required_argument, 0, O_LR},
        {"lr-decay", required_argument, 0, O_DECAY},
        {"lr-decay-factor", required_argument, 0, O_DECAY_FACTOR},
        {"momentum", required_argument, 0, O_MOMENTUM},
        {"nesterov", no_argument, 0, O_NESTEROV},
        {"dampening", required_argument, 0, O_DAMPENING},
        {"wd", required_argument, 0, O_WD},
        {"seed", required_argument, 0, O_SEED},
        {"workers", required_argument, 0, O_WORKERS},
        {"batch", required_argument, 0, O_BATCH},
        {"epochs", required_argument, 0, O_EPOCHS},
        {"stop-after", required_argument, 0, O_STOP},
        {"backend", required_argument, 0, O_BACKEND},
        {"log", required_argument, 0, O_LOG},
        {"checkpoint", required_argument, 0, O_CKPT},
        {"resume", required_argument, 0, O_RESUME},
        {"reshard", optional_argument, 0, O_RESHARD},
        {"data-dir", required_argument, 0, O_DATA},
        {"augment", no_argument, 0, O_AUGMENT},
        {"net-gbps", required_argument, 0, O_NET_GBPS},
        {"save-model", required_argument, 0, O_SAVE_MODEL},
        {"limit-train", required_argument, 0, O_LIMIT_TRAIN},
        {"limit-test", required_argument, 0, O_LIMIT_TEST},
        {"net-latency-us", required_argument, 0, O_NET_LAT},
        {"comm-timeout", required_argument, 0, O_COMM_TIMEOUT},
        {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    opterr = 0;
    optind = 0; /* glibc: a full reset, also of a half-parsed "-xy" */
    int c, rc;
    double dv;
    long iv;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        const char *flag = argv[optind - 1];
        switch (c) {
        case O_MODEL:
            if (deft_model_parse(optarg, &cfg.model) != DEFT_OK)
                return deft_cli_usage_error("--model '%s': expected logreg, mlp, lenet, "
                                   "vgg, preresnet20 or vgg11bn", optarg);
            break;
        case O_INIT:
            if (deft_init_parse(optarg, &cfg.init) != DEFT_OK)
                return deft_cli_usage_error("--init '%s': expected torch or he",
                                            optarg);
            break;
        case O_BN_RECAL:
            if (!strcmp(optarg, "auto")) {
                cfg.bn_recalibrate = DEFT_TRAIN_BN_AUTO;
                break;
            }
            if (*optarg < '0' || *optarg > '9')
                return deft_cli_usage_error("--bn-recalibrate '%s': expected auto "
                                            "or a number of batches", optarg);
            if ((rc = deft_cli_parse_long("--bn-recalibrate", optarg, 0, 100000, &iv)))
                return rc;
            cfg.bn_recalibrate = (int)iv;
            break;
        case O_ALGO:
            if (deft_algo_parse(optarg, &cfg.optim.algo) != DEFT_OK)
                return deft_cli_usage_error("--algo '%s': expected sgd, ef, def, defa, "
                                   "saef, psync or ef21", optarg);
            if (cfg.optim.algo == DEFT_ALGO_ECLK)
                return deft_cli_usage_error("--algo eclk is for convex problems and is "
                                   "not available in 'deft train'");
            break;
        case O_COMP:
            if (deft_compressor_parse(optarg, &cfg.optim.compressor) != DEFT_OK)
                return deft_cli_usage_error("--compressor '%s': expected none, rbgs, "
                                   "randk, topk, sign, qsgd, scale, powersgd, "
                                   "fp16, bf16 or randk-private", optarg);
            break;
        case O_RATIO:
            if ((rc = deft_cli_parse_double("--ratio", optarg, 1, 1e12, &dv)))
                return rc;
            cfg.optim.ratio = dv;
            break;
        case O_SCOPE:
            if (!strcmp(optarg, "tensor"))
                cfg.optim.scope = DEFT_SCOPE_TENSOR;
            else if (!strcmp(optarg, "global"))
                cfg.optim.scope = DEFT_SCOPE_GLOBAL;
            else
                return deft_cli_usage_error("--scope '%s': expected tensor or global",
                                   optarg);
            break;
        case O_LAMBDA:
            if ((rc = deft_cli_parse_double("--lambda", optarg, 0, 1, &dv)))
                return rc;
            cfg.optim.lambda = (float)dv;
            break;
        case O_AVG:
            if ((rc = deft_cli_parse_long("--avg-period", optarg, 0, 1L << 30, &iv)))
                return rc;
            cfg.optim.avg_period = (int)iv;
            break;
        case O_QSGD:
            if ((rc = deft_cli_parse_long("--qsgd-levels", optarg, 1, 127, &iv)))
                return rc;
            cfg.optim.qsgd_levels = (int)iv;
            break;
        case O_PSGD_RANK:
            if ((rc = deft_cli_parse_long("--powersgd-rank", optarg, 1, 1024, &iv)))
                return rc;
            cfg.optim.powersgd_rank = (int)iv;
            break;
        case O_RANDK_SCALED:
            cfg.optim.randk_scaled = 1;
            break;
        case O_LR:
            if ((rc = deft_cli_parse_double("--lr", optarg, 1e-12, 1e6, &dv)))
                return rc;
            cfg.optim.lr = (float)dv;
            break;
        case O_DECAY: {
            cfg.n_decays = 0;
            if (!strcmp(optarg, "none"))
                break;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", optarg);
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                if (cfg.n_decays == DEFT_TRAIN_MAX_DECAYS)
                    return deft_cli_usage_error("--lr-decay: at most %d points",
                                       DEFT_TRAIN_MAX_DECAYS);
                if ((rc = deft_cli_parse_double("--lr-decay", tok, 1e-9, 1 - 1e-9, &dv)))
                    return rc;
                cfg.decay_at[cfg.n_decays++] = dv;
            }
            break;
        }
        case O_DECAY_FACTOR:
            if ((rc = deft_cli_parse_double("--lr-decay-factor", optarg, 1e-9, 1, &dv)))
                return rc;
            cfg.decay_factor = (float)dv;
            break;
        case O_MOMENTUM:
            if ((rc = deft_cli_parse_double("--momentum", optarg, 0, 0.999999, &dv)))
                return rc;
            cfg.optim.momentum = (float)dv;
            break;
        case O_NESTEROV:
            cfg.optim.nesterov = 1;
            break;
        case O_DAMPENING:
            if ((rc = deft_cli_parse_double("--dampening", optarg, 0, 1, &dv)))
                return rc;
            cfg.optim.dampening = (float)dv;
            break;
        case O_WD:
            if ((rc = deft_cli_parse_double("--wd", optarg, 0, 1e3, &dv)))
                return rc;
            cfg.optim.weight_decay = (float)dv;
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (end == optarg || *end || errno || optarg[0] == '-')
                return deft_cli_usage_error("--seed '%s': not a non-negative integer",
                                   optarg);
            cfg.optim.seed = v;
            break;
        }
        case O_WORKERS:
            if ((rc = deft_cli_parse_long("--workers", optarg, 1, DEFT_MAX_WORKERS, &iv)))
                return rc;
            cfg.workers = (int)iv;
            workers_given = 1;
            break;
        case O_BATCH:
            if ((rc = deft_cli_parse_long("--batch", optarg, 1, 1 << 20, &iv)))
                return rc;
            cfg.batch = (int)iv;
            break;
        case O_EPOCHS:
            if ((rc = deft_cli_parse_long("--epochs", optarg, 1, 100000, &iv)))
                return rc;
            cfg.epochs = (int)iv;
            break;
        case O_STOP:
            if ((rc = deft_cli_parse_long("--stop-after", optarg, 1, 100000, &iv)))
                return rc;
            cfg.stop_after = (int)iv;
            break;
        case O_BACKEND:
            if (!strcmp(optarg, "threads"))
                use_mpi = 0;
            else if (!strcmp(optarg, "mpi") && deft_have_mpi())
                use_mpi = 1;
            else if (!strcmp(optarg, "mpi"))
                return deft_cli_usage_error("--backend mpi: this build has no MPI "
                                   "backend (install libopenmpi-dev and "
                                   "rebuild)");
            else
                return deft_cli_usage_error("--backend '%s': expected threads or mpi",
                                   optarg);
            break;
        case O_SAVE_MODEL:
            save_model = optarg;
            break;
        case O_LIMIT_TRAIN:
            if ((rc = deft_cli_parse_long("--limit-train", optarg, 1, 1L << 40, &iv)))
                return rc;
            limit_train = iv;
            break;
        case O_LIMIT_TEST:
            if ((rc = deft_cli_parse_long("--limit-test", optarg, 1, 1L << 40, &iv)))
                return rc;
            limit_test = iv;
            break;
        case O_LOG:
            cfg.log_path = optarg;
            break;
        case O_CKPT:
            cfg.checkpoint_path = optarg;
            break;
        case O_RESUME:
            cfg.resume_path = optarg;
            break;
        case O_RESHARD:
            if ((rc = deft_cli_parse_reshard(optarg, &cfg.reshard)))
                return rc;
            break;
        case O_DATA:
            data_dir = optarg;
            break;
        case O_AUGMENT:
            cfg.augment = 1;
            break;
        case O_NET_GBPS:
            if ((rc = deft_cli_parse_double("--net-gbps", optarg, 1e-6, 1e6, &dv)))
                return rc;
            cfg.net_gbps = dv;
            break;
        case O_NET_LAT:
            if ((rc = deft_cli_parse_double("--net-latency-us", optarg, 0, 1e9, &dv)))
                return rc;
            cfg.net_latency_us = dv;
            break;
        case O_COMM_TIMEOUT:
            if ((rc = deft_cli_parse_double("--comm-timeout", optarg, 0, 1e7, &dv)))
                return rc;
            cfg.comm_timeout_s = dv;
            break;
        case O_QUIET:
            ui.quiet = 1;
            break;
        case 'h':
        case O_HELP:
            train_usage(stdout);
            return 0;
        case ':':
            return deft_cli_usage_error("%s needs a value", flag);
        default:
            return deft_cli_usage_error("unknown option '%s' (see deft train --help)",
                               flag);
        }
    }
    if (optind < argc && cfg.reshard && (rc = deft_cli_stray_rule(argv[optind])))
        return rc;
    if (optind < argc)
        return deft_cli_usage_error("unexpected argument '%s'", argv[optind]);
    if (cfg.optim.algo == DEFT_ALGO_PSYNC &&
        !(cfg.optim.compressor == DEFT_COMP_RBGS ||
          cfg.optim.compressor == DEFT_COMP_NONE ||
          (cfg.optim.compressor == DEFT_COMP_RANDK && !cfg.optim.randk_scaled)))
        return deft_cli_usage_error("--algo psync averages model blocks and needs "
                           "--compressor rbgs, randk or none");
    if (deft_train_config_check(&cfg, NULL) != DEFT_OK)
        return deft_cli_usage_error("%s", deft_last_error());
    if (cfg.reshard && !cfg.resume_path)
        return deft_cli_usage_error("--reshard applies to --resume FILE: give "
                                    "the checkpoint to continue");
    if (deft_cli_dry_run)
        return 0;

    return run_training(&cfg, &ui, data_dir, save_model, limit_train,
                        limit_test, use_mpi, workers_given);
}

static int cmd_list(void)
{
    printf("algorithms:");
    for (int a = DEFT_ALGO_SGD; a <= DEFT_ALGO_ECLK; a++)
        printf(" %s", deft_algo_name((deft_algo_t)a));
    printf("\ncompressors:");
    for (int c = DEFT_COMP_NONE; c <= DEFT_COMP_RANDK_PRIVATE; c++)
        printf(" %s", deft_compressor_name((deft_compressor_kind_t)c));
    printf("\nmodels:");
    for (int m = DEFT_MODEL_LOGREG; m <= DEFT_MODEL_VGG11BN; m++)
        printf(" %s", deft_model_name((deft_model_kind_t)m));
    printf("\nbackends: threads%s\n", deft_have_mpi() ? " mpi" : "");
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

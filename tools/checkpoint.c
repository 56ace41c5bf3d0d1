/* deft checkpoint: shows what a training checkpoint holds, and re-shards
 * it to another worker count (deft_checkpoint_reshard, which reads the
 * file once). */
#include "cli.h"
#include "deft.h"
#include "nn/nn.h"
#include "train/checkpoint.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void checkpoint_usage(FILE *f)
{
    fprintf(f,
        "usage: deft checkpoint FILE\n"
        "       deft checkpoint FILE --workers K --out OUT [--reshard=RULE]\n"
        "\n"
        "Shows a deft train checkpoint: model, algorithm, workers, epoch and\n"
        "step. With --workers and --out, writes the same run re-sharded to K\n"
        "workers (what deft train --resume FILE --reshard does when it\n"
        "starts): the model, step and schedule are kept, and each worker's\n"
        "errors and momenta are redistributed so that their mean over the\n"
        "workers is kept (RULE mean, the default) or restart at zero (RULE\n"
        "zero). K must divide the run's global batch.\n"
        "\n"
        "options:\n"
        "  --workers K        the worker count to re-shard to, 1..%d\n"
        "  --out OUT          the re-sharded checkpoint (may be FILE)\n"
        "  --reshard[=RULE]   mean (default) or zero\n"
        "\n"
        "exit status: 0 ok, 1 failed (unreadable or corrupt file), 2 bad "
        "usage\n", DEFT_MAX_WORKERS);
}

static void show(const char *path, const deft_ckpt_meta_t *m, size_t ssz)
{
    printf("%s: deft train checkpoint\n", path);
    printf("  model        %s (%llu parameters)\n",
           deft_model_name((deft_model_kind_t)m->model),
           (unsigned long long)m->dim);
    printf("  algorithm    %s, compressor %s, ratio %g, lambda %g\n",
           deft_algo_name((deft_algo_t)m->algo),
           deft_compressor_name((deft_compressor_kind_t)m->compressor),
           m->ratio, m->lambda);
    printf("  workers      %u (%zu bytes of state each)\n", m->workers, ssz);
    printf("  batch        %u (global), seed %llu\n", m->batch,
           (unsigned long long)m->seed);
    printf("  progress     %u epoch(s) done, step %llu, best test accuracy "
           "%.2f%%\n", m->epochs_done, (unsigned long long)m->step,
           100 * m->best_test_acc);
    char ks[160];
    deft_checkpoint_worker_counts(m->batch, 16, " ", ks, sizeof ks);
    printf("  can continue on %s worker(s) (counts that divide the batch)\n",
           ks);
}

/* deft checkpoint FILE: what it holds. */
static int show_file(const char *path)
{
    deft_ckpt_meta_t meta;
    void *states = NULL;
    size_t ssz = 0;
    if (deft_checkpoint_read(path, &meta, &states, &ssz) != DEFT_OK) {
        fprintf(stderr, "deft checkpoint: %s\n", deft_last_error());
        return EXIT_FAILURE;
    }
    free(states);
    show(path, &meta, ssz);
    return 0;
}

/* deft checkpoint FILE --workers K --out OUT [--reshard=RULE]. */
static int reshard(const char *path, const char *out, int workers,
                   deft_reshard_t rule)
{
    deft_ckpt_meta_t meta;
    deft_status_t st = deft_checkpoint_reshard(path, out, workers, rule, &meta);
    if (st != DEFT_OK) {
        fprintf(stderr, "deft checkpoint: %s\n", deft_last_error());
        return st == DEFT_ERR_INVALID_ARG ? DEFT_EXIT_USAGE : EXIT_FAILURE;
    }
    printf("%s: re-sharded from %u to %d workers (%s rule), epoch %u, step "
           "%llu\n", out, meta.workers, workers, deft_reshard_name(rule),
           meta.epochs_done, (unsigned long long)meta.step);
    return 0;
}

int deft_cli_checkpoint(int argc, char **argv)
{
    deft_cli_cmd = "checkpoint";
    enum { O_WORKERS = 256, O_OUT, O_RESHARD, O_HELP };
    static const struct option opts[] = {
        {"workers", required_argument, 0, O_WORKERS},
        {"out", required_argument, 0, O_OUT},
        {"reshard", optional_argument, 0, O_RESHARD},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    long workers = 0;
    const char *out = NULL;
    deft_reshard_t rule = DEFT_RESHARD_MEAN;
    int c, rc, rule_given = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        const char *flag = argv[optind - 1];
        switch (c) {
        case O_WORKERS:
            if ((rc = deft_cli_parse_long("--workers", optarg, 1, DEFT_MAX_WORKERS, &workers)))
                return rc;
            break;
        case O_OUT:
            out = optarg;
            break;
        case O_RESHARD:
            rule_given = 1;
            if ((rc = deft_cli_parse_reshard(optarg, &rule)))
                return rc;
            break;
        case 'h':
        case O_HELP:
            checkpoint_usage(stdout);
            return 0;
        case ':':
            return deft_cli_usage_error("%s needs a value", flag);
        default:
            return deft_cli_usage_error("unknown option '%s' (see deft "
                                        "checkpoint --help)", flag);
        }
    }
    for (int i = optind; i < argc; i++)
        if ((rc = deft_cli_stray_rule(argv[i])))
            return rc;
    if (optind != argc - 1)
        return deft_cli_usage_error(optind >= argc ? "give one checkpoint FILE"
                                                   : "give one checkpoint FILE, "
                                                     "then options");
    if (!workers != !out || (rule_given && !out))
        return deft_cli_usage_error("re-sharding needs both --workers K and "
                                    "--out OUT");
    if (deft_cli_dry_run)
        return 0;
    return out ? reshard(argv[optind], out, (int)workers, rule)
               : show_file(argv[optind]);
}

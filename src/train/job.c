/* deft train's whole run (deft_train_job): the backend's start and end,
 * the data, the agreement of all workers before training, the training
 * and the saved model. The CLI only parses flags and prints. */
#include "train/train.h"

#include "core/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The job's process: its communicator (MPI) and data. */
typedef struct {
    deft_comm_t *comm;     /* MPI only; the threads backend makes its own */
    deft_dataset_t train, test;
    float *model;          /* (P + BN statistics,) for --save-model        */
    size_t n_save;
} job_t;

/* MPI: the job's ranks are the workers. */
static deft_status_t start_mpi(deft_train_config_t *cfg, job_t *j,
                               deft_train_job_result_t *out)
{
    deft_status_t st = deft_comm_create_mpi_world(&j->comm);
    if (st != DEFT_OK)
        return st;
    out->rank = deft_comm_rank(j->comm);
    const int size = deft_comm_size(j->comm);
    if (cfg->workers_set && cfg->workers != size)
        return deft_fail(DEFT_ERR_INVALID_ARG, "--workers %d but mpirun "
                         "started %d ranks (with --backend mpi each rank is "
                         "one worker)", cfg->workers, size);
    cfg->workers = size;
    return DEFT_OK;
}

/* Fashion-MNIST, cut to the limits and standardized, checked against cfg. */
static deft_status_t load(const deft_train_config_t *cfg, job_t *j)
{
    deft_status_t st = deft_dataset_load_mnist_dir(&j->train, &j->test,
                                                   cfg->data_dir);
    if (st != DEFT_OK)
        return st;
    if (cfg->limit_train && cfg->limit_train < j->train.n)
        j->train.n = (size_t)cfg->limit_train;
    if (cfg->limit_test && cfg->limit_test < j->test.n)
        j->test.n = (size_t)cfg->limit_test;
    deft_dataset_standardize(&j->train, &j->test);
    return deft_train_config_check(cfg, &j->train);
}

/* MPI: every rank learns whether any could not start, before the first
 * collective of training, so that none waits for a rank that has left.
 * A rank shows its own error when it is rank 0's, when no other rank
 * would (rank 0 started), or when it is about its own data or memory. */
static deft_status_t agree(job_t *j, deft_status_t mine,
                           deft_train_job_result_t *out)
{
    if (!j->comm)
        return mine;
    const int size = deft_comm_size(j->comm);
    int code = (int)mine, *all = malloc((size_t)size * sizeof *all);
    deft_status_t st = all ? deft_comm_allgather(j->comm, &code, sizeof code, all)
                           : deft_fail(DEFT_ERR_NOMEM, "no memory to agree");
    if (st != DEFT_OK) { /* peers may wait in the allgather: end the job */
        free(all);
        out->end_job = out->report = 1;
        return st;
    }
    int first = -1;
    for (int r = 0; r < size && first < 0; r++)
        first = all[r] != DEFT_OK ? r : -1;
    const int rank0 = all[0];
    free(all);
    if (mine != DEFT_OK) {
        out->report = out->rank == 0 || rank0 != code ||
                      mine != DEFT_ERR_INVALID_ARG;
        return mine;
    }
    if (first >= 0)
        return deft_fail(DEFT_ERR_COMM, "rank %d could not start its worker: "
                         "see its message", first);
    return DEFT_OK;
}

/* The buffer deft_train_run fills with the output model to save. */
static deft_status_t alloc_model(const deft_train_config_t *cfg, job_t *j,
                                 deft_train_result_t *res)
{
    deft_model_t *m;
    deft_status_t st = deft_model_create(&m, cfg->model, j->train.c, j->train.h,
                                         j->train.w, j->train.n_classes, 1);
    if (st != DEFT_OK)
        return st;
    const size_t P = deft_model_num_params(m);
    j->n_save = P + deft_model_num_buffers(m);
    deft_model_destroy(m);
    if (!(j->model = calloc(j->n_save, sizeof(float))))
        return deft_fail(DEFT_ERR_NOMEM, "no memory for the model to save");
    res->model = j->model;
    res->buffers = j->model + P;
    return DEFT_OK;
}

static deft_status_t save_model(const char *path, const job_t *j)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(j->model, sizeof(float), j->n_save, f) == j->n_save;
    if (f && fclose(f) != 0)
        ok = 0;
    return ok ? DEFT_OK
              : deft_fail(DEFT_ERR_IO, "cannot write %s: %s", path,
                          strerror(errno));
}

static deft_status_t run(deft_train_config_t *cfg, job_t *j,
                         deft_train_job_result_t *out)
{
    if (out->rank == 0 && cfg->on_start)
        cfg->on_start(cfg, cfg->user);
    out->workers = cfg->workers;
    deft_status_t st =
        j->comm ? deft_train_run_comm(cfg, j->comm, &j->train, &j->test, &out->run)
                : deft_train_run_threads(cfg, &j->train, &j->test, &out->run);
    /* After a failed collective a peer may be stuck: a rank reports its
     * own communication error, and the job must end. */
    if (st == DEFT_ERR_COMM || st == DEFT_ERR_NOMEM || st == DEFT_ERR_INTERNAL)
        out->end_job = j->comm != NULL, out->report = 1;
    if (st == DEFT_OK && out->rank == 0 && j->model)
        st = save_model(cfg->save_model_path, j);
    return st;
}

deft_status_t deft_train_job(deft_train_config_t *cfg,
                             deft_train_job_result_t *out)
{
    if (!cfg || !out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_train_job: %s is NULL",
                         !cfg ? "cfg" : "out");
    memset(out, 0, sizeof *out);
    out->workers = cfg->workers;
    job_t j;
    memset(&j, 0, sizeof j);
    deft_status_t st = DEFT_OK;
    if (cfg->backend == DEFT_TRAIN_MPI && (st = start_mpi(cfg, &j, out)) != DEFT_OK &&
        !j.comm) {
        out->report = 1; /* MPI did not start: nothing to agree on */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", deft_last_error());
        deft_mpi_finalize(); /* if deft initialized MPI */
        deft_set_last_error_text(msg);
        return st;
    }
    out->report = out->rank == 0;
    if (st == DEFT_OK)
        st = load(cfg, &j);
    if (st == DEFT_OK && cfg->save_model_path)
        st = alloc_model(cfg, &j, &out->run);
    if (st != DEFT_OK && j.comm && deft_comm_size(j.comm) > 1 &&
        st != DEFT_ERR_INVALID_ARG) { /* this rank's own data or memory */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", deft_last_error());
        deft_fail(st, "rank %d: %s", out->rank, msg);
    }
    st = agree(&j, st, out);
    if (st == DEFT_OK)
        st = run(cfg, &j, out);
    free(j.model);
    deft_dataset_free(&j.train);
    deft_dataset_free(&j.test);
    if (!out->end_job && j.comm) {
        deft_comm_destroy(j.comm);
        deft_mpi_finalize();
    }
    return st;
}

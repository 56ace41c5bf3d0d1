/* deft convex's whole run (deft_convex_job): the problem, the setup, the
 * optimum P* (cached), the log, the run and the log's last line. The CLI
 * only parses flags and prints. */
#include "convex/run.h"

#include "core/internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The problem, its constants and the optimum; the cache warning, if any,
 * in job->warning. */
static deft_status_t prepare(const deft_convex_config_t *c,
                             deft_convex_job_t *job, deft_logreg_t *prob)
{
    deft_status_t st = deft_convex_problem_load(prob, c->data, c->data_dir,
                                                c->normalize, c->workers,
                                                job->desc, sizeof job->desc);
    if (st != DEFT_OK)
        return st;
    job->n = prob->n, job->d = prob->d;
    const double t0 = deft_wall_s();
    if ((st = deft_convex_setup(prob, c, &job->setup)) != DEFT_OK)
        return st;
    deft_status_t cache_st;
    st = deft_convex_optimum(prob, c->mu, c->log_path, job->desc, &job->pstar,
                             &job->cached, &cache_st);
    if (st != DEFT_OK)
        return st;
    if (cache_st != DEFT_OK)
        snprintf(job->warning, sizeof job->warning, "%s", deft_last_error());
    double *zero = calloc(prob->d, sizeof(double));
    job->p0 = zero ? deft_logreg_objective(prob, c->mu, zero) : NAN;
    free(zero);
    job->setup_s = deft_wall_s() - t0;
    return DEFT_OK;
}

/* The run, logged to c->log_path when set. */
static deft_status_t run(const deft_convex_config_t *c, deft_convex_job_t *job,
                         const deft_logreg_t *prob, deft_convex_on_start on_start,
                         void *user)
{
    FILE *log = NULL;
    if (c->log_path && !(log = fopen(c->log_path, "w")))
        return deft_fail(DEFT_ERR_IO, "cannot open the log %s: %s",
                         c->log_path, strerror(errno));
    if (log)
        deft_convex_log_config(log, prob, c, &job->setup, job->desc,
                               job->pstar, job->p0);
    if (on_start)
        on_start(c, job, user);
    job->ran = 1;
    job->run_status = deft_convex_run(prob, c, &job->setup, job->pstar,
                                      job->p0, log, &job->result);
    snprintf(job->run_error, sizeof job->run_error, "%s",
             job->run_status == DEFT_OK ? "" : deft_last_error());
    if (!log)
        return job->run_status;
    deft_convex_log_final(log, c, &job->setup, &job->result, job->run_status);
    if (fclose(log) != 0 && job->run_status == DEFT_OK)
        return deft_fail(DEFT_ERR_IO, "cannot write %s", c->log_path);
    return job->run_status;
}

deft_status_t deft_convex_job(const deft_convex_config_t *c,
                              deft_convex_job_t *job,
                              deft_convex_on_start on_start, void *user)
{
    if (!c || !job)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_convex_job: %s is NULL",
                         !c ? "c" : "job");
    memset(job, 0, sizeof *job);
    deft_logreg_t prob;
    memset(&prob, 0, sizeof prob);
    deft_status_t st = prepare(c, job, &prob);
    if (st == DEFT_OK)
        st = run(c, job, &prob, on_start, user);
    deft_logreg_free(&prob);
    return st;
}

/* A rank that dies mid-run must end the whole MPI job, fast, with a
 * non-zero exit: never a hang of the survivors in their next allreduce.
 * Run by tests/mpi_dies.cmake (CTest: test_comm_mpi_dies_<mode>) as
 *
 *     mpirun -np 4 test_comm_mpi_dies {kill|exit|exit0|stop}
 *
 * Rank 1 makes 5 allreduces with the others and then dies: "kill" by
 * SIGKILL (like the OOM killer; abort() behaves alike, with signal 6),
 * "exit" by exit(3) and "exit0" by exit(0), both without MPI_Finalize (a
 * worker that bails out). "stop" raises SIGSTOP instead: rank 1 hangs
 * without dying, so the runtime sees nothing, and only deft's collective
 * watchdog (deft_comm_set_timeout, 2 s here) can end the job: the others'
 * watchdogs write their message and call MPI_Abort. The other ranks keep calling
 * deft_comm_allreduce_sum_f32, which blocks in MPI_Allreduce waiting for
 * rank 1.
 *
 * What Open MPI 4.1 does (ORTE runtime; mpirun is the HNP and, on one node,
 * the parent of the ranks): its ODLS component (odls_default) reaps the
 * dead child (SIGCHLD, waitpid) and reports its state to the error manager,
 * errmgr_default_hnp: ABORTED_BY_SIG for "kill", a non-zero exit for
 * "exit" (aborts the job because orte_abort_non_zero_exit is true: "Per
 * user-direction, the job has been aborted"), TERM_WO_SYNC for "exit0"
 * (exited after MPI_Init without MPI_Finalize: "exiting improperly"). The
 * errmgr then aborts the job: the daemons kill its remaining processes
 * (odls kill_local_procs: SIGCONT, SIGTERM, then SIGKILL). mpirun exits
 * with 128 + signal (137), the rank's exit code (3), or 1, about 1 s after
 * the death. The survivors' MPI_Allreduce never returns an error: the MPI
 * library (vader/tcp BTLs, no ULFM in 4.1) has no fault tolerance; it is
 * the runtime that kills them. MPI_ERRORS_RETURN on deft's duplicate does
 * not change that.
 *
 * As a backstop against a runtime that does not do this, an alarm ends
 * every rank after SURVIVOR_DEADLINE seconds with a marker on stderr,
 * which the CTest wrapper treats as a failure (as it does any run longer
 * than its duration limit), so that no test run leaves processes behind. */
#include <mpi.h>

#include "deft.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SURVIVOR_DEADLINE 100 /* seconds */

static void on_alarm(int sig)
{
    static const char msg[] = "test_comm_mpi_dies: SURVIVOR_DEADLINE reached: "
                              "nobody ended the job after rank 1 died\n";
    (void)sig;
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(5);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *mode = argc > 1 ? argv[1] : "kill";
    if (size < 2 || (strcmp(mode, "kill") != 0 && strcmp(mode, "exit") != 0 &&
                     strcmp(mode, "exit0") != 0 && strcmp(mode, "stop") != 0)) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np K>=2 %s {kill|exit|exit0|stop}\n",
                    argv[0]);
        MPI_Finalize();
        return 2;
    }
    deft_comm_t *comm;
    if (deft_comm_create_mpi(&comm, MPI_COMM_WORLD) != DEFT_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, deft_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (strcmp(mode, "stop") == 0 &&
        deft_comm_set_timeout(comm, 2.0) != DEFT_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, deft_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    signal(SIGALRM, on_alarm);
    alarm(SURVIVOR_DEADLINE);
    float v[4096];
    for (long it = 0;; it++) {
        if (rank == 1 && it == 5) {
            fprintf(stderr, "rank 1: dying (%s) after %ld allreduces\n", mode,
                    it);
            fflush(stderr);
            if (strcmp(mode, "kill") == 0)
                raise(SIGKILL);
            if (strcmp(mode, "stop") == 0) {
                raise(SIGSTOP);
                continue; /* if continued (it is not): carry on */
            }
            exit(strcmp(mode, "exit0") == 0 ? 0 : 3); /* no MPI_Finalize */
        }
        for (int i = 0; i < 4096; i++)
            v[i] = 1.0f;
        deft_status_t st = deft_comm_allreduce_sum_f32(comm, v, 4096);
        if (st != DEFT_OK) {
            /* Not what Open MPI 4.1 does, but acceptable: an error, then
             * a non-zero exit. */
            fprintf(stderr, "rank %d: allreduce %ld: %s\n", rank, it,
                    deft_last_error());
            deft_comm_destroy(comm);
            MPI_Abort(MPI_COMM_WORLD, 4);
        }
    }
}

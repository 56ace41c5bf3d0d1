/* MPI backend: one rank per process, collectives mapped one-to-one onto MPI
 * collectives on a private duplicate of the user's communicator.
 *
 *   allreduce_sum_f32 -> MPI_Allreduce(MPI_IN_PLACE, MPI_FLOAT, MPI_SUM)
 *   allgather         -> MPI_Allgather of MPI_BYTE
 *   broadcast         -> MPI_Bcast of MPI_BYTE
 *   barrier           -> MPI_Barrier
 *   allreduce_sum_half -> MPI_Allreduce(MPI_IN_PLACE, MPI_UINT16_T, a
 *                        user op: decode both to float, add, round back;
 *                        commutative, so Open MPI may use its ring; the
 *                        order is fixed by its algorithm for the count and
 *                        job size, so runs repeat bitwise)
 *
 * Each deft call makes exactly one MPI call, except when a count exceeds
 * what an MPI int can hold (INT_MAX elements): then it is split into
 * INT_MAX-sized pieces. Nothing is allocated per call, except that a split
 * allgather (more than INT_MAX bytes per rank) creates a datatype per piece.
 *
 * The duplicate carries MPI_ERRORS_RETURN, so an MPI failure becomes
 * DEFT_ERR_COMM with MPI_Error_string's text in deft_last_error() instead
 * of aborting the job. A peer that dies is a different matter: Open MPI's
 * runtime (mpirun) then kills the whole job (see tests/test_comm_mpi_dies.c).
 *
 * Compiled to a stub of deft_have_mpi() when the build has no MPI
 * (DEFT_HAVE_MPI undefined). */
#ifdef DEFT_HAVE_MPI
#include <mpi.h> /* before deft.h, so that it declares the MPI functions */
#endif

#include "comm/comm_internal.h"
#include "compress/half.h"
#include "core/internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef DEFT_HAVE_MPI

int deft_have_mpi(void)
{
    return 0;
}

int deft_mpi_set_max_count(int max_count)
{
    (void)max_count;
    return 0;
}

deft_status_t deft_comm_create_mpi_world(deft_comm_t **out)
{
    if (out)
        *out = NULL;
    return deft_fail(DEFT_ERR_UNSUPPORTED,
                     "deft_comm_create_mpi_world: this build of deft has no "
                     "MPI backend; install Open MPI (libopenmpi-dev) and "
                     "rebuild");
}

deft_status_t deft_mpi_finalize(void)
{
    return DEFT_OK;
}

#else

int deft_have_mpi(void)
{
    return 1;
}

/* Largest count handed to one MPI call; lowered only by tests. */
static int max_count = INT_MAX;

int deft_mpi_set_max_count(int count)
{
    int old = max_count;
    max_count = count > 0 ? count : INT_MAX;
    return old;
}

typedef struct {
    deft_comm_t comm; /* comm.impl points back here */
    MPI_Comm mc;      /* our duplicate, with MPI_ERRORS_RETURN */
    int multiple;     /* MPI is at MPI_THREAD_MULTIPLE (the watchdog) */
    MPI_Op half_op[2]; /* fp16 and bf16 sums, MPI_OP_NULL until first use */
} mpi_comm_t;

static MPI_Comm mpi_of(const deft_comm_t *c)
{
    return ((const mpi_comm_t *)c->impl)->mc;
}

/* Turns an MPI error code into DEFT_ERR_COMM with MPI's own description.
 * c may be NULL (before the communicator exists). */
static deft_status_t mpi_fail(int rc, const deft_comm_t *c, const char *what)
{
    char text[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS || len <= 0)
        len = snprintf(text, sizeof text, "unknown MPI error code %d", rc);
    text[len < (int)sizeof text ? len : (int)sizeof text - 1] = '\0';
    if (!c)
        return deft_fail(DEFT_ERR_COMM, "%s failed: %s", what, text);
    return deft_fail(DEFT_ERR_COMM, "mpi backend: %s failed on rank %d of %d: %s",
                     what, c->rank, c->size, text);
}

static deft_status_t mpi_allreduce(deft_comm_t *c, float *buf, size_t n)
{
    MPI_Comm mc = mpi_of(c);
    size_t done = 0;
    /* One call per deft call (n = 0 too: an empty call); several only
     * when n > max_count. */
    do {
        size_t m = n - done < (size_t)max_count ? n - done : (size_t)max_count;
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf ? buf + done : buf, (int)m,
                               MPI_FLOAT, MPI_SUM, mc);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, c, "MPI_Allreduce");
        done += m;
    } while (done < n);
    return DEFT_OK;
}

/* inout = in + inout over 16-bit floats, each addition in float, rounded
 * back; bf16 is a constant in the two MPI user ops below. */
static inline void sum_half(const uint16_t *a, uint16_t *b, int len, int bf16)
{
    for (int i = 0; i < len; i++)
        b[i] = bf16 ? deft_f32_to_bf16(deft_bf16_to_f32(a[i]) + deft_bf16_to_f32(b[i]))
                    : deft_f32_to_f16(deft_f16_to_f32(a[i]) + deft_f16_to_f32(b[i]));
}

static void sum_f16(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    sum_half(in, inout, *len, 0);
}

static void sum_bf16(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    sum_half(in, inout, *len, 1);
}

static deft_status_t mpi_allreduce_half(deft_comm_t *c, uint16_t *buf,
                                        size_t n, int bf16)
{
    mpi_comm_t *mcm = c->impl;
    MPI_Op *op = &mcm->half_op[bf16 ? 1 : 0];
    int rc;
    if (*op == MPI_OP_NULL &&
        (rc = MPI_Op_create(bf16 ? sum_bf16 : sum_f16, 1, op)) != MPI_SUCCESS)
        return mpi_fail(rc, c, "MPI_Op_create");
    size_t done = 0;
    do {
        size_t m = n - done < (size_t)max_count ? n - done : (size_t)max_count;
        rc = MPI_Allreduce(MPI_IN_PLACE, buf ? buf + done : buf, (int)m,
                           MPI_UINT16_T, *op, mcm->mc);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, c, "MPI_Allreduce (16-bit)");
        done += m;
    } while (done < n);
    return DEFT_OK;
}

/* Piece [off, off + m) of every rank's block, when bytes > max_count: the
 * receive type is m bytes with an extent of `bytes`, so that rank r's
 * piece lands at recv + r * bytes + off. */
static deft_status_t mpi_allgather_piece(deft_comm_t *c, const char *send,
                                         size_t bytes, char *recv, size_t off,
                                         int m)
{
    MPI_Datatype piece, strided;
    int rc = MPI_Type_contiguous(m, MPI_BYTE, &piece);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, c, "MPI_Type_contiguous");
    rc = MPI_Type_create_resized(piece, 0, (MPI_Aint)bytes, &strided);
    MPI_Type_free(&piece);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, c, "MPI_Type_create_resized");
    if ((rc = MPI_Type_commit(&strided)) == MPI_SUCCESS)
        rc = MPI_Allgather(send + off, m, MPI_BYTE, recv + off, 1, strided,
                           mpi_of(c));
    MPI_Type_free(&strided);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, c, "MPI_Allgather");
    return DEFT_OK;
}

static deft_status_t mpi_allgather(deft_comm_t *c, const void *send,
                                   size_t bytes, void *recv)
{
    if (bytes <= (size_t)max_count) {
        int rc = MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes,
                               MPI_BYTE, mpi_of(c));
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, c, "MPI_Allgather");
        return DEFT_OK;
    }
    for (size_t off = 0; off < bytes; off += (size_t)max_count) {
        size_t m = bytes - off < (size_t)max_count ? bytes - off
                                                   : (size_t)max_count;
        deft_status_t st = mpi_allgather_piece(c, send, bytes, recv, off, (int)m);
        if (st != DEFT_OK)
            return st;
    }
    return DEFT_OK;
}

static deft_status_t mpi_broadcast(deft_comm_t *c, void *buf, size_t bytes,
                                   int root)
{
    size_t done = 0;
    do {
        size_t m = bytes - done < (size_t)max_count ? bytes - done
                                                    : (size_t)max_count;
        int rc = MPI_Bcast(buf ? (char *)buf + done : buf, (int)m, MPI_BYTE,
                           root, mpi_of(c));
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, c, "MPI_Bcast");
        done += m;
    } while (done < bytes);
    return DEFT_OK;
}

static deft_status_t mpi_barrier(deft_comm_t *c)
{
    int rc = MPI_Barrier(mpi_of(c));
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, c, "MPI_Barrier");
    return DEFT_OK;
}

static void mpi_destroy(deft_comm_t *comm)
{
    mpi_comm_t *m = comm->impl;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        for (int i = 0; i < 2; i++)
            if (m->half_op[i] != MPI_OP_NULL)
                MPI_Op_free(&m->half_op[i]);
        MPI_Comm_free(&m->mc);
    }
    free(m);
}

/* The watchdog fired while this rank is blocked in an MPI call, which
 * nothing can interrupt: say why on stderr and end the whole job. write(2)
 * rather than stdio, which the blocked thread may hold. MPI_Abort from
 * this thread is only allowed at MPI_THREAD_MULTIPLE; below it, the rank
 * exits without MPI_Finalize instead, and Open MPI's launcher then aborts
 * the job as for any rank that exits early. */
static void mpi_on_timeout(deft_comm_t *c, const char *msg)
{
    int multiple = ((const mpi_comm_t *)c->impl)->multiple;
    char line[700];
    int n = snprintf(line, sizeof line, "deft: mpi backend: %s; %s\n", msg,
                     multiple ? "aborting the job (MPI_Abort)"
                              : "exiting this rank (MPI is not at "
                                "MPI_THREAD_MULTIPLE, so no MPI_Abort)");
    if (n > 0)
        (void)!write(STDERR_FILENO, line,
                     (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    if (multiple)
        MPI_Abort(mpi_of(c), 1);
    _exit(1); /* MPI_Abort does not return */
}

static const deft_comm_backend_t mpi_ops = {
    .name = "mpi",
    .allreduce_sum_f32 = mpi_allreduce,
    .allgather = mpi_allgather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .destroy = mpi_destroy,
    .on_timeout = mpi_on_timeout,
    .allreduce_sum_half = mpi_allreduce_half,
};

deft_status_t deft_comm_create_mpi(deft_comm_t **out, MPI_Comm comm)
{
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG, "deft_comm_create_mpi: out is NULL");
    *out = NULL;
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized)
        return deft_fail(DEFT_ERR_INVALID_USAGE,
                         "deft_comm_create_mpi: MPI is %s; call it between "
                         "MPI_Init and MPI_Finalize",
                         finalized ? "already finalized" : "not initialized");
    if (comm == MPI_COMM_NULL)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_create_mpi: comm is MPI_COMM_NULL");
    int inter = 0;
    int rc = MPI_Comm_test_inter(comm, &inter);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, NULL, "deft_comm_create_mpi: MPI_Comm_test_inter");
    if (inter)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_create_mpi: comm is an intercommunicator; "
                         "pass an intracommunicator such as MPI_COMM_WORLD");

    MPI_Comm dup;
    if ((rc = MPI_Comm_dup(comm, &dup)) != MPI_SUCCESS)
        return mpi_fail(rc, NULL, "deft_comm_create_mpi: MPI_Comm_dup");
    int rank = -1, size = -1;
    if ((rc = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN)) != MPI_SUCCESS ||
        (rc = MPI_Comm_rank(dup, &rank)) != MPI_SUCCESS ||
        (rc = MPI_Comm_size(dup, &size)) != MPI_SUCCESS) {
        deft_status_t st = mpi_fail(rc, NULL, "deft_comm_create_mpi: setting up "
                                    "the duplicate communicator");
        MPI_Comm_free(&dup);
        return st;
    }

    /* Allocation is the one thing that can fail on some ranks only: agree
     * on it, so that every rank returns an error rather than some waiting
     * in their first collective for a rank that gave up. */
    mpi_comm_t *m = calloc(1, sizeof *m);
    int ok = m != NULL, all_ok = 0;
    rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, dup);
    if (rc != MPI_SUCCESS || !all_ok) {
        deft_status_t st =
            rc != MPI_SUCCESS ? mpi_fail(rc, NULL, "deft_comm_create_mpi: MPI_Allreduce")
            : !ok ? deft_fail(DEFT_ERR_NOMEM, "deft_comm_create_mpi: no memory "
                              "for the communicator on rank %d", rank)
                  : deft_fail(DEFT_ERR_NOMEM, "deft_comm_create_mpi: another "
                              "rank ran out of memory creating the communicator");
        free(m);
        MPI_Comm_free(&dup);
        return st;
    }
    m->mc = dup;
    m->half_op[0] = m->half_op[1] = MPI_OP_NULL;
    int level = MPI_THREAD_SINGLE;
    m->multiple = MPI_Query_thread(&level) == MPI_SUCCESS &&
                  level == MPI_THREAD_MULTIPLE;
    m->comm = (deft_comm_t){.ops = &mpi_ops, .rank = rank, .size = size,
                            .impl = m};
    *out = &m->comm;
    return DEFT_OK;
}

/* Whether MPI_Init_thread was called by deft_comm_create_mpi_world (and so
 * is deft's to finalize). */
static int deft_initialized_mpi;

deft_status_t deft_comm_create_mpi_world(deft_comm_t **out)
{
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_comm_create_mpi_world: out is NULL");
    *out = NULL;
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized)
        return deft_fail(DEFT_ERR_INVALID_USAGE,
                         "deft_comm_create_mpi_world: MPI is already "
                         "finalized; it cannot be initialized again");
    if (!initialized) {
        int provided = 0;
        /* MULTIPLE, so that the collective watchdog may call MPI_Abort
         * from its thread (SERIALIZED is what the optimizer needs). */
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, NULL, "deft_comm_create_mpi_world: MPI_Init_thread");
        deft_initialized_mpi = 1;
    }
    return deft_comm_create_mpi(out, MPI_COMM_WORLD);
}

deft_status_t deft_mpi_finalize(void)
{
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!deft_initialized_mpi || finalized)
        return DEFT_OK;
    deft_initialized_mpi = 0;
    int rc = MPI_Finalize();
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, NULL, "deft_mpi_finalize: MPI_Finalize");
    return DEFT_OK;
}

#endif

"""Communicators: the threads backend (run_threads), MPI (Comm.mpi()),
a group of one (Comm.single()) and collectives from Python callables
(Comm.custom(...)); deft.torch adds torch.distributed on top of custom."""
import atexit
import ctypes
import os
import sys
import threading

from . import _buf, _lib
from .errors import COMM, INVALID_USAGE, OK, CommError, DeftError, check

lib = _lib.lib


class Comm:
    """A deft communicator: a worker's view of its group. Every collective
    must be called by all workers, in the same order, with the same sizes.
    Use one from the thread that made it (run_threads hands each worker its
    own)."""

    def __init__(self, handle, owned, keepalive=None):
        self._h = ctypes.c_void_p(handle)
        self._owned = owned
        self._keep = keepalive
        self.rank = lib.deft_comm_rank(self._h)
        self.size = lib.deft_comm_size(self._h)

    @property
    def handle(self):
        if not self._h.value:
            raise CommError("deft.Comm: this communicator was closed", COMM)
        return self._h

    # -- constructors ------------------------------------------------------
    @classmethod
    def single(cls):
        """A group of this worker alone: collectives are local copies."""
        h = ctypes.c_void_p()
        check(lib.deft_comm_create_self(ctypes.byref(h)))
        return cls(h.value, owned=True)

    @classmethod
    def mpi(cls):
        """MPI_COMM_WORLD of a job started by mpirun. Initializes MPI (thread
        level MPI_THREAD_MULTIPLE, for the watchdog) if nothing did yet; MPI is then
        finalized at interpreter exit. Collective over all ranks."""
        # first: the create may initialize MPI and still fail
        _register_finalize_mpi()
        h = ctypes.c_void_p()
        check(lib.deft_comm_create_mpi_world(ctypes.byref(h)))
        comm = cls(h.value, owned=True)
        _mpi_comms.append(comm)
        _install_mpi_excepthook()
        return comm

    @classmethod
    def custom(cls, allreduce, allgather, broadcast, barrier, rank, size):
        """Collectives supplied as Python callables, for engines deft does not
        know. Each receives writable memoryviews of deft's buffers, valid
        during the call only, and must act in place:
          allreduce(buf)          buf: float32 items; sum over workers
          allgather(send, recv)   bytes; recv[r*len(send):] gets rank r's
          broadcast(buf, root)    bytes; root's buf copied to every worker
          barrier()
        An exception in a callable becomes a CommError naming the collective
        and carrying the exception's text."""
        ctx = _CustomCtx(allreduce, allgather, broadcast, barrier, int(size))
        h = ctypes.c_void_p()
        check(lib.deft_comm_create_custom(ctypes.byref(h), ctypes.byref(ctx.ops),
                                          None, int(rank), int(size)))
        return cls(h.value, owned=True, keepalive=ctx)

    # -- collectives -------------------------------------------------------
    def allreduce_sum(self, buf):
        """Sums a float32 buffer over all workers, in place."""
        addr, n, keep = _buf.float_address(buf, None, "buf", writable=True)
        check(lib.deft_comm_allreduce_sum_f32(self.handle, addr, n))
        return buf

    def allgather(self, send, recv):
        """recv (size * len(send) bytes) gets every worker's send block."""
        sa, sn, k1 = _buf.bytes_address(send, "send")
        ra, rn, k2 = _buf.bytes_address(recv, "recv", writable=True)
        if rn != sn * self.size:
            raise ValueError("recv: %d bytes, expected size * len(send) = %d"
                             % (rn, sn * self.size))
        check(lib.deft_comm_allgather(self.handle, sa, sn, ra))
        return recv

    def broadcast(self, buf, root=0):
        """Copies root's buf into every worker's buf."""
        a, n, k = _buf.bytes_address(buf, "buf", writable=True)
        check(lib.deft_comm_broadcast(self.handle, a, n, int(root)))
        return buf

    def barrier(self):
        check(lib.deft_comm_barrier(self.handle))

    # -- counters and the link model ---------------------------------------
    def stats(self):
        """This rank's traffic counters since creation or reset_stats()."""
        s = _lib.CommStats()
        check(lib.deft_comm_get_stats(self.handle, ctypes.byref(s)))
        return {name: getattr(s, name) for name, _ in _lib.CommStats._fields_}

    def reset_stats(self):
        lib.deft_comm_reset_stats(self.handle)

    def set_link(self, gbps, latency_us=0.0):
        """Adds the alpha-beta time of every collective on such a link to
        stats()["modeled_s"]; gbps = 0 turns the model off."""
        check(lib.deft_comm_set_link(self.handle, float(gbps), float(latency_us)))

    def set_timeout(self, seconds):
        """Collective watchdog (deft_comm_set_timeout): a collective still
        running `seconds` after it began ends the run; 0 turns it off. With
        threads, the collective raises CommError naming it; under MPI the
        whole job is aborted with the message on stderr. Custom
        communicators of more than one rank raise Unsupported: use the
        engine's own timeout (init_process_group(timeout=...))."""
        check(lib.deft_comm_set_timeout(self.handle, float(seconds)))

    def close(self):
        """Frees the communicator (collective for MPI). Idempotent."""
        if self._owned and self._h.value:
            lib.deft_comm_destroy(self._h)
        self._h = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "deft.Comm(rank=%d, size=%d)" % (self.rank, self.size)


# -- custom collectives -------------------------------------------------------
class _CustomCtx:
    """The C callbacks of a custom communicator and what keeps them alive."""

    def __init__(self, allreduce, allgather, broadcast, barrier, size):
        self.size = size
        self.error = ctypes.create_string_buffer(1024)

        def guard(name, fn):
            def call(*args):
                try:
                    fn(*args)
                    return OK
                except BaseException as e:  # noqa: B902 - reported to deft
                    text = "%s in the Python %s callback: %s" % (
                        type(e).__name__, name, e)
                    self.error.value = text.encode("utf-8", "replace")[:1023]
                    return COMM
            return call

        def ar(ctx, buf, n):
            allreduce(_buf.float_view(buf, n))

        def ag(ctx, send, nbytes, recv):
            allgather(_buf.bytes_view(send, nbytes),
                      _buf.bytes_view(recv, nbytes * self.size))

        def bc(ctx, buf, nbytes, root):
            broadcast(_buf.bytes_view(buf, nbytes), root)

        def br(ctx):
            barrier()

        def describe(ctx):
            return ctypes.addressof(self.error)

        self.fns = (_lib.ALLREDUCE_FN(guard("allreduce", ar)),
                    _lib.ALLGATHER_FN(guard("allgather", ag)),
                    _lib.BROADCAST_FN(guard("broadcast", bc)),
                    _lib.BARRIER_FN(guard("barrier", br)),
                    _lib.DESCRIBE_FN(describe))
        self.ops = _lib.CommOps(*self.fns)


# -- threads backend ------------------------------------------------------------
def run_threads(nworkers, fn, *args):
    """Runs fn(comm, *args) on nworkers threads, each with its own Comm
    (ranks 0..nworkers-1, shared memory, a fixed reduction order), and
    returns the list of their return values by rank. If a worker raises, the
    others' collectives fail instead of waiting, and the first worker's
    exception is raised here (a worker's own error is preferred over the
    CommErrors it caused in the others)."""
    if not callable(fn):
        raise ValueError("fn: %r is not callable" % (fn,))
    results = [None] * int(nworkers)
    errors = []
    lock = threading.Lock()

    def body(handle, _arg):
        comm = Comm(handle, owned=False)
        try:
            results[comm.rank] = fn(comm, *args)
            return OK
        except BaseException as e:  # noqa: B902 - re-raised by run_threads
            with lock:
                errors.append((comm.rank, e))
            return e.status if isinstance(e, DeftError) else INVALID_USAGE
        finally:
            comm._h = ctypes.c_void_p()  # its memory ends with the thread

    cb = _lib.WORKER_FN(body)
    st = lib.deft_run_threads(int(nworkers), cb, None)
    if errors:
        own = [e for e in errors if not isinstance(e[1], CommError)]
        rank, exc = (own or errors)[0]
        raise exc
    check(st)
    return results


# -- MPI lifetime -----------------------------------------------------------------
_mpi_comms = []


def _install_mpi_excepthook():
    """An uncaught exception on one rank must end the whole job: finalizing
    MPI would wait for ranks that wait for this one. So the hook prints the
    traceback and leaves without MPI_Finalize, which makes mpirun end the
    job (as for a rank that dies)."""
    if getattr(sys.excepthook, "_deft_mpi", False):
        return
    previous = sys.excepthook

    def hook(etype, value, tb):
        previous(etype, value, tb)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
    hook._deft_mpi = True
    sys.excepthook = hook


def _finalize_mpi():
    for c in _mpi_comms:
        c.close()
    _mpi_comms.clear()
    lib.deft_mpi_finalize()


_finalize_registered = False
_finalize_lock = threading.Lock()


def _register_finalize_mpi():
    """Registers _finalize_mpi to run at interpreter exit, once, when the
    first MPI communicator is made: importing deft leaves exit alone."""
    global _finalize_registered
    with _finalize_lock:
        if not _finalize_registered:
            atexit.register(_finalize_mpi)
            _finalize_registered = True

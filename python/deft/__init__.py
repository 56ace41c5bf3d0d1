"""deft: communication-efficient distributed SGD with error feedback.

ctypes over libdeft.so (see deft._lib for where it is looked for); the
standard library only. deft.torch (imported on its own) adds a
torch.optim.Optimizer and torch.distributed collectives.

    import deft
    def worker(comm):
        opt = deft.FlatOptimizer(comm, [784 * 10, 10], x0, algo="def",
                                 ratio=64)
        ...
    deft.run_threads(4, worker)
"""
from . import _lib
from .comm import Comm, run_threads
from .errors import (CommError, DeftError, DeftIOError, Diverged, FormatError,
                     InternalError, InvalidArgument, OutOfMemory, Unsupported,
                     UsageError)
from .optim import (ALGORITHMS, COMPRESSORS, RESHARD_RULES, SCOPES, Config,
                    FlatOptimizer, default_config, make_config,
                    reshard_states)

__all__ = ["ALGORITHMS", "COMPRESSORS", "SCOPES", "Comm", "CommError",
           "Config", "DeftError", "DeftIOError", "Diverged", "FlatOptimizer",
           "FormatError", "InternalError", "InvalidArgument", "OutOfMemory",
           "Unsupported", "UsageError", "default_config", "have_mpi",
           "library_path", "make_config", "reshard_states", "run_threads",
           "version", "RESHARD_RULES"]

#: Where libdeft.so was loaded from.
library_path = _lib.path


def version():
    """The C library's version, "MAJOR.MINOR.PATCH"."""
    return _lib.lib.deft_version().decode()


def have_mpi():
    """Whether this libdeft was built with the MPI backend."""
    return bool(_lib.lib.deft_have_mpi())


__version__ = version()

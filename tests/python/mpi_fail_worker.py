"""Rank 1 raises after Comm.mpi() while rank 0 waits in a barrier: the
uncaught exception must end the whole job, not leave rank 0 waiting."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "python"))
import deft  # noqa: E402

comm = deft.Comm.mpi()
if comm.rank == 1:
    raise RuntimeError("rank 1 gives up")
comm.barrier()
print("rank 0 passed the barrier alone")

"""One rank of the distributed tests: `dist_worker.py gloo|mpi OUT` runs
dist_common.train_steps for rbgs and topk over torch.distributed (Gloo,
env:// variables) or deft's MPI backend, and rank 0 saves the results to
OUT with torch.save."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import deft  # noqa: E402
from dist_common import train_steps  # noqa: E402

torch.set_num_threads(1)
mode, out_path = sys.argv[1], sys.argv[2]
if mode == "gloo":
    import datetime
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method="env://",
                            timeout=datetime.timedelta(seconds=60))
# A new communicator per run, so that each run's byte count starts at 0.
results = {c: train_steps(None if mode == "gloo" else deft.Comm.mpi(), c)
           for c in ("rbgs", "topk")}
if results["rbgs"][2] == 0:
    torch.save({c: (m, b) for c, (m, b, _) in results.items()}, out_path)
if mode == "gloo":
    dist.barrier()
    dist.destroy_process_group()

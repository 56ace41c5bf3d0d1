"""The run that the distributed tests repeat on every engine: a small MLP,
20 DEF steps on data drawn from (rank, step), and its output model and
bytes. Imported by the tests (threads) and by dist_worker.py (Gloo, MPI)."""
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

import deft.torch

STEPS = 20
_init_lock = threading.Lock()


def train_steps(comm, compressor):
    """(output model, bytes this rank sent, rank) after STEPS steps."""
    with _init_lock:  # torch's global generator is shared by threads
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
    opt = deft.torch.Optimizer(model.parameters(), comm=comm, algo="def",
                               compressor=compressor, ratio=8, lr=0.05,
                               weight_decay=1e-4, seed=3)
    rank = opt.comm.rank
    for s in range(STEPS):
        g = torch.Generator().manual_seed(1000 * rank + s)
        x = torch.randn(16, 20, generator=g)
        y = torch.randint(0, 5, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    out = torch.empty(opt.deft.dim)
    opt.deft.output(out)
    return out, opt.comm.stats()["bytes_sent"], rank

#!/usr/bin/python3
"""deft.torch's DEF step on torchvision ResNet-18's parameters (11.2M
floats in 62 tensors), one thread, against torch.optim.SGD(momentum,
foreach=True) on the same parameters and against deft's C step for the
same layout (ask + tell called straight from ctypes, no Python between),
all measured in this run. Gradients are fixed random tensors; only the
optimizer step is timed.

    /usr/bin/python3 bench/bench_torch.py [--steps N] [--ratio R]

Targets: the Python path adds at most 10% to the C step; DEF's step is at
most 1.3x torch SGD's."""
import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import torch  # noqa: E402
import torchvision  # noqa: E402

import deft  # noqa: E402
import deft.torch  # noqa: E402
from deft import _lib  # noqa: E402


def timed(fn, steps, warmup=3):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out), statistics.median(out)


def resnet18_params(seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    params = list(model.parameters())
    g = torch.Generator().manual_seed(seed + 1)
    grads = [1e-3 * torch.randn(p.shape, generator=g) for p in params]
    return model, params, grads


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ratio", type=float, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    opts = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)

    # torch.optim.SGD, foreach
    model, params, grads = resnet18_params()
    d = sum(p.numel() for p in params)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    sgd = torch.optim.SGD(params, foreach=True, **opts)
    t_sgd = timed(sgd.step, args.steps)

    # deft.torch DEF
    model, params, grads = resnet18_params()
    opt = deft.torch.Optimizer(params, algo="def", compressor="rbgs",
                               ratio=args.ratio, **opts)
    for p, g in zip(params, grads):
        p.grad.copy_(g)
    t_py = timed(opt.step, args.steps)

    # deft's C step, same layout, through raw ctypes calls
    sizes = [p.numel() for p in params]
    x0 = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.cat([g.reshape(-1) for g in grads])
    c = deft.FlatOptimizer(deft.Comm.single(), sizes, x0, algo="def",
                           compressor="rbgs", ratio=args.ratio, **opts)
    lib, h = _lib.lib, c._ptr
    pt, gaddr = ctypes.c_void_p(), grad.data_ptr()

    def c_step():
        lib.deft_optim_ask(h, ctypes.byref(pt))
        lib.deft_optim_tell(h, gaddr, None)
    t_c = timed(c_step, args.steps)

    print("bench_torch: one optimizer step on ResNet-18's parameters "
          "(d = %d, %d tensors), 1 thread, DEF with RBGS ratio %g"
          % (d, len(sizes), args.ratio))
    print("%-34s %10s %10s %10s" % ("", "best ms", "median ms", "ns/param"))
    rows = [("torch.optim.SGD(momentum, foreach)", t_sgd),
            ("deft C step (ask + tell)", t_c),
            ("deft.torch.Optimizer DEF step()", t_py)]
    for name, (best, med) in rows:
        print("%-34s %10.3f %10.3f %10.2f" % (name, best * 1e3, med * 1e3,
                                              best / d * 1e9))
    over_c = t_py[0] / t_c[0]
    over_sgd = t_py[0] / t_sgd[0]
    print("deft.torch / C step:   %.3fx  (target <= 1.10)  %s"
          % (over_c, "met" if over_c <= 1.10 else "NOT met"))
    print("deft.torch / torch SGD: %.3fx  (target <= 1.30)  %s"
          % (over_sgd, "met" if over_sgd <= 1.30 else "NOT met"))
    exe = os.path.join(HERE, "..", "build", "bench_optim")
    if os.path.exists(exe):
        print("bench_optim (C only, 16 equal tensors) at the same d:")
        sys.stdout.flush()
        subprocess.run([exe, str(d)], check=False)


if __name__ == "__main__":
    main()

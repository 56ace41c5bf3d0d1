#!/usr/bin/python3
"""PyTorch's training throughput for one of examples/torch_fmnist.py's
models, one thread: images per second through one step of forward, mean
cross-entropy, backward and a plain SGD update (torch.optim.SGD, lr 0.01,
no momentum: p -= lr * g), the model in train mode, on synthetic 1x28x28
images (80% zeros, the rest U(0,1)) with random labels, as bench_train
measures deft.

    /usr/bin/python3 bench/bench_torch_models.py --model preresnet20 \\
        [--batch 128] [--steps N] [--reps R] [--seed S]

Each rep times --steps steps (after a warmup of max(3, steps) steps); the
figure is the median over the reps. The last line is
`RESULT model=NAME batch=B images_per_s=X`, the format of build/bench_train
(bench/bench_models.sh puts the two side by side).
"""
import argparse
import os
import statistics
import sys
import time

# One thread for everything torch may call, its BLAS (Debian's torch links
# OpenBLAS, whose own threads torch.set_num_threads does not govern)
# included; set before torch loads them.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "examples"))
import torch_fmnist as tf  # noqa: E402

MODELS = ("lenet", "vgg", "preresnet20", "vgg11bn")
N_IMAGES = 1024  # distinct images the steps cycle through


def synthetic(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x[torch.rand(x.shape, generator=g) < 0.8] = 0.0
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per rep")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.batch < 2 or args.steps < 1 or args.reps < 1:
        p.error("--batch >= 2, --steps >= 1 and --reps >= 1")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = tf.MODELS[args.model]()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    n = max(N_IMAGES, args.batch)
    x, y = synthetic(n, args.seed)
    B = args.batch
    pos = [0]

    def step():
        i = pos[0]
        if i + B > n:
            i = 0
        pos[0] = i + B
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[i:i + B]), y[i:i + B])
        loss.backward()
        opt.step()
        return loss

    for _ in range(max(3, args.steps)):
        step()
    rates = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        loss.item()
        rates.append(args.steps * B / (time.perf_counter() - t0))
    med = statistics.median(rates)
    P = sum(q.numel() for q in model.parameters())
    print("PyTorch %s, %s (%d params), 1x28x28, batch %d, 1 thread: %.0f images/s "
          "median of %d reps of %d steps (best %.0f, %.2f ms/step)"
          % (torch.__version__, args.model, P, B, med, args.reps, args.steps,
             max(rates), B / med * 1e3))
    print("RESULT model=%s batch=%d images_per_s=%.1f" % (args.model, B, med))
    return 0


if __name__ == "__main__":
    sys.exit(main())

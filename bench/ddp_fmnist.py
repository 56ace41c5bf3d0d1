#!/usr/bin/python3
"""PyTorch DDP over Gloo on Fashion-MNIST, with `deft train`'s settings, as
the peer deft is measured against on the virtual cluster.

    # one process per host, started by scripts/cluster.sh run (or mpirun):
    scripts/cluster.sh run --hosts 4 --gbps 1 -- \\
        /usr/bin/python3 bench/ddp_fmnist.py --hook powersgd --rank 1

--hook: none (DDP's plain allreduce), fp16 (fp16_compress_hook) or
powersgd (powerSGD_hook, rank --rank, error feedback and warm start on, as
PowerSGD's defaults, compressing from the 2nd step, all gradients in one
bucket: see the comment in main). The model, data,
initialization, global batch split over the ranks, learning-rate schedule
and evaluation are examples/torch_fmnist.py's, so they match deft train's
and deft.torch's runs: --init torch (the default) is the model's own
initialization (PyTorch's defaults, as deft's), --init he is He normal with
Glorot normal for the last layer ("deft" is accepted as its old name).
--log FILE writes deft train's JSON-lines fields;
compute_s is the main thread's CPU seconds in the steps (forward, backward,
the hook's own work, update: what a host with one core of its own would
spend), comm_s the rest of the steps' wall time (waiting for Gloo).
The rank, size and master come from Open MPI's environment
(OMPI_COMM_WORLD_RANK/SIZE) or RANK/WORLD_SIZE, and CLUSTER_MASTER or
MASTER_ADDR.
"""
import argparse
import datetime
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "examples"))
import torch_fmnist as tf  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(tf.MODELS), default="lenet")
    p.add_argument("--hook", choices=("none", "fp16", "powersgd"), default="none")
    p.add_argument("--rank", type=int, default=1, help="PowerSGD's rank")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--lr-decay", default="0.5,0.75")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=tf.INITS, default="torch",
                   help="torch: the model's own; he: He normal, Glorot for the "
                        "last layer ('deft' is an alias)")
    p.add_argument("--data-dir", default=tf.DATA_DIR)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-test", type=int, default=0)
    p.add_argument("--port", type=int, default=29511)
    p.add_argument("--log")
    a = p.parse_args(argv)
    a.lr_decay = [float(f) for f in a.lr_decay.split(",") if f]
    return a


def evaluate(model, xte, yte, k, K):
    model.eval()
    sums = tf.test_sums(model, xte, yte, k, K)
    model.train()
    dist.all_reduce(sums)
    return sums[0].item() / len(xte), sums[1].item() / len(xte)


def main(argv=None):
    args = parse(argv)
    env = os.environ
    k = int(env.get("OMPI_COMM_WORLD_RANK", env.get("RANK", "0")))
    K = int(env.get("OMPI_COMM_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    master = env.get("CLUSTER_MASTER", env.get("MASTER_ADDR", "127.0.0.1"))
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = tf.load(args.data_dir, args.limit_train, args.limit_test)
    dist.init_process_group("gloo", init_method="tcp://%s:%d" % (master, args.port),
                            rank=k, world_size=K,
                            timeout=datetime.timedelta(seconds=300))
    torch.manual_seed(args.seed)
    net = tf.MODELS[args.model]()
    if args.init in ("he", "deft"):
        tf.he_init(net, args.seed)
    if args.hook == "powersgd":
        # One bucket: with several, powerSGD_hook's overlapping Gloo
        # allreduces abort in this torch (gloo "enforce fail ... pair.cc:510
        # op.preamble.length <= op.nbytes"; vgg, 1.13.1). The first bucket's
        # size is DDP's documented knob for that.
        dist._DEFAULT_FIRST_BUCKET_BYTES = 1 << 30
        model = DDP(net, bucket_cap_mb=1024)
    else:
        model = DDP(net)
    if args.hook == "fp16":
        model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif args.hook == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None, matrix_approximation_rank=args.rank,
            start_powerSGD_iter=2, random_seed=args.seed)
        model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay)
    B = args.batch
    if B % K:
        print("ddp_fmnist: --batch %d is not a multiple of %d ranks" % (B, K),
              file=sys.stderr)
        return 2
    b, spe = B // K, len(xtr) // B
    total = spe * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: tf.lr_at(args, step, total) / args.lr)
    logf = open(args.log, "w") if args.log and k == 0 else None
    name = {"none": "ddp", "fp16": "ddp-fp16",
            "powersgd": "ddp-powersgd-r%d" % args.rank}[args.hook]
    t0 = time.time()
    step, compute, comm, best, acc = 0, 0.0, 0.0, 0.0, 0.0
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(
            args.seed * 1000003 + epoch))
        loss_sum, te = 0.0, time.time()
        for s in range(spe):
            c0, w0 = time.thread_time(), time.perf_counter()
            idx = perm[s * B + k * b: s * B + (k + 1) * b]
            opt.zero_grad()
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()  # DDP's hooks allreduce the buckets meanwhile
            opt.step()
            sched.step()
            c = time.thread_time() - c0
            compute += c
            comm += time.perf_counter() - w0 - c
            loss_sum += loss.item()
            step += 1
        tl = torch.tensor([loss_sum / spe])
        dist.all_reduce(tl)
        acc, test_loss = evaluate(model, xte, yte, k, K)
        best = max(best, acc)
        if logf:
            rec = dict(epoch=epoch + 1, step=step, train_loss=tl.item() / K,
                       test_loss=test_loss, test_acc=acc, lr=sched.get_last_lr()[0],
                       wall_s=time.time() - t0,
                       images_per_s=spe * B / (time.time() - te),
                       compute_s=compute, comm_s=comm, algo=name,
                       workers=K, model=args.model)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            print("%s epoch %d/%d  loss %.4f  test acc %.4f  %.1f s"
                  % (name, epoch + 1, args.epochs, rec["train_loss"], acc,
                     rec["wall_s"]), flush=True)
    if logf:
        logf.write(json.dumps(dict(final=True, status="ok", epochs=args.epochs,
                                   step=step, test_acc=acc, best_test_acc=best,
                                   wall_s=time.time() - t0)) + "\n")
        logf.close()
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

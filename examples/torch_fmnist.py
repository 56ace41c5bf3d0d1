#!/usr/bin/python3
"""Train a PyTorch model on Fashion-MNIST with deft's optimizer.

    # K workers as threads of this process (deft's threads backend)
    /usr/bin/python3 examples/torch_fmnist.py --model lenet --workers 8
    # K processes under Open MPI (deft's MPI backend)
    mpirun -np 4 /usr/bin/python3 examples/torch_fmnist.py --model lenet
    # K processes over torch.distributed (Gloo), started by hand or by a
    # launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 \\
        /usr/bin/python3 examples/torch_fmnist.py &
    RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 \\
        /usr/bin/python3 examples/torch_fmnist.py

The settings are `deft train`'s: a global batch of 128 split over the
workers (each gets disjoint examples of every epoch), learning rate cut 10x
at 50% and 75% of the steps, standardized pixels, PyTorch's default
initialization, as deft's (--init torch; for preresnet20 and vgg11bn the
DEF paper's code's conv init, which their constructors apply; --init he:
He normal, Glorot normal for the last layer, zero biases, deft's former
default, "deft" being its old name), and after every epoch the output
model (DEF: x - avg(e)) evaluated on the test set, split over the workers,
with BatchNorm statistics recomputed at the output model over the epoch's
first 20 batches when the output model is not the training point
(--bn-recalibrate, as deft train's), else averaged over the workers. As in
most training scripts, weight decay applies to the weight matrices and
convolutions only, not to biases and BatchNorm (two parameter groups; deft
train decays every tensor). --log FILE
writes `deft train`'s JSON-lines fields. Exit status 3 if the run diverged,
2 for bad arguments.
"""
import argparse
import gzip
import json
import math
import os
import sys
import threading
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "python"))
try:
    import deft  # noqa: E402
    import deft.torch  # noqa: E402
    DEFT_IMPORT_ERROR = None
except (ImportError, AttributeError, OSError) as e:
    # The models below are plain torch: scripts that only need them (the
    # nn check, the model benchmark) work while libdeft is missing or being
    # rebuilt. Training needs deft, and says so in main().
    deft, DEFT_IMPORT_ERROR = None, e

DATA_DIR = "/usr/share/datasets/fashion-mnist"
BN_BATCHES = 20  # deft train's --bn-recalibrate auto (DEFT_TRAIN_BN_BATCHES)
_init_lock = threading.Lock()


# -- data ------------------------------------------------------------------------
def read_idx(path):
    """An IDX file (raw or gzip) as a uint8 numpy array of its dims."""
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != 8:
        raise ValueError("%s: not an IDX file of unsigned bytes" % path)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim:]
    if len(body) != math.prod(dims):
        raise ValueError("%s: %d bytes of data, its header says %d"
                         % (path, len(body), math.prod(dims)))
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def find(data_dir, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError("%s[.gz] not in %s: install Debian's "
                            "dataset-fashion-mnist or pass --data-dir"
                            % (stem, data_dir))


def load(data_dir, limit_train, limit_test):
    """(x_train, y_train, x_test, y_test): x (n, 1, 28, 28) float32
    standardized with the train set's scalar mean and std, y int64."""
    sets = []
    for split in ("train", "t10k"):
        x = read_idx(find(data_dir, split + "-images-idx3-ubyte"))
        y = read_idx(find(data_dir, split + "-labels-idx1-ubyte"))
        sets.append((torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
                     torch.from_numpy(y.astype(np.int64))))
    (xtr, ytr), (xte, yte) = sets
    if limit_train:
        xtr, ytr = xtr[:limit_train], ytr[:limit_train]
    if limit_test:
        xte, yte = xte[:limit_test], yte[:limit_test]
    mean = xtr.double().mean()
    std = xtr.double().std(unbiased=False)
    xtr = ((xtr - mean) / std).float().contiguous()
    xte = ((xte - mean) / std).float().contiguous()
    return xtr, ytr, xte, yte


# -- models ------------------------------------------------------------------------
def lenet():
    # (N,1,28,28) -> conv 6@5x5 pad 2 -> pool -> conv 16@5x5 -> pool ->
    # 400 -> 120 -> 84 -> 10, as deft's lenet
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


def vgg():
    # (N,1,28,28) -> conv 32, conv 32 (3x3 pad 1) -> pool -> conv 64,
    # conv 64 -> pool -> 3136 -> 256 -> 10, as deft's vgg (870,634 params)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 256), nn.ReLU(), nn.Linear(256, 10))


def resnet18():
    # torchvision's ResNet-18 for 1x28x28: a 3x3 stride-1 stem on one
    # channel and no max-pool, so the stages see 28, 14, 7 and 4 pixels.
    import torchvision
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
    m.maxpool = nn.Identity()
    return m


def def_conv_init(model):
    """The DEF paper's code's initialization (bearpaw's pytorch-classification,
    models/cifar): conv weights N(0, 2 / (k*k*out_channels)), conv biases 0,
    BatchNorm gamma 1 and beta 0; Linear layers keep PyTorch's default."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1)
                m.bias.zero_()
    return model


class PreActBlock(nn.Module):
    """bearpaw's preresnet.py BasicBlock: out = conv2(relu(bn2(conv1(relu(
    bn1(x)))))) + (downsample(x) or x), the shortcut taken from the raw x.
    Modules (so parameters) in the order bn1, conv1, bn2, conv2, downsample."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Conv2d(inplanes, planes, 1, stride=stride,
                                        bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (self.downsample(x) if self.downsample is not None else x)


class PreResNet20(nn.Module):
    """Pre-activation ResNet-20 as the DEF paper's code builds it (bearpaw's
    models/cifar/preresnet.py at depth 20) for 1 channel: conv 16 ->
    3 blocks of 16 -> 3 of 32 (first stride 2) -> 3 of 64 (first stride 2)
    -> BN, ReLU, global average pool -> fc 10."""

    def __init__(self, in_channels=1, num_classes=10, n=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks, inplanes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(PreActBlock(inplanes, planes, stride if i == 0 else 1))
                inplanes = planes
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(64)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        def_conv_init(self)

    def forward(self, x):
        x = self.layers(self.conv1(x))
        return self.fc(torch.flatten(self.pool(F.relu(self.bn(x))), 1))


def preresnet20():
    # (N,1,28,28) -> conv 16 (3x3 pad 1, no bias) -> 3 pre-activation blocks
    # @16x28x28 -> 3 @32x14x14 -> 3 @64x7x7 (1x1 stride-2 conv shortcuts
    # where the shape changes) -> BN, ReLU -> global average pool 64 -> 10,
    # as deft's preresnet20 (271,994 params in 61 tensors; 19 BatchNorms,
    # 1,376 running-stat floats)
    return PreResNet20()


VGG11BN_CFG = [32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256]


def vgg11bn():
    # (N,1,28,28) -> VGG-11 with BN at half widths: conv 32 -> pool -> 64 ->
    # pool -> 128, 128 -> pool -> 256, 256 -> pool -> 256, 256 (each conv
    # 3x3 pad 1 + BN + ReLU; pools 28 -> 14 -> 7 -> 3 -> 1, VGG's fifth pool
    # dropped) -> 256 -> 256 -> 256 -> 10, as deft's vgg11bn (2,442,570
    # params in 38 tensors; 8 BatchNorms, 2,752 running-stat floats)
    layers, c = [], 1
    for v in VGG11BN_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    return def_conv_init(nn.Sequential(
        *layers, nn.Flatten(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)))


MODELS = {"lenet": lenet, "vgg": vgg, "resnet18": resnet18,
          "preresnet20": preresnet20, "vgg11bn": vgg11bn}
INITS = ("torch", "he", "deft")  # "deft": the old name of "he"


def he_init(model, seed):
    """He normal for layers a ReLU follows, Glorot normal for the last,
    zero biases: deft's former default initialization, deft train --init he
    (torch's generator, so the numbers differ from deft's; the distribution
    is the same). Conv and Linear layers only; BatchNorm keeps its 1 and 0.
    "The last" is the last in modules() order: a downsample conv registered
    after a block's convs is not the last, fc is."""
    g = torch.Generator().manual_seed(seed)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for i, m in enumerate(layers):
            k = m.weight[0, 0].numel() if m.weight.dim() > 2 else 1
            fan_in = m.weight.shape[1] * k
            fan_out = m.weight.shape[0] * k
            std = math.sqrt(2.0 / fan_in) if i + 1 < len(layers) \
                else math.sqrt(2.0 / (fan_in + fan_out))
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
            if m.bias is not None:
                m.bias.zero_()


deft_init = he_init  # the old name


# -- one worker ------------------------------------------------------------------------
def check_schedule(p, args):
    """Parses args.lr_decay ("0.5,0.75", "none") into a list of fractions
    and checks epochs, batch and workers, through the parser p's error()
    (exit 2). Shared with bench/torch_reference.py."""
    try:
        args.lr_decay = [] if args.lr_decay.strip() in ("", "none") else \
            [float(f) for f in args.lr_decay.split(",") if f.strip()]
    except ValueError:
        p.error("--lr-decay %r: a comma-separated list of fractions" % args.lr_decay)
    if any(not 0 < f < 1 for f in args.lr_decay):
        p.error("--lr-decay: fractions must be in (0, 1)")
    if args.epochs < 1 or args.batch < 1 or args.workers < 1:
        p.error("--epochs, --batch and --workers must be >= 1")


def lr_at(args, step, total):
    lr = args.lr
    for f in args.lr_decay:
        if step >= f * total:
            lr *= 0.1
    return lr


def test_sums(model, xte, yte, k, K):
    """(correct, summed loss) of model over worker k's part of the test set
    (of K parts), as a float32 tensor of 2, to be summed over workers."""
    lo, hi = k * len(xte) // K, (k + 1) * len(xte) // K
    sums = torch.zeros(2)
    with torch.no_grad():
        for i in range(lo, hi, 1000):
            out = model(xte[i:min(i + 1000, hi)])
            y = yte[i:min(i + 1000, hi)]
            sums[0] += (out.argmax(1) == y).sum()
            sums[1] += F.cross_entropy(out, y, reduction="sum")
    return sums


def evaluate(model, opt, xte, yte, recalibrate=None):
    """(accuracy, mean loss) of the output model, the test set split over
    the workers; BN statistics recomputed over recalibrate (batches of
    inputs), if given."""
    with opt.evaluating(model, recalibrate=recalibrate):
        sums = test_sums(model, xte, yte, opt.comm.rank, opt.comm.size)
    opt.comm.allreduce_sum(sums)
    return sums[0].item() / len(xte), sums[1].item() / len(xte)


def train(comm, args, data, log):
    """Trains on this worker (comm None: torch.distributed's default group);
    returns the final record that rank 0 logs."""
    xtr, ytr, xte, yte = data
    with _init_lock:  # torch's generator is shared by the worker threads
        torch.manual_seed(args.seed)
        model = MODELS[args.model]()
    if args.init in ("he", "deft"):
        he_init(model, args.seed)
    # no weight decay on biases and BatchNorm, as nanoGPT, timm, ...
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() > 1]},
              {"params": [p for p in params if p.dim() <= 1],
               "weight_decay": 0.0}]
    opt = deft.torch.Optimizer(groups, lr=args.lr, momentum=args.momentum,
                               weight_decay=args.weight_decay, comm=comm,
                               algo=args.algo, compressor=args.compressor,
                               ratio=args.ratio, lam=args.lam, seed=args.seed)
    comm = opt.comm
    if args.net_gbps > 0:
        comm.set_link(args.net_gbps, args.net_latency_us)
    k, K = comm.rank, comm.size
    B = args.batch
    if B % K:
        raise deft.InvalidArgument("--batch %d is not a multiple of the %d "
                                   "workers" % (B, K))
    b, spe = B // K, len(xtr) // B
    total = spe * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_at(args, step, total) / args.lr)
    # which BN statistics evaluate() uses, as deft train's log says it:
    # recomputed at the output model, the running ones averaged over the
    # workers, or none
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for m in model.modules())
    n_bn = 0
    if has_bn:
        n_bn = min(spe, BN_BATCHES) if args.bn_recalibrate == "auto" and \
            not opt.deft.output_is_point else int(
                0 if args.bn_recalibrate == "auto" else args.bn_recalibrate)
    bn_stats = "none" if not has_bn else "recalibrated" if n_bn else "running"
    t0 = time.time()
    step, best, acc = 0, 0.0, 0.0
    nbytes = payload = 0
    compute = comm_wall = comm_model = 0.0
    status = "ok"
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(
            args.seed * 1000003 + epoch))
        loss_sum, te = 0.0, time.time()
        try:
            for s in range(spe):
                c0, s0 = time.thread_time(), comm.stats()
                idx = perm[s * B + k * b: s * B + (k + 1) * b]
                opt.zero_grad()
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                loss.backward()
                opt.step()
                sched.step()
                s1 = comm.stats()
                compute += time.thread_time() - c0 - (s1["comm_cpu_s"] - s0["comm_cpu_s"])
                comm_wall += s1["comm_s"] - s0["comm_s"]
                comm_model += s1["modeled_s"] - s0["modeled_s"]
                info = opt.last_step_info
                nbytes += info["bytes_sent"]
                payload += info["payload_bytes"]
                loss_sum += loss.item()
                step += 1
        except deft.Diverged as e:
            status, diverged_step = "diverged", e.step
            break
        tl = torch.tensor([loss_sum / spe], dtype=torch.float32)
        comm.allreduce_sum(tl)
        t_eval = time.time()
        recal = [xtr[perm[s * B + k * b: s * B + (k + 1) * b]]
                 for s in range(n_bn)] if n_bn else None
        acc, test_loss = evaluate(model, opt, xte, yte, recal)
        best = max(best, acc)
        if k == 0:
            log(dict(epoch=epoch + 1, step=step, train_loss=tl.item() / K,
                     test_loss=test_loss, test_acc=acc, bytes_per_worker=nbytes,
                     payload_bytes_per_worker=payload, lr=sched.get_last_lr()[0],
                     wall_s=time.time() - t0,
                     images_per_s=spe * B / (time.time() - te),
                     compute_s=compute, comm_s=comm_wall,
                     comm_modeled_s=comm_model, modeled_s=compute + comm_model,
                     algo=args.algo, compressor=args.compressor,
                     ratio=args.ratio, workers=K, model=args.model,
                     init="he" if args.init in ("he", "deft") else args.init,
                     bn_stats=bn_stats, bn_batches=n_bn,
                     eval_s=time.time() - t_eval))
    final = dict(final=True, status=status, epochs=epoch + 1 if status == "ok"
                 else epoch, step=step, test_acc=acc, best_test_acc=best,
                 bytes_per_worker=nbytes, wall_s=time.time() - t0)
    if status != "ok":
        final["diverged_step"] = diverged_step
    return final


# -- launching ------------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="lenet")
    p.add_argument("--algo", default="def", choices=deft.ALGORITHMS)
    p.add_argument("--compressor", default="rbgs", choices=deft.COMPRESSORS)
    p.add_argument("--ratio", type=float, default=256.0)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lam", type=float, default=0.3)
    p.add_argument("--bn-recalibrate", default="auto",
                   help="BN models: recompute the statistics at the output "
                        "model over N training batches per worker before "
                        "each evaluation; 0: the running ones; auto: %d when "
                        "the output is not the training point" % BN_BATCHES)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--lr-decay", default="0.5,0.75",
                   help="fractions of training where lr drops 10x ('none' = constant)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=INITS, default="torch",
                   help="torch: the model's own (PyTorch's defaults; the DEF "
                        "code's conv init for preresnet20 and vgg11bn); he: He "
                        "normal, Glorot for the last layer ('deft' is an alias)")
    p.add_argument("--workers", type=int, default=8,
                   help="threads of this process, when not launched by mpirun "
                        "or with RANK/WORLD_SIZE")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process under mpirun or RANK/WORLD_SIZE "
                        "(0: cores / processes; threads mode uses 1)")
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-test", type=int, default=0)
    p.add_argument("--net-gbps", type=float, default=0.0)
    p.add_argument("--net-latency-us", type=float, default=0.0)
    p.add_argument("--log", help="JSON lines, written by rank 0")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    check_schedule(p, args)
    if args.bn_recalibrate != "auto" and not (
            args.bn_recalibrate.isdigit() and int(args.bn_recalibrate) <= 100000):
        p.error("--bn-recalibrate %r: expected auto or a number of batches in "
                "[0, 100000]" % args.bn_recalibrate)
    return args


def launcher():
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMIX_RANK" in os.environ:
        return "mpi", int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return "gloo", int(os.environ["WORLD_SIZE"])
    return "threads", 1


def main(argv=None):
    if deft is None:
        print("torch_fmnist: cannot import deft: %s" % DEFT_IMPORT_ERROR,
              file=sys.stderr)
        return 2
    args = parse(argv)
    mode, procs = launcher()
    # Threads mode: one torch thread, each worker being a thread itself.
    if mode == "threads":
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // procs))
    try:
        data = load(args.data_dir, args.limit_train, args.limit_test)
    except (OSError, ValueError) as e:
        print("torch_fmnist: %s" % e, file=sys.stderr)
        return 2
    logf = open(args.log, "w") if args.log else None

    def log(rec):
        if logf:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if not args.quiet and "epoch" in rec:
            print("epoch %d/%d  loss %.4f  test acc %.4f  %.1f MB sent  %.1f s"
                  % (rec["epoch"], args.epochs, rec["train_loss"], rec["test_acc"],
                     rec["bytes_per_worker"] / 1e6, rec["wall_s"]), flush=True)

    try:
        if mode == "threads":
            final = deft.run_threads(args.workers, train, args, data, log)[0]
            rank = 0
        elif mode == "mpi":
            comm = deft.Comm.mpi()
            final, rank = train(comm, args, data, log), comm.rank
        else:
            import datetime
            import torch.distributed as dist
            dist.init_process_group("gloo", init_method="env://",
                                    timeout=datetime.timedelta(seconds=300))
            final, rank = train(None, args, data, log), dist.get_rank()
            dist.barrier()
            dist.destroy_process_group()
    except deft.InvalidArgument as e:
        print("torch_fmnist: %s" % e, file=sys.stderr)
        return 2
    if rank == 0:
        log(final)
        if not args.quiet:
            print("final: %s, test acc %.4f (best %.4f), %.1f MB sent per worker"
                  % (final["status"], final["test_acc"], final["best_test_acc"],
                     final["bytes_per_worker"] / 1e6))
    if logf:
        logf.close()
    return 3 if final["status"] == "diverged" else 0


if __name__ == "__main__":
    sys.exit(main())

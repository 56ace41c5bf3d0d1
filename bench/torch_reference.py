#!/usr/bin/python3
"""Pure-PyTorch reference of `deft train` (sgd, and def with rbgs): K
simulated workers in one process, taken one after another every step.

    /usr/bin/python3 bench/torch_reference.py --algo sgd --epochs 10 \\
        --log results/torch_ref/torch_sgd_0.jsonl
    /usr/bin/python3 bench/torch_reference.py --algo def --ratio 256 --lam 0.3
    /usr/bin/python3 bench/torch_reference.py --selftest

Nothing of deft is used for training (torch_fmnist is imported for its data
loading, model definitions and learning-rate schedule only); the point is an
independent implementation of the semantics of deft's C trainer, so that its
accuracy can be compared with this one's (scripts/torch_reference.sh):

  data     Fashion-MNIST, pixels standardized with the (limited) training
           set's scalar mean and std; global batch B split over the K
           workers, worker k takes perm[s*B + k*b : s*B + (k+1)*b] (b = B/K)
           of a fresh permutation every epoch; floor(n/B) steps an epoch
  init     PyTorch's default (torch.manual_seed(seed), then the modules are
           built: weights and biases U(+-1/sqrt(fan_in))) = deft --init torch;
           --init he: He normal (Glorot for the logits), zero biases, the
           distribution of deft --init he (torch's generator, other draws)
  lr       base lr, x0.1 at each --lr-decay fraction of the total steps
  sgd      g_k = grad_k(x) + wd*x;  m = mu*m + avg_k g_k;  x -= lr*m
           (one momentum buffer: src/optim/sgd.c)
  def      point_k = x - lam*e_k;  g_k = grad_k(point_k) + wd*point_k;
           m_k = mu*m_k + g_k;  p_k = lr*m_k + e_k;  e_k = p_k - C(p_k);
           x -= avg_k C(p_k)     (src/optim/ef_core.c, DEF paper Alg. 1 +
           eq. 11; the momentum is local and applied before compression)
  rbgs     per tensor (weight and bias are separate tensors, in parameter
           order) one block of b = max(1, floor(n/ratio)) consecutive
           coordinates, start uniform in [0, n), wrapping to index 0, the
           same start for every worker (drawn once per step per tensor), not
           rescaled (src/compress/rbgs.c). The random numbers are torch's,
           not deft's: same distribution, different draws.
  output   sgd: x.  def: y = x - avg_k e_k (evaluated after every epoch on
           the whole test set)
  models   --model lenet (default), preresnet20 or vgg11bn, torch_fmnist's
           twins of deft's. Batch norm as deft train: each worker normalizes
           with its own batch and keeps its own running statistics; before
           every evaluation they are averaged and every worker trains on
           from the average (deft's --bn-recalibrate is not reproduced:
           compare with deft train --bn-recalibrate 0)
  threads  --threads N (default 1): torch's intra-op threads
  diverged a non-finite p_k (def) or momentum (sgd) during a step, or a
           non-finite test loss: a final line with status "diverged", exit 3

--log FILE writes deft train's JSON-lines fields (a subset: no byte counts
or modeled times). --selftest checks, in float64 on a few steps, the exact
identities of the SPEC (section 2): with K = 1 and lam = 1 the output y_t of
def is the momentum-SGD path whatever the compressor; eq. 8
y_{t+1} = y_t - lr*avg_k m_k for any K and lam; def at ratio 1 is sgd; and
rbgs's block rule and linearity. Exit status: 0 ok, 1 selftest failed,
2 bad arguments, 3 diverged.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "examples"))
import torch_fmnist as tf  # noqa: E402  (data, lenet, lr_at only)


# -- rbgs ------------------------------------------------------------------------
class RBGS:
    """Random block-wise sparsification over a flat vector made of tensors
    of the given sizes. select() draws the step's blocks and returns the flat
    indices of all kept coordinates (block order, tensor after tensor)."""

    def __init__(self, sizes, ratio, seed):
        self.sizes = list(sizes)
        self.keep = [min(n, max(1, int(math.floor(n / ratio)))) for n in sizes]
        offs, o = [], 0
        for n in self.sizes:
            offs.append(o)
            o += n
        seg = torch.repeat_interleave(torch.arange(len(sizes)),
                                      torch.tensor(self.keep))
        self.seg = seg                                        # (k,) tensor id
        self.pos = torch.cat([torch.arange(k) for k in self.keep])  # 0..k_t-1
        self.n_of = torch.tensor(self.sizes)[seg]             # (k,) n_t
        self.off_of = torch.tensor(offs)[seg]                 # (k,) offset_t
        self.n_t = torch.tensor(self.sizes)
        self.total_k = int(sum(self.keep))
        self.gen = torch.Generator().manual_seed(0x5EED0000 + int(seed))
        self.starts = None

    def select(self):
        # Uniform start in [0, n_t) per tensor (the modulo bias of a 62-bit
        # draw is below 2^-40 for these sizes).
        r = torch.randint(0, 1 << 62, (len(self.sizes),), generator=self.gen)
        self.starts = r % self.n_t
        return self.off_of + (self.starts[self.seg] + self.pos) % self.n_of


# -- the simulated cluster -------------------------------------------------------
class Sim:
    """K workers of sgd or def on one model whose parameters are views of
    one flat buffer (the point where the gradient is taken)."""

    def __init__(self, args, dtype=torch.float32):
        torch.manual_seed(args.seed)
        model = tf.MODELS[getattr(args, "model", "lenet")]()
        if getattr(args, "init", "torch") == "he":
            tf.he_init(model, args.seed)  # deft's He/Glorot normal, zero biases
        self.model = model.to(dtype)
        params = list(self.model.parameters())
        self.sizes = [p.numel() for p in params]
        d = sum(self.sizes)
        self.d, self.K, self.algo = d, args.workers, args.algo
        self.lam, self.mu, self.wd = args.lam, args.momentum, args.weight_decay
        with torch.no_grad():
            x0 = torch.cat([p.detach().reshape(-1) for p in params])
        self.x = x0.clone()                     # the model x (all workers)
        self.w = torch.empty_like(x0)           # the point the model runs at
        self.g = torch.zeros_like(x0)           # one worker's gradient
        off = 0
        for p, n in zip(params, self.sizes):
            p.data = self.w[off:off + n].view_as(p)
            p.grad = self.g[off:off + n].view_as(p)
            off += n
        self.params = params
        self.grad_in_place = None               # checked at the first backward
        K = self.K
        # batch norm's running statistics, one set per worker: the model's
        # float buffers are views of bn, which holds worker k's set while
        # it runs (bn_k[k] between its turns)
        bufs = [b for b in self.model.buffers() if b.is_floating_point()]
        self.bn = torch.cat([b.reshape(-1) for b in bufs]) if bufs else None
        off = 0
        for b in bufs:
            b.data = self.bn[off:off + b.numel()].view_as(b)
            off += b.numel()
        self.bn_k = self.bn.unsqueeze(0).repeat(K, 1) if bufs else None
        if self.algo == "sgd":
            self.m = torch.zeros_like(x0)
        else:
            self.E = torch.zeros(K, d, dtype=dtype)   # e_k
            self.M = torch.zeros(K, d, dtype=dtype)   # m_k
            self.G = torch.zeros(K, d, dtype=dtype)   # g_k
            self.comp = RBGS(self.sizes, args.ratio, args.seed)

    def _grad(self, xb, yb, k=0):
        """Gradient of the mean loss over (xb, yb) at self.w, into self.g,
        with worker k's batch-norm statistics; returns the loss (a 0-d
        tensor)."""
        self.g.zero_()
        if self.bn is not None:
            self.bn.copy_(self.bn_k[k])
        loss = F.cross_entropy(self.model(xb), yb)
        if self.bn is not None:
            self.bn_k[k].copy_(self.bn)
        loss.backward()
        if self.grad_in_place is None:
            self.grad_in_place = all(
                p.grad.data_ptr() == self.g[o:].data_ptr()
                for p, o in zip(self.params, _offsets(self.sizes)))
        if not self.grad_in_place:
            # autograd replaced the .grad views: copy and re-attach them
            self.g.copy_(torch.cat([p.grad.reshape(-1) for p in self.params]))
            for p, o, n in zip(self.params, _offsets(self.sizes), self.sizes):
                p.grad = self.g[o:o + n].view_as(p)
        return loss.detach()

    def step(self, batches, lr):
        """One step: batches[k] = (x, y) of worker k. Returns (sum of the
        workers' losses as a tensor, ok) where ok is False on a non-finite
        update (the run diverged)."""
        loss_sum = 0.0
        if self.algo == "sgd":
            self.w.copy_(self.x)
            acc = torch.zeros_like(self.x)
            for k, (xb, yb) in enumerate(batches):
                loss_sum = loss_sum + self._grad(xb, yb, k)
                acc.add_(self.g)                 # allreduce-sum of grad
            # g_k = grad_k + wd*x, avg over k; m = mu*m + avg; x -= lr*m
            acc.div_(self.K).add_(self.x, alpha=self.wd)
            self.m.mul_(self.mu).add_(acc)
            ok = bool(torch.isfinite(self.m).all())
            self.x.add_(self.m, alpha=-lr)
            return loss_sum, ok
        # def: every worker at its detached point x - lam*e_k (old x, old e_k)
        P = self.x.unsqueeze(0) - self.lam * self.E        # (K, d)
        for k, (xb, yb) in enumerate(batches):
            self.w.copy_(P[k])
            loss_sum = loss_sum + self._grad(xb, yb, k)
            self.G[k].copy_(self.g)
        self.G.add_(P, alpha=self.wd)                      # wd at the point
        self.M.mul_(self.mu).add_(self.G)                  # local momentum
        self.E.add_(self.M, alpha=lr)                      # p_k = lr*m_k + e_k
        ok = bool(torch.isfinite(self.E).all())
        idx = self.comp.select()                           # shared blocks
        msg = self.E[:, idx]                               # C(p_k), (K, k)
        self.E[:, idx] = 0                                 # e_k = p_k - C(p_k)
        self.x[idx] -= msg.sum(0) / self.K                 # x -= avg C(p_k)
        return loss_sum, ok

    def output(self):
        """The evaluated model: x for sgd, y = x - avg_k e_k for def."""
        if self.algo == "sgd":
            return self.x.clone()
        return self.x - self.E.mean(0)

    def evaluate(self, xte, yte, chunk=1000):
        """(accuracy, mean loss) of the output model on (xte, yte), with
        the workers' batch-norm statistics averaged (which they keep)."""
        self.w.copy_(self.output())
        if self.bn is not None:
            self.bn.copy_(self.bn_k.mean(0))
            self.bn_k.copy_(self.bn.unsqueeze(0).expand_as(self.bn_k))
        correct, loss = 0, 0.0
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(xte), chunk):
                out = self.model(xte[i:i + chunk])
                y = yte[i:i + chunk]
                correct += int((out.argmax(1) == y).sum())
                loss += float(F.cross_entropy(out, y, reduction="sum"))
        self.model.train()
        return correct / len(xte), loss / len(xte)


def _offsets(sizes):
    o, out = 0, []
    for n in sizes:
        out.append(o)
        o += n
    return out


# -- training ----------------------------------------------------------------------
def train(args, data, log):
    xtr, ytr, xte, yte = data
    sim = Sim(args)
    K, B = args.workers, args.batch
    b, spe = B // K, len(xtr) // B
    total = spe * args.epochs
    t0 = time.time()
    step, best, acc, status, lr = 0, 0.0, 0.0, "ok", args.lr
    epochs_done, diverged_step = 0, None
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(
            args.seed * 1000003 + epoch))
        loss_sum = torch.zeros((), dtype=torch.float64)
        for s in range(spe):
            lr = tf.lr_at(args, step, total)
            batches = []
            for k in range(K):
                idx = perm[s * B + k * b: s * B + (k + 1) * b]
                batches.append((xtr[idx], ytr[idx]))
            ls, ok = sim.step(batches, lr)
            loss_sum += ls
            step += 1
            if not ok:
                status, diverged_step = "diverged", step - 1
                break
        if status != "ok":
            break
        te0 = time.time()
        acc, test_loss = sim.evaluate(xte, yte)
        eval_s = time.time() - te0
        if not math.isfinite(test_loss):
            status, diverged_step = "diverged", step
            break
        best = max(best, acc)
        epochs_done = epoch + 1
        log(dict(epoch=epoch + 1, step=step,
                 train_loss=loss_sum.item() / (spe * K), test_loss=test_loss,
                 test_acc=acc, lr=lr, wall_s=time.time() - t0, eval_s=eval_s,
                 algo=args.algo,
                 compressor="rbgs" if args.algo == "def" else "none",
                 ratio=args.ratio if args.algo == "def" else 1,
                 **({"lambda": args.lam} if args.algo == "def" else {}),
                 workers=K, model=args.model, init=args.init,
                 impl="torch-reference"))
    if diverged_step is not None:
        step = diverged_step  # as deft train: the step that failed
    final = dict(final=True, status=status, epochs=epochs_done, step=step,
                 test_acc=acc, best_test_acc=best, wall_s=time.time() - t0)
    if diverged_step is not None:
        final["diverged_step"] = diverged_step
    return final


# -- selftest ----------------------------------------------------------------------
def _rel(a, b):
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-30))


def selftest(args, data):
    """Exact identities, in float64, on a few steps of real data."""
    xtr, ytr = data[0].double(), data[1]
    steps, tol, fails = args.selftest_steps, 1e-9, []

    def batches_at(step, K, B=args.batch):
        b, n = B // K, len(xtr) // B
        s = step % n
        return [(xtr[s * B + k * b: s * B + (k + 1) * b],
                 ytr[s * B + k * b: s * B + (k + 1) * b]) for k in range(K)]

    def cfg(**kw):
        a = argparse.Namespace(**vars(args))
        a.__dict__.update(kw)
        return a

    def lr_of(t):  # a decaying schedule, so that lr changes mid-run
        return tf.lr_at(args, t, steps)

    def check(name, got, want, note=""):
        r = _rel(got, want)
        ok = r <= tol
        print("selftest %-52s max rel diff %.3g  %s" % (name, r, "ok" if ok else "FAIL"))
        if not ok:
            i = int((got - want).abs().argmax())
            print("  at coordinate %d: got %.17g, want %.17g %s"
                  % (i, float(got[i]), float(want[i]), note))
            print("  got  [:5] %s\n  want [:5] %s"
                  % (got[:5].tolist(), want[:5].tolist()))
            fails.append(name)

    # 1. K = 1, lam = 1, rbgs at a high ratio: y_t = x_t - e_t of def is the
    #    momentum-SGD path (DEF paper eq. 8, Remark 4.5(1)), at every step.
    sgd = Sim(cfg(algo="sgd", workers=1), torch.float64)
    dfn = Sim(cfg(algo="def", workers=1, lam=1.0, ratio=args.ratio), torch.float64)
    worst, at = 0.0, 0
    for t in range(steps):
        bt = batches_at(t, 1, args.batch // args.workers)
        sgd.step(bt, lr_of(t))
        dfn.step(bt, lr_of(t))
        r = _rel(dfn.output(), sgd.output())
        if r > worst:
            worst, at = r, t
    check("K=1 lam=1 ratio %g: def y_t == sgd x_t (%d steps)" % (args.ratio, steps),
          dfn.output(), sgd.output(), "(worst step %d)" % at)
    print("  (x - y of def at the end, to show compression was active: %.3g)"
          % float((dfn.x - dfn.output()).abs().max()))

    # 2. eq. 8 with momentum, any K and lam: y_{t+1} = y_t - lr*avg_k m_k.
    K = args.workers
    dfk = Sim(cfg(algo="def", workers=K, ratio=args.ratio), torch.float64)
    worst, got_w, want_w = -1.0, None, None
    for t in range(steps):
        y0 = dfk.output()
        dfk.step(batches_at(t, K), lr_of(t))
        want = y0 - lr_of(t) * dfk.M.mean(0)
        r = _rel(dfk.output(), want)
        if r > worst:
            worst, got_w, want_w = r, dfk.output(), want
    check("K=%d lam=%g ratio %g: y_{t+1} == y_t - lr*avg(m_k)" % (K, args.lam, args.ratio),
          got_w, want_w)

    # 3. ratio 1 (C = identity, e = 0): def is sgd for any K and lam.
    sgdk = Sim(cfg(algo="sgd", workers=K), torch.float64)
    df1 = Sim(cfg(algo="def", workers=K, ratio=1.0), torch.float64)
    for t in range(steps):
        bt = batches_at(t, K)
        sgdk.step(bt, lr_of(t))
        df1.step(bt, lr_of(t))
    check("K=%d lam=%g ratio 1: def x_t == sgd x_t" % (K, args.lam),
          df1.x, sgdk.x)

    # 4. rbgs: block lengths, contiguity with wrap-around, shared-seed linearity.
    sizes = [150, 6, 2400, 16, 48000, 120, 10080, 84, 840, 10, 7]
    for ratio in (1.0, 3.0, 256.0, 1e9):
        c = RBGS(sizes, ratio, 1)
        want_k = [max(1, min(n, n // int(ratio) if ratio < 1e6 else 0)) for n in sizes]
        if c.keep != want_k:
            print("selftest rbgs ratio %g: block lengths %s, want %s FAIL"
                  % (ratio, c.keep, want_k))
            fails.append("rbgs lengths")
        wrapped = False
        for _ in range(200):
            idx = c.select()
            parts = torch.split(idx, c.keep)
            for t, (p, n, o) in enumerate(zip(parts, sizes, _offsets(sizes))):
                st = int(c.starts[t])
                exp = o + (st + torch.arange(len(p))) % n
                if not torch.equal(p, exp) or not 0 <= st < n:
                    print("selftest rbgs: tensor %d block %s, want %s FAIL"
                          % (t, p.tolist()[:8], exp.tolist()[:8]))
                    fails.append("rbgs block")
                    break
                wrapped |= st + len(p) > n
        if ratio == 3.0 and not wrapped:
            print("selftest rbgs ratio 3: no block wrapped in 200 draws FAIL")
            fails.append("rbgs wrap")
    c = RBGS(sizes, 4.0, 2)
    vs = torch.randn(5, sum(sizes), dtype=torch.float64)
    idx = c.select()
    sum_of_c = torch.zeros(sum(sizes), dtype=torch.float64)
    for v in vs:
        sum_of_c[idx] += v[idx]
    c_of_sum = torch.zeros(sum(sizes), dtype=torch.float64)
    c_of_sum[idx] = vs.sum(0)[idx]
    check("rbgs linear: sum_k C(v_k) == C(sum_k v_k)", sum_of_c, c_of_sum)
    # uniform start: a histogram of the starts of an n = 10 tensor
    c = RBGS([10], 5.0, 3)
    starts = []
    for _ in range(4000):
        c.select()
        starts.append(int(c.starts[0]))
    hist = torch.bincount(torch.tensor(starts), minlength=10).tolist()
    ok = min(hist) > 300 and max(hist) < 500
    print("selftest rbgs start histogram over [0, 10), 4000 draws: %s  %s"
          % (hist, "ok" if ok else "FAIL"))
    if not ok:
        fails.append("rbgs uniform")
    if fails:
        print("selftest: %d FAILED: %s" % (len(fails), ", ".join(fails)))
        return 1
    print("selftest: all identities hold")
    return 0


# -- command line ------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=("sgd", "def"), default="def")
    p.add_argument("--model", choices=("lenet", "preresnet20", "vgg11bn"),
                   default="lenet")
    p.add_argument("--threads", type=int, default=1,
                   help="torch's intra-op threads, >= 1")
    p.add_argument("--ratio", type=float, default=256.0,
                   help="rbgs compression ratio n/k, >= 1 (def only)")
    p.add_argument("--lam", "--lambda", dest="lam", type=float, default=0.3,
                   help="DEF's detach coefficient in [0, 1]")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float,
                   default=5e-4)
    p.add_argument("--lr-decay", default="0.5,0.75",
                   help="fractions of training where lr drops 10x ('none' = constant)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=("torch", "he"), default="torch",
                   help="torch: PyTorch's default (U(+-1/sqrt(fan_in)) weights "
                        "and biases); he: deft's former default (He normal, "
                        "Glorot for the last layer, zero biases)")
    p.add_argument("--data-dir", default=tf.DATA_DIR)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-test", type=int, default=0)
    p.add_argument("--log", help="JSON lines, one per epoch and a final one")
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    p.add_argument("--selftest", action="store_true",
                   help="check the exact identities on a few float64 steps and exit")
    p.add_argument("--selftest-steps", type=int, default=40)
    args = p.parse_args(argv)
    tf.check_schedule(p, args)
    if args.batch % args.workers:
        p.error("--batch %d is not divisible by --workers %d"
                % (args.batch, args.workers))
    if not (args.ratio >= 1 and math.isfinite(args.ratio)):
        p.error("--ratio %g: must be a finite number >= 1" % args.ratio)
    if not 0 <= args.lam <= 1:
        p.error("--lam %g: must be in [0, 1]" % args.lam)
    if not (args.lr > 0 and math.isfinite(args.lr)):
        p.error("--lr %g: must be a finite number > 0" % args.lr)
    if not 0 <= args.momentum < 1:
        p.error("--momentum %g: must be in [0, 1)" % args.momentum)
    if not (args.weight_decay >= 0 and math.isfinite(args.weight_decay)):
        p.error("--weight-decay %g: must be a finite number >= 0" % args.weight_decay)
    if args.threads < 1:
        p.error("--threads %d: must be >= 1" % args.threads)
    if args.limit_train < 0 or args.limit_test < 0 or args.selftest_steps < 1:
        p.error("--limit-train, --limit-test must be >= 0, --selftest-steps >= 1")
    return p, args


def main(argv=None):
    parser, args = parse(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.selftest:
            data = tf.load(args.data_dir, args.limit_train or 4096,
                           args.limit_test or 1000)
        else:
            data = tf.load(args.data_dir, args.limit_train, args.limit_test)
    except (OSError, ValueError) as e:
        print("torch_reference: %s" % e, file=sys.stderr)
        return 2
    if args.batch > len(data[0]):
        parser.error("--batch %d is larger than the training set (%d examples)"
                     % (args.batch, len(data[0])))
    if args.selftest:
        return selftest(args, data)
    logf = open(args.log, "w") if args.log else None

    def log(rec):
        if logf:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if not args.quiet and "epoch" in rec:
            print("%s epoch %d/%d  loss %.4f  test acc %.4f  lr %.3g  %.1f s"
                  % (args.algo, rec["epoch"], args.epochs, rec["train_loss"],
                     rec["test_acc"], rec["lr"], rec["wall_s"]), flush=True)

    final = train(args, data, log)
    log(final)
    if logf:
        logf.close()
    print("final: %s, test acc %.4f (best %.4f), %d epochs, %.1f s"
          % (final["status"], final["test_acc"], final["best_test_acc"],
             final["epochs"], final["wall_s"]), flush=True)
    return 3 if final["status"] == "diverged" else 0


if __name__ == "__main__":
    sys.exit(main())

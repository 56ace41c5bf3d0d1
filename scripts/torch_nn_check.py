#!/usr/bin/python3
"""deft's C layers and models against PyTorch on fixed inputs.

    /usr/bin/python3 scripts/torch_nn_check.py [--nn-dump build/nn_dump]
        [--models lenet,vgg,preresnet20,vgg11bn] [--layers bn1d,bn2d,gap,add]
        [--seed S] [--batch B] [--rtol R] [--keep DIR]
    /usr/bin/python3 scripts/torch_nn_check.py --self-test

For every model and layer it runs deft's helper `nn_dump` into a temporary
directory, which writes the inputs deft used and what deft computed (raw
little-endian float32 / int32 arrays and a meta.json), rebuilds the same
computation in PyTorch (float32) and prints a Markdown table of the
differences: case | quantity | max abs err | max rel err | pass. The
relative error is the max abs error over the max |torch value| of that
quantity; the "per tensor" / "per BN" rows give the worst single tensor,
against its own values. Exit status 1 if any quantity is off by more than
--rtol (per-tensor rows: --rtol-tensor), a case failed to run or had the
wrong layout; 2 for a missing nn_dump or bad arguments.

Models (the twins of examples/torch_fmnist.py, 1x28x28 inputs, 10 classes):
  nn_dump model NAME SEED BATCH OUTDIR
    meta.json  {"mode": "model", "model", "c", "h", "w", "classes", "batch",
                "params", "buffers", "tensors": [sizes], "loss",
                "eval_loss_sum", "eval_correct"}
    params.f32 (P, the parameters' tensors in build order = the twin's
    parameters() order), buffers_in.f32 (per BatchNorm in build order, its
    running mean then running variance), x.f32 (B*1*28*28), y.i32 (B),
    grad.f32 (P, of the train-mode mean cross-entropy), buffers_out.f32 (the
    running statistics after that train-mode forward), logits_eval.f32
    (B*10, eval mode with buffers_out)
  Torch side: params and buffers_in loaded, train(), mean CE, backward:
  loss, grad, running means and variances; then eval() with deft's
  buffers_out (so an error in the statistics shows in their own rows, not
  again in the logits): logits, summed CE, correct count.

Layers:
  nn_dump layer KIND SEED OUTDIR, KIND in
    bn1d  BatchNorm over (B,C) = (8,5)      bn2d  BatchNorm over (4,3,5,6)
    gap   global average pool (4,3,5,6) -> (4,3)
    add   residual add out = a + b
  meta.json {"mode": "layer", "kind", "shape": [input shape]}; inputs x.f32
  (add: a.f32, b.f32), gamma.f32, beta.f32, rm_in.f32, rv_in.f32 (bn),
  dout.f32 (d loss / d output); outputs y.f32 (train mode), dx.f32 (add:
  da.f32, db.f32), dgamma.f32, dbeta.f32, rm_out.f32, rv_out.f32 (bn),
  y_eval.f32 (bn: eval mode with rm_out, rv_out).
  BatchNorm: eps 1e-5, momentum 0.1, running variance with the unbiased
  batch variance, as torch.

--self-test makes the dumps with this script itself standing in for
nn_dump (the same command line and files, computed in float64 by torch and
stored as float32), checks them like deft's (they must pass, the errors
being float32's own rounding: the noise floor the tolerance sits above),
then corrupts one gradient entry and one running variance and checks that
those are caught.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import torch_fmnist as tf  # noqa: E402

MODELS = ("lenet", "vgg", "preresnet20", "vgg11bn")
LAYERS = ("bn1d", "bn2d", "gap", "add")
LAYER_SHAPES = {"bn1d": (8, 5), "bn2d": (4, 3, 5, 6), "gap": (4, 3, 5, 6),
                "add": (4, 3, 5, 6)}
EPS, MOMENTUM = 1e-5, 0.1
C, H, W, CLASSES = 1, 28, 28, 10

# Tolerance. Both sides compute in float32 but sum in different orders
# (deft: im2col + sgemm, its own reductions; torch: mkldnn / its own), so
# each value carries rounding noise of about eps32 * sqrt(terms) relative to
# the magnitudes summed (eps32 = 6e-8; a 3x3 conv over 256 channels sums
# 2304 terms, the weight gradients of the first conv B*28*28), compounded
# over up to 20 layers, and BatchNorm's backward subtracts nearly equal
# sums. Measured (--self-test: torch float32 against torch float64, which
# is what float32 rounding alone does to torch's own order; seeds 1-3,
# batch 16 and 32), the worst relative error of a whole quantity (loss,
# all of grad, logits, statistics) is 2e-6, so 1e-4 leaves a factor 50 for
# deft's different orders and its own rounding, and is still far below
# what a real bug gives (a wrong index, a missing term, a biased variance:
# 1e-2 and up; the unbiased/biased variance factor n/(n-1) at n = 120 is
# 8e-3).
RTOL = 1e-4
# Per-tensor rows (each gradient tensor, each BatchNorm's statistics)
# measure a tensor's error against its own largest value, but never
# against less than PER_TENSOR_FLOOR times the largest of the whole
# quantity: a conv bias followed by a BatchNorm has a true gradient of 0
# (the BN removes the mean), so both sides' values there are pure rounding
# noise and a relative error of the noise against itself means nothing
# (those biases are left out of the per-tensor row altogether: with the
# floor alone, torch float32 against float64 reaches 9e-5 on vgg11bn's
# first conv bias, a sum of 12,544 terms that cancel).
PER_TENSOR_FLOOR = 1e-2
# The per-tensor rows get their own, 10x looser tolerance: a tensor's
# error is measured against that tensor's own (smaller) values, and the
# first convs' weight gradients sum B*28*28 products each; torch float32
# against float64 already reaches 6.6e-6 there (batch 32). A bug in one
# tensor (a wrong gradient, a swapped statistic) is off by 1e-2 or more
# against its own values, so 1e-3 still catches it.
RTOL_TENSOR = 1e-3


class DumpError(Exception):
    pass


# -- files ------------------------------------------------------------------------
def write_arr(d, name, a, dtype="<f4"):
    np.ascontiguousarray(np.asarray(a, dtype=dtype)).tofile(os.path.join(d, name))


def read_arr(d, name, n, dtype="<f4"):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        raise DumpError("%s is missing" % name)
    a = np.fromfile(path, dtype=dtype)
    if a.size != n:
        raise DumpError("%s holds %d values, expected %d" % (name, a.size, n))
    return torch.from_numpy(a.astype(np.float32 if dtype == "<f4" else np.int64))


def read_meta(d):
    path = os.path.join(d, "meta.json")
    if not os.path.exists(path):
        raise DumpError("meta.json is missing")
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as e:
            raise DumpError("meta.json: %s" % e)


def need(meta, *keys):
    missing = [k for k in keys if k not in meta]
    if missing:
        raise DumpError("meta.json lacks %s" % ", ".join(missing))


# -- torch side ---------------------------------------------------------------------
def bn_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def param_names(model):
    return [n for n, _ in model.named_parameters()]


def biases_before_bn(model):
    """Names of the conv biases whose conv feeds a BatchNorm straight away
    (vgg11bn's): their exact gradient is 0, the BN taking the mean out, so
    what either side computes there is rounding noise."""
    out = []
    for prefix, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            kids = list(m.named_children())
            for (n, a), (_, b) in zip(kids, kids[1:]):
                if isinstance(a, nn.Conv2d) and a.bias is not None and \
                        isinstance(b, nn.modules.batchnorm._BatchNorm):
                    out.append((prefix + "." if prefix else "") + n + ".bias")
    return out


def load_flat(model, params, buffers):
    """Splits deft's flat parameter and buffer vectors into the model."""
    ps = list(model.parameters())
    with torch.no_grad():
        off = 0
        for p in ps:
            p.copy_(params[off:off + p.numel()].view_as(p))
            off += p.numel()
        off = 0
        for m in bn_modules(model):
            c = m.num_features
            m.running_mean.copy_(buffers[off:off + c])
            m.running_var.copy_(buffers[off + c:off + 2 * c])
            off += 2 * c


def flat_buffers(model):
    return torch.cat([t for m in bn_modules(model)
                      for t in (m.running_mean, m.running_var)]) \
        if bn_modules(model) else torch.zeros(0)


def model_layout(name):
    m = tf.MODELS[name]()
    sizes = [p.numel() for p in m.parameters()]
    nb = sum(2 * b.num_features for b in bn_modules(m))
    return m, sizes, nb


def run_model(name, params, buffers_in, x, y, buffers_eval, dtype):
    """The twin's train step and eval pass, in dtype. Returns a dict of
    float32 tensors (and the model, for names)."""
    model, _, _ = model_layout(name)
    model = model.to(dtype)
    load_flat(model, params.to(dtype), buffers_in.to(dtype))
    model.train()
    xx = x.to(dtype).view(-1, C, H, W)
    loss = F.cross_entropy(model(xx), y)
    model.zero_grad()
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    buffers_out = flat_buffers(model).clone()
    if buffers_eval is None:
        buffers_eval = buffers_out.float()
    load_flat(model, params.to(dtype), buffers_eval.to(dtype))
    model.eval()
    with torch.no_grad():
        logits = model(xx)
        eval_loss_sum = F.cross_entropy(logits, y, reduction="sum")
        correct = int((logits.argmax(1) == y).sum())
    f = lambda t: t.detach().float()  # noqa: E731
    return dict(loss=f(loss), grad=f(grad), buffers_out=f(buffers_out),
                logits_eval=f(logits).reshape(-1), eval_loss_sum=f(eval_loss_sum),
                eval_correct=correct, logits_raw=logits.detach())


def run_layer(kind, t, dtype):
    """The layer's train-mode forward and backward (and eval forward for
    BN) on the inputs t (float32 tensors), in dtype."""
    g = {k: v.to(dtype) for k, v in t.items()}
    out = {}
    if kind in ("bn1d", "bn2d"):
        x = g["x"].clone().requires_grad_()
        gamma = g["gamma"].clone().requires_grad_()
        beta = g["beta"].clone().requires_grad_()
        rm, rv = g["rm_in"].clone(), g["rv_in"].clone()
        y = F.batch_norm(x, rm, rv, gamma, beta, training=True,
                         momentum=MOMENTUM, eps=EPS)
        y.backward(g["dout"])
        out.update(y=y, dx=x.grad, dgamma=gamma.grad, dbeta=beta.grad,
                   rm_out=rm, rv_out=rv)
        rm_e = t["rm_out_eval"].to(dtype) if "rm_out_eval" in t else rm
        rv_e = t["rv_out_eval"].to(dtype) if "rv_out_eval" in t else rv
        with torch.no_grad():
            out["y_eval"] = F.batch_norm(g["x"], rm_e, rv_e, g["gamma"], g["beta"],
                                         training=False, eps=EPS)
    elif kind == "gap":
        x = g["x"].clone().requires_grad_()
        y = F.adaptive_avg_pool2d(x, 1).flatten(1)
        y.backward(g["dout"])
        out.update(y=y, dx=x.grad)
    elif kind == "add":
        a = g["a"].clone().requires_grad_()
        b = g["b"].clone().requires_grad_()
        y = a + b
        y.backward(g["dout"])
        out.update(y=y, da=a.grad, db=b.grad)
    else:
        raise DumpError("unknown layer kind %r" % kind)
    return {k: v.detach().float().reshape(-1) for k, v in out.items()}


# -- the stand-in nn_dump (--self-test) ---------------------------------------------
def fake_nn_dump(argv):
    """nn_dump's command line and files, computed by torch in float64."""
    torch.set_num_threads(1)
    if len(argv) == 5 and argv[0] == "model":
        _, name, seed, batch, out = argv
        seed, batch = int(seed), int(batch)
        os.makedirs(out, exist_ok=True)
        torch.manual_seed(seed)
        model, sizes, nb = model_layout(name)
        g = torch.Generator().manual_seed(seed + 1)
        params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        # nonzero starting statistics, so the momentum update is exercised
        bufs = []
        for m in bn_modules(model):
            bufs += [0.1 * torch.randn(m.num_features, generator=g),
                     0.5 + torch.rand(m.num_features, generator=g)]
        buffers_in = torch.cat(bufs) if bufs else torch.zeros(0)
        x = torch.randn(batch, C, H, W, generator=g)
        y = torch.randint(0, CLASSES, (batch,), generator=g)
        r = run_model(name, params, buffers_in, x, y, None, torch.float64)
        for k, v in (("params", params), ("buffers_in", buffers_in), ("x", x),
                     ("grad", r["grad"]), ("buffers_out", r["buffers_out"]),
                     ("logits_eval", r["logits_eval"])):
            write_arr(out, k + ".f32", v.numpy())
        write_arr(out, "y.i32", y.numpy(), "<i4")
        meta = dict(mode="model", model=name, c=C, h=H, w=W, classes=CLASSES,
                    batch=batch, params=int(params.numel()), buffers=nb,
                    tensors=sizes, loss=float(r["loss"]),
                    eval_loss_sum=float(r["eval_loss_sum"]),
                    eval_correct=r["eval_correct"])
    elif len(argv) == 4 and argv[0] == "layer":
        _, kind, seed, out = argv
        if kind not in LAYER_SHAPES:
            print("nn_dump: unknown layer %s" % kind, file=sys.stderr)
            return 2
        os.makedirs(out, exist_ok=True)
        g = torch.Generator().manual_seed(int(seed))
        shape = LAYER_SHAPES[kind]
        t = {}
        if kind == "add":
            t["a"] = torch.randn(shape, generator=g)
            t["b"] = torch.randn(shape, generator=g)
            t["dout"] = torch.randn(shape, generator=g)
        else:
            t["x"] = 2 * torch.randn(shape, generator=g) + 0.5
            if kind == "gap":
                t["dout"] = torch.randn(shape[:2], generator=g)
            else:
                c = shape[1]
                t["gamma"] = 1 + 0.3 * torch.randn(c, generator=g)
                t["beta"] = 0.3 * torch.randn(c, generator=g)
                t["rm_in"] = 0.1 * torch.randn(c, generator=g)
                t["rv_in"] = 0.5 + torch.rand(c, generator=g)
                t["dout"] = torch.randn(shape, generator=g)
        r = run_layer(kind, t, torch.float64)
        for k, v in list(t.items()) + list(r.items()):
            write_arr(out, k + ".f32", v.numpy())
        meta = dict(mode="layer", kind=kind, shape=list(shape))
    else:
        print("usage: nn_dump model NAME SEED BATCH OUTDIR | "
              "nn_dump layer KIND SEED OUTDIR", file=sys.stderr)
        return 2
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f)
    return 0


# -- comparing ------------------------------------------------------------------------
class Table:
    def __init__(self, rtol, rtol_tensor=None):
        self.rtol = rtol
        self.rtol_tensor = 10 * rtol if rtol_tensor is None else rtol_tensor
        self.rows = []

    @property
    def failed(self):
        return [r for r in self.rows if not r[4]]

    def add(self, case, quantity, abs_err, rel_err, ok):
        self.rows.append((case, quantity, abs_err, rel_err, bool(ok)))

    def compare(self, case, quantity, deft, ref, ref32=None):
        """One row: deft's values against torch's, relative to max |torch|.
        With ref32 (torch's float32 result, ref then being float64's), the
        tolerance is also at least FLOOR_FACTOR x torch float32's own error:
        where the computation amplifies rounding (a deep net's gradient
        through batch norm), float32 cannot do better than that."""
        tol = self.rtol
        if ref32 is not None:
            e32 = self._rel(ref32.double().reshape(-1), ref.double().reshape(-1))
            tol = max(tol, FLOOR_FACTOR * e32)
            quantity += " (vs float64; torch float32 is off by %s)" % fmt(e32)
        deft = deft.double().reshape(-1)
        ref = ref.double().reshape(-1)
        if deft.numel() != ref.numel():
            self.add(case, quantity + " (size %d, torch %d)" % (deft.numel(), ref.numel()),
                     math.inf, math.inf, False)
            return
        if not torch.isfinite(deft).all():
            self.add(case, quantity + " (non-finite)", math.inf, math.inf, False)
            return
        if ref.numel() == 0:
            return
        ae = (deft - ref).abs().max().item()
        scale = ref.abs().max().item()
        re = ae / scale if scale > 0 else (0.0 if ae == 0 else math.inf)
        self.add(case, quantity, ae, re, re <= tol)

    @staticmethod
    def _rel(a, ref):
        ae = (a - ref).abs().max().item()
        scale = ref.abs().max().item()
        return ae / scale if scale > 0 else (0.0 if ae == 0 else math.inf)

    def _worst(self, deft, ref, names, sizes, skip):
        floor = PER_TENSOR_FLOOR * ref.abs().max().item()
        worst = (-1.0, 0.0, "")
        off = 0
        for n, s in zip(names, sizes):
            d, r = deft[off:off + s], ref[off:off + s]
            off += s
            if n in skip:
                continue
            ae = (d - r).abs().max().item()
            scale = max(r.abs().max().item(), floor)
            re = ae / scale if scale > 0 else (0.0 if ae == 0 else math.inf)
            if re > worst[0]:
                worst = (re, ae, n)
        return worst

    def compare_parts(self, case, quantity, deft, ref, names, sizes, skip=(),
                      ref32=None):
        """One row for the worst of several tensors packed in one vector,
        each against its own max |torch| (floored, see PER_TENSOR_FLOOR);
        the tensors named in skip are left out (the whole-vector row has
        them). ref32: as in compare()."""
        deft, ref = deft.double().reshape(-1), ref.double().reshape(-1)
        if deft.numel() != ref.numel() or not torch.isfinite(deft).all():
            return  # compare() has reported it
        tol = self.rtol_tensor
        if ref32 is not None:
            e32 = self._worst(ref32.double().reshape(-1), ref, names, sizes, skip)[0]
            tol = max(tol, FLOOR_FACTOR * e32)
            quantity += " (vs float64; torch float32's worst %s)" % fmt(e32)
        worst = self._worst(deft, ref, names, sizes, skip)
        if worst[0] >= 0:
            self.add(case, "%s, worst: %s%s" % (
                quantity, worst[2], " (%d conv biases before a BN, of exact "
                "gradient 0, left out)" % len(skip) if skip else ""),
                worst[1], worst[0], worst[0] <= tol)

    def markdown(self):
        lines = ["| case | quantity | max abs err | max rel err | pass |",
                 "|---|---|---|---|---|"]
        for case, q, ae, re, ok in self.rows:
            lines.append("| %s | %s | %s | %s | %s |" % (
                case, q, fmt(ae), fmt(re), "yes" if ok else "**NO**"))
        return "\n".join(lines)


# A float32 result may be off from float64 by this many times torch
# float32's own error before it counts as wrong (see Table.compare).
FLOOR_FACTOR = 4.0


def fmt(v):
    if isinstance(v, str):
        return v
    if v == math.inf:
        return "inf"
    return "0" if v == 0 else "%.2e" % v


def check_model(table, d, name):
    case = "model %s" % name
    meta = read_meta(d)
    need(meta, "mode", "model", "c", "h", "w", "classes", "batch", "params",
         "buffers", "tensors", "loss", "eval_loss_sum", "eval_correct")
    if meta["mode"] != "model" or meta["model"] != name:
        raise DumpError("meta.json is for %s %s" % (meta["mode"], meta.get("model")))
    if (meta["c"], meta["h"], meta["w"], meta["classes"]) != (C, H, W, CLASSES):
        raise DumpError("meta.json: input %sx%sx%s, %s classes; expected 1x28x28, 10"
                        % (meta["c"], meta["h"], meta["w"], meta["classes"]))
    model, sizes, nb = model_layout(name)
    names = param_names(model)
    B = int(meta["batch"])
    case = "model %s (B=%d)" % (name, B)
    # Layout: the same tensors in the same order, the same statistics.
    layout_ok = (list(meta["tensors"]) == sizes and meta["params"] == sum(sizes)
                 and meta["buffers"] == nb)
    table.add(case, "layout: %d params in %d tensors, %d buffers (torch %d in %d, %d)"
              % (meta["params"], len(meta["tensors"]), meta["buffers"], sum(sizes),
                 len(sizes), nb), "-", "-", layout_ok)
    if not layout_ok:
        return
    P = sum(sizes)
    params = read_arr(d, "params.f32", P)
    buffers_in = read_arr(d, "buffers_in.f32", nb)
    x = read_arr(d, "x.f32", B * C * H * W)
    y = read_arr(d, "y.i32", B, "<i4")
    grad = read_arr(d, "grad.f32", P)
    buffers_out = read_arr(d, "buffers_out.f32", nb)
    logits = read_arr(d, "logits_eval.f32", B * CLASSES)
    if y.min() < 0 or y.max() >= CLASSES:
        raise DumpError("y.i32 holds labels outside 0..9")
    r = run_model(name, params, buffers_in, x, y, buffers_out, torch.float32)
    r64 = run_model(name, params, buffers_in, x, y, buffers_out, torch.float64)
    table.compare(case, "loss (train mode, mean CE)", torch.tensor(float(meta["loss"])),
                  r["loss"])
    # The gradient against float64's: through preresnet20's 19 batch norms
    # float32 rounding grows to ~1e-3 relative (torch float32 too), so
    # deft's float32 is held to a multiple of torch float32's own error.
    table.compare(case, "grad", grad, r64["grad"], r["grad"])
    table.compare_parts(case, "grad per tensor", grad, r64["grad"], names, sizes,
                        biases_before_bn(model), r["grad"])
    if nb:
        bns = bn_modules(model)
        bnames = [n for n, m in model.named_modules() if m in bns]
        idx_m = torch.cat([torch.arange(o, o + b.num_features) for o, b in
                           zip(offsets(bns), bns)])
        idx_v = idx_m + torch.cat([torch.full((b.num_features,), b.num_features)
                                   for b in bns])
        bsz = [b.num_features for b in bns]
        for what, idx in (("running_mean", idx_m), ("running_var", idx_v)):
            table.compare(case, what + " after the step", buffers_out[idx],
                          r["buffers_out"][idx])
            table.compare_parts(case, what + " per BN", buffers_out[idx],
                                r["buffers_out"][idx], bnames, bsz)
    table.compare(case, "logits (eval mode)", logits, r["logits_eval"])
    table.compare(case, "summed CE (eval mode)",
                  torch.tensor(float(meta["eval_loss_sum"])), r["eval_loss_sum"])
    # The correct count may differ where the top two logits are within
    # the tolerance of each other: those are allowed to go either way.
    lr = r["logits_raw"].double()
    top2 = lr.topk(2, dim=1).values
    close = int(((top2[:, 0] - top2[:, 1]) <=
                 2 * table.rtol * lr.abs().max()).sum())
    diff = abs(int(meta["eval_correct"]) - r["eval_correct"])
    table.add(case, "correct (eval mode): deft %d, torch %d of %d%s"
              % (meta["eval_correct"], r["eval_correct"], B,
                 ", %d near-ties" % close if close else ""),
              str(diff), "-", diff <= close)


def offsets(bns):
    out, o = [], 0
    for b in bns:
        out.append(o)
        o += 2 * b.num_features
    return out


def check_layer(table, d, kind):
    meta = read_meta(d)
    need(meta, "mode", "kind", "shape")
    if meta["mode"] != "layer" or meta["kind"] != kind:
        raise DumpError("meta.json is for %s %s" % (meta["mode"], meta.get("kind")))
    shape = tuple(meta["shape"])
    case = "layer %s %s" % (kind, "x".join(map(str, shape)))
    if shape != LAYER_SHAPES[kind]:
        raise DumpError("shape %s, expected %s" % (list(shape), list(LAYER_SHAPES[kind])))
    n, c = math.prod(shape), (shape[1],)
    if kind == "add":
        ins = {"a": shape, "b": shape, "dout": shape}
        outs = {"y": n, "da": n, "db": n}
    elif kind == "gap":
        ins = {"x": shape, "dout": shape[:2]}
        outs = {"y": math.prod(shape[:2]), "dx": n}
    else:
        ins = {"x": shape, "gamma": c, "beta": c, "rm_in": c, "rv_in": c,
               "dout": shape}
        outs = {"y": n, "dx": n, "dgamma": c[0], "dbeta": c[0], "rm_out": c[0],
                "rv_out": c[0], "y_eval": n}
    t = {k: read_arr(d, k + ".f32", math.prod(s)).view(s) for k, s in ins.items()}
    got = {k: read_arr(d, k + ".f32", s) for k, s in outs.items()}
    if kind in ("bn1d", "bn2d"):
        # eval output with deft's statistics (their own rows check them)
        t["rm_out_eval"], t["rv_out_eval"] = got["rm_out"], got["rv_out"]
    r = run_layer(kind, t, torch.float32)
    for k in outs:
        table.compare(case, k, got[k], r[k])


def run_dump(cmd, args, d):
    p = subprocess.run(cmd + args + [d], capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0:
        raise DumpError("%s exited with %d: %s" % (
            " ".join(os.path.basename(c) for c in cmd[:1]) + " " + " ".join(args),
            p.returncode, (p.stderr or p.stdout).strip()[-400:]))


def run_all(cmd, models, layers, seed, batch, rtol, rtol_tensor, workdir):
    """Runs the dumps into workdir and checks them; returns the Table."""
    table = Table(rtol, rtol_tensor)
    cases = [("model", m) for m in models] + [("layer", k) for k in layers]
    for mode, what in cases:
        d = os.path.join(workdir, "%s-%s" % (mode, what))
        os.makedirs(d, exist_ok=True)
        try:
            if mode == "model":
                run_dump(cmd, ["model", what, str(seed), str(batch)], d)
                check_model(table, d, what)
            else:
                run_dump(cmd, ["layer", what, str(seed)], d)
                check_layer(table, d, what)
        except (DumpError, subprocess.TimeoutExpired) as e:
            table.add("%s %s" % (mode, what), "error: %s" % str(e).replace("|", "/"),
                      "-", "-", False)
    return table


def corrupt(path, index, delta):
    a = np.fromfile(path, dtype="<f4")
    a[index] += delta
    a.tofile(path)


def self_test(args, models, layers):
    cmd = [sys.executable, os.path.abspath(__file__), "--fake-nn-dump"]
    with tempfile.TemporaryDirectory(prefix="torch_nn_check.") as work:
        table = run_all(cmd, models, layers, args.seed, args.batch, args.rtol,
                        args.rtol_tensor, work)
        print("self-test: dumps made by torch in float64 (a stand-in for "
              "nn_dump), checked in float32:\n")
        print(table.markdown())
        worst = max((r[3] for r in table.rows if isinstance(r[3], float)), default=0)
        ok = not table.failed
        worst_q = max((r[3] for r in table.rows if isinstance(r[3], float)
                       and "per " not in r[1]), default=0)
        print("\nnoise floor (float32 rounding): worst relative error %.2e "
              "(tolerance %.0e), per tensor %.2e (tolerance %.0e)"
              % (worst_q, args.rtol, worst, args.rtol_tensor))
        # The comparer must catch errors: one gradient entry off by 1% of the
        # largest gradient, one running variance off by 1%.
        caught = []
        if models:
            m = models[-1]
            d = os.path.join(work, "model-" + m)
            g = np.fromfile(os.path.join(d, "grad.f32"), dtype="<f4")
            corrupt(os.path.join(d, "grad.f32"), len(g) // 2,
                    0.01 * float(np.abs(g).max()))
            t = Table(args.rtol, args.rtol_tensor)
            check_model(t, d, m)
            caught.append(("grad of %s off by 1%% at one entry" % m,
                           any("grad" in r[1] and not r[4] for r in t.rows)))
        if "bn2d" in layers:
            d = os.path.join(work, "layer-bn2d")
            corrupt(os.path.join(d, "rv_out.f32"), 1, 0.01)
            t = Table(args.rtol, args.rtol_tensor)
            check_layer(t, d, "bn2d")
            caught.append(("bn2d rv_out off by 0.01 at one entry",
                           any(r[1] == "rv_out" and not r[4] for r in t.rows)))
        # And a missing nn_dump must be a clear error.
        missing = find_nn_dump(os.path.join(work, "no", "nn_dump"))[1]
        caught.append(("missing nn_dump reported", missing is not None
                       and "make build" in missing))
        for what, hit in caught:
            print("corruption check: %s: %s" % (what, "caught" if hit else "NOT caught"))
            ok = ok and hit
        print("self-test %s" % ("passed" if ok else "FAILED"))
        return 0 if ok else 1


def find_nn_dump(path):
    """(command, error message)."""
    if not os.path.exists(path):
        return None, ("torch_nn_check: %s does not exist: run make build first "
                      "(or pass --nn-dump PATH)" % path)
    if not os.access(path, os.X_OK):
        return None, "torch_nn_check: %s is not executable" % path
    return [path], None


def names(p, arg, allowed, what):
    got = [s.strip() for s in arg.split(",") if s.strip()] if arg else []
    bad = [s for s in got if s not in allowed]
    if bad:
        p.error("unknown %s %s (known: %s)" % (what, ", ".join(bad), ", ".join(allowed)))
    return got


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--fake-nn-dump"]:
        return fake_nn_dump(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nn-dump", default=os.path.join(ROOT, "build", "nn_dump"),
                   help="deft's helper binary (default: build/nn_dump of this tree)")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated, of %s ('' for none)" % ", ".join(MODELS))
    p.add_argument("--layers", default=",".join(LAYERS),
                   help="comma-separated, of %s ('' for none)" % ", ".join(LAYERS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rtol", type=float, default=RTOL,
                   help="max relative error (to max |torch value|), default %g" % RTOL)
    p.add_argument("--rtol-tensor", type=float,
                   help="the same for the per-tensor rows (default: 10 x --rtol, "
                        "%g)" % RTOL_TENSOR)
    p.add_argument("--keep", metavar="DIR",
                   help="write the dumps to DIR and keep them (default: a temp dir)")
    p.add_argument("--self-test", action="store_true",
                   help="torch itself stands in for nn_dump (no deft needed)")
    args = p.parse_args(argv)
    if args.batch < 2:
        p.error("--batch must be >= 2 (BatchNorm's unbiased variance)")
    if args.rtol_tensor is None:
        args.rtol_tensor = 10 * args.rtol
    models = names(p, args.models, MODELS, "model")
    layers = names(p, args.layers, LAYERS, "layer")
    torch.set_num_threads(1)
    if args.self_test:
        return self_test(args, models, layers)
    cmd, err = find_nn_dump(args.nn_dump)
    if err:
        print(err, file=sys.stderr)
        return 2
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        work = args.keep
    else:
        work = tempfile.mkdtemp(prefix="torch_nn_check.")
    try:
        table = run_all(cmd, models, layers, args.seed, args.batch, args.rtol,
                        args.rtol_tensor, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("deft (%s) against PyTorch %s, float32, seed %d, batch %d; tolerance "
          "%.0e relative to max |torch value| (%.0e for the per-tensor rows)\n"
          % (os.path.relpath(args.nn_dump), torch.__version__, args.seed,
             args.batch, args.rtol, args.rtol_tensor))
    print(table.markdown())
    bad = table.failed
    print("\n%d of %d checks failed" % (len(bad), len(table.rows)) if bad
          else "\nall %d checks passed" % len(table.rows))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

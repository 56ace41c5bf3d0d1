"""What test_torch_parity.py checks on one worker and parity_worker.py on
two Gloo ranks: deft.torch.Optimizer against torch itself.

* CASES, the training idioms, each run twice from one model: with deft's
  algo="sgd", compressor="none" and with torch.optim.SGD (same param groups,
  options, schedulers). On K workers deft averages the gradients itself;
  the torch run all_reduces them and divides by K before SGD.step().
* Restatement, deft's compressed algorithms (ef, def, defa, saef, psync,
  ef21) written out in torch, one function per algorithm family, on a
  deterministic dense compressor ("scale": C(v) = v / ratio), run against
  deft with two param groups of different lr and weight decay.

Every worker draws its own batches from (rank, step): the workers'
gradients differ, so averaging them matters."""
import collections
import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

STEPS = 50            # steps of each idiom case
SGD_TOL = 1e-6        # ||deft - torch|| / ||torch|| over all parameters
RESTATED_STEPS = 20
RESTATED_TOL = 1e-5
RATIO = 8.0           # scale compressor: C(v) = v / 8
LAM = 0.3
IN, HIDDEN, OUT, BATCH = 10, 16, 3, 16


# -- models, data, the training loop ----------------------------------------------
def net(seed=0, bn=False):
    """body (Linear [BatchNorm1d] Tanh Linear Tanh) and head (Linear). Tanh,
    not ReLU: a smooth model keeps float rounding differences small."""
    torch.manual_seed(seed)
    body = [nn.Linear(IN, HIDDEN)] + ([nn.BatchNorm1d(HIDDEN)] if bn else []) \
        + [nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh()]
    return nn.Sequential(collections.OrderedDict(
        body=nn.Sequential(*body), head=nn.Linear(HIDDEN, OUT)))


def batch(rank, step, micro=0):
    g = torch.Generator().manual_seed(1000003 * rank + 1009 * step + micro)
    return torch.randn(BATCH, IN, generator=g), \
        torch.randint(0, OUT, (BATCH,), generator=g)


def loss_fn(model, x, y):
    return F.cross_entropy(model(x), y)


def world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_grads(opt):
    """The torch reference's share of the work deft does inside step():
    the optimizer's gradients summed over the workers and divided by K."""
    _, K = world()
    if K == 1:
        return
    for g in opt.param_groups:
        for p in g["params"]:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(K)


def flat(tensors):
    return torch.cat([t.detach().double().reshape(-1) for t in tensors])


def rel_err(got, want):
    """||got - want|| / ||want|| over the tensors concatenated."""
    a, b = flat(got), flat(want)
    return ((a - b).norm() / b.norm()).item()


def make_deft(params, **opts):
    import deft.torch
    return deft.torch.Optimizer(params, **opts)


# -- the idiom cases ----------------------------------------------------------------
class Case:
    """One training idiom. model(): the model; groups(model): what the
    optimizer gets; opts: torch.optim.SGD's options; sched(opt): a
    scheduler or None; micro: backward() calls per step; clip: max norm
    for clip_grad_norm_ or None; at_step(step, model, opt): run before each
    step's forward (both runs); zero: "opt" (opt.zero_grad()) or "model"
    (model.zero_grad(), for parameters the optimizer does not have yet);
    check(model, model0): problems with the deft run, as strings."""

    def __init__(self, name, model=net, groups=None, opts=None, sched=None,
                 micro=1, clip=None, at_step=None, zero="opt", check=None):
        self.name = name
        self.model = model
        self.groups = groups or (lambda m: m.parameters())
        self.opts = dict(lr=0.05, momentum=0.9)
        self.opts.update(opts or {})
        self.sched = sched
        self.micro, self.clip, self.at_step = micro, clip, at_step
        self.zero, self.check = zero, check

    def __repr__(self):
        return self.name


def decay_split(model):
    """nanoGPT/timm: weight decay on matrices only, not on biases and
    BatchNorm's weight and bias."""
    ps = list(model.parameters())
    return [{"params": [p for p in ps if p.dim() >= 2], "weight_decay": 5e-2},
            {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0}]


def body_head(body_lr):
    return lambda m: [{"params": m.body.parameters(), "lr": body_lr},
                      {"params": m.head.parameters()}]


def frozen_first_layer():
    m = net()
    m.body[0].requires_grad_(False)
    return m


def first_layer_unchanged(model, model0):
    out = []
    for name in ("weight", "bias"):
        p, p0 = getattr(model.body[0], name), getattr(model0.body[0], name)
        if not torch.equal(p.detach(), p0.detach()):
            out.append("frozen body.0.%s changed" % name)
        if p.grad is not None:
            out.append("frozen body.0.%s has a grad" % name)
    return out


def add_head_at_20(step, model, opt):
    if step == 20:
        opt.add_param_group({"params": list(model.head.parameters()),
                             "lr": 0.1, "weight_decay": 1e-3})


def frozen_first_weight():
    m = net()
    m.body[0].weight.requires_grad_(False)
    return m


def unfreeze_at_20(step, model, opt):
    if step == 20:
        model.body[0].weight.requires_grad_(True)


S = torch.optim.lr_scheduler

CASES = [
    Case("decay_split_bn", model=lambda: net(bn=True), groups=decay_split),
    Case("per_group_lr", groups=body_head(0.01), opts=dict(lr=0.1)),
    Case("frozen_layer", model=frozen_first_layer, opts=dict(weight_decay=1e-2),
         check=first_layer_unchanged),
    Case("one_cycle", groups=body_head(0.02),
         sched=lambda o: S.OneCycleLR(o, max_lr=[0.05, 0.1],
                                      total_steps=STEPS + 1)),
    Case("cyclic_momentum", groups=body_head(0.02),
         sched=lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=10,
                                    mode="triangular2", base_momentum=0.8,
                                    max_momentum=0.95)),
    Case("nesterov", opts=dict(nesterov=True, weight_decay=1e-3)),
    Case("add_param_group", groups=lambda m: m.body.parameters(),
         at_step=add_head_at_20, zero="model"),
    Case("cosine", groups=decay_split, opts=dict(lr=0.1),
         sched=lambda o: S.CosineAnnealingLR(o, T_max=STEPS, eta_min=1e-3)),
    Case("warmup_cosine", groups=body_head(0.05), opts=dict(lr=0.1),
         sched=lambda o: S.SequentialLR(
             o, [S.LinearLR(o, start_factor=0.1, total_iters=10),
                 S.CosineAnnealingLR(o, T_max=STEPS - 10)], milestones=[10])),
    Case("clip_grad_norm", opts=dict(lr=0.1), clip=0.1),
    Case("grad_accumulation", groups=decay_split, micro=2),
    Case("dampening", opts=dict(dampening=0.3, weight_decay=1e-3)),
    Case("unfreeze_at_20", model=frozen_first_weight, at_step=unfreeze_at_20,
         opts=dict(weight_decay=1e-2)),
    # torch's fresh momentum buffer takes the first gradient undamped
    Case("unfreeze_dampened", model=frozen_first_weight, at_step=unfreeze_at_20,
         opts=dict(dampening=0.3)),
    Case("step_lr", groups=body_head(0.02),
         sched=lambda o: S.StepLR(o, step_size=15, gamma=0.5)),
    Case("lambda_lr", groups=body_head(0.02),
         sched=lambda o: S.LambdaLR(o, [lambda s: 1.0 / (1 + 0.1 * s),
                                        lambda s: 0.98 ** s])),
]


def train(case, model, opt, rank, reference):
    """STEPS steps of case on this worker's batches; reference: the torch
    run, which averages the gradients over the workers itself."""
    sched = case.sched(opt) if case.sched else None
    for s in range(STEPS):
        if case.at_step:
            case.at_step(s, model, opt)
        (model if case.zero == "model" else opt).zero_grad()
        for k in range(case.micro):
            x, y = batch(rank, s, k)
            (loss_fn(model, x, y) / case.micro).backward()
        if case.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), case.clip)
        if reference:
            average_grads(opt)
        opt.step()
        if sched:
            sched.step()
    return model


def run_parity(case):
    """(relative error of deft's parameters against torch's after STEPS
    steps, problems found by case.check)."""
    rank, _ = world()
    model = case.model()
    model0, ref = copy.deepcopy(model), copy.deepcopy(model)
    opt = make_deft(case.groups(model), algo="sgd", compressor="none",
                    **case.opts)
    ref_opt = torch.optim.SGD(case.groups(ref), **case.opts)
    train(case, model, opt, rank, reference=False)
    train(case, ref, ref_opt, rank, reference=True)
    problems = case.check(model, model0) if case.check else []
    return rel_err(model.parameters(), ref.parameters()), problems


# -- the compressed algorithms restated ------------------------------------------
EF_FAMILY = {"ef": 0.0, "def": None, "defa": None, "saef": 1.0}  # lambda used
RESTATED_ALGOS = ["ef", "def", "defa", "saef", "psync", "ef21"]


def restated_groups(model):
    """Two groups: the matrices and the rest, with different lr and decay."""
    ps = list(model.parameters())
    return [{"params": [p for p in ps if p.dim() >= 2], "lr": 0.05,
             "weight_decay": 1e-2},
            {"params": [p for p in ps if p.dim() < 2], "lr": 0.02,
             "weight_decay": 0.0}]


def restated_options(algo, ratio=RATIO):
    return dict(algo=algo, compressor="none" if algo == "psync" else "scale",
                ratio=ratio, lam=LAM, momentum=0.0 if algo == "ef21" else 0.9)


def avg_workers(t):
    """avg_k over the workers (the identity on one)."""
    _, K = world()
    if K == 1:
        return t.clone()
    s = t.clone()
    dist.all_reduce(s)
    return s / K


def ef_family_step(r, grads):
    """ef/def/defa/saef: g = grad(pt) + wd pt; m = mu m + g; p = lr m + e;
    c = p / ratio; e = p - c; x -= avg(c); saef averages e every
    avg_period steps."""
    pts = r.point()
    for i, (lr, mu, wd) in enumerate(r.hyper):
        r.m[i] = mu * r.m[i] + (grads[i] + wd * pts[i])
        p = lr * r.m[i] + r.e[i]
        c = p * r.delta
        r.e[i] = p - c
        r.x[i] = r.x[i] - avg_workers(c)
    if r.algo == "saef" and r.avg_period and (r.t + 1) % r.avg_period == 0:
        r.e = [avg_workers(e) for e in r.e]


def psync_step(r, grads):
    """psync with compressor none: local momentum SGD on x_k, then
    x_k = avg(x_k)."""
    for i, (lr, mu, wd) in enumerate(r.hyper):
        r.m[i] = mu * r.m[i] + (grads[i] + wd * r.x[i])
        r.x[i] = avg_workers(r.x[i] - lr * r.m[i])


def ef21_step(r, grads):
    """ef21: g_k = grad + wd x and g = avg(g_k) on the first step; then
    c_k = (grad + wd x - g_k) / ratio, g_k += c_k, g += avg(c_k); x -= lr g."""
    for i, (lr, _, wd) in enumerate(r.hyper):
        gi = grads[i] + wd * r.x[i]
        if r.t == 0:
            r.gk[i] = gi
            r.g[i] = avg_workers(gi)
        else:
            c = (gi - r.gk[i]) * r.delta
            r.gk[i] = r.gk[i] + c
            r.g[i] = r.g[i] + avg_workers(c)
        r.x[i] = r.x[i] - lr * r.g[i]


class Restatement:
    """This worker's restated deft for algo on the parameters params (their
    initial values), each stepped with its group's lr, momentum and decay
    (groups as torch.optim takes them, defaults filling the gaps)."""

    def __init__(self, algo, params, groups, defaults, ratio=RATIO, lam=LAM,
                 avg_period=0):
        self.algo, self.avg_period, self.t = algo, avg_period, 0
        self.delta = torch.tensor(1.0 / ratio, dtype=torch.float32)
        lam_eff = EF_FAMILY.get(algo, 0.0)
        self.lam = lam if lam_eff is None else lam_eff
        of = {}
        for g in groups:
            h = dict(defaults, **{k: v for k, v in g.items() if k != "params"})
            for p in g["params"]:
                of[id(p)] = (h["lr"], h.get("momentum", 0.0),
                             h.get("weight_decay", 0.0))
        params = list(params)
        self.hyper = [of[id(p)] for p in params]
        self.x = [p.detach().clone() for p in params]
        self.e = [torch.zeros_like(x) for x in self.x]
        self.m = [torch.zeros_like(x) for x in self.x]
        self.gk = [None] * len(self.x)
        self.g = [None] * len(self.x)

    def point(self):
        """Where the gradient is taken (what deft's parameters hold)."""
        if self.algo in EF_FAMILY and self.lam != 0.0:
            return [x - self.lam * e for x, e in zip(self.x, self.e)]
        return [x.clone() for x in self.x]

    def output(self):
        """What evaluating() puts in the parameters."""
        if self.algo == "def":
            return [x - avg_workers(e) for x, e in zip(self.x, self.e)]
        if self.algo == "psync":
            return [avg_workers(x) for x in self.x]
        return [x.clone() for x in self.x]

    def step(self, grads):
        if self.algo in EF_FAMILY:
            ef_family_step(self, grads)
        elif self.algo == "psync":
            psync_step(self, grads)
        elif self.algo == "ef21":
            ef21_step(self, grads)
        else:
            raise ValueError("no restatement of %r" % self.algo)
        self.t += 1


def grads_at(model, point, x, y):
    """The gradient of model's loss on (x, y) with its parameters at point."""
    with torch.no_grad():
        for p, v in zip(model.parameters(), point):
            p.copy_(v)
    model.zero_grad()
    loss_fn(model, x, y).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def run_restated(algo, ratio=RATIO, against="deft"):
    """RESTATED_STEPS steps of the restatement of algo against deft's algo
    (against="deft") or against torch.optim.SGD on the averaged gradients
    (against="sgd", to check the restatement itself: with ratio 1 every
    algorithm is SGD). {"point": rel. error of the parameters after the
    last step, "output": of the output model}."""
    rank, _ = world()
    model = net()
    ref = copy.deepcopy(model)
    opts = restated_options(algo, ratio)
    sgd_opts = dict(lr=0.1, momentum=opts["momentum"])
    if against == "deft":
        opt = make_deft(restated_groups(model), **opts)
    else:
        opt = torch.optim.SGD(restated_groups(model), **sgd_opts)
    r = Restatement(algo, ref.parameters(), restated_groups(ref), sgd_opts,
                    ratio=ratio, lam=opts["lam"])
    for s in range(RESTATED_STEPS):
        x, y = batch(rank, s)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        if against == "sgd":
            average_grads(opt)
        opt.step()
        r.step(grads_at(ref, r.point(), x, y))
    out = {"point": rel_err(model.parameters(), r.point())}
    if against == "deft":
        with opt.evaluating():
            out["output"] = rel_err(model.parameters(), r.output())
    else:
        out["output"] = rel_err(model.parameters(), r.output())
    return out


# -- what the two-rank run reports ---------------------------------------------------
GLOO_RESTATED = ["def", "ef21"]
GLOO_SELFCHECK = ["def", "ef21", "psync"]


def gloo_keys():
    return (["sgd/" + c.name for c in CASES]
            + ["restated/" + a for a in GLOO_RESTATED]
            + ["selfcheck/" + a for a in GLOO_SELFCHECK])


def run_key(key):
    """The result of one entry of gloo_keys() on this worker."""
    kind, name = key.split("/")
    if kind == "sgd":
        rel, problems = run_parity(next(c for c in CASES if c.name == name))
        return {"rel": rel, "problems": problems}
    if kind == "restated":
        return run_restated(name)
    return run_restated(name, ratio=1.0, against="sgd")

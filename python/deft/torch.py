"""deft for PyTorch: a torch.optim.Optimizer over deft's C step, and deft
collectives over torch.distributed.

    opt = deft.torch.Optimizer(model.parameters(), algo="def", ratio=256,
                               lr=0.05, momentum=0.9, weight_decay=5e-4)
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()   # at deft's point (DEF: x - lam*e)
        opt.step()
    with opt.evaluating(model):           # DEF: x - avg(e) in the parameters
        test(model)

The parameters become views into deft's buffer (the point where deft asks
for the gradient), and their .grad views into one flat gradient buffer, so
a step copies nothing: step() hands the flat gradient to deft (tell) and
deft writes the next point into the parameters (ask).
"""
import contextlib
import re
import warnings

import torch
import torch.distributed as dist
from torch.optim.optimizer import required

from .comm import Comm
from .errors import FormatError, InvalidArgument, UsageError
from .optim import FlatOptimizer
from .optim import reshard_states

__all__ = ["Optimizer", "process_group_comm", "reshard_state_dicts"]

_STATE_VERSION = 2


def _src_rank(group, root):
    if group is None or group is dist.group.WORLD:
        return root
    get = getattr(dist, "get_global_rank", None) or \
        dist.distributed_c10d._get_global_rank
    return get(group, root)


def process_group_comm(group=None):
    """A deft.Comm whose collectives go through torch.distributed (Gloo on
    CPU here): all_reduce, all_gather, broadcast and barrier of `group`
    (None: the default group). deft keeps its own byte counters and link
    model on top."""
    if not (dist.is_available() and dist.is_initialized()):
        raise UsageError("process_group_comm: torch.distributed is not "
                         "initialized; call init_process_group first")
    rank, size = dist.get_rank(group), dist.get_world_size(group)

    def allreduce(buf):
        if len(buf):
            dist.all_reduce(torch.frombuffer(buf, dtype=torch.float32),
                            group=group)

    def allgather(send, recv):
        if len(send):
            out = torch.frombuffer(recv, dtype=torch.uint8)
            dist.all_gather(list(out.chunk(size)),
                            torch.frombuffer(send, dtype=torch.uint8), group=group)

    def broadcast(buf, root):
        if len(buf):
            dist.broadcast(torch.frombuffer(buf, dtype=torch.uint8),
                           src=_src_rank(group, root), group=group)

    def barrier():
        dist.barrier(group=group)

    return Comm.custom(allreduce, allgather, broadcast, barrier, rank, size)


def _resolve_comm(comm):
    if comm is None:
        if dist.is_available() and dist.is_initialized():
            return process_group_comm()
        return Comm.single()
    if isinstance(comm, Comm):
        return comm
    if dist.is_available() and isinstance(comm, dist.ProcessGroup):
        return process_group_comm(comm)
    raise InvalidArgument("comm: a %s; pass None (torch.distributed's default "
                          "group, or one worker), a deft.Comm or a "
                          "torch.distributed ProcessGroup" % type(comm).__name__)


def _check_param(i, p):
    what = "parameter %d (shape %s)" % (i, tuple(p.shape))
    if not isinstance(p, torch.Tensor):
        raise InvalidArgument("%s is a %s, not a tensor" % (what, type(p).__name__))
    if p.layout != torch.strided:
        raise InvalidArgument("%s is sparse (%s); deft needs dense parameters"
                              % (what, p.layout))
    if p.device.type != "cpu":
        raise InvalidArgument("%s is on %s; deft's buffers are in CPU memory"
                              % (what, p.device))
    if p.dtype != torch.float32:
        raise InvalidArgument("%s has dtype %s; deft needs torch.float32 "
                              "(model.float())" % (what, p.dtype))
    if not p.is_leaf:
        raise InvalidArgument("%s is not a leaf tensor; pass the model's "
                              "parameters" % what)
    if p.numel() == 0:
        raise InvalidArgument("%s has no elements" % what)


# torch.optim.SGD's per-group options. The first five are deft's per-tensor
# hyperparameters (deft_group_t); maximize is applied to the gradient here.
_SGD_KEYS = FlatOptimizer._GROUP_KEYS
_C_GROUP_RE = re.compile(r"(?:deft_optim_set_groups: )?groups\[(\d+)\]\.(\w+)")


def _torch_names(message):
    """deft_optim_set_groups' "groups[1].momentum" as the user wrote it:
    "param_groups[1]['momentum']"."""
    return _C_GROUP_RE.sub(r"param_groups[\1]['\2']", message)


class Optimizer(torch.optim.Optimizer):
    """deft's optimizer as a drop-in for torch.optim.SGD.

        opt = deft.torch.Optimizer(model.parameters(), lr=0.1, momentum=0.9,
                                   nesterov=True, weight_decay=5e-4,
                                   algo="def", compressor="rbgs", ratio=256)

    lr, momentum, dampening, weight_decay, nesterov and maximize are
    torch.optim.SGD's, with its defaults, and may differ per parameter
    group; schedulers may change lr and momentum between steps (deft steps
    each tensor with its group's values). foreach is accepted and has no
    effect (deft's step is one C loop); differentiable=True is refused.
    algo, compressor, ratio, lam (the C field lambda), seed and any other
    deft_optim_config_t field by its C name (scope, randk_scaled,
    qsgd_levels, avg_period, powersgd_rank, ...) are deft's, the same for
    every group. comm: None (torch.distributed's default group if it is
    initialized, else this process alone), a deft.Comm (threads, MPI,
    custom) or a torch.distributed ProcessGroup.

    Parameters with requires_grad=False stay out of deft's buffer and are
    never changed; one that gets a gradient later (unfrozen) joins at the
    step that sees it, with fresh momentum and error, as torch's fresh
    momentum buffer. add_param_group adds tensors the same way.

    Creation, step(), add_param_group() and evaluating() are collective:
    every worker calls them with the same model shapes and options, and
    rank 0's parameters become everyone's."""

    def __init__(self, params, lr=required, momentum=0.0, dampening=0.0,
                 weight_decay=0.0, nesterov=False, *, maximize=False,
                 foreach=None, differentiable=False, algo="def",
                 compressor="rbgs", ratio=256.0, lam=0.3, seed=0, comm=None,
                 **more):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov,
                        maximize=maximize, foreach=foreach,
                        differentiable=differentiable)
        super().__init__(params, defaults)
        if str(algo).lower() == "eclk":
            raise InvalidArgument(
                "algo = 'eclk': ECLK takes its steps from the problem's "
                "constants (eclk_L, eclk_mu), not from param_groups; use "
                "deft.FlatOptimizer or `deft convex` for it")
        for gi, g in enumerate(self.param_groups):
            self._check_group_keys(gi, g)
        included, self._excluded, seen = [], [], 0
        for gi, g in enumerate(self.param_groups):
            for p in g["params"]:
                (included if p.requires_grad else self._excluded).append(
                    (seen, p, gi))
                seen += 1
        if not included:
            raise InvalidArgument("params: the optimizer got no parameter that "
                                  "requires grad")
        for i, p, _ in included:
            _check_param(i, p)
        ps = [p for _, p, _ in included]
        self.comm = _resolve_comm(comm)
        # deft's group values are set from param_groups before every step;
        # the config holds a placeholder lr (deft_optim_create needs > 0).
        x0 = torch.cat([p.detach().reshape(-1) for p in ps]).contiguous()
        self.deft = FlatOptimizer(
            self.comm, [p.numel() for p in ps], x0,
            rows=[p.shape[0] if p.dim() >= 2 else 0 for p in ps],
            algo=algo, compressor=compressor, ratio=ratio, lam=lam, seed=seed,
            lr=1.0, momentum=0.0, weight_decay=0.0, **more)
        self._options = dict(algo=self.deft.algo, compressor=self.deft.compressor,
                             ratio=float(ratio), lam=float(lam), seed=int(seed),
                             **more)
        self._slots, self._group_cache, self._warned_bn = [], None, False
        self._bind(included, old_grad=None)
        self._sync_groups()

    # -- deft's buffers and the parameters as views into them ------------------------
    def _bind(self, entries, old_grad):
        """Makes the parameters views into self.deft's point and their .grad
        views into a new flat gradient: the tensors already bound, then
        entries (global index, parameter, group index) in order. old_grad:
        the flat gradient so far, whose values the new one starts with."""
        d = self.deft.dim
        # (d,) the point deft asks for; the parameters are views into it
        # (the view keeps deft's optimizer, and so this memory, alive).
        self.flat_params = torch.frombuffer(self.deft.ask(), dtype=torch.float32)
        self._point_addr = self.flat_params.data_ptr()
        # (d,) the gradient handed to tell; the .grad are views into it.
        self.flat_grad = torch.zeros(d, dtype=torch.float32)
        if old_grad is not None:
            self.flat_grad[:old_grad.numel()].copy_(old_grad)
        off = 0
        slots = [(i, p, gi) for i, p, gi, _, _, _ in self._slots] + list(entries)
        self._slots = []
        with torch.no_grad():
            for k, (i, p, gi) in enumerate(slots):
                n = p.numel()
                gview = self.flat_grad[off:off + n].view(p.shape)
                if k >= len(slots) - len(entries) and p.grad is not None:
                    gview.copy_(p.grad)  # accumulated before it joined
                p.data = self.flat_params[off:off + n].view(p.shape)
                p.grad = gview
                self._slots.append((i, p, gi, off, n, gview))
                off += n
        self._shapes = [tuple(p.shape) for _, p, _, _, _, _ in self._slots]
        # each tensor's group index, handed to deft_optim_set_groups
        self._tensor_group = [gi for _, _, gi, _, _, _ in self._slots]

    def _grow(self, entries):
        """Adds entries (global index, parameter, group index) to deft:
        a grown deft optimizer (every vector carried bitwise, the new
        tensors with zero momentum and error) and the views re-bound.
        Collective."""
        for i, p, _ in entries:
            _check_param(i, p)
        ps = [p for _, p, _ in entries]
        x0 = torch.cat([p.detach().reshape(-1) for p in ps]).contiguous()
        self.deft = self.deft.grown(
            [p.numel() for p in ps], x0,
            rows=[p.shape[0] if p.dim() >= 2 else 0 for p in ps])
        self._bind(entries, old_grad=self.flat_grad)
        self._group_cache = None

    def add_param_group(self, param_group):
        """torch's add_param_group; after creation, the group's parameters
        that require grad join deft (collective: every worker adds the same
        group). A group deft cannot honour raises and is not added."""
        super().add_param_group(param_group)
        if not hasattr(self, "deft"):
            return  # torch.optim.Optimizer.__init__ adding the first groups
        gi = len(self.param_groups) - 1
        try:
            self._check_group_keys(gi, self.param_groups[gi])
            first = sum(len(g["params"]) for g in self.param_groups[:gi])
            entries = [(first + k, p, gi) for k, p in
                       enumerate(self.param_groups[gi]["params"])]
            new = [e for e in entries if e[1].requires_grad]
            self._set_groups(self._group_table(), None)  # checks the values
            if new:
                self._grow(new)  # checks them; on failure deft is unchanged
        except Exception:
            self.param_groups.pop()
            self._group_cache = None
            raise
        self._excluded += [e for e in entries if not e[1].requires_grad]
        self._sync_groups()

    # -- hyperparameters ---------------------------------------------------------
    def _check_group_keys(self, gi, g):
        if g.get("differentiable"):
            raise InvalidArgument("param_groups[%d]['differentiable'] = True: "
                                  "deft's step is not differentiable" % gi)
        for key, value in getattr(self, "_options", {}).items():
            if key in g and g[key] != value:
                raise InvalidArgument(
                    "param_groups[%d][%r] = %r, but the optimizer has %s = %r: "
                    "deft's %s is one for all groups" % (gi, key, g[key], key,
                                                         value, key))

    def _group_table(self):
        table = []
        for gi, g in enumerate(self.param_groups):
            self._check_group_keys(gi, g)
            if self.deft.algo == "ef21" and g["momentum"] != 0:
                raise InvalidArgument(
                    "param_groups[%d]['momentum'] = %r: ef21 has no momentum "
                    "(the paper's method); pass momentum=0" % (gi, g["momentum"]))
            table.append(tuple(float(g[k]) if k != "nesterov" else bool(g[k])
                               for k in _SGD_KEYS))
        return table

    def _set_groups(self, table, tensor_group):
        try:
            self.deft.set_groups([dict(zip(_SGD_KEYS, t)) for t in table],
                                 tensor_group)
        except InvalidArgument as e:
            raise InvalidArgument(_torch_names(str(e))) from None

    def _sync_groups(self):
        """deft's group table from param_groups (one deft group per torch
        group), when a scheduler or the user changed it."""
        table = self._group_table()
        tg = self._tensor_group
        if (table, tg) != self._group_cache:
            self._set_groups(table, tg)
            self._group_cache = (table, tg)

    # -- the step --------------------------------------------------------------
    def _agree(self, joining, missing):
        """Every worker's view of which frozen parameters got a gradient
        and of missing gradients, so that all grow, raise or go on
        together: one allreduce of len(joining) + 1 floats per step, only
        when frozen parameters exist (counted in bytes_sent like deft's own
        traffic). Without them a missing gradient raises on its worker
        alone, and the others' step fails when it leaves."""
        if self.comm.size < 2 or not joining:
            return [float(j) for j in joining], float(missing)
        flags = torch.tensor([float(j) for j in joining] + [float(missing)],
                             dtype=torch.float32)
        self.comm.allreduce_sum(flags)
        return flags[:-1].tolist(), flags[-1].item()

    def _prepare_grads(self):
        """The parameters' gradients into the flat buffer; frozen parameters
        that now have a gradient join deft. Collective."""
        joining = [p.requires_grad and p.grad is not None
                   for _, p, _ in self._excluded]
        missing = [i for i, p, _, _, _, _ in self._slots if p.grad is None]
        votes, n_missing = self._agree(joining, len(missing))
        K = self.comm.size
        if n_missing:
            raise UsageError(
                "step: %s has no gradient (grad is None); deft steps every "
                "parameter it holds: use zero_grad(set_to_none=False), or "
                "leave parameters that get no gradient out of the optimizer "
                "(requires_grad=False)"
                % ("parameter %d" % missing[0] if missing
                   else "a parameter on another worker"))
        if any(v not in (0.0, K) for v in votes):
            raise UsageError("step: a frozen parameter got a gradient on some "
                             "workers but not on others; all workers must "
                             "unfreeze the same parameters")
        for _, p, _, off, n, gview in self._slots:
            g = p.grad
            if g is gview:
                continue
            if g.is_sparse or g.device.type != "cpu":
                raise InvalidArgument("the gradient of parameter of shape %s "
                                      "is sparse or not on the CPU"
                                      % (tuple(p.shape),))
            self.flat_grad[off:off + n].copy_(g.reshape(-1))
            p.grad = gview
        new = [e for e, v in zip(self._excluded, votes) if v]
        if new:
            self._excluded = [e for e, v in zip(self._excluded, votes) if not v]
            self._grow(new)

    def _maximizing(self):
        """The flat ranges of groups with maximize=True."""
        return [(off, n) for _, _, gi, off, n, _ in self._slots
                if self.param_groups[gi].get("maximize")]

    @torch.no_grad()
    def step(self, closure=None):
        """One deft step with the parameters' .grad: compress, communicate,
        update; the parameters then hold the next point. Collective. Raises
        deft.Diverged (with .step) on NaN/Inf, UsageError if a parameter
        deft holds has no gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._prepare_grads()
        self._sync_groups()
        flip = self._maximizing()
        for off, n in flip:  # maximize: deft descends on -grad (exact)
            self.flat_grad[off:off + n].neg_()
        try:
            self.deft.tell_address(self.flat_grad.data_ptr())
        finally:
            for off, n in flip:
                self.flat_grad[off:off + n].neg_()
        if self.deft.point_address() != self._point_addr:
            raise UsageError("deft moved its point buffer; the parameters "
                             "would no longer be its views")
        return loss

    def zero_grad(self, set_to_none=False):
        """Zeroes the flat gradient (one memset), or with set_to_none sets
        every .grad to None (backward then makes new ones and step copies
        them in). Frozen parameters' gradients as torch.optim does."""
        for _, p, _ in self._excluded:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                    continue
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                p.grad.zero_()
        if set_to_none:
            for _, p, _, _, _, _ in self._slots:
                p.grad = None
            return
        self.flat_grad.zero_()
        for _, p, _, _, _, gview in self._slots:
            if p.grad is not gview:
                p.grad = gview

    # -- evaluation ---------------------------------------------------------------
    @staticmethod
    def _bn_modules(model):
        return [m for m in model.modules()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                and m.track_running_stats]

    def sync_buffers(self, model):
        """Averages the BatchNorm running statistics (running_mean,
        running_var) of model over the workers. Collective."""
        if self.comm.size < 2:
            return
        bufs = []
        for m in self._bn_modules(model):
            for name in ("running_mean", "running_var"):
                b = getattr(m, name, None)
                if b is not None:
                    bufs.append(b)
        if not bufs:
            return
        flat = torch.cat([b.detach().reshape(-1).float() for b in bufs])
        self.comm.allreduce_sum(flat)
        flat /= self.comm.size
        off = 0
        with torch.no_grad():
            for b in bufs:
                b.copy_(flat[off:off + b.numel()].view_as(b))
                off += b.numel()

    def recalibrate_bn(self, model, batches):
        """Recomputes model's BatchNorm statistics at the parameters it holds
        now: each BN's running mean and variance become the average over
        batches (train-mode forwards without gradients, as
        torch.optim.swa_utils.update_bn), then the average over the
        workers. A batch is a tensor or a tuple/list whose first item is the
        input. Returns the number of batches used. Collective."""
        bns = self._bn_modules(model)
        was_training, momenta = model.training, [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        n = 0
        model.train()
        try:
            with torch.no_grad():
                for b in batches:
                    model(b[0] if isinstance(b, (tuple, list)) else b)
                    n += 1
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom
            model.train(was_training)
        self.sync_buffers(model)
        return n

    @contextlib.contextmanager
    def evaluating(self, model=None, recalibrate=None):
        """Puts deft's output model (DEF: x - avg(e), PSync: avg(x_k), ...)
        into the parameters and restores the training point on exit. With a
        model, it is in eval() mode inside, and its BatchNorm running
        statistics are averaged over the workers (and kept, as deft train
        does). With recalibrate (an iterable of training batches, e.g.
        itertools.islice(loader, 20)) they are then recomputed at the
        output model (recalibrate_bn) and the running ones put back on
        exit. Without it, for algorithms whose output is not the training
        point (def, psync, saef, defa with lam > 0), the running
        statistics describe another model: a warning says so once.
        Collective."""
        saved = self.flat_params.clone()
        out = torch.empty_like(self.flat_params)
        self.deft.output(out)
        with torch.no_grad():
            self.flat_params.copy_(out)
        was_training, stats = None, []
        try:
            if model is not None:
                was_training = model.training
                bns = self._bn_modules(model)
                self.sync_buffers(model)  # kept: training goes on from them
                if recalibrate is not None:
                    stats = [(m, {k: v.clone() for k, v in m.named_buffers(
                        recurse=False) if v is not None}) for m in bns]
                    self.recalibrate_bn(model, recalibrate)
                elif bns and not self.deft.output_is_point and not self._warned_bn:
                    warnings.warn(
                        "evaluating(): %s's output model is not the point "
                        "where BatchNorm's running statistics were gathered; "
                        "pass recalibrate=<a few training batches> to "
                        "recompute them at the output model"
                        % self.deft.algo, stacklevel=3)
                    self._warned_bn = True
                model.eval()
            yield self
        finally:
            with torch.no_grad():
                self.flat_params.copy_(saved)
                for m, sd in stats:
                    for k, v in sd.items():
                        getattr(m, k).copy_(v)
            if model is not None:
                model.train(was_training)

    # -- state ------------------------------------------------------------------
    def state_dict(self):
        """deft's whole state for this worker (step, groups, model, error,
        momentum, compressor state; CRC-checked) plus param_groups, for
        torch.save. Each worker saves its own."""
        groups, idx = [], 0
        for g in self.param_groups:
            sg = {k: v for k, v in g.items() if k != "params"}
            sg["params"] = list(range(idx, idx + len(g["params"])))
            idx += len(g["params"])
            groups.append(sg)
        meta = dict(version=_STATE_VERSION, blob=self.deft.state_bytes(),
                    workers=self.comm.size, rank=self.comm.rank,
                    shapes=list(self._shapes),
                    order=[i for i, _, _, _, _, _ in self._slots],
                    **self._options)
        return {"state": {"deft": meta}, "param_groups": groups}

    def _check_state(self, meta, groups):
        if meta.get("version") not in (1, _STATE_VERSION):
            raise FormatError("load_state_dict: state version %r, this deft "
                              "reads 1 and %d" % (meta.get("version"),
                                                 _STATE_VERSION))
        for key in ("algo", "compressor"):
            if meta.get(key) != self._options[key]:
                raise FormatError("load_state_dict: the state is from %s %r, "
                                  "this optimizer runs %r"
                                  % (key, meta.get(key), self._options[key]))
        if meta.get("workers") != self.comm.size:
            raise FormatError(
                "load_state_dict: the state was saved by %r workers, this "
                "optimizer has %d; to continue the run on %d, re-shard all "
                "%r workers' state_dicts first: states = "
                "deft.torch.reshard_state_dicts(states, %d), then load "
                "states[rank] on each rank (the model and step are kept, "
                "errors and momenta keep their mean over workers)"
                % (meta.get("workers"), self.comm.size, self.comm.size,
                   meta.get("workers"), self.comm.size))
        if [len(g["params"]) for g in groups] != \
                [len(g["params"]) for g in self.param_groups]:
            raise FormatError("load_state_dict: the state's param_groups hold "
                              "%s parameters, this optimizer's %s"
                              % ([len(g["params"]) for g in groups],
                                 [len(g["params"]) for g in self.param_groups]))

    def _joining_for(self, meta):
        """The frozen parameters the saved run had in deft (they had been
        unfrozen there), in its order; FormatError if the saved order is
        not this one's followed by those."""
        mine = [i for i, _, _, _, _, _ in self._slots]
        order = meta.get("order", mine)  # version 1: no growth
        shapes = [tuple(s) for s in meta.get("shapes", [])]
        frozen = {i: (i, p, gi) for i, p, gi in self._excluded}
        if order[:len(mine)] != mine or any(i not in frozen for i in
                                           order[len(mine):]):
            raise FormatError("load_state_dict: the state holds parameters %s "
                              "in deft, this optimizer %s; load into an "
                              "optimizer made like the saved one"
                              % (order, mine))
        joining = [frozen[i] for i in order[len(mine):]]
        here = self._shapes + [tuple(p.shape) for _, p, _ in joining]
        if shapes != here:
            where = next((i for i, (a, b) in enumerate(zip(shapes, here))
                          if a != b), min(len(shapes), len(here)))
            raise FormatError("load_state_dict: the state's model has %d "
                              "tensors, this one %d; first difference at "
                              "parameter %d (%s vs %s)"
                              % (len(shapes), len(here), order[where]
                                 if where < len(order) else where,
                                 shapes[where] if where < len(shapes) else None,
                                 here[where] if where < len(here) else None))
        return joining

    def load_state_dict(self, state_dict):
        """Restores a state_dict() of an optimizer made the same way (the
        parameters that had joined since are added first); the run then
        continues bitwise. A state of another algorithm, compressor, model
        or worker count raises FormatError (a ValueError)."""
        try:
            meta = state_dict["state"]["deft"]
            groups = state_dict["param_groups"]
        except (KeyError, TypeError):
            raise FormatError("load_state_dict: not a deft.torch.Optimizer "
                              "state_dict (no state['deft'])") from None
        self._check_state(meta, groups)
        joining = self._joining_for(meta)
        saved = [{k: v for k, v in g.items() if k != "params"}
                 for g in self.param_groups]
        for g, sg in zip(self.param_groups, groups):
            g.update({k: v for k, v in sg.items() if k != "params"})
        try:
            self._group_table()
        except InvalidArgument:
            for g, sv in zip(self.param_groups, saved):
                g.update(sv)
            raise
        if joining:  # collective, as the saved run's growth was
            self._excluded = [e for e in self._excluded if e not in joining]
            self._grow(joining)
        self.deft.load_state_bytes(meta["blob"])
        self._group_cache = None
        self.deft.point_address()  # the parameters now hold the restored point

    # -- what the step did ---------------------------------------------------------
    @property
    def last_step_info(self):
        """What the last step sent: step, bytes_sent, payload_bytes, msg_bytes."""
        i = self.deft.last_info
        return dict(step=i.step, bytes_sent=i.bytes_sent,
                    payload_bytes=i.payload_bytes, msg_bytes=i.msg_bytes)

    def __repr__(self):
        return "deft.torch.Optimizer(algo=%r, compressor=%r, ratio=%g, lr=%g, " \
               "workers=%d, dim=%d)" % (self._options["algo"],
                                        self._options["compressor"],
                                        self._options["ratio"],
                                        self.param_groups[0]["lr"],
                                        self.comm.size, self.deft.dim)


def reshard_state_dicts(state_dicts, workers, rule="mean"):
    """The state_dict()s of a run's K workers (one per rank, saved at the
    same step, any order) as `workers` state_dicts: element j is what rank
    j of a job of `workers` ranks loads with load_state_dict, into an
    Optimizer made as the saved one was. For the launcher that restarts a
    job on fewer (or more) ranks after losing a host.

    Kept exactly: the model, the step (so schedules and the shared random
    choices go on), the param_groups' hyperparameters, the compressor's
    shared state. Each worker's error and momentum keep their mean over
    the workers (rule "mean": DEF's output model x - avg(e) is the same
    after as before), or restart at zero (rule "zero", what systems that
    drop them on a restart do). Keep the global batch: with `workers`
    ranks, each takes K / workers times its old share.

    FormatError (a ValueError) for states that are not deft.torch states of
    one run and step, or do not cover ranks 0..K-1; InvalidArgument for a
    bad count or rule."""
    metas = []
    for i, sd in enumerate(state_dicts):
        try:
            meta, groups = sd["state"]["deft"], sd["param_groups"]
        except (KeyError, TypeError):
            meta = groups = None
        if not isinstance(meta, dict) or not isinstance(meta.get("rank"), int) \
                or not isinstance(meta.get("blob"), (bytes, bytearray)):
            raise FormatError("reshard_state_dicts: state_dicts[%d] is not a "
                              "deft.torch.Optimizer state_dict (no "
                              "state['deft'] with a rank and a blob)" % i)
        metas.append((meta, groups))
    if not metas:
        raise InvalidArgument("reshard_state_dicts: no state_dicts given")
    k = len(metas)
    ranks = sorted(m.get("rank") for m, _ in metas)
    if ranks != list(range(k)) or any(m.get("workers") != k for m, _ in metas):
        raise FormatError("reshard_state_dicts: got the states of ranks %s "
                          "of runs of %s workers; give every rank's state of "
                          "one run" % (ranks, sorted({m.get("workers")
                                                      for m, _ in metas})))
    metas.sort(key=lambda mg: mg[0]["rank"])
    first = {key: v for key, v in metas[0][0].items()
             if key not in ("blob", "rank")}
    for m, _ in metas[1:]:
        other = {key: v for key, v in m.items() if key not in ("blob", "rank")}
        if other != first:
            raise FormatError("reshard_state_dicts: rank %d's state differs "
                              "from rank 0's in %s: not one run"
                              % (m["rank"], sorted(key for key in first
                                                   if first[key] != other.get(key))))
    blobs = reshard_states([m["blob"] for m, _ in metas], workers, rule)
    out = []
    for j, blob in enumerate(blobs):
        meta = dict(first, blob=blob, workers=workers, rank=j)
        out.append({"state": {"deft": meta},
                    "param_groups": [dict(g, params=list(g["params"]))
                                     for g in metas[0][1]]})
    return out

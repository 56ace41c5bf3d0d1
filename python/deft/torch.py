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

import torch
import torch.distributed as dist

from .comm import Comm
from .errors import FormatError, InvalidArgument, UsageError
from .optim import Optimizer as _AskTell

__all__ = ["Optimizer", "process_group_comm"]

_STATE_VERSION = 1


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
    if not p.requires_grad:
        raise InvalidArgument("%s does not require grad; leave frozen "
                              "parameters out of the optimizer" % what)
    if not p.is_leaf:
        raise InvalidArgument("%s is not a leaf tensor; pass the model's "
                              "parameters" % what)


class Optimizer(torch.optim.Optimizer):
    """deft's optimizer as a torch.optim.Optimizer.

    algo, compressor, ratio, lr, momentum, weight_decay, lam (the C field
    lambda) and seed, and any other deft_optim_config_t field by its C name
    (scope, randk_scaled, qsgd_levels, avg_period, ...), as in
    DEFT_OPTIM_CONFIG_INIT by default. comm: None (torch.distributed's
    default group if it is initialized, else this process alone), a
    deft.Comm (threads, MPI, custom) or a torch.distributed ProcessGroup.
    Creation is collective: every worker makes its optimizer with the same
    model shapes and options, and rank 0's parameters become everyone's.

    param_groups[i]["lr"] drives deft's learning rate (all groups must
    agree: deft has one); momentum, weight_decay and lam are fixed at
    creation. step() and evaluating() are collective."""

    def __init__(self, params, algo="def", compressor="rbgs", ratio=256.0,
                 lr=0.1, momentum=0.9, weight_decay=0.0, lam=0.3, seed=0,
                 comm=None, **more):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        lam=lam)
        super().__init__(params, defaults)
        self._fixed = dict(momentum=momentum, weight_decay=weight_decay, lam=lam)
        ps, seen = [], set()
        for g in self.param_groups:
            self._check_group(g)
            for p in g["params"]:
                if id(p) in seen:
                    raise InvalidArgument("parameter %d (shape %s) appears twice"
                                          % (len(ps), tuple(p.shape)))
                seen.add(id(p))
                _check_param(len(ps), p)
                ps.append(p)
        if not ps:
            raise InvalidArgument("params: the optimizer got no parameters")
        self._params = ps
        self._shapes = [tuple(p.shape) for p in ps]
        for i, p in enumerate(ps):
            if p.numel() == 0:
                raise InvalidArgument("parameter %d (shape %s) has no elements"
                                      % (i, tuple(p.shape)))
        sizes = [p.numel() for p in ps]
        # a weight (out, in, ...) is an out x (in ...) matrix for powersgd
        rows = [p.shape[0] if p.dim() >= 2 else 0 for p in ps]
        self.comm = _resolve_comm(comm)
        x0 = torch.cat([p.detach().reshape(-1) for p in ps]).contiguous()
        self.deft = _AskTell(self.comm, sizes, x0, rows=rows, algo=algo,
                             compressor=compressor, ratio=ratio, lr=lr,
                             momentum=momentum, weight_decay=weight_decay,
                             lam=lam, seed=seed, **more)
        self._lr = self.deft.lr
        self._options = dict(algo=self.deft.algo, compressor=self.deft.compressor,
                             ratio=float(ratio), seed=int(seed), **more)
        d = self.deft.dim
        # (d,) the point deft asks for; the parameters are views into it
        # (the view keeps deft's optimizer, and so this memory, alive).
        self.flat_params = torch.frombuffer(self.deft.ask(), dtype=torch.float32)
        self._point_addr = self.flat_params.data_ptr()
        # (d,) the gradient handed to tell; the .grad are views into it.
        self.flat_grad = torch.zeros(d, dtype=torch.float32)
        self._slots = []
        off = 0
        with torch.no_grad():
            for p, n in zip(ps, sizes):
                p.data = self.flat_params[off:off + n].view(p.shape)
                gview = self.flat_grad[off:off + n].view(p.shape)
                p.grad = gview
                self._slots.append((p, off, n, gview))
                off += n

    # -- hyperparameters -----------------------------------------------------
    def _check_group(self, g):
        for key, value in getattr(self, "_fixed", {}).items():
            if g.get(key, value) != value:
                raise InvalidArgument(
                    "param_groups[%d][%r] = %r, but deft fixed %s = %r at "
                    "creation; make a new optimizer to change it"
                    % (self.param_groups.index(g), key, g[key], key, value))

    def _sync_lr(self):
        lr = self.param_groups[0]["lr"]
        for i, g in enumerate(self.param_groups):
            if g["lr"] != lr:
                raise InvalidArgument(
                    "param_groups[%d]['lr'] = %r differs from param_groups[0]"
                    "['lr'] = %r: deft steps all parameters with one learning "
                    "rate" % (i, g["lr"], lr))
            self._check_group(g)
        if lr != self._lr:
            self.deft.lr = lr
            self._lr = lr

    # -- the step --------------------------------------------------------------
    def _gather_grads(self):
        for p, off, n, gview in self._slots:
            g = p.grad
            if g is gview:
                continue
            if g is None:
                self.flat_grad[off:off + n].zero_()
            else:
                if g.is_sparse or g.device.type != "cpu":
                    raise InvalidArgument("the gradient of parameter of shape %s "
                                          "is sparse or not on the CPU"
                                          % (tuple(p.shape),))
                self.flat_grad[off:off + n].copy_(g.reshape(-1))
            p.grad = gview

    @torch.no_grad()
    def step(self, closure=None):
        """One deft step with the parameters' .grad (None counts as zero):
        compress, communicate, update; the parameters then hold the next
        point. Collective. Raises deft.Diverged (with .step) on NaN/Inf."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync_lr()
        self._gather_grads()
        self.deft.tell_address(self.flat_grad.data_ptr())
        if self.deft.point_address() != self._point_addr:
            raise UsageError("deft moved its point buffer; the parameters "
                             "would no longer be its views")
        return loss

    def zero_grad(self, set_to_none=False):
        """Zeroes the flat gradient (one memset), or with set_to_none sets
        every .grad to None (step then treats a None gradient as zero and
        copies new ones into the flat buffer)."""
        if set_to_none:
            for p, _, _, _ in self._slots:
                p.grad = None
            return
        self.flat_grad.zero_()
        for p, _, _, gview in self._slots:
            if p.grad is not gview:
                p.grad = gview

    # -- evaluation ---------------------------------------------------------------
    def sync_buffers(self, model):
        """Averages the BatchNorm running statistics (running_mean,
        running_var) of model over the workers. Collective."""
        if self.comm.size < 2:
            return
        bufs = []
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
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

    @contextlib.contextmanager
    def evaluating(self, model=None):
        """Puts deft's output model (DEF: x - avg(e), PSync: avg(x_k), ...)
        into the parameters and restores the training point on exit. With a
        model, BatchNorm running statistics are averaged over the workers
        first and the model is in eval() mode inside. Collective."""
        saved = self.flat_params.clone()
        out = torch.empty_like(self.flat_params)
        self.deft.output(out)
        was_training = None
        if model is not None:
            self.sync_buffers(model)
            was_training = model.training
            model.eval()
        with torch.no_grad():
            self.flat_params.copy_(out)
        try:
            yield self
        finally:
            with torch.no_grad():
                self.flat_params.copy_(saved)
            if model is not None:
                model.train(was_training)

    # -- state ------------------------------------------------------------------
    def state_dict(self):
        """deft's whole state for this worker (step, learning rate, model,
        error, momentum) plus param_groups, for torch.save. Each worker saves
        its own."""
        groups, idx = [], 0
        for g in self.param_groups:
            sg = {k: v for k, v in g.items() if k != "params"}
            sg["params"] = list(range(idx, idx + len(g["params"])))
            idx += len(g["params"])
            groups.append(sg)
        meta = dict(version=_STATE_VERSION, blob=self.deft.state_bytes(),
                    workers=self.comm.size, rank=self.comm.rank,
                    shapes=list(self._shapes), **self._options)
        return {"state": {"deft": meta}, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restores a state_dict() of an optimizer made the same way; the
        run then continues bitwise. A state of another algorithm,
        compressor, model shape or worker count raises FormatError (a
        ValueError)."""
        try:
            meta = state_dict["state"]["deft"]
            groups = state_dict["param_groups"]
        except (KeyError, TypeError):
            raise FormatError("load_state_dict: not a deft.torch.Optimizer "
                              "state_dict (no state['deft'])") from None
        if meta.get("version") != _STATE_VERSION:
            raise FormatError("load_state_dict: state version %r, this deft "
                              "reads %d" % (meta.get("version"), _STATE_VERSION))
        for key in ("algo", "compressor"):
            if meta.get(key) != self._options[key]:
                raise FormatError("load_state_dict: the state is from %s %r, "
                                  "this optimizer runs %r"
                                  % (key, meta.get(key), self._options[key]))
        if meta.get("workers") != self.comm.size:
            raise FormatError("load_state_dict: the state was saved with %r "
                              "workers, this optimizer has %d"
                              % (meta.get("workers"), self.comm.size))
        shapes = [tuple(s) for s in meta.get("shapes", [])]
        if shapes != self._shapes:
            where = next((i for i, (a, b) in enumerate(zip(shapes, self._shapes))
                          if a != b), min(len(shapes), len(self._shapes)))
            raise FormatError("load_state_dict: the state's model has %d "
                              "tensors, this one %d; first difference at "
                              "parameter %d (%s vs %s)"
                              % (len(shapes), len(self._shapes), where,
                                 shapes[where] if where < len(shapes) else None,
                                 self._shapes[where] if where < len(self._shapes)
                                 else None))
        if len(groups) != len(self.param_groups):
            raise FormatError("load_state_dict: %d param_groups in the state, "
                              "%d here" % (len(groups), len(self.param_groups)))
        for g, sg in zip(self.param_groups, groups):
            for key, value in self._fixed.items():
                if sg.get(key, value) != value:
                    raise FormatError("load_state_dict: the state has %s = %r, "
                                      "this optimizer %r" % (key, sg[key], value))
        self.deft.load_state_bytes(meta["blob"])
        for g, sg in zip(self.param_groups, groups):
            g.update({k: v for k, v in sg.items() if k != "params"})
        self._lr = self.deft.lr
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
                                        self._options["ratio"], self._lr,
                                        self.comm.size, self.deft.dim)

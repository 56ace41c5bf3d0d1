"""The ask/tell optimizer over one flat float32 vector, and its
configuration as keyword arguments with the C field names
(deft_optim_config_t; `lam` for the C field `lambda`, a Python keyword)."""
import ctypes

from . import _buf, _lib
from .comm import Comm
from .errors import DIVERGED, FormatError, InvalidArgument, check, error_for

lib = _lib.lib

#: The names deft knows, in the order of the C enums.
ALGORITHMS = ("sgd", "ef", "def", "defa", "saef", "psync", "ef21", "eclk")
COMPRESSORS = ("none", "rbgs", "randk", "topk", "sign", "qsgd", "scale",
               "powersgd", "fp16", "bf16", "randk-private")
SCOPES = ("tensor", "global")

_FIELDS = [name for name, _ in _lib.OptimConfig._fields_]
_PY_NAME = {"lambda_": "lam"}
_C_NAME = {v: k for k, v in _PY_NAME.items()}
_C_NAME["lambda"] = "lambda_"


def _short_float32(v):
    """The shortest decimal that is the same float32 as v (0.3, not
    0.30000001192092896)."""
    for digits in range(1, 10):
        d = float("%.*g" % (digits, v))
        if ctypes.c_float(d).value == v:
            return d
    return v


def default_config():
    """DEFT_OPTIM_CONFIG_INIT as a dict of keyword arguments, with algorithm,
    compressor and scope by name."""
    c = _lib.OptimConfig()
    lib.deft_optim_config_init(ctypes.byref(c))
    out = {}
    for f in _FIELDS:
        v = getattr(c, f)
        if f == "algo":
            v = ALGORITHMS[v]
        elif f == "compressor":
            v = COMPRESSORS[v]
        elif f == "scope":
            v = SCOPES[v]
        elif isinstance(v, float) and f in ("lambda_", "lr", "momentum",
                                            "weight_decay", "dampening"):
            v = _short_float32(v)
        out[_PY_NAME.get(f, f)] = v
    return out


def _enum(value, names, what):
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return value
    elif isinstance(value, str):
        low = value.lower()
        if low in names:
            return names.index(low)
    raise InvalidArgument("%s = %r: unknown %s (expected one of %s)"
                          % ("algo" if what == "algorithm" else what, value,
                             what, ", ".join(names)))


def make_config(**kwargs):
    """A deft_optim_config_t from keyword arguments named as its C fields
    (lam for lambda); unnamed fields keep DEFT_OPTIM_CONFIG_INIT's value.
    An unknown name or a value of the wrong type raises InvalidArgument
    naming it; ranges are checked by deft_optim_create."""
    c = _lib.OptimConfig()
    lib.deft_optim_config_init(ctypes.byref(c))
    for key, value in kwargs.items():
        f = _C_NAME.get(key, key)
        if f not in _FIELDS or f in _PY_NAME.values():
            raise InvalidArgument(
                "%s: not a deft option (known: %s)" % (key, ", ".join(
                    _PY_NAME.get(n, n) for n in _FIELDS)))
        if f == "algo":
            value = _enum(value, ALGORITHMS, "algorithm")
        elif f == "compressor":
            value = _enum(value, COMPRESSORS, "compressor")
        elif f == "scope":
            value = _enum(value, SCOPES, "scope")
        try:
            ctype = dict(_lib.OptimConfig._fields_)[f]
            if ctype in (ctypes.c_float, ctypes.c_double):
                value = float(value)
            else:
                if isinstance(value, float) and not value.is_integer():
                    raise TypeError("not a whole number")
                value = int(value)
                if ctype is ctypes.c_uint64 and value < 0:
                    raise InvalidArgument("%s = %d, must be >= 0" % (key, value))
                if ctype is ctypes.c_int and not -2**31 <= value < 2**31:
                    raise InvalidArgument("%s = %d is out of range" % (key, value))
                if ctype is ctypes.c_uint64 and value >= 2**64:
                    raise InvalidArgument("%s = %d is out of range" % (key, value))
            setattr(c, f, value)
        except (TypeError, ValueError) as e:
            if isinstance(e, InvalidArgument):
                raise
            raise InvalidArgument("%s = %r: %s" % (key, value, e)) from None
    return c


#: Re-sharding rules (deft_reshard_t): keep the mean of what each worker
#: holds, or restart errors and momenta at zero.
RESHARD_RULES = {lib.deft_reshard_name(i).decode(): i for i in (1, 2)}


def reshard_states(blobs, workers, rule="mean"):
    """The state_bytes() of a run's K workers (in rank order, saved at the
    same step) re-sharded for `workers` workers: a list of that many blobs,
    for optimizers made with the same layout and options, each loading its
    rank's. The model, step, schedule and hyperparameters are kept; errors,
    momenta and the other per-worker vectors keep their mean over workers
    (rule "mean"; DEF's output model x - avg(e) is kept), or errors and
    momenta restart at zero (rule "zero"). See deft_optim_state_reshard in
    deft.h for the mapping. InvalidArgument for a bad count or rule,
    FormatError for blobs that are corrupt or not of one run and step."""
    blobs = [bytes(b) for b in blobs]
    if not blobs:
        raise InvalidArgument("reshard_states: no states given")
    size = len(blobs[0])
    if any(len(b) != size for b in blobs):
        raise FormatError("reshard_states: the states have different sizes "
                          "%s: they are not of one run"
                          % sorted({len(b) for b in blobs}))
    if rule not in RESHARD_RULES:
        raise InvalidArgument("reshard_states: rule=%r, must be one of %s"
                              % (rule, sorted(RESHARD_RULES)))
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise InvalidArgument("reshard_states: workers=%r, must be an int"
                              % (workers,))
    if not 1 <= workers <= 1024:
        raise InvalidArgument("reshard_states: workers=%d, must be in "
                              "[1, 1024]" % workers)
    src = b"".join(blobs)
    out = ctypes.create_string_buffer(size * workers)
    check(lib.deft_optim_state_reshard(src, size, len(blobs), out, workers,
                                       RESHARD_RULES[rule]))
    raw = out.raw
    return [raw[j * size:(j + 1) * size] for j in range(workers)]


def _layout(sizes, rows):
    """(sizes, rows or None, a deft_layout_t over them), checked: at least
    one tensor, each of size >= 1, and one row count >= 0 per tensor."""
    sizes = [int(s) for s in sizes]
    if any(s <= 0 for s in sizes) or not sizes:
        raise InvalidArgument("sizes = %r: need at least one tensor, each of "
                              "size >= 1" % (sizes,))
    rarr = None
    if rows is not None:
        rows = [int(r) for r in rows]
        if len(rows) != len(sizes) or any(r < 0 for r in rows):
            raise InvalidArgument("rows = %r: need one count >= 0 per tensor "
                                  "(%d tensors)" % (rows, len(sizes)))
        rarr = (ctypes.c_size_t * len(rows))(*rows)
    # the structure keeps the arrays alive (ctypes' _objects)
    return sizes, rows, _lib.Layout(
        len(sizes), (ctypes.c_size_t * len(sizes))(*sizes), rarr)


class _Handle:
    """Owns a deft_optim_t; freed when the last Python object that needs the
    optimizer's memory (the Optimizer, or a view of its buffers) is gone."""

    def __init__(self, ptr, comm):
        self.ptr = ctypes.c_void_p(ptr)
        self.comm = comm  # the optimizer keeps the communicator's pointer

    def __del__(self):
        ptr, self.ptr = self.ptr, None
        if ptr is not None and ptr.value and lib is not None:
            lib.deft_optim_destroy(ptr)


class Optimizer:
    """deft's ask/tell optimizer on this worker of comm.

        opt = deft.Optimizer(comm, sizes, x0, algo="def", ratio=64, lr=0.05)
        for step in range(steps):
            point = opt.ask()          # float32 memoryview: take the gradient here
            opt.tell(gradient(point))  # compress, communicate, update
        model = opt.output()           # def: x - avg(e)

    sizes lists the tensor sizes of the flat model (per-tensor compressors
    use them), x0 is any float32 buffer of sum(sizes) floats (rank 0's is
    broadcast), and the keywords are deft_optim_config_t's fields. rows,
    optional, gives each tensor's matrix rows (a weight (out, in, ...) has
    rows = out; 0 or 1 for vectors): powersgd compresses those matrices.
    Creation is collective over comm."""

    def __init__(self, comm, sizes, x0, rows=None, **config):
        if not isinstance(comm, Comm):
            raise InvalidArgument("comm: a %s, not a deft.Comm" % type(comm).__name__)
        sizes, rows, layout = _layout(sizes, rows)
        self.comm = comm
        self.sizes = tuple(sizes)
        self.dim = sum(sizes)
        cfg = make_config(**config)
        addr, _, keep = _buf.float_address(x0, self.dim, "x0")
        self.rows = tuple(rows) if rows is not None else None
        h = ctypes.c_void_p()
        check(lib.deft_optim_create(ctypes.byref(h), comm.handle,
                                    ctypes.byref(layout), addr, ctypes.byref(cfg)))
        self._adopt(h.value, cfg)

    def _adopt(self, handle, cfg):
        self._h = _Handle(handle, self.comm)
        self.config = cfg
        self.algo = ALGORITHMS[cfg.algo]
        self.compressor = COMPRESSORS[cfg.compressor]
        self.last_info = _lib.StepInfo()
        self._point = None

    def grown(self, sizes, x0, rows=None):
        """A new optimizer whose model is this one's tensors followed by
        tensors of the given sizes (initial values x0, rank 0's broadcast;
        rows as at creation). Every vector of this one (model, error,
        momentum, ...), the groups and the step count are carried over
        bitwise; the new tensors start with zero error and momentum, in
        group 0. This optimizer is left as it was. Collective."""
        sizes, rows, layout = _layout(sizes, rows)
        rows = rows if rows is not None else [0] * len(sizes)
        addr, _, keep = _buf.float_address(x0, sum(sizes), "x0")
        old_rows = list(self.rows) if self.rows is not None else [0] * len(self.sizes)
        h = ctypes.c_void_p()
        check(lib.deft_optim_create_grown(ctypes.byref(h), self._ptr,
                                          ctypes.byref(layout), addr))
        new = Optimizer.__new__(Optimizer)
        new.comm = self.comm
        new.sizes = self.sizes + tuple(sizes)
        new.dim = sum(new.sizes)
        new.rows = tuple(old_rows + rows)
        new._adopt(h.value, self.config)
        return new

    # -- per-tensor hyperparameters ------------------------------------------
    _GROUP_KEYS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def set_groups(self, groups, tensor_group=None):
        """Per-tensor hyperparameters: groups is a list of dicts with keys
        lr, momentum, dampening, weight_decay, nesterov (missing keys keep
        the values of the config), and tensor_group gives each tensor's
        group index (None keeps them). deft_optim_set_groups checks every
        value; not collective (every worker sets the same)."""
        arr = (_lib.Group * max(len(groups), 1))()
        for i, g in enumerate(groups):
            unknown = set(g) - set(self._GROUP_KEYS)
            if unknown:
                raise InvalidArgument("groups[%d]: unknown key(s) %s (known: %s)"
                                      % (i, ", ".join(sorted(unknown)),
                                         ", ".join(self._GROUP_KEYS)))
            c = self.config
            arr[i].lr = float(g.get("lr", c.lr))
            arr[i].momentum = float(g.get("momentum", c.momentum))
            arr[i].dampening = float(g.get("dampening", c.dampening))
            arr[i].weight_decay = float(g.get("weight_decay", c.weight_decay))
            arr[i].nesterov = int(bool(g.get("nesterov", c.nesterov)))
        tg = None
        if tensor_group is not None:
            tensor_group = [int(t) for t in tensor_group]
            if len(tensor_group) != len(self.sizes) or min(tensor_group) < 0:
                raise InvalidArgument("tensor_group: need one group index >= 0 "
                                      "per tensor (%d tensors)" % len(self.sizes))
            tg = (ctypes.c_uint32 * len(tensor_group))(*tensor_group)
        check(lib.deft_optim_set_groups(self._ptr, len(groups), arr, tg))

    def groups(self):
        """The group table in effect, as a list of dicts."""
        out = []
        for i in range(lib.deft_optim_num_groups(self._ptr)):
            g = _lib.Group()
            check(lib.deft_optim_get_group(self._ptr, i, ctypes.byref(g)))
            out.append(dict(lr=g.lr, momentum=g.momentum, dampening=g.dampening,
                            weight_decay=g.weight_decay, nesterov=bool(g.nesterov)))
        return out

    def tensor_groups(self):
        """Each tensor's group index."""
        out = []
        for t in range(len(self.sizes)):
            v = ctypes.c_uint32()
            check(lib.deft_optim_tensor_group(self._ptr, t, ctypes.byref(v)))
            out.append(v.value)
        return out

    @property
    def output_is_point(self):
        """True when output() is the point where gradients are taken (sgd,
        ef, ef21; defa with lam 0), so BN statistics gathered in training
        describe it."""
        return bool(lib.deft_optim_output_is_point(self._ptr))

    @property
    def _ptr(self):
        return self._h.ptr

    def point_address(self):
        """The address of ask's buffer: the same for the optimizer's life."""
        p = ctypes.c_void_p()
        check(lib.deft_optim_ask(self._ptr, ctypes.byref(p)))
        return p.value

    def ask(self):
        """Where this worker's next gradient must be taken: a float32
        memoryview of deft's buffer, refreshed in place by every ask."""
        addr = self.point_address()
        if self._point is None:
            self._point = _buf.float_view(addr, self.dim, self._h)
        return self._point

    def tell(self, grad):
        """This worker's gradient at the asked point (float32, dim items).
        Collective. Raises Diverged (with .step) on NaN or Inf anywhere."""
        addr, _, keep = _buf.float_address(grad, self.dim, "grad")
        self.tell_address(addr)

    def tell_address(self, addr):
        """tell() with the gradient's address (dim floats), for bindings."""
        step = self.steps
        st = lib.deft_optim_tell(self._ptr, addr, ctypes.byref(self.last_info))
        if st == DIVERGED:
            raise error_for(st, step=step)
        check(st)

    def output(self, out=None):
        """The model to evaluate (def: x - avg(e), psync: avg(x_k), eclk: y,
        others: x), into out (a float32 buffer) or a new array('f').
        Collective."""
        if out is None:
            import array
            out = array.array("f", bytes(4 * self.dim))
        addr, _, keep = _buf.float_address(out, self.dim, "out", writable=True)
        check(lib.deft_optim_output(self._ptr, addr))
        return out

    def params(self):
        """A read-only float32 view of the model this worker steps."""
        p = ctypes.c_void_p()
        check(lib.deft_optim_params(self._ptr, ctypes.byref(p)))
        return _buf.float_view(p.value, self.dim, self._h).toreadonly()

    def error(self):
        """A read-only view of this worker's error e_k, or None for the
        algorithms that keep none (sgd, ef21, psync)."""
        p = ctypes.c_void_p()
        check(lib.deft_optim_error(self._ptr, ctypes.byref(p)))
        if not p.value:
            return None
        return _buf.float_view(p.value, self.dim, self._h).toreadonly()

    @property
    def lr(self):
        """The learning rate in effect (a float32 value)."""
        return lib.deft_optim_get_lr(self._ptr)

    @lr.setter
    def lr(self, value):
        check(lib.deft_optim_set_lr(self._ptr, float(value)))

    @property
    def steps(self):
        return lib.deft_optim_steps(self._ptr)

    def state_bytes(self):
        """This worker's whole state (step, lr, model, error, momentum...)."""
        n = lib.deft_optim_state_size(self._ptr)
        buf = ctypes.create_string_buffer(n)
        check(lib.deft_optim_state_save(self._ptr, buf, n))
        return buf.raw

    def load_state_bytes(self, blob):
        """Restores a state_bytes() blob; FormatError (a ValueError) if it
        is from another algorithm, compressor or model size."""
        blob = bytes(blob)
        check(lib.deft_optim_state_load(self._ptr, blob, len(blob)))

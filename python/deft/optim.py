"""The ask/tell optimizer over one flat float32 vector (FlatOptimizer), and
its configuration as keyword arguments named as the library's options (the
fields of deft_optim_config_t; `lam` for the C field `lambda`, a Python
keyword).

The options are the library's table (deft.h, "The configuration,
described"): their names, types, ranges and the names of the algorithms,
compressors and scopes are read from it. A config is held as opaque bytes
(deft_optim_config_size) that deft_optim_config_set fills and
deft_optim_config_get reads, by name and as text; nothing here knows the
struct's layout."""
import collections.abc
import ctypes
import numbers
import operator

from . import _buf, _lib
from .comm import Comm
from .errors import (DIVERGED, OK, FormatError, InvalidArgument, UsageError,
                     check, error_for)

lib = _lib.lib


def _choices(option):
    """The names of the values of a choice option, in the order of its C
    enum, as the library lists them."""
    names = []
    while True:
        name = lib.deft_optim_option_choice(option.encode(), len(names))
        if name is None:
            return tuple(names)
        names.append(name.decode())


#: The names deft knows, in the order of the C enums (the library's).
ALGORITHMS = _choices("algo")
COMPRESSORS = _choices("compressor")
SCOPES = _choices("scope")

# The Python keyword of a C field whose name is a Python keyword.
_PY_NAME = {"lambda": "lam"}
# Keyword -> C name, for every option of the library's table, in its order.
_OPTIONS = {}
for _i in range(lib.deft_optim_option_count()):
    _c = lib.deft_optim_option_name(_i).decode()
    _OPTIONS[_PY_NAME.get(_c, _c)] = _c
del _i, _c


# How a field's text reads in Python, by the library's name of its type.
_KINDS = {"flag": "int", "int": "int", "long": "int", "uint64": "int",
          "float": "float", "double": "float", "choice": "choice",
          "string": "text", "list": "text"}
_KIND = {c: _KINDS.get(lib.deft_optim_option_type(c.encode()).decode())
         for c in _OPTIONS.values()}
_TEXT_SIZE = 256
# Other spellings of a keyword that name the same field (lam's C name, and
# the name ctypes mirrors once used).
_ALIASES = {"lambda": "lambda", "lambda_": "lambda"}


def _c_name(key):
    """The C name of the keyword key; InvalidArgument listing the valid
    keywords if it is none."""
    cname = (_OPTIONS.get(key) or _ALIASES.get(key)) if isinstance(key, str) \
        else None
    if cname is None:
        raise InvalidArgument("%s: not a deft option (known: %s)"
                              % (key, ", ".join(_OPTIONS)))
    return cname


def _as_keyword(message, cname, key):
    """The library's message about field cname, naming it as the Python
    keyword (lam for lambda)."""
    if key != cname and message.startswith(cname):
        return key + message[len(cname):]
    return message


def _number(key, value):
    """A number from a scalar that is not registered as one (a 0-d
    tensor), through its __index__ or __float__; InvalidArgument naming
    key for anything else (a list, None, bytes)."""
    if not isinstance(value, (bytes, bytearray)):
        for convert in (operator.index, float):
            try:
                return convert(value)
            except (TypeError, ValueError, RuntimeError):
                pass
    raise InvalidArgument("%s = %r: a %s, not a number, a bool or a name"
                          % (key, value, type(value).__name__))


def _to_text(key, cname, value):
    """value as the text deft_optim_config_set reads: a bool as 1 or 0, an
    integer in decimal (an algorithm, compressor or scope given by its
    number as its name), a float as its round-trip repr (a whole one in
    decimal for an integer field), a string (a name) as given.
    InvalidArgument naming key for a value of another type."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if not isinstance(value, numbers.Real):  # integers are Real too
        value = _number(key, value)
    if isinstance(value, numbers.Integral):
        value = int(value)
        if _KIND[cname] == "choice" and 0 <= value < 2**31:
            name = lib.deft_optim_option_choice(cname.encode(), value)
            if name is not None:
                return name.decode()
        return str(value)
    value = float(value)
    if _KIND[cname] == "int" and value.is_integer():
        return str(int(value))  # qsgd_levels=8.0 is 8, as it always was
    return repr(value)


class Config(collections.abc.Mapping):
    """A deft_optim_config_t: the library's bytes, initialized with
    deft_optim_config_init (DEFT_OPTIM_CONFIG_INIT) and changed only by
    set(), through deft_optim_config_set, which checks each value's type
    and range. A read-only mapping from the keywords (lam for lambda) to
    the values deft_optim_config_get shows: str for algo, compressor and
    scope (names), int for integers and flags, float for numbers (a
    float32 field as its shortest decimal, 0.3)."""

    def __init__(self, **options):
        self._buf = ctypes.create_string_buffer(lib.deft_optim_config_size())
        self._frozen = False
        lib.deft_optim_config_init(self._buf)
        for key, value in options.items():
            self.set(key, value)

    def freeze(self):
        """Makes set() refuse from now on: the config an optimizer was made
        with describes it, and changing it would change nothing there.
        Returns self."""
        self._frozen = True
        return self

    def set(self, key, value):
        """Sets the option called key (a keyword) to value; InvalidArgument
        (the library's message, naming key) if the name, the type or the
        range is wrong, leaving the config unchanged."""
        cname = _c_name(key)
        if self._frozen:
            raise UsageError("%s: this config belongs to an optimizer and is "
                             "read-only; make a new one with make_config() "
                             "(the learning rate: opt.lr = ...)" % key)
        st = lib.deft_optim_config_set(self._buf, cname.encode(),
                                       _to_text(key, cname, value).encode())
        if st != OK:
            e = error_for(st)
            raise type(e)(_as_keyword(str(e), cname, key), st) from None

    def text(self, key):
        """The option's value as deft_optim_config_get writes it, text
        that set() reads back to the same value."""
        cname = _c_name(key)
        out = ctypes.create_string_buffer(_TEXT_SIZE)
        check(lib.deft_optim_config_get(self._buf, cname.encode(), out,
                                        _TEXT_SIZE))
        return out.value.decode()

    def __getitem__(self, key):
        if key not in _OPTIONS:
            raise KeyError(key)
        text, cname = self.text(key), _OPTIONS[key]
        kind = _KIND[cname]
        if kind in ("int", None):
            try:
                return int(text)
            except ValueError:
                pass
        if kind in ("float", None):
            try:  # the library writes the shortest decimal: 0.3, not
                return float(text)  # 0.300000012 for a float holding 0.3f
            except ValueError:
                pass
        return text  # a choice's name, text, or a word the option allows

    def __iter__(self):
        return iter(_OPTIONS)

    def __len__(self):
        return len(_OPTIONS)

    def check(self):
        """The library's check of the whole config (deft_optim_config_check,
        as deft_optim_create does it): each field the algorithm and
        compressor read in its range, and the rules between fields.
        InvalidArgument naming the field."""
        st = lib.deft_optim_config_check(self._buf)
        if st != OK:
            e = error_for(st)
            raise type(e)(_as_keyword(str(e), "lambda", "lam"), st) from None

    def __repr__(self):
        return "deft.Config(%s)" % ", ".join("%s=%r" % kv
                                             for kv in self.items())


def default_config():
    """DEFT_OPTIM_CONFIG_INIT as a dict of keyword arguments (every option
    of the library's table), with algorithm, compressor and scope by
    name."""
    return dict(Config())


def make_config(**kwargs):
    """A Config from keyword arguments named as the library's options (lam
    for lambda); the others keep DEFT_OPTIM_CONFIG_INIT's value. An
    unknown name, a value of the wrong type or out of range raises
    InvalidArgument naming it; the rules between fields are checked by
    deft_optim_create (or Config.check())."""
    return Config(**kwargs)


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
    deft.h for the mapping. InvalidArgument for a bad rule, or a count the
    library refuses (deft_optim_state_reshard's k_in, k_out), FormatError
    for blobs that are corrupt or not of one run and step."""
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
    if not -2**31 <= workers < 2**31:
        raise InvalidArgument("reshard_states: workers=%d is not a C int"
                              % workers)
    # deft_optim_state_reshard refuses a count it does not allow (its
    # k_out) before it writes; out must not be NULL even then.
    src = b"".join(blobs)
    out = ctypes.create_string_buffer(size * max(workers, 1))
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
    optimizer's memory (the FlatOptimizer, or a view of its buffers) is
    gone."""

    def __init__(self, ptr, comm):
        self.ptr = ctypes.c_void_p(ptr)
        self.comm = comm  # the optimizer keeps the communicator's pointer

    def __del__(self):
        ptr, self.ptr = self.ptr, None
        if ptr is not None and ptr.value and lib is not None:
            lib.deft_optim_destroy(ptr)


class FlatOptimizer:
    """deft's ask/tell optimizer on this worker of comm, over one flat
    float32 vector (deft.torch.Optimizer is torch's optimizer over it).

        opt = deft.FlatOptimizer(comm, sizes, x0, algo="def", ratio=64, lr=0.05)
        for step in range(steps):
            point = opt.ask()          # float32 memoryview: take the gradient here
            opt.tell(gradient(point))  # compress, communicate, update
        model = opt.output()           # def: x - avg(e)

    sizes lists the tensor sizes of the flat model (per-tensor compressors
    use them), x0 is any float32 buffer of sum(sizes) floats (rank 0's is
    broadcast), and the keywords are the library's options (make_config;
    self.config is the Config, read by name). rows,
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
                                    ctypes.byref(layout), addr, cfg._buf))
        self._adopt(h.value, cfg)

    def _adopt(self, handle, cfg):
        self._h = _Handle(handle, self.comm)
        self.config = cfg.freeze()
        self.algo = cfg["algo"]
        self.compressor = cfg["compressor"]
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
        new = FlatOptimizer.__new__(FlatOptimizer)
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
            arr[i].lr = float(g.get("lr", c["lr"]))
            arr[i].momentum = float(g.get("momentum", c["momentum"]))
            arr[i].dampening = float(g.get("dampening", c["dampening"]))
            arr[i].weight_decay = float(g.get("weight_decay", c["weight_decay"]))
            arr[i].nesterov = int(bool(g.get("nesterov", c["nesterov"])))
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

"""Loading libdeft.so and declaring its C functions (ctypes, no compiled
extension).

The library is looked for, in this order:
  1. the file named by the environment variable DEFT_LIBRARY;
  2. libdeft.so beside this package (deft/libdeft.so);
  3. the lib/ directory of the prefix this package was installed into
     (PREFIX/lib/python3/dist-packages/deft -> PREFIX/lib/libdeft.so);
  4. build/libdeft.so of the source tree this package sits in;
  5. the system's search path (ctypes.util.find_library("deft")).
It is loaded with RTLD_GLOBAL so that Open MPI, which libdeft links when
built with MPI, can load its plugins.
"""
import ctypes
import ctypes.util
import os

_here = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    env = os.environ.get("DEFT_LIBRARY")
    if env:
        yield env, "DEFT_LIBRARY"
        return
    yield os.path.join(_here, "libdeft.so"), "beside the package"
    yield os.path.normpath(os.path.join(_here, "..", "..", "..", "libdeft.so")), \
        "the install prefix"
    yield os.path.normpath(os.path.join(_here, "..", "..", "build", "libdeft.so")), \
        "the source tree's build/"
    found = ctypes.util.find_library("deft")
    if found:
        yield found, "the system search path"


def _load():
    tried = []
    for path, where in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            tried.append("%s (%s: no such file)" % (path, where))
            continue
        try:
            return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL), path
        except OSError as e:
            tried.append("%s (%s: %s)" % (path, where, e))
    raise ImportError(
        "deft: cannot load libdeft.so; build it with `make` in the source "
        "tree, or set DEFT_LIBRARY to its path. Tried: " + "; ".join(tried))


lib, path = _load()

c_status = ctypes.c_int
c_size = ctypes.c_size_t
c_u64 = ctypes.c_uint64
vp = ctypes.c_void_p
pvp = ctypes.POINTER(ctypes.c_void_p)


class Group(ctypes.Structure):
    """Mirror of deft_group_t: one group's hyperparameters."""
    _fields_ = [("lr", ctypes.c_float), ("momentum", ctypes.c_float),
                ("dampening", ctypes.c_float), ("weight_decay", ctypes.c_float),
                ("nesterov", ctypes.c_int)]


class Layout(ctypes.Structure):
    _fields_ = [("n_tensors", c_size), ("sizes", ctypes.POINTER(c_size)),
                ("rows", ctypes.POINTER(c_size))]


class StepInfo(ctypes.Structure):
    _fields_ = [("step", c_u64), ("bytes_sent", c_u64),
                ("payload_bytes", c_u64), ("msg_bytes", c_u64)]


class CommStats(ctypes.Structure):
    _fields_ = [("bytes_sent", c_u64), ("payload_bytes", c_u64),
                ("n_allreduce", c_u64), ("n_allgather", c_u64),
                ("n_broadcast", c_u64), ("n_barrier", c_u64),
                ("comm_s", ctypes.c_double), ("comm_cpu_s", ctypes.c_double),
                ("modeled_s", ctypes.c_double)]


ALLREDUCE_FN = ctypes.CFUNCTYPE(c_status, vp, vp, c_size)
ALLGATHER_FN = ctypes.CFUNCTYPE(c_status, vp, vp, c_size, vp)
BROADCAST_FN = ctypes.CFUNCTYPE(c_status, vp, vp, c_size, ctypes.c_int)
BARRIER_FN = ctypes.CFUNCTYPE(c_status, vp)
DESCRIBE_FN = ctypes.CFUNCTYPE(vp, vp)
WORKER_FN = ctypes.CFUNCTYPE(c_status, vp, vp)


class CommOps(ctypes.Structure):
    _fields_ = [("allreduce_sum_f32", ALLREDUCE_FN), ("allgather", ALLGATHER_FN),
                ("broadcast", BROADCAST_FN), ("barrier", BARRIER_FN),
                ("describe_error", DESCRIBE_FN)]


def _decl(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_decl("deft_status_str", ctypes.c_char_p, c_status)
_decl("deft_last_error", ctypes.c_char_p)
_decl("deft_version", ctypes.c_char_p)
_decl("deft_have_mpi", ctypes.c_int)
_decl("deft_comm_rank", ctypes.c_int, vp)
_decl("deft_comm_size", ctypes.c_int, vp)
_decl("deft_comm_allreduce_sum_f32", c_status, vp, vp, c_size)
_decl("deft_comm_allgather", c_status, vp, vp, c_size, vp)
_decl("deft_comm_broadcast", c_status, vp, vp, c_size, ctypes.c_int)
_decl("deft_comm_barrier", c_status, vp)
_decl("deft_comm_set_link", c_status, vp, ctypes.c_double, ctypes.c_double)
_decl("deft_comm_set_timeout", c_status, vp, ctypes.c_double)
_decl("deft_comm_get_stats", c_status, vp, ctypes.POINTER(CommStats))
_decl("deft_comm_reset_stats", None, vp)
_decl("deft_run_threads", c_status, ctypes.c_int, WORKER_FN, vp)
_decl("deft_comm_create_custom", c_status, pvp, ctypes.POINTER(CommOps), vp,
      ctypes.c_int, ctypes.c_int)
_decl("deft_comm_create_self", c_status, pvp)
_decl("deft_comm_create_mpi_world", c_status, pvp)
_decl("deft_mpi_finalize", c_status)
_decl("deft_comm_destroy", None, vp)
# deft_optim_config_t is held as opaque bytes (deft_optim_config_size) and
# filled and read by name, as text, through the library's option table.
_decl("deft_optim_config_size", c_size)
_decl("deft_optim_config_init", None, vp)
_decl("deft_optim_config_set", c_status, vp, ctypes.c_char_p, ctypes.c_char_p)
_decl("deft_optim_config_get", c_status, vp, ctypes.c_char_p, ctypes.c_char_p,
      c_size)
_decl("deft_optim_config_check", c_status, vp)
_decl("deft_optim_option_count", c_size)
_decl("deft_optim_option_name", ctypes.c_char_p, c_size)
_decl("deft_optim_option_choice", ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)
_decl("deft_optim_option_type", ctypes.c_char_p, ctypes.c_char_p)
_decl("deft_optim_create", c_status, pvp, vp, ctypes.POINTER(Layout), vp, vp)
_decl("deft_optim_destroy", None, vp)
_decl("deft_optim_ask", c_status, vp, pvp)
_decl("deft_optim_tell", c_status, vp, vp, ctypes.POINTER(StepInfo))
_decl("deft_optim_output", c_status, vp, vp)
_decl("deft_optim_set_lr", c_status, vp, ctypes.c_float)
_decl("deft_optim_get_lr", ctypes.c_float, vp)
_decl("deft_optim_set_groups", c_status, vp, c_size, ctypes.POINTER(Group),
      ctypes.POINTER(ctypes.c_uint32))
_decl("deft_optim_num_groups", c_size, vp)
_decl("deft_optim_get_group", c_status, vp, c_size, ctypes.POINTER(Group))
_decl("deft_optim_tensor_group", c_status, vp, c_size,
      ctypes.POINTER(ctypes.c_uint32))
_decl("deft_optim_create_grown", c_status, pvp, vp, ctypes.POINTER(Layout), vp)
_decl("deft_optim_output_is_point", ctypes.c_int, vp)
_decl("deft_optim_params", c_status, vp, pvp)
_decl("deft_optim_error", c_status, vp, pvp)
_decl("deft_optim_dim", c_size, vp)
_decl("deft_optim_steps", c_u64, vp)
_decl("deft_optim_state_size", c_size, vp)
_decl("deft_optim_state_save", c_status, vp, vp, c_size)
_decl("deft_optim_state_load", c_status, vp, vp, c_size)
_decl("deft_optim_state_reshard", c_status, vp, c_size, ctypes.c_int, vp,
      ctypes.c_int, ctypes.c_int)
_decl("deft_reshard_name", ctypes.c_char_p, ctypes.c_int)
_decl("deft_algo_name", ctypes.c_char_p, ctypes.c_int)
_decl("deft_compressor_name", ctypes.c_char_p, ctypes.c_int)
_decl("deft_algo_parse", c_status, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int))
_decl("deft_compressor_parse", c_status, ctypes.c_char_p,
      ctypes.POINTER(ctypes.c_int))


def last_error():
    return (lib.deft_last_error() or b"").decode("utf-8", "replace")

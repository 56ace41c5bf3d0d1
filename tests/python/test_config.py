"""The binding reads the library's option table: the keywords, their
values, ranges and messages, and the names of the algorithms, compressors
and scopes all come from libdeft (deft_optim_option_*, deft_optim_config_*),
and a config is the library's opaque bytes, set and read by name."""
import array
import ctypes
import os
import subprocess

import pytest

import deft

lib = deft._lib.lib
PYTHON_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                          "..", "python")


def library_options():
    """The option names the library lists, as Python keywords (lam for the
    C field lambda)."""
    names, i = [], 0
    while True:
        name = lib.deft_optim_option_name(i)
        if name is None:
            break
        names.append({"lambda": "lam"}.get(name.decode(), name.decode()))
        i += 1
    assert i == lib.deft_optim_option_count()
    return names


def test_default_config_lists_every_library_option():
    d = deft.default_config()
    assert list(d) == library_options()
    assert "lam" in d and "lambda" not in d
    assert d == dict(deft.make_config())


@pytest.mark.parametrize("name", library_options())
def test_every_option_round_trips_through_make_config(name):
    d = deft.default_config()
    cfg = deft.make_config(**{name: d[name]})
    assert dict(cfg) == d
    assert type(cfg[name]) is type(d[name])
    # and its text as the library writes it reads back to the same value
    again = deft.make_config(**{name: cfg.text(name)})
    assert again.text(name) == cfg.text(name)


def test_all_options_at_once_round_trip():
    d = deft.default_config()
    assert dict(deft.make_config(**d)) == d
    changed = dict(d, algo="ef", compressor="topk", ratio=64.0, scope="global",
                   lr=0.05, momentum=0.5, nesterov=1, dampening=0.0,
                   weight_decay=5e-4, seed=2**64 - 1, lam=0.5, eclk_L=2.5,
                   eclk_mu=0.125, eclk_p=0.25, eclk_theta1=0.5, eclk_n=100,
                   avg_period=7, powersgd_rank=3, qsgd_levels=8,
                   randk_scaled=1)
    assert set(changed) == set(d)
    assert dict(deft.make_config(**changed)) == changed


def test_values_are_python_types_and_float32_fields_their_shortest_decimal():
    f32 = lambda v: ctypes.c_float(v).value  # noqa: E731
    cfg = deft.make_config(lr=0.05, lam=0.3, ratio=1.1, momentum=0.9,
                           eclk_p=0.1 + 0.2)
    assert f32(float(cfg.text("lr"))) == f32(0.05)  # the library's float32
    assert (cfg["lr"], cfg["lam"], cfg["momentum"]) == (0.05, 0.3, 0.9)
    assert (cfg["ratio"], cfg["eclk_p"]) == (1.1, 0.1 + 0.2)  # doubles, exact
    assert float(cfg.text("eclk_p")) == 0.1 + 0.2
    assert isinstance(cfg["seed"], int) and isinstance(cfg["nesterov"], int)
    assert isinstance(cfg["algo"], str) and isinstance(cfg["ratio"], float)


def test_python_values_become_the_library_text():
    cfg = deft.make_config(nesterov=True, randk_scaled=False, seed=12, algo=4,
                           compressor=3, scope=1, qsgd_levels=8.0)
    assert (cfg["nesterov"], cfg["randk_scaled"], cfg["seed"]) == (1, 0, 12)
    assert (cfg["algo"], cfg["compressor"], cfg["scope"]) == \
        (deft.ALGORITHMS[4], deft.COMPRESSORS[3], deft.SCOPES[1])
    assert cfg["qsgd_levels"] == 8
    cfg = deft.make_config(algo="DEFA", compressor="TopK", ratio="16")
    assert (cfg["algo"], cfg["compressor"], cfg["ratio"]) == ("defa", "topk", 16.0)


def test_lam_is_the_c_field_lambda():
    cfg = deft.make_config(lam=0.75)
    assert cfg["lam"] == 0.75 and cfg.text("lam") == "0.75"
    assert deft.default_config()["lam"] == 0.3
    # the library gets it: defa with lam 0 is EF, whose point is the model
    for lam, is_point in ((0.0, True), (0.3, False)):
        opt = deft.FlatOptimizer(deft.Comm.single(), [4],
                                 array.array("f", [1.0] * 4), algo="defa",
                                 lam=lam, compressor="rbgs", ratio=2)
        assert opt.config["lam"] == lam
        assert opt.output_is_point == is_point


def test_unknown_keyword_lists_the_valid_ones():
    # lambda and lambda_ (a dict's keys) still name lam's field, as they did
    for alias in ("lambda", "lambda_"):
        assert deft.make_config(**{alias: 0.5})["lam"] == 0.5
    for bad in ("colour", "wd", "momentun"):
        with pytest.raises(deft.InvalidArgument) as e:
            deft.make_config(**{bad: 1})
        assert isinstance(e.value, ValueError)
        msg = str(e.value)
        assert msg.startswith("%s: not a deft option" % bad), msg
        listed = msg.split("(known: ", 1)[1].rstrip(")").split(", ")
        assert listed == library_options()
        assert "lam" in listed and "lambda" not in listed


@pytest.mark.parametrize("kwargs, needle", [
    (dict(ratio=0.5), "ratio '0.5': must be a number >= 1"),
    (dict(momentum=1.0), "momentum '1.0': must be a number in [0, 1)"),
    (dict(qsgd_levels=200), "qsgd_levels '200': must be an integer in [1, 127]"),
    (dict(lam=1.5), "lam '1.5': must be a number in [0, 1]"),
    (dict(nesterov=2), "nesterov '2': must be 0 or 1"),
    (dict(algo=99), "algo '99': must be one of %s or %s"
     % (", ".join(deft.ALGORITHMS[:-1]), deft.ALGORITHMS[-1])),
    (dict(scope="row"), "scope 'row': must be one of tensor or global"),
    (dict(qsgd_levels=2.5), "qsgd_levels '2.5': must be an integer"),
    (dict(lr=float("nan")), "lr 'nan': must be a number > 0"),
])
def test_out_of_range_values_name_the_keyword_and_the_range(kwargs, needle):
    with pytest.raises(deft.InvalidArgument) as e:
        deft.make_config(**kwargs)
    assert isinstance(e.value, ValueError)
    assert str(e.value).startswith(needle), str(e.value)


@pytest.mark.parametrize("value", [[0.9], None, {"x": 1}, b"0.9", 1j])
def test_values_of_the_wrong_type_name_the_keyword(value):
    with pytest.raises(deft.InvalidArgument, match=r"^momentum = .*: a \w+, "
                                                   r"not a number"):
        deft.make_config(momentum=value)


def test_a_refused_value_leaves_the_config_unchanged():
    cfg = deft.make_config(ratio=8)
    with pytest.raises(deft.InvalidArgument):
        cfg.set("ratio", 0.5)
    assert cfg["ratio"] == 8.0
    with pytest.raises(KeyError):
        cfg["lambda"]


def test_the_library_checks_the_rules_between_fields():
    deft.make_config().check()
    with pytest.raises(deft.InvalidArgument, match="nesterov"):
        deft.make_config(nesterov=True, momentum=0.0).check()
    with pytest.raises(deft.InvalidArgument, match="eclk_L"):
        deft.make_config(algo="eclk").check()


def test_names_are_the_library_names():
    algos = [lib.deft_algo_name(i).decode() for i in range(64)]
    comps = [lib.deft_compressor_name(i).decode() for i in range(64)]
    assert deft.ALGORITHMS == tuple(algos[:algos.index("?")])
    assert deft.COMPRESSORS == tuple(comps[:comps.index("?")])
    assert deft.SCOPES == ("tensor", "global")
    for t in (deft.ALGORITHMS, deft.COMPRESSORS, deft.SCOPES):
        assert isinstance(t, tuple) and len(set(t)) == len(t)


def test_reshard_count_is_refused_by_the_library():
    opt = deft.FlatOptimizer(deft.Comm.single(), [4],
                             array.array("f", [1.0] * 4), ratio=2)
    blob = opt.state_bytes()
    assert deft.reshard_states([blob], 1) == [blob]
    for workers in (0, -1, 1025):
        with pytest.raises(deft.InvalidArgument,
                           match=r"k_out = %d, must be in \[1, 1024\]" % workers):
            deft.reshard_states([blob], workers)
    with pytest.raises(deft.InvalidArgument, match="workers=2.0"):
        deft.reshard_states([blob], 2.0)


def _run(code):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    p = subprocess.run(["/usr/bin/python3", "-c", code], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_import_registers_no_atexit_handler():
    out = _run("import atexit\n"
               "n = atexit._ncallbacks()\n"
               "import deft\n"
               "print(atexit._ncallbacks() - n)\n")
    assert out == ["0"]


def test_first_mpi_communicator_registers_mpi_finalize_once():
    # Without MPI (or with it: the create is replaced by one that fails)
    # Comm.mpi() registers the finalizer first, and only once.
    out = _run("import atexit, ctypes\n"
               "import deft, deft.comm\n"
               "n = atexit._ncallbacks()\n"
               "deft._lib.lib.deft_comm_create_mpi_world = lambda h: 7\n"
               "for _ in range(2):\n"
               "    try:\n"
               "        deft.Comm.mpi()\n"
               "    except deft.Unsupported:\n"
               "        pass\n"
               "    print(atexit._ncallbacks() - n)\n")
    assert out == ["1", "1"]


def test_one_name_for_each_optimizer():
    import deft.torch
    assert not hasattr(deft, "Optimizer")
    assert "Optimizer" not in deft.__all__ and "FlatOptimizer" in deft.__all__
    assert deft.FlatOptimizer.__module__ == "deft.optim"
    assert issubclass(deft.torch.Optimizer, __import__("torch").optim.Optimizer)
    assert deft.torch.Optimizer is not deft.FlatOptimizer


def test_an_optimizers_config_is_read_only():
    import array
    opt = deft.FlatOptimizer(deft.Comm.single(), [4], array.array("f", [1.0] * 4),
                             algo="ef", compressor="topk", ratio=2, lr=0.25)
    assert opt.config["lr"] == 0.25 and opt.config["compressor"] == "topk"
    with pytest.raises(deft.UsageError, match="read-only"):
        opt.config.set("lr", 0.5)
    assert opt.config["lr"] == 0.25
    opt.lr = 0.5  # the optimizer's own setter still works
    assert opt.lr == 0.5
    # a fresh config is still writable
    cfg = deft.make_config()
    cfg.set("lr", 0.5)
    assert cfg["lr"] == 0.5

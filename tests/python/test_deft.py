"""The ctypes binding without torch's optimizer: configuration, errors,
the ask/tell optimizer on plain buffers, and the communicators."""
import array
import ctypes

import pytest

import deft


def test_defaults_are_the_c_macro():
    d = deft.default_config()
    assert d["algo"] == "def" and d["compressor"] == "rbgs"
    assert (d["ratio"], d["lam"], d["lr"], d["momentum"]) == (256.0, 0.3, 0.1, 0.9)
    assert (d["qsgd_levels"], d["weight_decay"], d["seed"]) == (16, 0.0, 0)
    assert d["powersgd_rank"] == 1
    assert (d["dampening"], d["nesterov"]) == (0.0, 0)
    assert set(d) == {"algo", "compressor", "ratio", "scope", "randk_scaled",
                      "qsgd_levels", "lam", "lr", "momentum", "weight_decay",
                      "avg_period", "seed", "eclk_L", "eclk_mu", "eclk_p",
                      "eclk_theta1", "eclk_n", "powersgd_rank", "dampening",
                      "nesterov"}


def test_exceptions_subclass_builtins():
    assert issubclass(deft.InvalidArgument, ValueError)
    assert issubclass(deft.FormatError, ValueError)
    assert issubclass(deft.CommError, ConnectionError)
    assert issubclass(deft.DeftIOError, OSError)
    assert issubclass(deft.Diverged, ArithmeticError)
    for cls in (deft.InvalidArgument, deft.CommError, deft.Diverged):
        assert issubclass(cls, deft.DeftError)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(ratio=0.5), "ratio '0.5': must be a number >= 1"),
    (dict(algo="nope"), "algo 'nope': must be one of sgd, ef, def"),
    (dict(compressor="zip"), "compressor 'zip': must be one of none, rbgs"),
    (dict(lr=-1.0), "lr '-1.0': must be a number > 0"),
    (dict(lam=2.0), "lam '2.0': must be a number in [0, 1]"),
    (dict(momentum="fast"), "momentum 'fast': must be a number"),
    (dict(momentum=[0.9]), "momentum = [0.9]: a list"),
    (dict(colour=1), "colour: not a deft option"),
    (dict(seed=-3), "seed '-3': must be an integer >= 0"),
])
def test_bad_arguments_name_the_argument(kwargs, needle):
    with deft.Comm.single() as comm:
        with pytest.raises(ValueError) as e:
            deft.FlatOptimizer(comm, [4], array.array("f", [0.0] * 4),
                               **kwargs)
    assert needle in str(e.value), str(e.value)
    assert isinstance(e.value, deft.InvalidArgument)


def test_bad_buffers():
    comm = deft.Comm.single()
    with pytest.raises(ValueError, match="x0: 3 floats, expected 4"):
        deft.FlatOptimizer(comm, [4], array.array("f", [0.0] * 3))
    with pytest.raises(ValueError, match="format 'd'"):
        deft.FlatOptimizer(comm, [4], array.array("d", [0.0] * 4))
    opt = deft.FlatOptimizer(comm, [2, 2], array.array("f", [1.0] * 4))
    opt.ask()
    with pytest.raises(ValueError, match="grad: a list"):
        opt.tell([0.0] * 4)


def test_ask_tell_single_worker_is_momentum_sgd():
    # compressor none, lambda 0 (defa with lam=0 is EF, which with none is
    # momentum SGD): x -= lr * m, m = mu * m + g, in float32.
    x0 = array.array("f", [1.0, -2.0, 0.5])
    opt = deft.FlatOptimizer(deft.Comm.single(), [3], x0, algo="ef",
                             compressor="none", lr=0.1, momentum=0.5)
    x, m = list(x0), [0.0] * 3
    f32 = lambda v: ctypes.c_float(v).value  # noqa: E731
    for step in range(5):
        pt = opt.ask()
        assert list(pt) == x
        g = array.array("f", [2.0 * v for v in pt])
        opt.tell(g)
        m = [f32(f32(0.5 * mi) + gi) for mi, gi in zip(m, g)]
        x = [f32(xi - f32(f32(0.1) * mi)) for xi, mi in zip(x, m)]
    assert list(opt.output()) == x
    assert opt.steps == 5


def test_groups_step_each_tensor_with_its_own_hyperparameters():
    # sgd, two tensors in two groups: x -= lr_g (mu_g m + g + wd_g x) with
    # the same float32 operations for each, and Nesterov in group 1.
    f32 = lambda v: ctypes.c_float(v).value  # noqa: E731
    x0 = array.array("f", [1.0, -2.0, 0.5])
    opt = deft.FlatOptimizer(deft.Comm.single(), [2, 1], x0, algo="sgd",
                             lr=0.1)
    opt.set_groups([dict(lr=0.1, momentum=0.5, weight_decay=0.0),
                    dict(lr=0.2, momentum=0.9, nesterov=True)], [0, 1])
    assert opt.tensor_groups() == [0, 1]
    assert opt.groups()[1]["nesterov"] and opt.groups()[0]["lr"] == f32(0.1)
    x, m = list(x0), [0.0] * 3
    hyper = [(0.1, 0.5, False)] * 2 + [(0.2, 0.9, True)]
    for _ in range(4):
        pt = opt.ask()
        g = array.array("f", [2.0 * v for v in pt])
        opt.tell(g)
        for i, (lr, mu, nest) in enumerate(hyper):
            m[i] = f32(f32(f32(mu) * m[i]) + g[i])
            u = f32(g[i] + f32(f32(mu) * m[i])) if nest else m[i]
            x[i] = f32(x[i] - f32(f32(lr) * u))
    assert list(opt.output()) == x
    with pytest.raises(ValueError, match=r"groups\[1\].momentum = 1.5"):
        opt.set_groups([{}, dict(momentum=1.5)])
    with pytest.raises(ValueError, match="tensor 1 is in group 1, but there are "
                                         "1 groups"):
        opt.set_groups([{}])
    with pytest.raises(ValueError, match="unknown key"):
        opt.set_groups([dict(lam=0.1)])


def test_grown_optimizer_carries_the_state_and_leaves_the_old_one():
    opt = deft.FlatOptimizer(deft.Comm.single(), [3],
                             array.array("f", [1.0] * 3), ratio=2, lr=0.1)
    for _ in range(3):
        opt.tell(array.array("f", [v - 0.5 for v in opt.ask()]))
    old_state = opt.state_bytes()
    big = opt.grown([2], array.array("f", [7.0, 8.0]))
    assert big.dim == 5 and big.steps == 3 and big.sizes == (3, 2)
    assert list(big.ask())[:3] == list(opt.ask()) and list(big.ask())[3:] == [7, 8]
    assert list(big.error())[:3] == list(opt.error())
    assert list(big.error())[3:] == [0.0, 0.0]
    assert opt.state_bytes() == old_state
    with pytest.raises(ValueError, match="sizes"):
        opt.grown([], array.array("f"))


def test_ask_buffer_is_stable_and_refreshed_in_place():
    opt = deft.FlatOptimizer(deft.Comm.single(), [8],
                             array.array("f", [1.0] * 8), compressor="none",
                             lr=0.5)
    a = opt.point_address()
    view = opt.ask()
    before = list(view)
    opt.tell(array.array("f", [1.0] * 8))
    assert opt.point_address() == a
    assert list(view) != before  # the same view shows the next point


def test_views_outlive_the_optimizer_object():
    opt = deft.FlatOptimizer(deft.Comm.single(), [4],
                             array.array("f", [3.0] * 4), compressor="none")
    view = opt.ask()
    del opt
    import gc
    gc.collect()
    assert list(view) == [3.0] * 4  # the C optimizer is freed after the view


def test_diverged_carries_the_step():
    opt = deft.FlatOptimizer(deft.Comm.single(), [4],
                             array.array("f", [0.0] * 4))
    for step in range(3):
        opt.ask()
        opt.tell(array.array("f", [0.1] * 4))
    opt.ask()
    with pytest.raises(deft.Diverged) as e:
        opt.tell(array.array("f", [float("nan")] * 4))
    assert e.value.step == 3
    assert "diverged at step 3" in str(e.value)


def test_state_bytes_round_trip_is_bitwise():
    def run(blob=None, steps=6):
        opt = deft.FlatOptimizer(deft.Comm.single(), [5, 3],
                                 array.array("f", [0.5] * 8), ratio=2, lr=0.05)
        if blob:
            opt.load_state_bytes(blob)
        for s in range(steps):
            pt = opt.ask()
            opt.tell(array.array("f", [v * v - 0.1 * i for i, v in enumerate(pt)]))
        return opt
    full = run(steps=10)
    half = run(steps=4)
    resumed = run(blob=half.state_bytes(), steps=6)
    assert bytes(full.output()) == bytes(resumed.output())
    other = deft.FlatOptimizer(deft.Comm.single(), [8],
                               array.array("f", [0.0] * 8), algo="sgd")
    with pytest.raises(deft.FormatError, match="algorithm def"):
        other.load_state_bytes(half.state_bytes())


def test_run_threads_sums_and_reraises_the_first_own_error():
    def collectives(comm):
        buf = array.array("f", [comm.rank + 1.0] * 5)
        comm.allreduce_sum(buf)
        send = bytes([comm.rank] * 3)
        recv = bytearray(3 * comm.size)
        comm.allgather(send, recv)
        b = bytearray([comm.rank] * 2)
        comm.broadcast(b, root=comm.size - 1)
        comm.barrier()
        return list(buf), bytes(recv), bytes(b)
    out = deft.run_threads(3, collectives)
    for r in range(3):
        assert out[r] == ([6.0] * 5, bytes([0, 0, 0, 1, 1, 1, 2, 2, 2]), bytes([2, 2]))

    def fails(comm):
        if comm.rank == 2:
            raise KeyError("rank 2 gave up")
        comm.barrier()  # the others must not wait forever
    with pytest.raises(KeyError, match="rank 2 gave up"):
        deft.run_threads(4, fails)


def _train_8_steps(comm, wrap, **opts):
    """8 steps on 37 floats, over comm itself or (wrap) over Python
    callables that call comm's collectives: the output model, the bytes
    comm sent, and the last step's payload."""
    if wrap:
        inner = comm
        comm = deft.Comm.custom(inner.allreduce_sum, inner.allgather,
                                inner.broadcast, inner.barrier,
                                inner.rank, inner.size)
    opt = deft.FlatOptimizer(comm, [30, 7], array.array("f", [0.25] * 37),
                             lr=0.1, **opts)
    for s in range(8):
        pt = opt.ask()
        opt.tell(array.array("f", [v - 0.01 * ((i + comm.rank + s) % 5)
                                   for i, v in enumerate(pt)]))
    return (bytes(opt.output()), comm.stats()["bytes_sent"],
            opt.last_info.payload_bytes)


def test_custom_python_collectives_match_threads_bitwise():
    opts = dict(compressor="topk", ratio=4)
    direct = deft.run_threads(3, lambda c: _train_8_steps(c, False, **opts))
    custom = deft.run_threads(3, lambda c: _train_8_steps(c, True, **opts))
    assert [r[:2] for r in custom] == [r[:2] for r in direct]


def test_names_are_the_c_enums_in_order():
    lib = deft._lib.lib
    for names, name_of in ((deft.ALGORITHMS, lib.deft_algo_name),
                           (deft.COMPRESSORS, lib.deft_compressor_name)):
        got = [name_of(i).decode() for i in range(len(names) + 1)]
        assert got == list(names) + ["?"]


def test_randk_private_is_allgathered_and_the_same_over_custom_collectives():
    """Each worker sends its own k coordinates, as index and value: 8 bytes
    for each of the 7 + 1 kept of [30, 7] at ratio 4; every worker ends
    with the same model, over comm or over Python collectives."""
    opts = dict(algo="ef", compressor="randk-private", ratio=4)
    direct = deft.run_threads(3, lambda c: _train_8_steps(c, False, **opts))
    custom = deft.run_threads(3, lambda c: _train_8_steps(c, True, **opts))
    assert [r[:2] for r in custom] == [r[:2] for r in direct]
    assert all(r[0] == direct[0][0] and r[2] == 8 * (7 + 1) for r in direct)


def test_fp16_over_custom_collectives_is_the_same_sum_in_fp32_bytes():
    """Custom backends have no 16-bit path: deft decodes, allreduces floats
    and rounds back, which is the threads backend's sum exactly (both add
    in rank order in float and round once), at twice the bytes."""
    opts = dict(algo="ef", compressor="fp16")
    direct = deft.run_threads(3, lambda c: _train_8_steps(c, False, **opts))
    custom = deft.run_threads(3, lambda c: _train_8_steps(c, True, **opts))
    for (md, _, bd), (mc, _, bc) in zip(direct, custom):
        assert md == mc
        assert (bd, bc) == (2 * 37, 4 * 37)


def test_rows_give_powersgd_its_matrices_and_are_checked():
    comm = deft.Comm.single()
    x0 = array.array("f", [0.5] * 26)
    flat = deft.FlatOptimizer(comm, [20, 6], x0, compressor="powersgd")
    shaped = deft.FlatOptimizer(comm, [20, 6], x0, rows=[4, 0],
                                compressor="powersgd")
    for opt in (flat, shaped):
        opt.ask()
        opt.tell(array.array("f", [1.0] * 26))
    assert flat.last_info.msg_bytes == 4 * 26
    assert shaped.last_info.msg_bytes == 4 * (1 * (4 + 5) + 6)
    with pytest.raises(ValueError, match="one count >= 0 per tensor"):
        deft.FlatOptimizer(comm, [20, 6], x0, rows=[4])
    with pytest.raises(ValueError, match=r"rows\[0\] = 3 does not divide"):
        deft.FlatOptimizer(comm, [20, 6], x0, rows=[3, 0],
                           compressor="powersgd")


def test_custom_callback_failure_is_a_comm_error_naming_it():
    def boom(buf):
        raise RuntimeError("the wire is cut")
    comm = deft.Comm.custom(boom, lambda s, r: None, lambda b, root: None,
                            lambda: None, 0, 1)
    with pytest.raises(deft.CommError) as e:
        comm.allreduce_sum(array.array("f", [1.0, 2.0]))
    msg = str(e.value)
    assert "custom backend: allreduce (collective #1) failed on rank 0 of 1" in msg
    assert "RuntimeError in the Python allreduce callback: the wire is cut" in msg


def test_comm_link_model_and_stats():
    def run(comm):
        comm.set_link(1.0, 10.0)
        comm.allreduce_sum(array.array("f", [1.0] * 1000))
        s = comm.stats()
        comm.reset_stats()
        return s, comm.stats()["n_allreduce"]
    (s, after), _ = deft.run_threads(2, run)
    assert s["n_allreduce"] == 1 and s["payload_bytes"] == 4000
    assert s["bytes_sent"] == 4000  # ring: 2 (K-1)/K of the buffer
    assert s["modeled_s"] == pytest.approx(2 * (10e-6 + 4000 / (2 * 1.25e8)))
    assert after == 0


def test_watchdog_turns_a_stuck_peer_into_comm_error():
    import time

    def run(comm):
        comm.set_timeout(0.3)
        if comm.rank == 1:
            time.sleep(1.5)  # stuck past the others' timeout
        comm.barrier()
    with pytest.raises(deft.CommError, match=r"collective watchdog: barrier "
                       r"\(collective #1\) on rank 0 of 2 .*\(timeout 0.3 s\)"):
        deft.run_threads(2, run)
    # A custom engine's callbacks cannot be interrupted.
    comm = deft.Comm.custom(lambda b: None, lambda s, r: None,
                            lambda b, root: None, lambda: None, 0, 2)
    with pytest.raises(deft.Unsupported, match="engine's own timeout"):
        comm.set_timeout(5)
    with pytest.raises(deft.InvalidArgument, match="seconds = -1"):
        comm.set_timeout(-1)

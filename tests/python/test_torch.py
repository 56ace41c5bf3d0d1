"""deft.torch: the optimizer against the C path, over Gloo and MPI, DEF's
path property, state round trips, argument errors, and the example against
`deft train`."""
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deft
import deft.torch
from conftest import ROOT, build_dir
from dist_common import train_steps

HERE = os.path.dirname(os.path.abspath(__file__))


_init_lock = threading.Lock()


def mlp(seed=0):
    # torch's global generator is shared by the worker threads: seeding
    # and drawing under a lock makes every thread's model the same.
    with _init_lock:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


def grad_at(point, rank, step):
    """A gradient that depends on the point, computed the same way on both
    paths: a quadratic's pull towards a target drawn from (rank, step)."""
    g = torch.Generator().manual_seed(7919 * rank + step)
    return 0.5 * point - torch.randn(point.shape, generator=g)


def max_rel(a, b, floor=1e-3):
    return ((a - b).abs() / b.abs().clamp(min=floor)).max().item()


# -- the same gradients through deft.torch and through the C ask/tell ------------
@pytest.mark.parametrize("algo, compressor", [("def", "rbgs"), ("defa", "topk"),
                                              ("psync", "rbgs"), ("ef21", "sign"),
                                              ("ef", "powersgd"), ("def", "fp16"),
                                              ("ef21", "powersgd")])
def test_torch_optimizer_equals_c_path_bitwise(algo, compressor):
    K, steps = 3, 15
    # ef21 has no momentum: deft.torch refuses one rather than ignore it
    opts = dict(algo=algo, compressor=compressor, ratio=4, lr=0.05,
                weight_decay=1e-3, seed=11,
                momentum=0.0 if algo == "ef21" else 0.9)
    if compressor == "powersgd":
        opts["powersgd_rank"] = 2
    shapes = [tuple(p.shape) for p in mlp().parameters()]
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    rows = [s[0] if len(s) >= 2 else 0 for s in shapes]

    def c_path(comm):
        x0 = torch.cat([p.detach().reshape(-1) for p in mlp().parameters()])
        opt = deft.FlatOptimizer(comm, sizes, x0, rows=rows, **opts)
        for s in range(steps):
            pt = torch.frombuffer(opt.ask(), dtype=torch.float32)
            opt.tell(grad_at(pt, comm.rank, s).contiguous())
        return bytes(opt.output()), comm.stats()["bytes_sent"]

    def torch_path(comm):
        model = mlp()
        opt = deft.torch.Optimizer(model.parameters(), comm=comm, **opts)
        for s in range(steps):
            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            g = grad_at(flat, comm.rank, s)
            off = 0
            for p in model.parameters():
                p.grad.copy_(g[off:off + p.numel()].view_as(p))
                off += p.numel()
            opt.step()
        out = torch.empty(opt.deft.dim)
        opt.deft.output(out)
        return bytes(out.numpy().tobytes()), comm.stats()["bytes_sent"]

    c = deft.run_threads(K, c_path)
    t = deft.run_threads(K, torch_path)
    assert t == c


def test_parameters_and_grads_are_views_and_step_copies_nothing():
    model = mlp()
    opt = deft.torch.Optimizer(model.parameters(), ratio=4, lr=0.1)
    base = opt.flat_params.data_ptr()
    gbase = opt.flat_grad.data_ptr()
    off = 0
    for p in model.parameters():
        assert p.data_ptr() == base + 4 * off
        assert p.grad.data_ptr() == gbase + 4 * off
        off += p.numel()
    F.cross_entropy(model(torch.randn(8, 12)), torch.arange(8) % 4).backward()
    grads = [p.grad for p in model.parameters()]
    opt.step()
    assert [p.grad for p in model.parameters()] == grads  # same objects
    assert all(p.data_ptr() == q for p, q in zip(
        model.parameters(), [base + 4 * o for o in (0, 192, 208, 272)]))


def test_zero_grad_set_to_none_gives_the_same_run():
    def run(set_to_none):
        model = mlp()
        opt = deft.torch.Optimizer(model.parameters(), ratio=4, lr=0.1)
        for s in range(10):
            opt.zero_grad(set_to_none=set_to_none)
            if set_to_none:
                assert all(p.grad is None for p in model.parameters())
            g = torch.Generator().manual_seed(s)
            F.cross_entropy(model(torch.randn(8, 12, generator=g)),
                            torch.randint(0, 4, (8,), generator=g)).backward()
            opt.step()
        return opt.flat_params.clone()
    assert torch.equal(run(False), run(True))


# -- DEF's path property through the torch optimizer -------------------------------
def test_def_output_follows_the_uncompressed_path():
    """With momentum 0, y = x - avg(e) obeys y_{t+1} = y_t - lr avg_k g_k
    exactly in exact arithmetic (DEF paper, eq. 8); the stepped x does not."""
    K, steps, lr = 3, 25, 0.05

    def worker(comm):
        model = mlp()
        opt = deft.torch.Optimizer(model.parameters(), comm=comm, algo="def",
                                   ratio=16, lr=lr, momentum=0.0)
        y = torch.empty(opt.deft.dim)
        opt.deft.output(y)
        ref = y.double()
        worst = worst_x = 0.0
        for s in range(steps):
            g = grad_at(opt.flat_params.detach(), comm.rank, s)
            off = 0
            for p in model.parameters():
                p.grad.copy_(g[off:off + p.numel()].view_as(p))
                off += p.numel()
            gsum = g.clone()
            comm.allreduce_sum(gsum)
            ref = ref - lr * gsum.double() / K
            opt.step()
            opt.deft.output(y)
            x = torch.tensor(opt.deft.params())
            worst = max(worst, max_rel(y.double(), ref, floor=1.0))
            worst_x = max(worst_x, max_rel(x.double(), ref, floor=1.0))
        return worst, worst_x
    for worst, worst_x in deft.run_threads(K, worker):
        print("output vs path %g, x vs path %g" % (worst, worst_x))
        assert worst < 1e-5, "output model left the path by %g" % worst
        assert worst_x > 1e-2, "control: x should not follow it (%g)" % worst_x


# -- evaluation ---------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:evaluating")
def test_evaluating_puts_the_output_model_in_and_restores_bitwise():
    def worker(comm):
        with _init_lock:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                  nn.Linear(8, 2))
        opt = deft.torch.Optimizer(model.parameters(), comm=comm, ratio=2, lr=0.1)
        for s in range(5):
            opt.zero_grad()
            x = torch.randn(16, 6, generator=torch.Generator().manual_seed(
                10 * comm.rank + s))
            model(x).pow(2).mean().backward()
            opt.step()
        before = opt.flat_params.clone()
        out = torch.empty_like(before)
        opt.deft.output(out)
        rm = model[1].running_mean.clone()
        with opt.evaluating(model):  # (warns: see test_torch_idioms.py)
            inside = opt.flat_params.clone()
            assert not model.training
            avg = model[1].running_mean.clone()
        assert model.training
        assert torch.equal(model[1].running_mean, avg)  # kept, as deft train
        return before, opt.flat_params.clone(), inside, out, rm, avg
    res = deft.run_threads(2, worker)
    for before, after, inside, out, rm, avg in res:
        assert torch.equal(before, after)
        assert torch.equal(inside, out)
        assert not torch.equal(inside, before)  # DEF: x - avg(e) differs
        assert torch.allclose(avg, (res[0][4] + res[1][4]) / 2, atol=1e-7)
    assert not torch.equal(res[0][4], res[1][4])


# -- schedulers and state -----------------------------------------------------------
def test_lr_scheduler_drives_deft():
    model = mlp()
    opt = deft.torch.Optimizer(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    seen = []
    for s in range(7):
        opt.zero_grad()
        model(torch.randn(4, 12)).sum().backward()
        opt.step()
        seen.append(opt.deft.lr)
        sched.step()
    want = [0.1] * 3 + [0.05] * 3 + [0.025]
    assert seen == pytest.approx(want, rel=1e-6)


def test_powersgd_and_fp16_message_sizes():
    """deft.torch gives powersgd the weights' shapes: rank r (out + in)
    floats per weight plus the biases; fp16 sends half of none's bytes."""
    model = mlp()  # Linear(12, 16), Linear(16, 4)
    for comp, extra, want in [("powersgd", dict(powersgd_rank=2),
                               4 * (2 * (16 + 12) + 16 + 2 * (4 + 16) + 4)),
                              ("powersgd", dict(powersgd_rank=3),
                               # 3 (4 + 16) = 60 < 64 still pays off
                               4 * (3 * (16 + 12) + 16 + 3 * (4 + 16) + 4)),
                              ("fp16", {}, 2 * (192 + 16 + 64 + 4)),
                              ("bf16", {}, 2 * (192 + 16 + 64 + 4)),
                              ("none", {}, 4 * (192 + 16 + 64 + 4))]:
        opt = deft.torch.Optimizer(model.parameters(), algo="ef", compressor=comp,
                                   lr=0.1, **extra)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        assert opt.last_step_info["msg_bytes"] == want, comp


@pytest.mark.parametrize("compressor", ["rbgs", "powersgd"])
def test_state_dict_round_trip_through_torch_save_is_bitwise(compressor):
    def data(s):
        g = torch.Generator().manual_seed(s)
        return torch.randn(8, 12, generator=g), torch.randint(0, 4, (8,), generator=g)

    def steps(model, opt, sched, a, b):
        for s in range(a, b):
            x, y = data(s)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()

    def make():
        model = mlp()
        opt = deft.torch.Optimizer(model.parameters(), ratio=4, lr=0.1,
                                   weight_decay=1e-4, compressor=compressor)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.3)
        return model, opt, sched

    model, opt, sched = make()
    steps(model, opt, sched, 0, 12)
    want = opt.flat_params.clone()

    model, opt, sched = make()
    steps(model, opt, sched, 0, 6)
    f = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, f)
    f.seek(0)
    saved = torch.load(f)
    model2, opt2, sched2 = make()
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert torch.equal(opt2.flat_params, opt.flat_params)  # the point is back
    steps(model2, opt2, sched2, 6, 12)
    assert torch.equal(opt2.flat_params, want)


def test_state_from_another_run_is_refused():
    sd = deft.torch.Optimizer(mlp().parameters(), ratio=4, lr=0.1).state_dict()
    other_algo = deft.torch.Optimizer(mlp().parameters(), algo="defa", ratio=4,
                                      lr=0.1)
    with pytest.raises(ValueError, match="algo 'def', this optimizer runs 'defa'"):
        other_algo.load_state_dict(sd)
    with _init_lock:
        torch.manual_seed(0)
        wider = nn.Sequential(nn.Linear(12, 17), nn.ReLU(), nn.Linear(17, 4))
    with pytest.raises(deft.FormatError, match=r"parameter 0 \(\(16, 12\) vs \(17, 12\)\)"):
        deft.torch.Optimizer(wider.parameters(), ratio=4, lr=0.1).load_state_dict(sd)

    def two(comm):
        opt = deft.torch.Optimizer(mlp().parameters(), comm=comm, ratio=4, lr=0.1)
        with pytest.raises(deft.FormatError, match="saved by 1 workers, this "
                                                   "optimizer has 2; .*"
                                                   "reshard_state_dicts"):
            opt.load_state_dict(sd)
    deft.run_threads(2, two)
    with pytest.raises(deft.FormatError, match="not a deft.torch.Optimizer"):
        other_algo.load_state_dict(torch.optim.SGD(mlp().parameters(), lr=1).state_dict())


# -- re-sharding: continue a run of 4 workers on 3 -----------------------------------
def _reshard_run(K, steps, states=None, step0=0):
    """K workers of DEF (two param groups, a scheduler) on per-rank data;
    from `states` when given. Returns per rank: state_dict, output model
    right after loading, output model at the end, loss at the start and
    end of the steps."""
    def worker(comm):
        r = comm.rank
        model = mlp()
        params = list(model.parameters())
        opt = deft.torch.Optimizer(
            [{"params": params[:2]},
             {"params": params[2:], "weight_decay": 0.0, "lr": 0.05}],
            comm=comm, lr=0.1, momentum=0.9, weight_decay=1e-3, ratio=8,
            algo="def", seed=5)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        if states is not None:  # (the lr as saved; the scheduler goes on)
            opt.load_state_dict(states[r])
        first = list(opt.deft.output())

        def loss_at(s):
            g = torch.Generator().manual_seed(100 * s + r)
            x = torch.randn(16, 12, generator=g)
            y = (x[:, :4].argmax(1))
            return F.cross_entropy(model(x), y)
        losses = []
        for s in range(step0, step0 + steps):
            opt.zero_grad()
            loss = loss_at(s)
            losses.append(loss.item())
            loss.backward()
            opt.step()
            sched.step()
        return opt.state_dict(), first, list(opt.deft.output()), losses
    return deft.run_threads(K, worker)


def test_state_dicts_reshard_from_4_workers_to_3_and_train_on():
    before = _reshard_run(4, 10)
    sds = [r[0] for r in before]
    out_before = before[0][2]  # DEF's output x - avg(e) after 10 steps
    with pytest.raises(deft.FormatError, match="saved by 4 workers, this "
                                               "optimizer has 3"):
        _reshard_run(3, 1, states=sds)
    for rule in ("mean", "zero"):
        three = deft.torch.reshard_state_dicts(list(reversed(sds)), 3, rule=rule)
        assert [sd["state"]["deft"]["rank"] for sd in three] == [0, 1, 2]
        assert all(sd["state"]["deft"]["workers"] == 3 for sd in three)
        after = _reshard_run(3, 30, states=three, step0=10)
        first = after[0][1]
        if rule == "mean":  # the output model is kept (to float rounding)
            assert max_rel(torch.tensor(first), torch.tensor(out_before),
                           floor=1.0) < 1e-6
        else:  # the errors are gone: the output is x, another model
            assert max_rel(torch.tensor(first), torch.tensor(out_before),
                           floor=1.0) > 1e-6
        start = sum(r[3][0] for r in after) / 3
        end = sum(sum(r[3][-5:]) / 5 for r in after) / 3
        assert end < start, (rule, start, end)
    # the same count is the identity
    same = deft.torch.reshard_state_dicts(sds, 4)
    assert [sd["state"]["deft"]["blob"] for sd in same] == \
        [sd["state"]["deft"]["blob"] for sd in sds]


def test_reshard_state_dicts_refuses_what_it_cannot_honour():
    sds = [r[0] for r in _reshard_run(2, 2)]
    with pytest.raises(deft.FormatError, match="ranks \\[0\\]"):
        deft.torch.reshard_state_dicts(sds[:1], 1)
    with pytest.raises(deft.InvalidArgument, match=r"k_out = 0, must be in "
                                                   r"\[1, 1024\]"):
        deft.torch.reshard_state_dicts(sds, 0)
    with pytest.raises(deft.InvalidArgument, match="rule='half'"):
        deft.torch.reshard_state_dicts(sds, 1, rule="half")
    with pytest.raises(deft.FormatError, match="not a deft.torch"):
        deft.torch.reshard_state_dicts([{}, sds[1]], 1)
    bad = [dict(sd) for sd in sds]
    meta = dict(bad[1]["state"]["deft"])
    blob = bytearray(meta["blob"])
    blob[len(blob) // 2] ^= 1
    meta["blob"] = bytes(blob)
    bad[1] = {"state": {"deft": meta}, "param_groups": sds[1]["param_groups"]}
    with pytest.raises(deft.FormatError, match="corrupt"):
        deft.torch.reshard_state_dicts(bad, 1)


# -- bad arguments --------------------------------------------------------------------
def test_bad_parameters_and_options_raise_value_error_naming_them():
    def make(params, **kw):
        return deft.torch.Optimizer(params, **dict(dict(lr=0.1), **kw))
    with pytest.raises(ValueError, match="parameter 0 .* dtype torch.float64"):
        make(mlp().double().parameters())
    with pytest.raises(ValueError, match="is on meta"):
        make([torch.empty(3, device="meta", requires_grad=True)])
    sparse = torch.sparse_coo_tensor([[0]], [1.0], (4,)).requires_grad_()
    with pytest.raises(ValueError, match="is sparse"):
        make([sparse])
    with pytest.raises(ValueError, match="ratio '0.5': must be a number >= 1"):
        make(mlp().parameters(), ratio=0.5)
    with pytest.raises(ValueError, match="algo 'sgdd': must be one of sgd, "):
        make(mlp().parameters(), algo="sgdd")
    with pytest.raises(ValueError, match="colour: not a deft option"):
        make(mlp().parameters(), colour="red")
    with pytest.raises(ValueError, match="required optimization parameter lr"):
        deft.torch.Optimizer(mlp().parameters())
    with pytest.raises(ValueError, match="no parameter that requires grad"):
        make(mlp().requires_grad_(False).parameters())
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['momentum'\] = "
                                         r"1.5, must be a number in \[0, 1\)"):
        make(mlp().parameters(), momentum=1.5)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['nesterov'\] = 1 "
                                         "needs momentum > 0 and dampening 0"):
        make(mlp().parameters(), nesterov=True, momentum=0.9, dampening=0.1)
    with pytest.raises(ValueError, match="'differentiable'] = True"):
        make(mlp().parameters(), differentiable=True)
    with pytest.raises(ValueError, match="ef21 has no momentum"):
        make(mlp().parameters(), algo="ef21", momentum=0.9)
    with pytest.raises(ValueError, match="algo = 'eclk'"):
        make(mlp().parameters(), algo="eclk")
    m = mlp()
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['lam'\] = 0.5, but "
                                         "the optimizer has lam = 0.3"):
        make([{"params": m[0].parameters()},
              {"params": m[2].parameters(), "lam": 0.5}])
    opt = make([{"params": m[0].parameters()}, {"params": m[2].parameters()}])
    opt.param_groups[1]["weight_decay"] = -1.0  # as a scheduler might set it
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['weight_decay'\] "
                                         "= -1, must be a number >= 0"):
        opt.step()
    opt.param_groups[1]["weight_decay"] = 0.0
    opt.param_groups[1]["ratio"] = 16.0
    with pytest.raises(ValueError, match="deft's ratio is one for all groups"):
        opt.step()


def test_diverged_is_raised_with_the_step():
    model = mlp()
    opt = deft.torch.Optimizer(model.parameters(), lr=0.1)
    opt.step()
    for p in model.parameters():
        p.grad.fill_(float("inf"))
    with pytest.raises(deft.Diverged) as e:
        opt.step()
    assert e.value.step == 1


# -- Gloo and MPI processes against run_threads ------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def threads_reference(K):
    out = {}
    for c in ("rbgs", "topk"):
        model, nbytes, _ = deft.run_threads(K, train_steps, c)[0]
        out[c] = (model, nbytes)
    return out


def check_against_threads(got, K):
    want = threads_reference(K)
    for c in ("rbgs", "topk"):
        model, nbytes = got[c]
        ref, ref_bytes = want[c]
        assert nbytes == ref_bytes, "%s: %d bytes vs %d" % (c, nbytes, ref_bytes)
        assert max_rel(model, ref) <= 1e-3, c
        assert not torch.equal(model, torch.zeros_like(model))


def run_ranks(cmds, envs, timeout=180):
    procs = [subprocess.Popen(c, env=e, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for c, e in zip(cmds, envs)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, "rank failed (%d):\n%s\n%s" % (p.returncode, o, e)
        assert "terminate called" not in e, e
    return outs


@pytest.mark.parametrize("K", [2, 4])
def test_gloo_processes_match_threads(tmp_path, K):
    out = tmp_path / "gloo.pt"
    port = str(free_port())
    envs = [dict(os.environ, RANK=str(r), WORLD_SIZE=str(K),
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for r in range(K)]
    cmd = [sys.executable, os.path.join(HERE, "dist_worker.py"), "gloo", str(out)]
    run_ranks([cmd] * K, envs)
    check_against_threads(torch.load(out), K)


def mpirun():
    exe = os.environ.get("DEFT_MPIEXEC") or shutil.which("mpirun")
    if not exe or not deft.have_mpi():
        pytest.fail("no MPI: build deft with Open MPI (scripts/install-deps.sh)")
    return [exe, "--oversubscribe", "--bind-to", "none"]


def test_mpi_processes_match_threads(tmp_path):
    out = tmp_path / "mpi.pt"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    run_ranks([mpirun() + ["-np", "2", sys.executable,
                           os.path.join(HERE, "dist_worker.py"), "mpi", str(out)]],
              [env])
    check_against_threads(torch.load(out), 2)


# -- the example against deft train --------------------------------------------------------
def final_record(path):
    with open(path) as f:
        recs = [json.loads(line) for line in f]
    assert recs[-1]["final"] and recs[-1]["status"] == "ok", recs[-1]
    return recs


def test_example_lenet_lands_near_deft_train(tmp_path):
    """Two epochs of LeNet with DEF (ratio 64, lr 0.05, 4 workers), mean over
    three seeds. One epoch (from PyTorch's initialization) leaves a seed
    moving either tool by one to two points, too much for the mean of
    three to separate; two epochs, ending at the decayed rate, by a few
    tenths (measured: torch 84.9-85.1, deft 85.3-86.3)."""
    cli = os.environ.get("DEFT_CLI", os.path.join(build_dir(), "deft"))
    common = ["--epochs", "2", "--workers", "4", "--ratio", "64", "--lr", "0.05"]
    torch_acc, deft_acc = [], []
    for seed in (0, 1, 2):
        tlog, dlog = tmp_path / ("t%d" % seed), tmp_path / ("d%d" % seed)
        subprocess.run([sys.executable, os.path.join(ROOT, "examples", "torch_fmnist.py"),
                        *common, "--seed", str(seed), "--quiet", "--log", str(tlog)],
                       check=True, timeout=300)
        subprocess.run([cli, "train", *common, "--seed", str(seed), "--log", str(dlog)],
                       check=True, timeout=300, stdout=subprocess.DEVNULL)
        t, d = final_record(tlog), final_record(dlog)
        for key in ("epoch", "step", "train_loss", "test_loss", "test_acc",
                    "bytes_per_worker", "payload_bytes_per_worker", "lr",
                    "wall_s", "compute_s", "comm_modeled_s", "modeled_s"):
            assert key in t[0], key
        assert t[0]["bytes_per_worker"] == d[0]["bytes_per_worker"]
        for key in ("algo", "compressor", "workers", "model", "init",
                    "bn_stats"):  # the run described as deft train does
            assert t[0][key] == d[0][key], (key, t[0][key], d[0][key])
        torch_acc.append(t[-1]["test_acc"])
        deft_acc.append(d[-1]["test_acc"])
    gap = abs(sum(torch_acc) - sum(deft_acc)) / 3
    print("torch %s deft %s gap %.4f" % (torch_acc, deft_acc, gap))
    assert gap <= 0.01, (torch_acc, deft_acc)
    assert min(torch_acc) > 0.75  # and it did learn


def test_example_runs_over_gloo_and_mpi(tmp_path):
    script = os.path.join(ROOT, "examples", "torch_fmnist.py")
    args = ["--epochs", "1", "--limit-train", "2560", "--limit-test", "500",
            "--quiet"]
    port = str(free_port())
    glog = tmp_path / "gloo.jsonl"
    envs = [dict(os.environ, RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=port) for r in range(2)]
    run_ranks([[sys.executable, script, *args, "--log", str(glog)]] * 2, envs)
    g = final_record(glog)
    mlog = tmp_path / "mpi.jsonl"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    run_ranks([mpirun() + ["-np", "2", sys.executable, script, *args, "--log",
                           str(mlog)]], [env])
    m = final_record(mlog)
    assert g[0]["workers"] == m[0]["workers"] == 2
    assert g[0]["bytes_per_worker"] == m[0]["bytes_per_worker"] > 0
    assert abs(g[-1]["test_acc"] - m[-1]["test_acc"]) < 0.05


def test_mpi_rank_that_raises_ends_the_job(tmp_path):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # A hang would end in subprocess.TimeoutExpired, a failure.
    p = subprocess.run(mpirun() + ["-np", "2", sys.executable,
                                   os.path.join(HERE, "mpi_fail_worker.py")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "rank 1 gives up" in p.stderr
    assert "passed the barrier" not in p.stdout

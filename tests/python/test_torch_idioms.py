"""deft.torch with the idioms of ordinary training scripts, beyond the
parity runs of test_torch_parity.py: frozen parameters, maximize, missing
gradients, add_param_group that fails or adds frozen tensors, a state
saved after a layer was unfrozen, and BatchNorm statistics at the output
model (evaluating(model, recalibrate=...))."""
import copy
import io
import itertools
import threading
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deft
import deft.torch

_lock = threading.Lock()


def net(bn=False, seed=0):
    with _lock:  # run_threads' workers share torch's global generator
        torch.manual_seed(seed)
        layers = [nn.Linear(6, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + \
            [nn.ReLU(), nn.Linear(8, 3)]
        return nn.Sequential(*layers)


def data(rank, step):
    g = torch.Generator().manual_seed(7919 * rank + step)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def train(model, opt, steps, rank=0, first=0):
    for s in range(first, first + steps):
        x, y = data(rank, s)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_frozen_parameters_stay_out_of_deft_and_unchanged():
    model = net()
    model[0].requires_grad_(False)
    w0 = model[0].weight.detach().clone()
    opt = deft.torch.Optimizer(model.parameters(), lr=0.1, momentum=0.9,
                               weight_decay=1e-2, ratio=4)
    assert opt.deft.dim == 8 * 3 + 3, opt.deft.dim  # the head only
    train(model, opt, 5)
    assert torch.equal(model[0].weight.detach(), w0)
    assert model[0].weight.grad is None
    assert opt.state_dict()["state"]["deft"]["order"] == [2, 3]


def test_maximize_is_sgd_on_the_negated_gradient():
    model = net()
    ref = copy.deepcopy(model)

    def groups(m):
        return [{"params": m[0].parameters(), "maximize": True},
                {"params": m[2].parameters()}]
    opt = deft.torch.Optimizer(groups(model), algo="sgd", compressor="none",
                               lr=0.05, momentum=0.9, weight_decay=1e-3)
    ref_opt = torch.optim.SGD(groups(ref), lr=0.05, momentum=0.9,
                              weight_decay=1e-3)
    train(model, opt, 10)
    train(ref, ref_opt, 10)
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()
    x, y = data(0, 0)  # the gradient .grad shows is the loss's, not negated
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    g = model[0].weight.grad.clone()
    opt.step()
    assert torch.equal(model[0].weight.grad, g)


def test_a_parameter_without_gradient_raises_and_says_what_to_do():
    model = net()
    opt = deft.torch.Optimizer(model.parameters(), lr=0.1)
    opt.zero_grad(set_to_none=True)
    x, _ = data(0, 0)
    model[0](x).sum().backward()  # the head gets no gradient
    with pytest.raises(deft.UsageError, match=r"parameter 2 has no gradient.*"
                                              r"set_to_none=False"):
        opt.step()
    assert opt.deft.steps == 0


def test_add_param_group_that_deft_cannot_honour_is_not_added():
    model = net()
    opt = deft.torch.Optimizer(model[0].parameters(), lr=0.1, momentum=0.9)
    train(model, opt, 3)
    dim, point = opt.deft.dim, opt.flat_params.clone()
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['momentum'\] = 2"):
        opt.add_param_group({"params": model[2].parameters(), "momentum": 2.0})
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['algo'\] = 'ef'"):
        opt.add_param_group({"params": model[2].parameters(), "algo": "ef"})
    with pytest.raises(ValueError, match="dtype torch.float64"):
        opt.add_param_group({"params": [torch.zeros(3, dtype=torch.float64,
                                                    requires_grad=True)]})
    assert len(opt.param_groups) == 1 and opt.deft.dim == dim
    head_w = model[2].weight.detach().clone()
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.2})
    assert opt.deft.dim == dim + 8 * 3 + 3
    assert torch.equal(opt.flat_params[:dim], point)  # carried bitwise
    assert torch.equal(model[2].weight.detach(), head_w)
    train(model, opt, 1, first=3)
    assert not torch.equal(model[2].weight.detach(), head_w)  # it trains
    assert opt.deft.groups()[1]["lr"] == pytest.approx(0.2)
    assert opt.deft.tensor_groups() == [0, 0, 1, 1]


def test_add_param_group_of_frozen_parameters_keeps_them_out():
    model = net()
    opt = deft.torch.Optimizer(model[0].parameters(), lr=0.1)
    model[2].requires_grad_(False)
    opt.add_param_group({"params": model[2].parameters()})
    assert opt.deft.dim == 8 * 6 + 8
    w = model[2].weight.detach().clone()
    train(model, opt, 2)
    assert torch.equal(model[2].weight.detach(), w)


def test_state_saved_after_unfreezing_loads_into_a_frozen_model():
    """The saved run unfroze the first layer at step 3; an optimizer made
    as at the start (first layer frozen) takes the state, adds the layer,
    and continues bitwise."""
    def make():
        model = net()
        model[0].weight.requires_grad_(False)
        opt = deft.torch.Optimizer(model.parameters(), lr=0.1, momentum=0.9,
                                   dampening=0.2, ratio=4, weight_decay=1e-3)
        return model, opt

    model, opt = make()
    train(model, opt, 3)
    model[0].weight.requires_grad_(True)
    train(model, opt, 3, first=3)
    f = io.BytesIO()
    torch.save(opt.state_dict(), f)
    train(model, opt, 4, first=6)
    want = [p.detach().clone() for p in model.parameters()]

    model2, opt2 = make()
    f.seek(0)
    opt2.load_state_dict(torch.load(f))
    assert opt2.deft.dim == opt.deft.dim
    model2[0].weight.requires_grad_(True)
    train(model2, opt2, 4, first=6)
    for a, b in zip(model2.parameters(), want):
        assert torch.equal(a.detach(), b)

    other, opt3 = make()  # a state whose extra tensor is not frozen here
    sd = opt.state_dict()
    sd["state"]["deft"]["order"] = [1, 2, 3, 1]
    with pytest.raises(deft.FormatError, match="holds parameters"):
        opt3.load_state_dict(sd)


def bn_input_stats(model, batches):
    """What recalibration must give: the mean over batches of the batch
    mean and unbiased variance of model[1]'s input."""
    means, vars_ = [], []
    with torch.no_grad():
        for x, _ in batches:
            h = model[0](x)
            means.append(h.mean(0))
            vars_.append(h.var(0, unbiased=True))
    return torch.stack(means).mean(0), torch.stack(vars_).mean(0)


def test_recalibrate_computes_bn_statistics_at_the_output_model():
    model = net(bn=True)
    opt = deft.torch.Optimizer(model.parameters(), lr=0.1, momentum=0.9,
                               ratio=4, lam=0.5)
    train(model, opt, 6)
    bn = model[1]
    running = (bn.running_mean.clone(), bn.running_var.clone(),
               bn.num_batches_tracked.clone())
    batches = [data(0, 100 + i) for i in range(3)]
    out = copy.deepcopy(model)
    with torch.no_grad():
        flat = torch.empty(opt.deft.dim)
        opt.deft.output(flat)
        torch.nn.utils.vector_to_parameters(flat, out.parameters())
    mean, var = bn_input_stats(out, batches)
    with opt.evaluating(model, recalibrate=iter(batches)):
        assert not model.training
        assert torch.allclose(bn.running_mean, mean, atol=1e-6)
        assert torch.allclose(bn.running_var, var, rtol=1e-5)
        assert bn.num_batches_tracked.item() == 3
        assert bn.momentum == 0.1
    assert model.training
    assert torch.equal(bn.running_mean, running[0])
    assert torch.equal(bn.running_var, running[1])
    assert torch.equal(bn.num_batches_tracked, running[2])


def test_recalibrated_statistics_are_averaged_over_the_workers():
    def worker(comm):
        model = net(bn=True)
        opt = deft.torch.Optimizer(model.parameters(), comm=comm, lr=0.1,
                                   momentum=0.9, ratio=4)
        train(model, opt, 4, rank=comm.rank)
        mine = [data(comm.rank, 100 + i) for i in range(2)]
        out = copy.deepcopy(model)
        flat = torch.empty(opt.deft.dim)
        opt.deft.output(flat)
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(flat, out.parameters())
        local = bn_input_stats(out, mine)
        with opt.evaluating(model, recalibrate=mine):
            got = (model[1].running_mean.clone(), model[1].running_var.clone())
        return local, got
    res = deft.run_threads(2, worker)
    for _, (mean, var) in res:
        assert torch.allclose(mean, (res[0][0][0] + res[1][0][0]) / 2, atol=1e-6)
        assert torch.allclose(var, (res[0][0][1] + res[1][0][1]) / 2, rtol=1e-5)
    assert not torch.equal(res[0][0][0], res[1][0][0])


def test_evaluating_warns_once_when_running_stats_describe_another_model():
    model = net(bn=True)
    opt = deft.torch.Optimizer(model.parameters(), lr=0.1, ratio=4)  # def
    train(model, opt, 2)
    with pytest.warns(UserWarning, match="recalibrate="):
        with opt.evaluating(model):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with opt.evaluating(model):  # once per optimizer
            pass
        with opt.evaluating(model, recalibrate=itertools.islice(
                (data(0, i) for i in itertools.count()), 2)):
            pass
        sgd_model = net(bn=True)
        sgd = deft.torch.Optimizer(sgd_model.parameters(), lr=0.1, algo="sgd")
        train(sgd_model, sgd, 2)
        with sgd.evaluating(sgd_model):  # its output is the training point
            pass


def test_the_readme_example_runs_and_learns():
    """The README's "From PyTorch" block, as a user pastes it (from the
    clone's root): it must run and its DEF model must beat chance (0.1)."""
    import os
    import re
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    readme = open(os.path.join(root, "README.md")).read()
    block = re.search(r"## From PyTorch.*?```python\n(.*?)```", readme,
                      re.S).group(1)
    out = subprocess.run([sys.executable, "-c", "import torch; "
                          "torch.manual_seed(0)\n" + block], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    acc = float(out.stdout.rsplit(":", 1)[1])
    assert acc > 0.3, out.stdout

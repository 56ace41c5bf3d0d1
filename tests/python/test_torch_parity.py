"""deft.torch.Optimizer against torch itself: algo="sgd", compressor="none"
against torch.optim.SGD through the usual training idioms (param groups,
schedulers, frozen and late parameters, add_param_group, clipping,
accumulation), and the compressed algorithms against their restatement in
torch (parity_cases.Restatement), on one worker and on two Gloo
processes (parity_worker.py)."""
import os
import socket
import subprocess
import sys

import pytest
import torch

import parity_cases as pc

HERE = os.path.dirname(os.path.abspath(__file__))


def over(what, rel, tol):
    return "%s: relative error %.3g > threshold %.0e" % (what, rel, tol)


# -- one worker -------------------------------------------------------------------
# SequentialLR itself passes an epoch to its schedulers (torch 1.13)
@pytest.mark.filterwarnings("ignore:The epoch parameter")
@pytest.mark.parametrize("case", pc.CASES, ids=repr)
def test_sgd_matches_torch_sgd_one_worker(case):
    rel, problems = pc.run_parity(case)
    assert not problems, "%s: %s" % (case.name, "; ".join(problems))
    assert rel <= pc.SGD_TOL, over(case.name, rel, pc.SGD_TOL)


@pytest.mark.parametrize("algo", pc.RESTATED_ALGOS)
def test_compressed_matches_restatement_one_worker(algo):
    got = pc.run_restated(algo)
    for what, rel in got.items():
        assert rel <= pc.RESTATED_TOL, over("%s %s" % (algo, what), rel,
                                            pc.RESTATED_TOL)


def test_nesterov_without_momentum_raises():
    """As torch.optim.SGD; with momentum the same call is accepted (so the
    ValueError is not about an unknown option)."""
    pc.make_deft(pc.net().parameters(), algo="sgd", compressor="none", lr=0.1,
                 momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="(?i)nesterov"):
        pc.make_deft(pc.net().parameters(), algo="sgd", compressor="none",
                     lr=0.1, momentum=0.0, nesterov=True)


# -- the restatements themselves (torch only) --------------------------------------
@pytest.mark.parametrize("algo", pc.RESTATED_ALGOS)
def test_restatement_with_ratio_1_is_sgd(algo):
    """C(v) = v leaves no error: every algorithm is then momentum SGD (ef21
    without momentum), point and output alike."""
    got = pc.run_restated(algo, ratio=1.0, against="sgd")
    for what, rel in got.items():
        assert rel <= pc.SGD_TOL, over("%s %s" % (algo, what), rel, pc.SGD_TOL)


@pytest.mark.parametrize("algo", [a for a in pc.RESTATED_ALGOS if a != "psync"])
def test_restatement_with_ratio_8_is_not_sgd(algo):
    """...and with C(v) = v / 8 the point or the output moves away from
    SGD's (on one worker saef's point, x - e, is SGD's: DEF paper, Lemma
    C.1): the restatement tests compare something compression changes."""
    got = pc.run_restated(algo, against="sgd")
    assert max(got.values()) > 1e-4, got


# -- two Gloo processes ----------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory):
    """parity_worker.py on 2 Gloo ranks, once for all the keys."""
    K = 2
    out = tmp_path_factory.mktemp("parity") / "gloo.pt"
    port = str(free_port())
    envs = [dict(os.environ, RANK=str(r), WORLD_SIZE=str(K),
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for r in range(K)]
    cmd = [sys.executable, os.path.join(HERE, "parity_worker.py"), str(out)]
    run_ranks([cmd] * K, envs)
    return torch.load(out)


@pytest.mark.parametrize("key", pc.gloo_keys())
def test_two_gloo_ranks(gloo_results, key):
    tol = pc.RESTATED_TOL if key.startswith("restated/") else pc.SGD_TOL
    for rank, res in enumerate(gloo_results[key]):
        assert "error" not in res, "%s rank %d raised:\n%s" % (key, rank,
                                                               res["error"])
        assert not res.get("problems"), "%s rank %d: %s" % (
            key, rank, "; ".join(res["problems"]))
        for what, rel in res.items():
            if what != "problems":
                assert rel <= tol, over("%s rank %d %s" % (key, rank, what),
                                        rel, tol)

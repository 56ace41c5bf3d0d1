"""deft's layers and models against PyTorch on fixed inputs: runs
scripts/torch_nn_check.py over build/nn_dump (batch norm 1-d and 2-d,
global average pooling, residual add, and lenet, vgg, preresnet20 and
vgg11bn: loss, gradient, running statistics, eval-mode logits)."""
import os
import subprocess
import sys

from conftest import ROOT, build_dir


def run_check(*args):
    script = os.path.join(ROOT, "scripts", "torch_nn_check.py")
    return subprocess.run([sys.executable, script, "--nn-dump",
                           os.path.join(build_dir(), "nn_dump"), *args],
                          capture_output=True, text=True, timeout=600)


def test_layers_and_models_match_torch():
    for seed in ("1", "2"):
        r = run_check("--seed", seed)
        print(r.stdout)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "checks passed" in r.stdout


def test_check_catches_corruption():
    r = run_check("--self-test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("caught") >= 3

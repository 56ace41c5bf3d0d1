"""eclk against an independent restatement (scripts/eclk_restate.py) that
draws Rand-K's coordinates and the anchor's coin from the same counter-based
streams: the two runs agree to float rounding, and the restatement's
stable and unstable settings are what it reports."""
import importlib.util
import os

import numpy as np

from conftest import ROOT

_spec = importlib.util.spec_from_file_location(
    "eclk_restate", os.path.join(ROOT, "scripts", "eclk_restate.py"))
er = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(er)


def test_rng_matches_deft_randk_selection():
    # Floyd's algorithm draws k distinct sorted indices in range.
    idx = er.randk_indices(0, 5, 64, 4)
    assert len(set(idx.tolist())) == 4 and list(idx) == sorted(idx)
    assert idx.min() >= 0 and idx.max() < 64
    # Different steps draw different sets (with overwhelming probability).
    assert any(list(er.randk_indices(0, s, 64, 4)) != list(idx) for s in range(6, 10))


def test_eclk_randk_follows_its_restatement_for_300_rounds():
    K, m_per, d = 4, 100, 64
    A, b, mu = er.problem(0, m_per, K, d, 1e-4)
    for theta1 in (0, 0.2):  # the default rule, and a damped one
        ours, _ = er.restate(A, b, mu, K, 16, 0, 300, theta1)
        theirs = er.deft_run(A, b, mu, K, 16, 0, 300, theta1)
        worst = max(float(np.max(np.abs(u - v)) / np.max(np.abs(v)))
                    for u, v in zip(ours, theirs))
        assert worst < 1e-5, (theta1, worst)
        # and a wrong seed does not agree: the check can fail
        other, _ = er.restate(A, b, mu, K, 16, 1, 300, theta1)
        off = max(float(np.max(np.abs(u - v)) / np.max(np.abs(v)))
                  for u, v in zip(other, theirs))
        assert off > 1e-3, (theta1, off)

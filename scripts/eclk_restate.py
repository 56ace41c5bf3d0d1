#!/usr/bin/python3
"""An independent restatement of eclk (src/optim/eclk.c) under shared-seed
Rand-K with full local gradients, checked against deft on a small logistic
regression, and what grows when a run turns back up.

With a shared seed Rand-K is linear (avg_k C(v_k) = C(avg_k v_k)), and with
full local gradients the workers' average estimate is grad f(x) whatever
the anchor is, so the run is that of one node holding the average error
e = avg_k e_k:
    x  = theta1 z + theta2 w + (1 - theta1 - theta2) y
    p  = e + (eta/L) grad P(x);  c = C(p);  e = p - c
    w  = y (before the step) with probability p_anchor, from the shared coin
    z+ = (eta sigma x + z - c) / (1 + eta sigma);  y+ = x + theta1 (z+ - z)
The restatement draws Rand-K's coordinates and the coin from the same
counter-based streams as deft (SplitMix64 over (seed, step, tensor,
purpose); Floyd's algorithm), so it follows deft's run to rounding.

usage: scripts/eclk_restate.py [--rounds N] [--check N] [--ratio R]
           [--theta1 T] [--mu MU] [--seed S] [--log FILE]
  --check N: also run deft (the Python binding, 4 worker threads) for N
             rounds and print the largest relative difference of y.
  --lscale S: (restatement only) the z step eta / (S L), to explore.
  --grid T,T,... [--lscales S,S,...]: instead, for every theta1 T and
             lscale S, the round at which the restatement reached 1e-6
             ("-" if never), its best and its final relative
             suboptimality over --rounds rounds.
Prints, every --every rounds, the relative suboptimality and |e|, |z - y|,
|x - w|, the anchor's age and the mean age of the coordinates' errors.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

M64 = (1 << 64) - 1
STREAM_RANDK, STREAM_ECLK_COIN = 2, 4


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


class Rng:
    """deft_rng_make / deft_rng_u64 / deft_rng_below of src/core/rng.h."""

    def __init__(self, seed, step, tensor, purpose):
        k = mix64((seed + 0x9e3779b97f4a7c15) & M64)
        k = mix64(k ^ ((step + 0x632be59bd9b4e019) & M64))
        k = mix64(k ^ ((tensor + 0x85157af5) & M64))
        self.key, self.ctr = mix64(k ^ purpose), 0

    def u64(self):
        self.ctr += 1
        return mix64((self.key + self.ctr * 0x9e3779b97f4a7c15) & M64)

    def below(self, n):
        while True:
            m = self.u64() * n
            lo = m & M64
            if lo >= n or lo >= ((1 << 64) - n) % n:
                return m >> 64

    def uniform_f64(self):
        return (self.u64() >> 11) * (1.0 / 9007199254740992.0)


def randk_indices(seed, step, n, k):
    """The k coordinates deft's randk keeps at `step` (one segment)."""
    g, chosen = Rng(seed, step, 0, STREAM_RANDK), set()
    for j in range(n - k, n):
        t = g.below(j + 1)
        chosen.add(j if t in chosen else t)
    return np.array(sorted(chosen))


def problem(seed, m_per, K, d, mu):
    """Logistic regression on K shards of m_per rows: rows with a few
    strong directions (ill-conditioned), labels from a planted model."""
    rng = np.random.default_rng(seed)
    scales = np.exp(-np.linspace(0, 4, d))  # condition number ~ e^8
    A = rng.standard_normal((K * m_per, d)) * scales
    b = np.sign(A @ rng.standard_normal(d) + 0.3 * rng.standard_normal(K * m_per))
    return A, b, mu


def grad_P(A, b, mu, x):
    s = -b / (1.0 + np.exp(b * (A @ x)))
    return A.T @ s / len(b) + mu * x


def P(A, b, mu, x):
    return np.mean(np.logaddexp(0.0, -b * (A @ x))) + 0.5 * mu * x @ x


def optimum(A, b, mu):
    x = np.zeros(A.shape[1])
    for _ in range(100):  # Newton
        z = b * (A @ x)
        s = 1.0 / (1.0 + np.exp(z))
        g = grad_P(A, b, mu, x)
        H = (A.T * (s * (1 - s))) @ A / len(b) + mu * np.eye(len(x))
        x = x - np.linalg.solve(H, g)
        if np.linalg.norm(g) < 1e-14:
            break
    return x, P(A, b, mu, x)


def constants(A, b, mu, K, ratio):
    """eclk's parameters as deft sets them (eclk's setup in
    src/optim/eclk.c, with p = delta and theta1 from L-Katyusha's rule for
    that p), L = the largest shard's smoothness + mu."""
    m_per = len(b) // K
    L = max(np.linalg.eigvalsh(A[k * m_per:(k + 1) * m_per].T @
                               A[k * m_per:(k + 1) * m_per] / m_per)[-1]
            for k in range(K)) / 4 + mu
    d = A.shape[1]
    kk = max(1, int(d / ratio))
    p = kk / d
    theta1 = min(math.sqrt(2 * (mu / L) / (3 * p)), 0.5)
    return L, p, theta1, kk


def restate(A, b, mu, K, ratio, seed, rounds, theta1=None, every=0, log=None,
            pstar=None, lscale=1.0, pfrac=1.0):
    """Runs the restatement in float32 storage with float64 arithmetic, as
    eclk.c does; returns the list of y (every round) when every == 0."""
    d = A.shape[1]
    L, p, th1, kk = constants(A, b, mu, K, ratio)
    L *= lscale  # --lscale: a smaller z step, eta / (lscale L)
    p *= pfrac  # --pfrac: anchor probability pfrac * delta
    t1 = theta1 if theta1 else th1
    t2 = 0.5
    eta = t2 / ((1 + t2) * t1)
    sigma = mu / L
    y = np.zeros(d, np.float32)
    z, w, e = y.copy(), y.copy(), y.copy()
    anchor_step, last_sent = 0, np.zeros(d, np.int64)
    ys = []
    es = eta * sigma
    for step in range(rounds):
        x = (t1 * z.astype(np.float64) + t2 * w + (1 - t1 - t2) * y
             ).astype(np.float32)
        g = grad_P(A, b, mu, x.astype(np.float64)).astype(np.float32)
        pk = (e + (eta / L) * g.astype(np.float64)).astype(np.float32)
        idx = randk_indices(seed, step, d, kk)
        c = np.zeros(d, np.float32)
        c[idx] = pk[idx]
        e = pk.copy()
        e[idx] = 0.0
        last_sent[idx] = step
        if Rng(seed, step, 0, STREAM_ECLK_COIN).uniform_f64() < p:
            w = y.copy()
            anchor_step = step
        zn = (es * x.astype(np.float64) + z - c) / (1 + es)
        y = (x + t1 * (zn - z)).astype(np.float32)
        z = zn.astype(np.float32)
        if every == 0:
            ys.append(y.copy())
        elif (step + 1) % every == 0:
            rel = (P(A, b, mu, y.astype(np.float64)) - pstar[1]) / \
                (P(A, b, mu, np.zeros(d)) - pstar[1])
            rec = dict(round=step + 1, rel_subopt=rel,
                       e=float(np.linalg.norm(e)),
                       z_minus_y=float(np.linalg.norm(z - y)),
                       x_minus_w=float(np.linalg.norm(x - w)),
                       y_to_opt=float(np.linalg.norm(y - pstar[0])),
                       anchor_age=step - anchor_step,
                       mean_error_age=float(np.mean(step - last_sent)))
            print(json.dumps(rec), file=log or sys.stdout, flush=True)
    return ys, dict(L=L, p=p, theta1=t1, eta=eta, k=kk)


def deft_run(A, b, mu, K, ratio, seed, rounds, theta1=None):
    """The same run through deft's Python binding: K threads, each with its
    shard's full gradient (+ mu x); returns y after every round."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
    import deft
    L, p, th1, _ = constants(A, b, mu, K, ratio)
    m_per = len(b) // K
    d = A.shape[1]

    def worker(comm):
        k = comm.rank
        Ak, bk = A[k * m_per:(k + 1) * m_per], b[k * m_per:(k + 1) * m_per]
        opt = deft.FlatOptimizer(comm, [d], np.zeros(d, np.float32),
                                 algo="eclk", compressor="randk", ratio=ratio,
                                 seed=seed, eclk_L=L, eclk_mu=mu, eclk_p=p,
                                 eclk_theta1=theta1 if theta1 else th1,
                                 weight_decay=0.0, momentum=0.0)
        out = []
        for _ in range(rounds):
            x = np.array(opt.ask(), np.float64)
            g = (grad_P(Ak, bk, mu, x)).astype(np.float32)
            opt.tell(g)
            out.append(np.array(opt.output(), np.float32))
        return out
    return deft.run_threads(K, worker)[0]


def grid(A, b, mu, K, a, pstar):
    """Rows theta1; columns the z step's lscale, or with --pfracs the anchor
    probability p = pfrac * delta (at --lscale)."""
    import io
    if a.pfracs:
        cols = [(a.lscale, float(v)) for v in a.pfracs.split(",")]
        names = ["p = %g delta" % c[1] for c in cols]
    else:
        cols = [(float(v), a.pfrac) for v in a.lscales.split(",")]
        names = ["s = %g" % c[0] for c in cols]
    print("| theta1 | " + " | ".join(names) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for t1 in [float(v) for v in a.grid.split(",")]:
        cells = []
        for ls, pf in cols:
            buf = io.StringIO()
            restate(A, b, mu, K, a.ratio, a.seed, a.rounds, t1, 100, buf,
                    pstar, ls, pf)
            recs = [json.loads(line) for line in buf.getvalue().splitlines()]
            hit = next((r["round"] for r in recs if r["rel_subopt"] <= 1e-6),
                       "-")
            cells.append("%s/%.0e/%.0e" % (hit, min(r["rel_subopt"] for r in recs),
                                           recs[-1]["rel_subopt"]))
        print("| %g | %s |" % (t1, " | ".join(cells)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--check", type=int, default=0)
    ap.add_argument("--ratio", type=float, default=16)
    ap.add_argument("--theta1", type=float, default=0)
    ap.add_argument("--mu", type=float, default=1e-4)
    ap.add_argument("--lscale", type=float, default=1.0,
                    help="restatement only: z step eta / (lscale L)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--grid")
    ap.add_argument("--lscales", default="1")
    ap.add_argument("--pfracs", help="grid columns: p = pfrac * delta")
    ap.add_argument("--pfrac", type=float, default=1.0,
                    help="restatement only: anchor probability pfrac * delta")
    ap.add_argument("--log")
    a = ap.parse_args()
    K, m_per, d = 4, 100, 64
    A, b, mu = problem(a.seed, m_per, K, d, a.mu)
    pstar = optimum(A, b, mu)
    _, prm = restate(A, b, mu, K, a.ratio, a.seed, 1)
    print("problem: K=%d, %d rows each, d=%d, mu=%g; eclk: L=%.4g p=%.4g "
          "theta1=%.4g eta=%.4g k=%d" % (K, m_per, d, mu, prm["L"], prm["p"],
                                         a.theta1 or prm["theta1"], prm["eta"],
                                         prm["k"]))
    if a.check:
        ours, _ = restate(A, b, mu, K, a.ratio, a.seed, a.check, a.theta1)
        theirs = deft_run(A, b, mu, K, a.ratio, a.seed, a.check, a.theta1)
        worst = 0.0
        for t, (u, v) in enumerate(zip(ours, theirs)):
            r = float(np.max(np.abs(u - v)) / max(np.max(np.abs(v)), 1e-30))
            worst = max(worst, r)
            if t + 1 in (1, 10, 100, a.check):
                print("round %d: max |y_restated - y_deft| / max |y_deft| = "
                      "%.3g (worst so far %.3g)" % (t + 1, r, worst))
    if a.grid:
        grid(A, b, mu, K, a, pstar)
        return
    log = open(a.log, "w") if a.log else None
    restate(A, b, mu, K, a.ratio, a.seed, a.rounds, a.theta1, a.every, log,
            pstar, a.lscale, a.pfrac)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Helper of scripts/compressors.sh (standard library only).

  compressors_table.py --match MODEL RANK
      prints the rbgs ratio (a multiple of 1/4) whose message size is
      nearest powersgd's at RANK on MODEL, from the tensor shapes that
      `deft list` prints (the same rules as src/compress/: powersgd sends
      q (m + n) floats for an m x n weight when that is below m n, with
      q = min(rank, m, n), and every other tensor whole; rbgs keeps
      max(1, floor(n_t / ratio)) floats of tensor t).
  compressors_table.py --table DIR --model MODEL --epochs E
      the Markdown table of the logs in DIR: mean and standard deviation
      over seeds of the final test accuracy, payload bytes per worker and step (what the
      worker hands to collectives), and the ring-allreduce wire bytes.
"""
import glob
import json
import math
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shapes(model):
    deft = os.environ.get("DEFT", os.path.join(ROOT, "build", "deft"))
    out = subprocess.run([deft, "list"], check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        # "  lenet  61706 parameters in 10 tensors: 6x25 6 ..." (models
        # with batch norm add "(+ N BN running statistics)" before the colon)
        m = re.match(r"\s+(\w+)\s+\d+ parameters in \d+ tensors"
                     r"(?: \([^)]*\))?: (.*)", line)
        if m and m.group(1) == model:
            res = []
            for tok in m.group(2).split():
                if "x" in tok:
                    r, c = tok.split("x")
                    res.append((int(r), int(c)))
                else:
                    res.append((1, int(tok)))
            return res
    sys.exit("compressors_table: `deft list` shows no model %r" % model)


def powersgd_floats(sh, rank):
    f = 0
    for m, n in sh:
        q = min(rank, m, n)
        f += q * (m + n) if m >= 2 and n >= 2 and q * (m + n) < m * n else m * n
    return f


def rbgs_floats(sh, ratio):
    return sum(max(1, math.floor(m * n / ratio)) for m, n in sh)


def match(model, rank):
    sh = shapes(model)
    want = powersgd_floats(sh, rank)
    best = min((abs(rbgs_floats(sh, r / 4) - want), r / 4)
               for r in range(4, 4 * 4096))
    return best[1]


def load(path):
    epochs, final = [], None
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if d.get("final"):
                final = d
            else:
                epochs.append(d)
    return epochs, final


def fmt(xs):
    if not xs:
        return "—"
    m = statistics.mean(xs)
    if len(xs) == 1:
        return "%.2f (one seed)" % (100 * m)
    return "%.2f ± %.2f" % (100 * m, 100 * statistics.stdev(xs))


def table(d, model, epochs):
    rows = {}
    for path in sorted(glob.glob(os.path.join(d, model + "_*.jsonl"))):
        name = os.path.basename(path)[len(model) + 1:-len(".jsonl")]
        key = re.sub(r"_s\d+$", "", name)
        ep, final = load(path)
        if final is None:
            continue
        r = rows.setdefault(key, dict(acc=[], div=0, n=0, payload=None,
                                      wire=None))
        r["n"] += 1
        if final["status"] == "diverged":
            r["div"] += 1
        else:
            r["acc"].append(final["test_acc"])
        if ep:
            steps = ep[-1]["step"]
            r["payload"] = ep[-1]["payload_bytes_per_worker"] / steps
            r["wire"] = ep[-1]["bytes_per_worker"] / steps
        elif r["wire"] is None and final["step"]:
            # diverged within the first epoch: only the final line's wire
            # bytes are known
            r["wire"] = final["bytes_per_worker"] / final["step"]
    print("| method | test accuracy (%%, %d epochs) | payload B/step | "
          "wire B/step | vs sgd |" % epochs)
    print("|---|---|---|---|---|")
    base = rows.get("sgd_none", {}).get("payload")

    def parts(k):
        p = k.split("_")
        algo, comp = p[0], p[1]
        rank = int(p[2][4:]) if len(p) > 2 and p[2].startswith("rank") else 0
        ratio = float(p[2][1:]) if len(p) > 2 and p[2].startswith("r") and not rank else 0
        return algo, comp, rank, ratio

    def order(k):
        algo, comp, rank, ratio = parts(k)
        # sgd, then 16-bit, then by bytes (fewest last), powersgd before rbgs
        r = rows[k]
        # a ring allreduce sends 2 (K - 1) / K of the payload: K = 8
        pay = r["payload"] if r["payload"] else r["wire"] * 8 / 14
        pay = round(pay, 1 - int(math.floor(math.log10(pay))))
        return (algo != "sgd", comp not in ("fp16", "bf16"), -pay,
                comp != "powersgd", algo)

    for k in sorted(rows, key=order):
        r = rows[k]
        acc = fmt(r["acc"])
        if r["div"]:
            acc = ("diverged" if r["div"] == r["n"] else
                   "%s (%d of %d diverged)" % (acc, r["div"], r["n"]))
        algo, comp, rank, ratio = parts(k)
        label = algo if comp == "none" else "%s + %s" % (algo, comp)
        if rank:
            label += " r=%d" % rank
        if ratio:
            label += " ratio %g" % ratio
        print("| %s | %s | %s | %.0f | %s |" % (
            label, acc, "%.0f" % r["payload"] if r["payload"] else "—",
            r["wire"],
            "%.3g×" % (base / r["payload"]) if base and r["payload"] else "—"))


def main(a):
    if len(a) == 3 and a[0] == "--match":
        print(match(a[1], int(a[2])))
    elif len(a) == 6 and a[0] == "--table" and a[2] == "--model" and a[4] == "--epochs":
        table(a[1], a[3], int(a[5]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

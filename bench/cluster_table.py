#!/usr/bin/python3
"""Table and figure of one bench/cluster_bench.sh run: reads DIR/*.jsonl
(deft train's JSON lines, also written by bench/ddp_fmnist.py and
examples/torch_fmnist.py) and DIR/*.txbytes (bytes each host sent on its
link), prints a Markdown table and writes DIR/accuracy.png (test accuracy
against wall-clock seconds, one line per method) with gnuplot.

Per epoch: wall seconds (training and evaluation), compute (CPU seconds of
rank 0 outside communication: what a host with a core of its own would
spend; here two hosts share each core), comm (rank 0's wall seconds
waiting in communication, which on shared cores includes waiting for a
peer's turn on the CPU), and wire (the host's measured bytes on its link
divided by the link rate). The ideal speedup of a method over its
framework's SGD (deft sgd for deft train's methods, DDP's plain allreduce
for the torch ones) is (compute + wire_sgd) / (compute + wire_method), with
the method's own compute: what a cluster of hosts with a core each would
gain if communication cost only its bytes. Reached is the measured
epoch-time ratio; the fraction is reached / ideal.

usage: bench/cluster_table.py DIR --gbps G [--target ACC]
"""
import argparse
import glob
import json
import os
import subprocess
import sys

ORDER = ["sgd", "def64", "def256", "ef-fp16", "ef-powersgd-r1",
         "ef-powersgd-r4", "def-powersgd-r4", "ddp", "ddp-fp16",
         "ddp-powersgd-r1", "ddp-powersgd-r4", "torch-def256"]
LABEL = {"sgd": "deft sgd", "def64": "deft def, ratio 64",
         "def256": "deft def, ratio 256", "ddp": "DDP allreduce",
         "ddp-fp16": "DDP fp16_compress_hook",
         "ddp-powersgd-r1": "DDP powerSGD_hook, rank 1",
         "ddp-powersgd-r4": "DDP powerSGD_hook, rank 4",
         "torch-def256": "deft.torch def, ratio 256",
         "ef-fp16": "deft ef, fp16",
         "ef-powersgd-r1": "deft ef, powersgd rank 1",
         "ef-powersgd-r4": "deft ef, powersgd rank 4",
         "def-powersgd-r4": "deft def, powersgd rank 4"}


def load(d):
    runs = {}
    for path in glob.glob(os.path.join(d, "*.jsonl")):
        m = os.path.basename(path)[:-6]
        recs = [json.loads(l) for l in open(path) if l.strip()]
        epochs = [r for r in recs if "epoch" in r]
        if not epochs:
            continue
        tx = os.path.join(d, m + ".txbytes")
        runs[m] = dict(epochs=epochs,
                       tx=int(open(tx).read()) if os.path.exists(tx) else None)
    return runs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--target", type=float, default=0.86)
    p.add_argument("--gbps", type=float, required=True, help="the links' rate")
    a = p.parse_args()
    runs = load(a.dir)
    if not runs:
        sys.exit("cluster_table: no logs in %s" % a.dir)
    names = [m for m in ORDER if m in runs] + sorted(set(runs) - set(ORDER))
    per = {}
    for m in names:
        e = runs[m]["epochs"]
        n = len(e)
        tx = runs[m]["tx"] or 0
        per[m] = dict(epoch=e[-1]["wall_s"] / n, compute=e[-1]["compute_s"] / n,
                      comm=e[-1]["comm_s"] / n, wire=tx / n / (a.gbps * 1e9 / 8))
    print("| method | s/epoch | compute s/epoch | comm s/epoch | wire s/epoch | "
          "time to %.1f%% | final acc | MB sent per host | ideal speedup | "
          "reached | fraction |" % (100 * a.target))
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in names:
        e, q = runs[m]["epochs"], per[m]
        # deft train's rows against deft sgd, the torch rows against DDP
        base = "ddp" if m.startswith(("ddp", "torch")) else "sgd"
        hit = next((r["wall_s"] for r in e if r["test_acc"] >= a.target), None)
        cells = [LABEL.get(m, m), "%.2f" % q["epoch"], "%.2f" % q["compute"],
                 "%.2f" % q["comm"], "%.2f" % q["wire"], "%.1f s" % hit if hit else "not reached",
                 "%.2f%%" % (100 * e[-1]["test_acc"]),
                 "%.1f" % (runs[m]["tx"] / 1e6) if runs[m]["tx"] else "-"]
        if base in per and m != base:
            b = per[base]
            ideal = (q["compute"] + b["wire"]) / (q["compute"] + q["wire"])
            reached = b["epoch"] / q["epoch"]
            cells += ["%.2fx" % ideal, "%.2fx" % reached, "%.0f%%" % (100 * reached / ideal)]
        else:
            cells += ["(baseline)", "", ""]
        print("| " + " | ".join(cells) + " |")
    # The figure.
    model = os.path.basename(os.path.dirname(os.path.abspath(a.dir)))
    plot = ["set terminal pngcairo noenhanced size 900,560", "set output '%s'"
            % os.path.join(a.dir, "accuracy.png"), "set xlabel 'wall-clock seconds'",
            "set ylabel 'test accuracy (%)'", "set key bottom right", "set grid",
            "set title '%s, %d hosts at %g Gbit/s each (virtual cluster)'"
            % (model, runs[names[0]]["epochs"][0].get("workers", 0), a.gbps)]
    series = []
    for m in names:
        dat = os.path.join(a.dir, m + ".dat")
        with open(dat, "w") as f:
            for r in runs[m]["epochs"]:
                f.write("%.3f %.3f\n" % (r["wall_s"], 100 * r["test_acc"]))
        series.append("'%s' using 1:2 with linespoints title '%s'" % (dat, LABEL.get(m, m)))
    plot.append("plot " + ", ".join(series))
    try:
        subprocess.run(["gnuplot"], input="\n".join(plot), text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print("cluster_table: no figure (%s)" % e, file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Tables of scripts/eclk_experiment.sh's logs (standard library only).

  eclk_table.py DIR [PREFIX ...]
      one Markdown table per PREFIX (default: every prefix found, "grid"
      first): for each log DIR/PREFIX-*.jsonl, the rounds and megabits per
      worker until the relative suboptimality first reached 1e-4 and 1e-6
      (at the logged rounds), the lowest value seen, and the rounds run.
      "grid" tables show eclk's delta exponent E and anchor probability p.
"""
import glob
import json
import os
import sys


def read(path):
    config, final = None, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # empty, or cut short by an interrupted run
            if obj.get("config"):
                config = obj
            elif obj.get("final"):
                final = obj
    return config, final


def cell_rounds(final, level):
    r = final.get("rounds_" + level)
    return "never" if r is None else str(r)


def cell_mbit(final, level):
    b = final.get("bits_" + level)
    return "—" if b is None else "%.3g" % (b / 1e6)


def row(name, config, final, grid):
    label = config.get("label", name)
    if final.get("status", "ok") not in ("ok", "diverged"):
        best = "failed: " + final["status"]
    elif final.get("diverged"):
        best = "diverged at round %d" % final.get("diverged_round",
                                                  final["rounds"])
    else:
        best = "%.2g" % final["best_rel_subopt"]
    cells = [label]
    if grid:
        cells += ["%g" % config.get("delta_exp", 0), "%.4g" % config["p"],
                  "%.4g" % config["theta1"], "%.4g" % (config["eta"] / config["L"])]
    cells += [str(final["rounds"]), cell_rounds(final, "1e-4"),
              cell_mbit(final, "1e-4"), cell_rounds(final, "1e-6"),
              cell_mbit(final, "1e-6"), best]
    return "| " + " | ".join(cells) + " |"


def table(directory, prefix):
    paths = sorted(glob.glob(os.path.join(directory, prefix + "-*.jsonl")))
    grid = prefix == "grid"
    head = ["run"]
    if grid:
        head += ["E", "p", "theta1", "eta/L"]
    head += ["rounds run", "rounds → 1e-4", "Mbit → 1e-4", "rounds → 1e-6",
             "Mbit → 1e-6", "best"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    problem = None
    for p in paths:
        config, final = read(p)
        if config is None or final is None:
            continue  # unfinished
        if problem is None:
            problem = ("%s, n = %d, d = %d, K = %d, mu = %g, L_f = %.4g, "
                       "kappa_f = %.3g" % (config["data"], config["n"],
                                           config["d"], config["workers"],
                                           config["mu"], config["L_f"],
                                           (config["L_f"] + config["mu"]) /
                                           config["mu"]))
        lines.append(row(os.path.basename(p)[:-6], config, final, grid))
    if problem is None:
        return ""
    return "**%s**: %s\n\n%s\n" % (prefix, problem, "\n".join(lines))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip())
    directory = sys.argv[1]
    prefixes = sys.argv[2:]
    if not prefixes:
        found = {os.path.basename(p).split("-")[0]
                 for p in glob.glob(os.path.join(directory, "*-*.jsonl"))}
        prefixes = sorted(found, key=lambda s: (s != "grid", s))
    print("\n".join(t for t in (table(directory, p) for p in prefixes) if t))


if __name__ == "__main__":
    main()

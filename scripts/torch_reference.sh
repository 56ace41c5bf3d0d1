#!/usr/bin/env bash
# Compares deft's C trainer with an independent pure-PyTorch implementation of
# the same training (bench/torch_reference.py: K simulated workers in one
# process, PyTorch's default initialization, same data, batch split, schedule,
# weight decay, momentum, rbgs rule and output model). For each seed and each
# of sgd and def + rbgs (ratio 256), runs `deft train --init torch` and the
# reference one after the other (never in parallel), skipping runs whose log
# already ends with a final line for the asked-for epochs (so an interrupted
# comparison resumes), then prints a markdown table of final test accuracies
# and the mean gap (deft - torch, in points) per algorithm.
#
# usage: scripts/torch_reference.sh [--out DIR] [--epochs E] [--seeds "0 1"]
#                                   [--build DIR] [--tolerance PTS]
#                                   [--limit-train N] [--limit-test N]
#   --out        logs go to DIR/{deft,torch}_{sgd,def}_SEED.jsonl
#                (default results/torch_ref; use another DIR for other
#                epochs or limits, logs are reused by name)
#   --epochs     epochs of every run (default 10)
#   --seeds      seeds (default "0 1"); the two sides draw different
#                initial weights, data orders and rbgs blocks from a seed,
#                so only the mean over seeds is compared
#   --build      the build directory holding deft (default build)
#   --tolerance  the largest mean |gap| per algorithm, in accuracy points,
#                before the script exits 1 (default 0.5)
#   --limit-train, --limit-test  passed to both sides (quick checks)
# exit status: 0 gaps within tolerance, 1 a gap beyond it or a run failed,
# 2 bad usage
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/torch_ref epochs=10 seeds="0 1" build=build tol=0.5
limits=()
usage() { sed -n '2,27p' "$0"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --tolerance) tol=$2; shift 2 ;;
    --limit-train|--limit-test) limits+=("$1" "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "torch_reference: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $epochs =~ ^[1-9][0-9]*$ ]] || { echo "torch_reference: --epochs '$epochs' is not a positive integer" >&2; exit 2; }
[[ -n ${seeds// /} ]] || { echo "torch_reference: --seeds is empty" >&2; exit 2; }
for s in $seeds; do
  [[ $s =~ ^[0-9]+$ ]] || { echo "torch_reference: seed '$s' is not a non-negative integer" >&2; exit 2; }
done
[[ $tol =~ ^[0-9]+([.][0-9]*)?$ ]] || { echo "torch_reference: --tolerance '$tol' is not a number" >&2; exit 2; }
deft=$build/deft
py=/usr/bin/python3
[[ -x $deft ]] || { echo "torch_reference: $deft not built (run make)" >&2; exit 1; }
[[ -x $py ]] || { echo "torch_reference: $py (Debian's, with torch) not found" >&2; exit 1; }
mkdir -p "$out"

workers=8 batch=128 lr=0.05 momentum=0.9 wd=5e-4 ratio=256 lam=0.3 decay=0.5,0.75
# A log is complete when its final line says the run diverged or ran the
# asked-for number of epochs.
complete() {
  [[ -f $1 ]] && grep -Eq "\"final\": true, \"status\": (\"diverged\".*|.*\"epochs\": $2,)" "$1"
}

# run NAME CMD...: runs CMD (which writes NAME.jsonl.part) unless NAME.jsonl
# is complete; exit 3 (diverged) counts as done.
run() {
  local name=$1 log=$out/$1.jsonl
  shift
  if complete "$log" "$epochs"; then
    echo "torch_reference: $name: done already"
    return 0
  fi
  echo "torch_reference: $name"
  local t0 rc
  t0=$(date +%s)
  set +e
  "$@" --log "$log.part" > "$out/$name.out" 2>&1
  rc=$?
  set -e
  if [[ $rc -ne 0 && $rc -ne 3 ]]; then
    echo "torch_reference: run $name failed (exit $rc):" >&2
    tail -n 20 "$out/$name.out" >&2
    exit 1
  fi
  mv "$log.part" "$log"
  echo "torch_reference: $name: $(tail -n 1 "$out/$name.out") ($(( $(date +%s) - t0 )) s)"
}

common=(--workers "$workers" --batch "$batch" --epochs "$epochs" --lr "$lr"
        --momentum "$momentum" --lr-decay "$decay" "${limits[@]}")
for s in $seeds; do
  for a in sgd def; do
    dx=() tx=()
    if [[ $a == def ]]; then
      dx=(--compressor rbgs --ratio "$ratio" --lambda "$lam")
      tx=(--ratio "$ratio" --lam "$lam")
    fi
    run "deft_${a}_$s" "$deft" train --model lenet --init torch --algo "$a" \
      "${dx[@]}" --wd "$wd" --seed "$s" "${common[@]}" --quiet
    run "torch_${a}_$s" "$py" bench/torch_reference.py --algo "$a" \
      "${tx[@]}" --weight-decay "$wd" --seed "$s" "${common[@]}" --quiet
  done
done

# shellcheck disable=SC2086  # one argument per seed
"$py" - "$out" "$tol" $seeds <<'EOF'
import json, sys

out, tol, seeds = sys.argv[1], float(sys.argv[2]), sys.argv[3:]


def final(path):
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("final"):
                return rec
    raise SystemExit("torch_reference: %s has no final line" % path)


print("| algo | seed | deft final acc | torch final acc | gap |")
print("|---|---|---|---|---|")
worst = []
for algo in ("sgd", "def"):
    gaps = []
    for s in seeds:
        d = final("%s/deft_%s_%s.jsonl" % (out, algo, s))
        t = final("%s/torch_%s_%s.jsonl" % (out, algo, s))
        gap = 100 * (d["test_acc"] - t["test_acc"])
        gaps.append(gap)

        def cell(r):
            c = "%.2f" % (100 * r["test_acc"])
            return c if r["status"] == "ok" else c + " (diverged)"
        name = algo if algo == "sgd" else "def rbgs 256"
        print("| %s | %s | %s | %s | %+.2f |" % (name, s, cell(d), cell(t), gap))
    mean = sum(gaps) / len(gaps)
    worst.append((abs(mean), algo, mean))
print()
bad = 0
for m, algo, mean in worst:
    ok = m <= tol
    bad |= not ok
    print("mean gap %s: %+.2f points (|gap| %s %.2f)"
          % (algo, mean, "<=" if ok else ">", tol))
sys.exit(1 if bad else 0)
EOF

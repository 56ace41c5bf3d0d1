#!/usr/bin/env bash
# One epoch of `deft train` against the pure-PyTorch trainer of the same
# algorithm (bench/torch_reference.py), in the same run, one after the
# other: the setting deft train runs by default, 8 workers of batch 16
# (global batch 128) on this machine's cores, DEF with rbgs at ratio 256,
# lambda 0.3, PyTorch's initialization, on Fashion-MNIST.
#   deft:  build/deft train, the threads backend (8 workers on the cores)
#   torch: the 8 workers taken one after another in one process, torch's
#          intra-op threads = the cores (--threads)
# Batch-norm statistics are per worker on both sides and averaged before
# the evaluation; deft runs with --bn-recalibrate 0, which the reference
# does not reproduce. Prints, from each side's JSON log, the epoch's wall
# time, the evaluation's share of it, and training images/s (the training
# set over the wall time less the evaluation), as a Markdown table with
# the ratio deft / torch.
#
# usage: bench/bench_epoch.sh [--model M] [--limit-train N] [--threads T]
#                             [--build DIR]
#   --model        preresnet20 (default), vgg11bn or lenet
#   --limit-train  the first N training examples (default: all 60,000)
#   --threads      cores for both sides (default: nproc)
# PYTHON overrides /usr/bin/python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-/usr/bin/python3}
build=$root/build model=preresnet20 limit=0 threads=$(nproc)
die() { echo "bench_epoch: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --model) [[ ${2:-} =~ ^(preresnet20|vgg11bn|lenet)$ ]] ||
               die "--model needs preresnet20, vgg11bn or lenet"
             model=$2; shift 2 ;;
    --limit-train) [[ ${2:-} =~ ^[0-9]+$ && $2 -ge 128 || ${2:-} == 0 ]] ||
               die "--limit-train needs 0 (all) or a number >= 128"
             limit=$2; shift 2 ;;
    --threads) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--threads needs a number >= 1"
             threads=$2; shift 2 ;;
    --build) [[ $# -ge 2 ]] || die "--build needs a directory"
             build=$(cd "$2" 2>/dev/null && pwd) || die "--build $2: no such directory"
             shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -x $build/deft ]] || die "$build/deft is missing: run make build first"
[[ -x $python ]] || die "$python is missing (PyTorch's Python; set PYTHON)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--workers 8 --batch 128 --epochs 1 --lr 0.05 --seed 0 --init torch
        --limit-train "$limit")

echo "== deft train --model $model (threads backend, 8 workers)" >&2
"$build/deft" train --model "$model" --algo def --compressor rbgs --ratio 256 \
  --lambda 0.3 --bn-recalibrate 0 "${common[@]}" --log "$tmp/deft.jsonl" >&2 ||
  die "deft train failed"
echo "== bench/torch_reference.py --model $model --threads $threads" >&2
"$python" "$root/bench/torch_reference.py" --model "$model" --algo def \
  --ratio 256 --lam 0.3 --threads "$threads" "${common[@]}" \
  --log "$tmp/torch.jsonl" >&2 || die "torch_reference.py failed"

# wall_s eval_s test_acc of a log's first epoch line
epoch1() {
  "$python" - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("epoch") == 1:
        print(r["wall_s"], r["eval_s"], r["test_acc"])
        break
else:
    sys.exit("no epoch line in " + sys.argv[1])
PY
}
read -r dw de da < <(epoch1 "$tmp/deft.jsonl") || die "deft's log has no epoch"
read -r tw te ta < <(epoch1 "$tmp/torch.jsonl") || die "the reference's log has no epoch"
n=$([[ $limit -gt 0 ]] && echo "$limit" || echo 60000)
n=$(( n / 128 * 128 ))  # the whole batches of an epoch
echo "One epoch of $model, DEF + rbgs (ratio 256, lambda 0.3), 8 workers x batch 16,"
echo "$n training images, $threads cores; measured one after the other in this run."
echo
echo "| trainer | epoch wall s | of it evaluation s | training images/s | test acc |"
echo "|---|---:|---:|---:|---:|"
awk -v n="$n" -v dw="$dw" -v de="$de" -v da="$da" -v tw="$tw" -v te="$te" -v ta="$ta" -v thr="$threads" 'BEGIN {
  di = n / (dw - de); ti = n / (tw - te)
  printf "| deft train (threads backend) | %.1f | %.1f | %.0f | %.4f |\n", dw, de, di, da
  printf "| torch_reference.py (%d threads) | %.1f | %.1f | %.0f | %.4f |\n", thr, tw, te, ti, ta
  printf "\nratio deft / torch: %.2fx training images/s, %.2fx epoch wall time\n", di / ti, tw / dw
}'

#!/usr/bin/env bash
# The compressors the peers ship, side by side on Fashion-MNIST: powersgd at
# rank 1, 2 and 4 under ef and def next to rbgs at about the same bytes per
# step, fp16 and bf16 under ef next to sgd. Runs `deft train` for every
# cell (8 workers, global batch 128, lr 0.02 and He initialization, the
# settings docs/compressors.md was measured with; momentum 0.9, wd 5e-4, decay
# 10x at 50% and 75%), one after another, skipping runs whose complete log
# exists (an interrupted sweep resumes), then writes DIR/table.md with
# bench/compressors_table.py.
#
# usage: scripts/compressors.sh [--out DIR] [--model M] [--epochs E]
#                               [--seeds "0 1 2"] [--ranks "1 2 4"]
#                               [--quick] [--dry-run]
#   --quick  1 epoch on a slice of the data, one seed: checks the pipeline
set -euo pipefail
cd "$(dirname "$0")/.."
deft=${DEFT:-build/deft}
out=results/compressors model=lenet epochs=10 seeds="0 1 2" ranks="1 2 4"
quick=0 dry=0 extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "compressors: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $quick -eq 1 ]]; then
  [[ $out == results/compressors ]] && out=results/compressors-quick
  epochs=1 seeds=0 ranks="1 2" extra=(--limit-train 6400 --limit-test 2000)
fi
if [[ -z ${DEFT:-} && $dry -eq 0 ]]; then make build; fi
[[ -x $deft ]] || { echo "compressors: $deft not built (run make)" >&2; exit 1; }
mkdir -p "$out"

# rbgs at the ratio whose message matches powersgd's at each rank, from
# the tensor shapes `deft list` prints (bench/compressors_table.py --match).
grid=("sgd none 1 0")
for r in $ranks; do
  ratio=$(/usr/bin/python3 bench/compressors_table.py --match "$model" "$r")
  for a in ef def; do
    grid+=("$a powersgd 1 $r" "$a rbgs $ratio $r")
  done
done
grid+=("ef fp16 1 0" "ef bf16 1 0" "def fp16 1 0")

complete() {
  [[ -f $1 ]] && grep -Eq "\"final\": true, \"status\": (\"diverged\".*|.*\"epochs\": $2,)" "$1"
}
total=$(( ${#grid[@]} * $(wc -w <<< "$seeds") )) i=0
echo "compressors: $total runs into $out ($model, $epochs epochs, seeds: $seeds)"
for s in $seeds; do
  for g in "${grid[@]}"; do
    set -- $g
    algo=$1 comp=$2 ratio=$3 rank=$4
    n="${model}_${algo}_${comp}"
    if [[ $comp == powersgd ]]; then n="${n}_rank$rank"; fi
    if [[ $comp == rbgs ]]; then n="${n}_r$ratio"; fi
    n="${n}_s$s"
    log="$out/$n.jsonl"
    i=$((i + 1))
    if complete "$log" "$epochs"; then echo "[$i/$total] $n: done already"; continue; fi
    echo "[$i/$total] $n"
    [[ $dry -eq 1 ]] && continue
    set +e
    "$deft" train --model "$model" --algo "$algo" --compressor "$comp" \
      --ratio "$ratio" --powersgd-rank "${rank/#0/1}" --seed "$s" --workers 8 \
      --batch 128 --epochs "$epochs" --lr 0.02 --init he "${extra[@]}" --quiet \
      --log "$log.part" > "$out/$n.out" 2>&1
    rc=$?
    set -e
    # 0 ok, 3 diverged (a result); anything else is a failure
    if [[ $rc -ne 0 && $rc -ne 3 ]]; then
      echo "compressors: $n failed (exit $rc), see $out/$n.out" >&2
      exit 1
    fi
    mv "$log.part" "$log"
  done
done
[[ $dry -eq 1 ]] && exit 0
/usr/bin/python3 bench/compressors_table.py --table "$out" --model "$model" \
  --epochs "$epochs" > "$out/table.md"
echo "compressors: wrote $out/table.md"

#!/usr/bin/env bash
# The Markdown table of a scripts/netbench.sh run, from its logs alone: per
# run the mean real seconds per epoch, the final test accuracy, the seconds
# to the target accuracy, and the speedup over sgd (per epoch and to target).
# usage: scripts/netbench_table.sh DIR TARGET   (DIR holds sgd-1.jsonl and
#                                                def-RATIO.jsonl logs)
set -euo pipefail
dir=${1:?usage: scripts/netbench_table.sh DIR TARGET}
target=${2:?usage: scripts/netbench_table.sh DIR TARGET}
[[ -f $dir/sgd-1.jsonl ]] || { echo "netbench_table: no $dir/sgd-1.jsonl" >&2; exit 1; }

# "seconds-per-epoch final-accuracy seconds-to-target" of one log.
summary() {
  awk -v target="$target" '
    /"epoch":/ {
      match($0, /"wall_s": [0-9.]+/); w = substr($0, RSTART + 10, RLENGTH - 10)
      match($0, /"test_acc": [0-9.]+/); a = substr($0, RSTART + 12, RLENGTH - 12)
      n++; last = w; acc = a
      if (hit == "" && a + 0 >= target) hit = w
    }
    END {
      if (n == 0) { print "- - -"; exit }
      printf "%.2f %.4f %s\n", last / n, acc, (hit == "" ? "-" : hit)
    }' "$1"
}

pct=$(awk -v t="$target" 'BEGIN { printf "%g%%", 100 * t }')
read -r sgd_epoch _ sgd_hit < <(summary "$dir/sgd-1.jsonl")
echo "| method | ratio | s / epoch | test accuracy | s to $pct | speedup over sgd |"
echo "|---|---|---|---|---|---|"
logs=("$dir/sgd-1.jsonl")
while read -r f; do logs+=("$f"); done < <(ls "$dir"/def-*.jsonl 2>/dev/null | sort -t- -k2 -n)
for f in "${logs[@]}"; do
  b=$(basename "$f" .jsonl) algo=${b%-*} ratio=${b##*-}
  read -r per acc hit < <(summary "$f")
  if [[ $per == - ]]; then
    echo "| $algo | $ratio | - | - | - | no epoch finished |"
    continue
  fi
  speed=$(awk -v a="$sgd_epoch" -v b="$per" 'BEGIN { printf "%.2f× per epoch", a / b }')
  if [[ $hit != - && $sgd_hit != - ]]; then
    speed+=$(awk -v a="$sgd_hit" -v b="$hit" -v p="$pct" 'BEGIN { printf ", %.2f× to %s", a / b, p }')
  fi
  [[ $algo == sgd ]] && speed="1.00×"
  [[ $hit != - ]] && hit=$(awk -v h="$hit" 'BEGIN { printf "%.1f", h }')
  echo "| $algo | $ratio | $per | $(awk -v a="$acc" 'BEGIN { printf "%.2f%%", 100 * a }') | $hit | $speed |"
done

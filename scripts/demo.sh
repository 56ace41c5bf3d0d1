#!/usr/bin/env bash
# The main job: trains LeNet-5 on Fashion-MNIST with 8 workers, comparing
# full-precision SGD with EF, DEF and DEF-A at RBGS compression ratio 256,
# then prints a table. Logs go to results/demo/.
#
# usage: scripts/demo.sh [EPOCHS]     (default 10; DEFT=path/to/deft)
set -euo pipefail
cd "$(dirname "$0")/.."
deft=${DEFT:-build/deft}
epochs=${1:-10}
ratio=256
workers=8
lr=0.05
out=results/demo
mkdir -p "$out"

field() { # field NAME FILE: a number or string from the log's final line
  grep '"final": true' "$2" | tail -n 1 | sed -n "s/.*\"$1\": \"\{0,1\}\([^,\"}]*\).*/\1/p"
}

echo "deft demo: lenet on Fashion-MNIST, $workers workers, global batch 128," \
     "$epochs epochs, lr $lr (decay x0.1 at 50% and 75%), RBGS ratio $ratio"
for algo in sgd ef def defa; do
  echo "== $algo"
  set +e
  "$deft" train --model lenet --algo "$algo" --compressor rbgs --ratio "$ratio" \
    --workers "$workers" --batch 128 --epochs "$epochs" --lr "$lr" \
    --log "$out/$algo.jsonl"
  rc=$?
  set -e
  if [[ $rc -ne 0 && $rc -ne 3 ]]; then
    echo "deft demo: deft train --algo $algo failed (exit $rc)" >&2
    exit "$rc"
  fi
done

echo
printf '| %-6s | %-5s | %-14s | %-17s | %-8s |\n' method ratio "test accuracy" \
       "bytes per worker" time
printf '|%s|%s|%s|%s|%s|\n' -------- ------- ---------------- ------------------- ----------
for algo in sgd ef def defa; do
  f="$out/$algo.jsonl"
  r=$ratio; [[ $algo == sgd ]] && r=1
  status=$(field status "$f")
  if [[ $status == diverged ]]; then
    acc="diverged@$(field diverged_step "$f")"
  else
    acc=$(awk -v a="$(field test_acc "$f")" 'BEGIN { printf "%.2f%%", 100 * a }')
  fi
  bytes=$(awk -v b="$(field bytes_per_worker "$f")" 'BEGIN {
    split("B KB MB GB TB", u, " "); i = 1
    while (b >= 1000 && i < 5) { b /= 1000; i++ }
    printf (i == 1 ? "%.0f %s" : "%.2f %s"), b, u[i] }')
  wall=$(awk -v w="$(field wall_s "$f")" 'BEGIN { printf "%.1f s", w }')
  printf '| %-6s | %-5s | %-14s | %-17s | %-8s |\n' "$algo" "$r" "$acc" "$bytes" "$wall"
done
echo
echo "logs: $out/*.jsonl"

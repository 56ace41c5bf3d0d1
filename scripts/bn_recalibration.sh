#!/usr/bin/env bash
# BN statistics at DEF's output model: the same training run evaluated with
# the running statistics (--bn-recalibrate 0) and with the default (auto:
# recomputed at the output model), for DEF at ratios 64 and 256 on
# preresnet20 and vgg11bn, SGD beside them. Training is bitwise the same
# in both evaluations (the log's train_loss agrees), only the statistics
# differ. Prints test accuracy (%) after each epoch and the time of one
# evaluation (eval_s, with the recalibration). Logs go to results/bn/.
#
# usage: scripts/bn_recalibration.sh [EPOCHS [LIMIT_TRAIN]]
#        (default 3 epochs of the first 12000 examples; DEFT=path/to/deft)
set -euo pipefail
cd "$(dirname "$0")/.."
deft=${DEFT:-build/deft}
epochs=${1:-3}
limit=${2:-12000}
out=results/bn
mkdir -p "$out"
common=(--workers 4 --batch 128 --epochs "$epochs" --limit-train "$limit"
        --lr 0.05 --seed 0 --quiet)

row() { # row LABEL LOG: accuracy per epoch, then the mean eval_s
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
rs = [json.loads(l) for l in open(sys.argv[2]) if '"epoch"' in l]
acc = " | ".join("%.2f" % (100 * r["test_acc"]) for r in rs)
ev = sum(r["eval_s"] for r in rs) / len(rs)
print("| %s | %s | %s %d | %.2f | %.4f |" % (sys.argv[1], acc, rs[0]["bn_stats"],
      rs[0]["bn_batches"], ev, rs[-1]["train_loss"]))
PY
}

echo "| run | $(seq -s ' | ' -f 'epoch %g' 1 "$epochs") | statistics, batches | eval_s | train loss |"
echo "|---|$(printf '%.0s---|' $(seq 1 "$epochs"))---|---|---|"
for model in preresnet20 vgg11bn; do
  "$deft" train --model "$model" --algo sgd "${common[@]}" \
    --log "$out/$model-sgd.jsonl" >/dev/null
  row "$model SGD" "$out/$model-sgd.jsonl"
  for ratio in 64 256; do
    for bn in 0 auto; do
      log="$out/$model-def-r$ratio-bn$bn.jsonl"
      "$deft" train --model "$model" --algo def --ratio "$ratio" \
        --bn-recalibrate "$bn" "${common[@]}" --log "$log" >/dev/null
      row "$model DEF r$ratio" "$log"
    done
  done
done

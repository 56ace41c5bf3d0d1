#!/usr/bin/env bash
# Reproduces the DEF paper's experiments on Fashion-MNIST (the analogues of
# its Tables 1, 3, 4 and Figures 1, 3): runs a grid of `deft train` runs one
# after another, each writing its JSON-lines log into the results folder,
# skipping runs whose complete log already exists (so an interrupted sweep
# resumes), then calls scripts/report.sh to write tables and figures.
#
# usage: scripts/reproduce.sh [--quick] [--out DIR] [--epochs E] [--seeds "0 1 2"]
#                             [--tables "1 3 4 lr"] [--models3 "mlp lenet vgg"]
#                             [--model-epochs "vgg=4"] [--model1 lenet]
#                             [--ratios1 "16 64 256 512 1024"] [--lr 0.05]
#                             [--limit-train N] [--init torch|he] [--dry-run]
#   --tables  which grids: the paper's Tables 1, 3, 4, and "lr": EF and DEF
#             at ratio 64 for smaller learning rates (the paper tunes the
#             learning rate per method; the other tables use one, --lr)
#   --quick   a tiny grid (logreg/mlp, 1 epoch, 2 ratios, a slice of the
#             data) that checks the whole pipeline in a few minutes
#   --model-epochs  per-model epoch counts overriding --epochs (the LR still
#             decays at 50% and 75% of each run); a log counts as done when
#             it ran the epoch count asked for or diverged
#   --model1  the model of Tables 1 and 4 and the lr grid (default lenet);
#   --ratios1 Table 1's ratios; --lr the learning rate of every run but
#             the lr grid's (default 0.05); --limit-train N trains on the
#             first N examples only; --init the initialization (default
#             torch; he with --lr 0.02 gives the setting of the tables
#             measured before 2026-12-03)
set -euo pipefail
cd "$(dirname "$0")/.."
deft=${DEFT:-build/deft}
out=results/repro epochs=20 seeds="0 1 2" tables="1 3 4 lr" quick=0 dry=0 models3_opt=
model1_opt= ratios1_opt= lr_opt= limit_opt= init_opt=
model_epochs=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1; shift ;;
    --out) out=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --tables) tables=$2; shift 2 ;;
    --models3) models3_opt=$2; shift 2 ;;
    --model-epochs) model_epochs=$2; shift 2 ;;
    --model1) model1_opt=$2; shift 2 ;;
    --ratios1) ratios1_opt=$2; shift 2 ;;
    --lr) lr_opt=$2; shift 2 ;;
    --limit-train) limit_opt=$2; shift 2 ;;
    --init) init_opt=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "reproduce: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
# Without DEFT=path, (re)build first (installing what is missing), so the
# sweep always runs the current code.
if [[ -z ${DEFT:-} && $dry -eq 0 ]]; then make build; fi
[[ -x $deft ]] || { echo "reproduce: $deft not built (run make)" >&2; exit 1; }

workers=8 lr=0.05 model1=lenet ratios1="16 64 256 512 1024"
models3="mlp lenet vgg" lambdas="0.1 0.2 0.3 0.4 0.6 0.8" extra=()
lrs="0.01 0.005 0.002"
if [[ $quick -eq 1 ]]; then
  [[ $out == results/repro ]] && out=results/quick
  epochs=1 seeds="0" model1=logreg ratios1="16 256" models3="logreg mlp"
  lambdas="0.1 0.6" lrs="0.005" extra=(--limit-train 6400 --limit-test 2000)
fi
[[ -n $models3_opt ]] && models3=$models3_opt
[[ -n $model1_opt ]] && model1=$model1_opt
[[ -n $ratios1_opt ]] && ratios1=$ratios1_opt
[[ -n $lr_opt ]] && lr=$lr_opt
[[ -n $limit_opt ]] && extra+=(--limit-train "$limit_opt")
[[ -n $init_opt ]] && extra+=(--init "$init_opt")
declare -A epochs_of
for me in $model_epochs; do
  m=${me%%=*} e=${me#*=}
  if [[ $me != *=* || ! $e =~ ^[1-9][0-9]*$ ]]; then
    echo "reproduce: --model-epochs expects MODEL=EPOCHS pairs, got '$me'" >&2
    exit 2
  fi
  epochs_of[$m]=$e
done
run_epochs() { echo "${epochs_of[$1]:-$epochs}"; }
mkdir -p "$out"

# Every run as "table model algo ratio lambda seed lr".
grid=()
for s in $seeds; do
  if [[ " $tables " == *" 1 "* ]]; then
    grid+=("t1 $model1 sgd 1 0.3 $s $lr")
    for r in $ratios1; do
      for a in ef saef psync def defa; do grid+=("t1 $model1 $a $r 0.3 $s $lr"); done
    done
  fi
  if [[ " $tables " == *" 3 "* ]]; then
    for m in $models3; do
      grid+=("t3 $m sgd 1 0.3 $s $lr")
      for a in ef saef psync def defa; do grid+=("t3 $m $a 64 0.3 $s $lr"); done
    done
  fi
  if [[ " $tables " == *" 4 "* ]]; then
    for l in $lambdas; do
      for a in def defa; do grid+=("t4 $model1 $a 64 $l $s $lr"); done
    done
  fi
  if [[ " $tables " == *" lr "* ]]; then
    for l in $lrs; do
      for a in ef def; do grid+=("tlr $model1 $a 64 0.3 $s $l"); done
    done
  fi
done

# Runs at the default learning rate keep the shorter name.
name() { echo "$2_$3_r$4_l$5_s$6$([[ $7 == "$lr" ]] || echo "_lr$7")"; }
# A log is complete when its final line says the run diverged or ran the
# asked-for number of epochs.
complete() {
  [[ -f $1 ]] && grep -Eq "\"final\": true, \"status\": (\"diverged\".*|.*\"epochs\": $2,)" "$1"
}

# Runs shared between tables (same model, algorithm, ratio, lambda, seed)
# are run once.
declare -A seen
todo=()
for g in "${grid[@]}"; do
  set -- $g
  n=$(name "$@")
  [[ -n ${seen[$n]:-} ]] && continue
  seen[$n]=1
  todo+=("$g")
done
total=${#todo[@]} i=0 done_time=0 done_runs=0 pending=0
for g in "${todo[@]}"; do
  set -- $g
  complete "$out/$(name "$@").jsonl" "$(run_epochs "$2")" || pending=$((pending + 1))
done
echo "reproduce: ${total} runs ($pending to do) into $out ($epochs epochs${model_epochs:+, $model_epochs}, seeds: $seeds, K=$workers)"
for g in "${todo[@]}"; do
  set -- $g
  i=$((i + 1))
  n=$(name "$@")
  log="$out/$n.jsonl"
  e=$(run_epochs "$2")
  if complete "$log" "$e"; then
    echo "[$i/$total] $n: done already"
    continue
  fi
  eta=""
  if [[ $done_runs -gt 0 ]]; then
    left=$(( (pending - done_runs) * done_time / done_runs ))
    eta=" (ETA $((left / 60))m$((left % 60))s)"
  fi
  echo "[$i/$total] $n$eta"
  [[ $dry -eq 1 ]] && continue
  avg=()
  [[ $3 == saef ]] && avg=(--avg-period 100)
  t0=$(date +%s)
  set +e
  "$deft" train --model "$2" --algo "$3" --compressor rbgs --ratio "$4" \
    --lambda "$5" --seed "$6" --workers "$workers" --batch 128 \
    --epochs "$e" --lr "$7" --net-gbps 1 --net-latency-us 50 \
    "${avg[@]}" "${extra[@]}" --quiet --log "$log.part" > "$out/$n.out" 2>&1
  rc=$?
  set -e
  if [[ $rc -ne 0 && $rc -ne 3 ]]; then
    echo "reproduce: run $n failed (exit $rc):" >&2
    cat "$out/$n.out" >&2
    exit 1
  fi
  mv "$log.part" "$log"
  done_time=$((done_time + $(date +%s) - t0)) done_runs=$((done_runs + 1))
done
[[ $dry -eq 1 ]] && exit 0
scripts/report.sh "$out" --epochs "$epochs${model_epochs:+, $model_epochs}" --tables "$tables" \
  --model1 "$model1" --ratios1 "$ratios1" --models3 "$models3" \
  --lambdas "$lambdas" --lr "$lr" --lrs "$lrs" --seeds "$seeds"

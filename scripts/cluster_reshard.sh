#!/usr/bin/env bash
# Lose a host, continue on the rest: on a virtual cluster of 4 hosts at
# 1 Gbit/s, deft train --backend mpi runs with a checkpoint at every epoch
# end; once the first checkpoint exists (early in epoch 2), host 3's rank
# is killed (SIGKILL: the host is gone) and the job ends. Then, from that
# checkpoint:
#   four:  the job resumes on all 4 hosts (a replacement host): the
#          uninterrupted run (a resume on the same count is bitwise the
#          uninterrupted run; scripts/cluster_faults.sh (d) checks that);
#   mean:  it continues on hosts 0-2 with --reshard: errors and momenta
#          keep their mean over the workers (deft);
#   zero:  it continues on hosts 0-2 with --reshard=zero: errors and
#          momenta reset to zero (what systems that drop them do).
# Reports, per model, algorithm and seed, the test accuracy at the
# checkpoint, right after the restart (before any step), and at the end.
# The global batch is 96, which 4 and 3 both divide.
#
# usage: scripts/cluster_reshard.sh [--check [--quick]] [--models "M..."]
#            [--seeds "S..."] [--epochs E] [--limit-train N] [--out FILE]
#            [--logs DIR]
#   --check: one LeNet run of DEF that checks the restart (the job ends
#            within 30 s of the loss, the re-sharded run finishes, its
#            output model right after the restart evaluates as at the
#            checkpoint, and it trains on); --quick makes it shorter.
#   default: the table (markdown) for lenet and preresnet20, DEF/rbgs at
#            ratio 256 and EF/topk at ratio 64 (EF/rbgs 64 diverges on
#            LeNet at this lr, at step 111), seeds 0 and 1, written to --out
#            (default stdout); logs are kept in the work directory shown.
#            Cells: test accuracy % (test loss). --logs DIR only writes the
#            table from an earlier run's work directory.
# Needs root; exit status 0 if every check passed, 1 otherwise, 77 (skip)
# without root.
set -euo pipefail
source "$(dirname "$0")/cluster.sh"

check_mode=0 quick=0 models="lenet preresnet20" seeds="0 1" epochs=4
limit_train="" out=/dev/stdout logs=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --check) check_mode=1; shift ;;
    --quick) quick=1; shift ;;
    --models) models=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --limit-train) limit_train=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --logs) logs=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) cluster_die "reshard: unknown option '$1' (see --help)" ;;
  esac
done
# field FILE REGEX NAME: NAME's value in the last line of FILE matching REGEX.
field() { grep -E "$2" "$1" | tail -n 1 | grep -Eo "\"$3\": [-0-9.e]+" | awk '{ print $2 }'; }
# cell FILE REGEX: "accuracy % (loss)" of that line.
cell() {
  awk -v a="$(field "$1" "$2" test_acc)" -v l="$(field "$1" "$2" test_loss)" \
    'BEGIN { if (a == "") print "-"; else printf "%.2f (%.3f)", 100 * a, l }'
}
# row TAG MODEL METHOD SEED: the table's row from $work/TAG.*.
row() {
  local f=$work/$1
  echo "| $2 | $3 | $4 | $(cell "$f.first.jsonl" '"epoch"') | $(cell "$f.four.jsonl" '"epoch"') | $(cell "$f.mean.jsonl" '"resharded"') | $(cell "$f.mean.jsonl" '"epoch"') | $(cell "$f.zero.jsonl" '"resharded"') | $(cell "$f.zero.jsonl" '"epoch"') | $(cat "$f.ended") s |"
}
header() {
  echo "| model | method | seed | at the checkpoint (end of epoch 1) | 4 hosts, final | re-shard on 3: right after | final | reset on 3: right after | final | job ended after loss |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
}
tags() { # prints "tag model method seed" for every run of the table
  local model method seed
  for model in $models; do
    for method in "def rbgs 256" "ef topk 64"; do
      set -- $method
      for seed in $seeds; do echo "$model-$1-$3-s$seed $model $1/$2-$3 $seed $1 $2 $3"; done
    done
  done
}
if [[ -n $logs ]]; then
  work=$logs
  header > "$out"
  tags | while read -r tag model method seed _; do row "$tag" "$model" "${method/-/ }" "$seed" >> "$out"; done
  exit 0
fi

cluster_fault_prelude reshard
work=$(mktemp -d /tmp/deft-reshard.XXXXXX)
cluster_up 4 1
trap 'cluster_down' EXIT
cluster_export

# lose_host TAG ARGS...: the 4-host job (ARGS are deft train's) with host 3
# lost in epoch 2, then the continuations named in $continuations (four,
# mean, zero) from its checkpoint. Logs in $work/TAG.{first,four,mean,
# zero}.jsonl; the time from the loss to the job's end in $work/TAG.ended
# ("-" if the job ended before its first checkpoint).
continuations="four mean zero"
lose_host() {
  local tag=$1; shift
  local ck=$work/$tag.ckpt
  CLUSTER_K=4 limited 3600 "$@" --comm-timeout 30 --checkpoint "$ck" \
    --log "$work/$tag.first.jsonl" > "$work/$tag.first.out" 2>&1 &
  local job=$!
  while [[ ! -e $ck ]] && kill -0 $job 2>/dev/null; do sleep 0.05; done
  if [[ ! -e $ck ]]; then # it ended (diverged?) before its first checkpoint
    wait $job; echo "$?" > "$work/$tag.first.rc"; echo "-" > "$work/$tag.ended"
    return 1
  fi
  local t0; t0=$(now)
  kill -KILL "$(deft_pid_on 3)"
  local rc=0; wait $job || rc=$?
  since "$t0" > "$work/$tag.ended"
  echo "$rc" > "$work/$tag.first.rc"
  cp "$ck" "$work/$tag.lost.ckpt" # the checkpoint the restarts start from
  local c k flag
  for c in $continuations; do
    case $c in
      four) k=4 flag=() ;;
      mean) k=3 flag=(--reshard) ;;
      zero) k=3 flag=(--reshard=zero) ;;
    esac
    CLUSTER_K=$k limited 3600 "$@" --resume "$work/$tag.lost.ckpt" "${flag[@]}" \
      --log "$work/$tag.$c.jsonl" > "$work/$tag.$c.out" 2>&1
  done
}

set +e # from here on, failures are counted by check
if [[ $check_mode -eq 1 ]]; then
  n=$([[ $quick -eq 1 ]] && echo 7680 || echo 19200)
  continuations=mean
  lose_host check "$deft" train --backend mpi --model lenet --algo def --ratio 64 \
    --batch 96 --epochs 3 --limit-train "$n" --limit-test 1000 --seed 3 --quiet
  rc=$(cat "$work/check.first.rc") took=$(cat "$work/check.ended")
  check $((rc == 0)) "the 4-host job ended non-zero when host 3 was lost (status $rc)"
  check "$([[ $took != - ]] && awk -v t="$took" 'BEGIN { exit !(t <= 30) }'; echo $?)" \
    "it ended ${took} s after the loss (limit 30 s; - = it ended before its first checkpoint)"
  check "$(grep -q '"final"' "$work/check.mean.jsonl"; echo $?)" \
    "the restart on 3 hosts with --reshard finished: $(grep -Eo 'test accuracy [0-9.]+%' "$work/check.mean.out")"
  ep=$(field "$work/check.first.jsonl" '"epoch"' epoch)
  a0=$(field "$work/check.first.jsonl" '"epoch"' test_acc)
  a1=$(field "$work/check.mean.jsonl" '"resharded"' test_acc)
  check "$([[ -n $a0 && $a0 == "$a1" ]]; echo $?)" \
    "right after the restart the output model evaluates as at the checkpoint of epoch $ep (test accuracy $a0 and $a1)"
  l0=$(field "$work/check.first.jsonl" '"epoch"' train_loss)
  l1=$(field "$work/check.mean.jsonl" '"epoch"' train_loss)
  check "$(awk -v a="$l0" -v b="$l1" 'BEGIN { print !(b < a) }')" \
    "it trained on: train loss $l0 in epoch $ep, $l1 in the last"
  if [[ $failures -gt 0 ]]; then
    tail -n 5 "$work"/*.out >&2
    exit 1
  fi
  rm -rf "$work"
  exit 0
fi

echo "cluster reshard: logs in $work" >&2
header > "$out"
tags | while read -r tag model method seed algo comp ratio; do
  if [[ $model == lenet ]]; then lt=${limit_train:-60000}; else lt=${limit_train:-9600}; fi
  echo "cluster reshard: $tag" >&2
  lose_host "$tag" "$deft" train --backend mpi --model "$model" --algo "$algo" \
    --compressor "$comp" --ratio "$ratio" --batch 96 --epochs "$epochs" \
    --limit-train "$lt" --limit-test 2000 --seed "$seed" --quiet < /dev/null
  row "$tag" "$model" "${method/-/ }" "$seed" >> "$out"
done

#!/usr/bin/env bash
# Failures on the virtual cluster end in bounded time, with a clear message,
# and a resume from the last checkpoint finishes the run bitwise:
#   (a) host 1's link is taken down mid-epoch (ip link set eth0 down): the
#       job exits non-zero within --comm-timeout + 30 s, with the
#       collective watchdog's message;
#   (b) host 1's rank is stopped (SIGSTOP): the same;
#   (c) host 1's rank is killed (SIGKILL): the job ends within 10 s;
#   (d) after each of (a)-(c), --resume from the last checkpoint finishes
#       the run, and its final model equals an uninterrupted run's bitwise;
#   (e) host 1's link slowed to 10 Mbit/s mid-run slows the job but does
#       not fail it (default timeout), and the model is still bitwise the
#       uninterrupted one;
#   (f) on 4 hosts, host 3 is lost (its rank killed) in epoch 2: the job
#       ends, restarts on hosts 0-2 from the last checkpoint with
#       --reshard and finishes; its output model right after the restart
#       evaluates as at the checkpoint (scripts/cluster_reshard.sh --check).
# Runs deft train --backend mpi (LeNet, def/rbgs 256, checkpoint per
# epoch) on 2 hosts at 1 Gbit/s.
#
# usage: scripts/cluster.sh faults [--quick] [--timeout S]
#   --quick: CI's smoke test: one short run of fault (a), and a short (f).
# Exit status 0 if every check passed, 1 otherwise, 77 (skip) without root.
set -euo pipefail
source "$(dirname "$0")/cluster.sh"

quick=0 tmo=5
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1; shift ;;
    --timeout) tmo=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) cluster_die "faults: unknown option '$1' (see --help)" ;;
  esac
done
cluster_fault_prelude faults

work=$(mktemp -d /tmp/deft-faults.XXXXXX)
cluster_up 2 1
trap 'cluster_down; rm -rf "$work"' EXIT
cluster_export
set +e # from here on, failures are counted by check

if [[ $quick -eq 1 ]]; then
  train=("$deft" train --backend mpi --model lenet --epochs 2 --limit-train 7680
         --limit-test 500 --seed 3 --quiet)
else
  train=("$deft" train --backend mpi --model lenet --epochs 3 --limit-train 30720
         --limit-test 1000 --seed 3 --quiet)
fi


echo "cluster faults: uninterrupted reference run"
limited 300 "${train[@]}" --save-model "$work/ref.bin" > "$work/ref.out" 2>&1
check $? "reference run finished"

# fault NAME LIMIT_S ACTION EXPECT: runs the job with a checkpoint, does
# ACTION once the first checkpoint exists (early in epoch 2), and checks
# that the job ends non-zero within LIMIT_S of the fault, with stderr
# matching EXPECT (if given); then undoes it and resumes.
fault() {
  local name=$1 limit=$2 action=$3 expect=$4 ck=$work/$1.ckpt
  echo "cluster faults: ($name)"
  # A hard stop far past the limit, so that a hang fails instead of hanging.
  limited $((limit + 120)) "${train[@]}" --comm-timeout "$tmo" --checkpoint "$ck" \
    > "$work/$name.out" 2>&1 &
  local job=$!
  wait_for "$ck"
  [[ -e $ck ]] || { check 1 "no checkpoint after 60 s"; wait $job || true; return; }
  local t0; t0=$(now)
  eval "$action"
  local rc=0; wait $job || rc=$?
  local took; took=$(since "$t0")
  check $((rc == 0)) "job exited non-zero (status $rc)"
  check "$(awk -v t="$took" -v l="$limit" 'BEGIN { print !(t <= l) }')" \
    "ended ${took} s after the fault (limit $limit s)"
  if [[ -n $expect ]]; then
    grep -Eq "$expect" "$work/$name.out"
    check $? "message: $(grep -Eo "$expect.{0,90}" "$work/$name.out" | head -1)"
  fi
  local pids i
  for ((i = 0; i < 100; i++)); do
    pids=$(ip netns pids "$(cluster_ns_of 1)")
    [[ -z $pids ]] && break
    sleep 0.1
  done
  check $([[ -z $pids ]]; echo $?) "nothing left running on host 1${pids:+ (left:$(
    ps -o pid=,comm= -p "$(echo $pids | tr ' ' ,)" | tr '\n' ' '))}"
  ip -n "$(cluster_ns_of 1)" link set eth0 up
  # (d): resume finishes the run bitwise.
  limited 300 "${train[@]}" --resume "$ck" --save-model "$work/$name.bin" \
    > "$work/$name.resume.out" 2>&1
  check $? "(d) --resume from the last checkpoint finished"
  cmp -s "$work/ref.bin" "$work/$name.bin"
  check $? "(d) resumed model equals the uninterrupted run's bitwise"
}

watch_msg='collective watchdog: [a-z]+ \(collective #[0-9]+\) on rank [0-9]+ of 2 has not completed after'
fault a $((tmo + 30)) 'ip -n "$(cluster_ns_of 1)" link set eth0 down' "$watch_msg"
if [[ $quick -eq 0 ]]; then
  fault b $((tmo + 30)) 'kill -STOP "$(deft_pid_on 1)"' "$watch_msg"
  fault c 10 'kill -KILL "$(deft_pid_on 1)"' ""

  # (e): a slow link, under the default timeout (300 s), on SGD (full
  # gradients, so that the link is the bottleneck).
  echo "cluster faults: (e)"
  slow=("$deft" train --backend mpi --model lenet --algo sgd --epochs 3
        --limit-train 3840 --limit-test 500 --seed 3 --quiet)
  limited 300 "${slow[@]}" --save-model "$work/e-ref.bin" --log "$work/e-ref.jsonl" \
    > "$work/e-ref.out" 2>&1
  check $? "sgd reference run finished"
  limited 600 "${slow[@]}" --save-model "$work/e.bin" --log "$work/e.jsonl" \
    --checkpoint "$work/e.ckpt" > "$work/e.out" 2>&1 &
  job=$!
  wait_for "$work/e.ckpt"
  cluster_set_rate 1 0.01
  check $? "host 1's link set to 10 Mbit/s after epoch 1"
  rc=0; wait $job || rc=$?
  check $rc "job on a 10 Mbit/s link finished (status $rc)"
  cmp -s "$work/e-ref.bin" "$work/e.bin"
  check $? "its model equals the full-speed run's bitwise"
  # Slowed: epochs 2-3 took (far) longer than at full speed. A bound of 3x,
  # where 10 Mbit/s against 1 Gbit/s makes it about 50x.
  fast=$(grep -o '"wall_s": [0-9.]*' "$work/e-ref.jsonl" | awk 'NR==1{a=$2} NR==3{print $2-a}')
  slowed=$(grep -o '"wall_s": [0-9.]*' "$work/e.jsonl" | awk 'NR==1{a=$2} NR==3{print $2-a}')
  check "$(awk -v f="$fast" -v s="$slowed" 'BEGIN { print !(s > 3 * f) }')" \
    "epochs 2-3 slowed from ${fast} s to ${slowed} s"
fi

# (f): lose a host, continue on the rest (its own 4-host cluster).
cluster_down
echo "cluster faults: (f)"
DEFT=$deft scripts/cluster_reshard.sh --check $([[ $quick -eq 1 ]] && echo --quick) \
  > "$work/f.out" 2>&1
check $? "(f) lose 1 of 4 hosts, re-shard, finish on 3: $(grep -c '  ok:' "$work/f.out") checks passed"
grep -E '^  (ok|FAILED):' "$work/f.out" | sed 's/^/  (f)/'

if [[ $failures -gt 0 ]]; then
  echo "cluster faults: $failures check(s) FAILED; logs:" >&2
  tail -n 15 "$work"/*.out >&2
  exit 1
fi
echo "cluster faults: all checks passed"

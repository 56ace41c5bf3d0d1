#!/usr/bin/env bash
# A real slow-network measurement: MPI ranks talk over TCP only, inside a
# private network namespace whose loopback is rate-limited with tc's token
# bucket filter (tbf). Trains the same model with full-precision SGD and
# with DEF at two RBGS ratios and reports real seconds per epoch, time to a
# target test accuracy, and DEF's speedup over SGD.
#
# All ranks share the namespace's one loopback, so the rate is the total of
# all their traffic (like ranks behind one shared link), not per rank.
#
# usage: scripts/netbench.sh [--gbps G] [--ranks K] [--epochs E]
#                            [--target ACC] [--model M] [--ratios "64 256"]
# Needs root (ip netns, tc). Cleans up its namespace on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

gbps=1 ranks=4 epochs=4 target=0.85 model=lenet ratios="64 256" lr=0.02
while [[ $# -gt 0 ]]; do
  case $1 in
    --gbps) gbps=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --ratios) ratios=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "netbench: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "netbench: needs root for ip netns and tc" >&2; exit 1; }
command -v ip >/dev/null && command -v tc >/dev/null ||
  { echo "netbench: needs iproute2 (apt-get install iproute2)" >&2; exit 1; }
deft=${DEFT:-build/deft}
[[ -x $deft ]] || { echo "netbench: $deft not built (run make)" >&2; exit 1; }

ns=deft-netbench-$$
out=results/netbench
mkdir -p "$out"
rm -f "$out"/*.jsonl "$out/summary.md"   # the table reads every log here
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" tc qdisc add dev lo root tbf rate "${gbps}gbit" \
  burst 1mb latency 100ms
echo "netbench: namespace $ns, loopback limited to $gbps Gbit/s (tbf)," \
     "$ranks MPI ranks over TCP, $model, $epochs epochs, target accuracy $target"

mpirun_ns() {
  ip netns exec "$ns" env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun --oversubscribe --bind-to none --mca btl tcp,self \
    --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -np "$ranks" "$@"
}

runs=("sgd 1")
for r in $ratios; do runs+=("def $r"); done
for run in "${runs[@]}"; do
  set -- $run
  echo "== $1 ratio $2"
  mpirun_ns "$deft" train --backend mpi --model "$model" --algo "$1" \
    --compressor rbgs --ratio "$2" --epochs "$epochs" --lr "$lr" --init he --quiet \
    --log "$out/$1-$2.jsonl"
done

# The table, also kept next to the logs (with the command that made it) for
# scripts/report.sh's section (d).
{
  echo "Command: \`scripts/netbench.sh --gbps $gbps --ranks $ranks --epochs $epochs" \
       "--target $target --model $model --ratios \"$ratios\"\` ($model, $ranks MPI" \
       "ranks over TCP on a loopback limited to $gbps Gbit/s)."
  echo
  scripts/netbench_table.sh "$out" "$target"
} > "$out/summary.md"
echo
tail -n +3 "$out/summary.md"
echo
echo "logs: $out/*.jsonl, table: $out/summary.md"

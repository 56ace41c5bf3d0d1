#!/usr/bin/env bash
# deft against PyTorch DDP on the virtual cluster (scripts/cluster.sh): the
# same model, data, global batch, learning-rate schedule and epochs for
# every method, 4 hosts, each link at each of the --gbps rates.
#   deft train --backend mpi: sgd, def at ratios 64 and 256 (rbgs); on
#     request (--methods) ef-fp16, ef-powersgd-rR, def-powersgd-rR
#   PyTorch DDP over Gloo (bench/ddp_fmnist.py): plain allreduce,
#     fp16_compress_hook, powerSGD_hook at rank 1 and 4
#   deft's DEF (ratio 256) through deft.torch (examples/torch_fmnist.py)
# Bytes per host are each host's eth0 transmit counter, read before and
# after every job (all protocol overhead included). Logs and the table go
# to results/cluster/<model>/; the table and figure are made by
# bench/cluster_table.py.
#
# usage: bench/cluster_bench.sh [--model lenet|vgg] [--epochs E]
#          [--gbps "1 10"] [--hosts K] [--target ACC] [--limit-train N]
#          [--methods "sgd def64 ..."]
# Needs root. Re-running a method overwrites its log.
set -euo pipefail
source "$(dirname "$0")/../scripts/cluster.sh"

model=lenet epochs=4 rates="1 10" hosts=4 target=0.86 limit=0
methods="sgd def64 def256 ddp ddp-fp16 ddp-powersgd-r1 ddp-powersgd-r4 torch-def256"
while [[ $# -gt 0 ]]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --gbps) rates=$2; shift 2 ;;
    --hosts) hosts=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --limit-train) limit=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) cluster_die "bench: unknown option '$1' (see --help)" ;;
  esac
done
cluster_need_root
[[ -x build/deft ]] || cluster_die "bench: build/deft is missing (run make)"
common=(--model "$model" --epochs "$epochs" --lr 0.02 --init he --batch 128 --seed 0)
[[ $limit -gt 0 ]] && common+=(--limit-train "$limit")

job() { # method log
  case $1 in
    sgd) echo build/deft train --backend mpi "${common[@]}" --algo sgd --quiet --log "$2" ;;
    ef-fp16) echo build/deft train --backend mpi "${common[@]}" --algo ef --compressor fp16 \
            --quiet --log "$2" ;;
    ef-powersgd-r*|def-powersgd-r*) echo build/deft train --backend mpi "${common[@]}" \
            --algo "${1%%-*}" --compressor powersgd --powersgd-rank "${1##*-r}" --quiet --log "$2" ;;
    def*) echo build/deft train --backend mpi "${common[@]}" --algo def --compressor rbgs \
            --ratio "${1#def}" --quiet --log "$2" ;;
    ddp) echo /usr/bin/python3 bench/ddp_fmnist.py "${common[@]}" --hook none --log "$2" ;;
    ddp-fp16) echo /usr/bin/python3 bench/ddp_fmnist.py "${common[@]}" --hook fp16 --log "$2" ;;
    ddp-powersgd-r*) echo /usr/bin/python3 bench/ddp_fmnist.py "${common[@]}" --hook powersgd \
            --rank "${1#ddp-powersgd-r}" --log "$2" ;;
    torch-def*) echo /usr/bin/python3 examples/torch_fmnist.py "${common[@]}" --algo def \
            --compressor rbgs --ratio "${1#torch-def}" --threads 1 --quiet --log "$2" ;;
    *) cluster_die "bench: unknown method $1" ;;
  esac
}

for m in $methods; do job "$m" /dev/null > /dev/null || exit 1; done # unknown ones

for g in $rates; do
  out=results/cluster/$model/${g}gbps
  mkdir -p "$out"
  cluster_up "$hosts" "$g"
  for m in $methods; do
    read -r -a cmd <<< "$(job "$m" "$out/$m.jsonl")"
    before=(); for ((h = 0; h < hosts; h++)); do before+=("$(cluster_tx_bytes $h)"); done
    echo "== $model, $g Gbit/s, $m: ${cmd[*]}" >&2
    cluster_mpirun -- "${cmd[@]}" > "$out/$m.out" 2>&1 ||
      { tail -20 "$out/$m.out" >&2; cluster_die "bench: $m failed (log $out/$m.out)"; }
    sent=0
    for ((h = 0; h < hosts; h++)); do sent=$((sent + $(cluster_tx_bytes $h) - before[h])); done
    echo "$((sent / hosts))" > "$out/$m.txbytes"
    tail -1 "$out/$m.jsonl" >&2
  done
  cluster_down
  {
    echo "Command: \`bench/cluster_bench.sh --model $model --epochs $epochs --gbps $g" \
         "--hosts $hosts --target $target$([[ $limit -gt 0 ]] && echo " --limit-train $limit")\`"
    echo
    /usr/bin/python3 bench/cluster_table.py "$out" --gbps "$g" --target "$target"
  } > "$out/summary.md"
  cat "$out/summary.md"
done

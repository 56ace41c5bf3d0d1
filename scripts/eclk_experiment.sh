#!/usr/bin/env bash
# eclk against its baselines on ill-conditioned logistic regression
# (docs/eclk.md): the parameter grid behind eclk's compressor-aware default,
# then rounds and bits to 1e-4 and 1e-6 for every method. Every run is a
# `deft convex` log in OUT; a run whose log has its final line is not run
# again, so an interrupted sweep resumes. Table: bench/eclk_table.py.
#
# usage: scripts/eclk_experiment.sh [--out DIR] [--part grid|main|k20|mu5|sparse|randk|all]
#                                   [--deft PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/eclk
part=all
deft=build/deft
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --part) part=$2; shift 2 ;;
    --deft) deft=$2; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "eclk_experiment: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case $part in grid|main|k20|mu5|sparse|randk|all) ;; *)
  echo "eclk_experiment: --part '$part': expected grid, main, k20, mu5, sparse, randk or all" >&2; exit 2 ;;
esac
python=${PYTHON:-/usr/bin/python3}
[ -x "$deft" ] || { echo "eclk_experiment: $deft not built (make build)" >&2; exit 1; }
mkdir -p "$out"

# run NAME ARGS...: one deft convex run, skipped when its log is complete.
run() {
  local name=$1; shift
  local log=$out/$name.jsonl
  # Done: a final line whose status is ok or diverged (logs of builds
  # before the status field have none); a run that failed runs again.
  local final
  final=$( [ -f "$log" ] && grep '"final": true' "$log" || true)
  if [ -n "$final" ] && { ! grep -q '"status"' <<< "$final" ||
       grep -q '"status": "\(ok\|diverged\)"' <<< "$final"; }; then
    echo "eclk_experiment: $name done already"; return 0
  fi
  echo "eclk_experiment: $name"
  "$deft" convex "$@" --quiet --log "$log" || {
    rc=$?; [ $rc -eq 3 ] || { echo "eclk_experiment: $name failed ($rc)" >&2; return $rc; }; }
}

raw="--mu 1e-3 --workers 8 --seed 0 --target 1e-6 --log-every 100"
full="--batch full"

if [ "$part" = grid ] || [ "$part" = all ]; then
  # eclk's default on the raw-pixel problem with full local gradients and
  # the global anchor gradient: p = delta, theta1 L-Katyusha's for that p,
  # E = 0. The grid around it: the exponent E of L / delta^E, and p.
  for r in 16 64; do for e in 0 0.5 1; do
    run grid-topk-$r-e$e $raw $full --algo eclk --compressor topk --ratio $r \
      --delta-exp $e --rounds 20000
  done; done
  for rp in 16:0.25 64:0.0625 64:0.25; do
    r=${rp%:*} p=${rp#*:}
    run grid-topk-$r-e0-p$p $raw $full --algo eclk --compressor topk --ratio $r \
      --p $p --rounds 20000
  done
  # Rand-K (shared seed) at the default, and with more damping (theta1).
  for r in 16 64; do
    run grid-randk-$r-e0 $raw $full --algo eclk --compressor randk --ratio $r --rounds 20000
  done
  run grid-randk-16-theta0.05 $raw $full --algo eclk --compressor randk \
    --ratio 16 --theta1 0.05 --rounds 20000
  # L-Katyusha's constants with the local anchor gradient (the former
  # defaults): the configuration the issue tried.
  run grid-topk-16-lkatyusha-local $raw $full --algo eclk --compressor topk \
    --ratio 16 --params lkatyusha --anchor-grad local --rounds 20000
fi

# methods PREFIX CAP COMPRESSORS COMMON...: every method on one problem;
# the methods that cannot be accelerated stop at CAP rounds, except GD and
# EC-GD with Top-K/16, the references of the 5x target, which get 8 x CAP.
methods() {
  local pre=$1 cap=$2 comps=$3; shift 3
  run $pre-gd "$@" --algo gd --rounds $((8 * cap))
  run $pre-lkatyusha-full "$@" $full --algo lkatyusha --rounds 20000
  for c in $comps; do for r in 16 64; do
    run $pre-eclk-$c-$r-full "$@" $full --algo eclk --compressor $c --ratio $r --rounds 20000
    local n=$cap; [ $c/$r = topk/16 ] && n=$((8 * cap))
    run $pre-ecgd-$c-$r "$@" --algo ecgd --compressor $c --ratio $r --rounds $n
    run $pre-diana-$c-$r-full "$@" $full --algo eclsvrg-diana --compressor $c --ratio $r --rounds $cap
  done; done
  # One row per worker and round (B = 1).
  local b1="--rounds 200000 --log-every 1000"
  run $pre-lkatyusha-b1 "$@" --algo lkatyusha $b1
  run $pre-eclk-topk-16-b1 "$@" --algo eclk --compressor topk --ratio 16 $b1
  run $pre-eclsvrg-topk-16-b1 "$@" --algo eclsvrg --compressor topk --ratio 16 $b1
  run $pre-diana-topk-16-b1 "$@" --algo eclsvrg-diana --compressor topk --ratio 16 $b1
  run $pre-ecsgd-topk-16-b1 "$@" --algo ecsgd --compressor topk --ratio 16 $b1
}

if [ "$part" = main ] || [ "$part" = all ]; then
  methods raw 20000 "topk randk randk-private" $raw
fi
# few PREFIX COMMON...: the rows the 5x target compares, on another problem.
few() {
  local pre=$1; shift
  run $pre-lkatyusha-full "$@" $full --algo lkatyusha --rounds 20000
  run $pre-eclk-topk-16-full "$@" $full --algo eclk --compressor topk --ratio 16 --rounds 20000
  run $pre-ecgd-topk-16 "$@" --algo ecgd --compressor topk --ratio 16 --rounds 40000
}

if [ "$part" = k20 ] || [ "$part" = all ]; then
  few raw20 --mu 1e-3 --workers 20 --seed 0 --target 1e-6 --log-every 100
fi
if [ "$part" = mu5 ] || [ "$part" = all ]; then
  few mu5 --normalize --mu 1e-5 --workers 8 --seed 0 --target 1e-6 --log-every 100
fi
if [ "$part" = sparse ] || [ "$part" = all ]; then
  f=$out/sparse.svm
  [ -f "$f" ] || { "$python" scripts/gen_sparse_libsvm.py 20000 1000000 30 7 > "$f.tmp" && mv "$f.tmp" "$f"; }
  few sparse --data libsvm:$f --normalize --mu 5e-7 --workers 8 --seed 0 --target 1e-6 --log-every 100
fi

# randk PREFIX CAP COMMON...: eclk (the Rand-K rule), EC-GD and
# EC-LSVRG-DIANA under shared-seed Rand-K at ratios 16 and 64, eclk under
# Top-K beside them, and L-Katyusha; eclk runs to 20000 rounds, the
# methods without acceleration to CAP.
randk() {
  local pre=$1 cap=$2; shift 2
  run $pre-lkatyusha-full "$@" $full --algo lkatyusha --rounds 20000
  for r in 16 64; do
    run $pre-eclk-topk-$r-full "$@" $full --algo eclk --compressor topk --ratio $r --rounds 20000
    run $pre-eclk-randk-$r-full "$@" $full --algo eclk --compressor randk --ratio $r --rounds 20000
    run $pre-ecgd-randk-$r "$@" --algo ecgd --compressor randk --ratio $r --rounds $cap
    run $pre-diana-randk-$r-full "$@" $full --algo eclsvrg-diana --compressor randk --ratio $r --rounds $cap
  done
}

if [ "$part" = randk ] || [ "$part" = all ]; then
  randk raw 20000 $raw
  for r in 16 64; do
    run raw-eclk-randk-private-$r-full $raw $full --algo eclk --compressor randk-private --ratio $r --rounds 20000
  done
  f=$out/sparse.svm
  [ -f "$f" ] || { "$python" scripts/gen_sparse_libsvm.py 20000 1000000 30 7 > "$f.tmp" && mv "$f.tmp" "$f"; }
  sp="--data libsvm:$f --normalize --mu 5e-7 --seed 0 --target 1e-6 --log-every 100"
  randk sparse 5000 $sp --workers 8
  randk raw20 20000 --mu 1e-3 --workers 20 --seed 0 --target 1e-6 --log-every 100
  randk sparse20 5000 $sp --workers 20
fi

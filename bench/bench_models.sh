#!/usr/bin/env bash
# Training throughput, deft against PyTorch, one thread each, measured in
# the same run: for every model, build/bench_train --model M --batch B
# (deft's C model, forward + backward + plain SGD update on synthetic
# 1x28x28 images), then bench/bench_torch_models.py --model M --batch B (the
# same step on the PyTorch twin of examples/torch_fmnist.py), one after the
# other, never both at once. Both print `RESULT model=M batch=B
# images_per_s=X`; their full output goes to stderr, the Markdown table
#   model | deft images/s | PyTorch images/s | ratio (deft / PyTorch)
# to stdout.
#
# usage: bench/bench_models.sh [--build DIR] [--batch B] [--steps N]
#          [--reps R] [--openblas-core CORE] [models...]
#                                        (default: lenet preresnet20 vgg11bn)
#   --build DIR  where bench_train is (default build/)
#   --steps, --reps  for the PyTorch side (its defaults: 10 and 5)
#   --openblas-core CORE  run both sides with OPENBLAS_CORETYPE=CORE, or
#                with it unset for `auto` (OpenBLAS picks the kernels for
#                this CPU); without it, the environment's setting stands.
#                The table's header names the core deft's sgemm ran on.
# Models: lenet vgg preresnet20 vgg11bn. PYTHON overrides /usr/bin/python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-/usr/bin/python3}
build=$root/build batch=128 torch_opts=() models=()
die() { echo "bench_models: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) [[ $# -ge 2 ]] || die "--build needs a directory"
             build=$(cd "$2" 2>/dev/null && pwd) || die "--build $2: no such directory"
             shift 2 ;;
    --batch) [[ ${2:-} =~ ^[0-9]+$ && $2 -ge 2 ]] || die "--batch needs a number >= 2"
             batch=$2; shift 2 ;;
    --steps|--reps) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "$1 needs a number >= 1"
             torch_opts+=("$1" "$2"); shift 2 ;;
    --openblas-core) [[ ${2:-} =~ ^[A-Za-z0-9_]+$ ]] || die "--openblas-core needs a core name or auto"
             if [[ $2 == auto ]]; then unset OPENBLAS_CORETYPE
             else export OPENBLAS_CORETYPE=$2; fi
             shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) models+=("$1"); shift ;;
  esac
done
[[ ${#models[@]} -gt 0 ]] || models=(lenet preresnet20 vgg11bn)
for m in "${models[@]}"; do
  case $m in
    lenet|vgg|preresnet20|vgg11bn) ;;
    *) die "unknown model '$m' (lenet, vgg, preresnet20, vgg11bn)" ;;
  esac
done
[[ -x $build/bench_train ]] || die "$build/bench_train is missing: run make build first"
[[ -x $python ]] || die "$python is missing (PyTorch's Python; set PYTHON)"

# images/s of the RESULT line for model $2 in output $1; fails if none.
result() {
  local line
  line=$(grep -E "^RESULT model=$2 batch=$batch images_per_s=[0-9.eE+-]+\$" <<< "$1" | tail -1) ||
    return 1
  echo "${line##*images_per_s=}"
}

rows=() core=
for m in "${models[@]}"; do
  echo "== $m: deft ($build/bench_train --model $m --batch $batch)" >&2
  out=$("$build/bench_train" --model "$m" --batch "$batch") ||
    { echo "$out" >&2; die "bench_train --model $m failed"; }
  echo "$out" >&2
  d=$(result "$out" "$m") || die "bench_train --model $m printed no RESULT line for batch $batch"
  core=$(sed -n 's/^OpenBLAS: .*, core \([^;]*\);.*/\1/p' <<< "$out")
  echo "== $m: PyTorch (bench/bench_torch_models.py --model $m --batch $batch ${torch_opts[*]})" >&2
  out=$("$python" "$root/bench/bench_torch_models.py" --model "$m" --batch "$batch" \
        "${torch_opts[@]}") || { echo "$out" >&2; die "bench_torch_models.py --model $m failed"; }
  echo "$out" >&2
  t=$(result "$out" "$m") || die "bench_torch_models.py --model $m printed no RESULT line"
  rows+=("$(awk -v m="$m" -v d="$d" -v t="$t" \
    'BEGIN { printf "| %s | %.0f | %.0f | %.2f |\n", m, d, t, (t > 0 ? d / t : 0) }')")
done

echo "Batch $batch, 1x28x28, one thread each, forward + cross-entropy + backward +"
echo "plain SGD update; measured one after the other in this run; ratio = deft / PyTorch."
echo "OpenBLAS core: ${core:-unknown} (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-(unset)})."
echo
echo "| model | deft images/s | PyTorch images/s | ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"

#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz) for FUZZ_SECONDS each, under
# AddressSanitizer and UndefinedBehaviorSanitizer, from its seed corpus and
# regression corpus, with -rss_limit_mb=2048 and -malloc_limit_mb=1024, and
# prints each target's executions and coverage. Fails (exit 1) on any
# crash, leak, out-of-memory or timeout (> 10 s for one input); the input
# that did it is left in BUILD/fuzz/artifacts/ and belongs in
# tests/fuzz/regress/<target>/ once fixed.
#
# usage: scripts/fuzz.sh [BUILD_DIR] [SECONDS] [TARGET...]
#   (make fuzz: build-fuzz, FUZZ_SECONDS or 300, all targets)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz} seconds=${2:-300}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] ||
  { echo "fuzz: SECONDS must be a positive integer (got '$seconds')" >&2; exit 2; }
shift $(($# > 2 ? 2 : $#))
targets=${*:-idx libsvm checkpoint optim_state cli}
work=$build/fuzz
mkdir -p "$work/artifacts"
failed=0
printf '%-12s %12s %8s %8s %8s %s\n' target executions cov ft corpus result
for t in $targets; do
  bin=$build/fuzz_$t
  [[ -x $bin ]] || { echo "fuzz: $bin is not built (make fuzz builds it)" >&2; exit 1; }
  mkdir -p "$work/corpus/$t"
  log=$work/$t.log
  rc=0
  # Run in the work directory's corpus (grown by this run and the next),
  # with the repository's seeds and regressions as extra inputs.
  TMPDIR=$work ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -timeout=10 -print_final_stats=1 -close_fd_mask=3 \
      -artifact_prefix="$work/artifacts/$t-" \
      "$work/corpus/$t" tests/fuzz/corpus/$t tests/fuzz/regress/$t > "$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  execs=${execs:-0}
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo -)
  ft=$(grep -o 'ft: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo -)
  corp=$(grep -o 'corp: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo -)
  if [[ $rc -ne 0 ]]; then res="FAILED (exit $rc, log $log)"; failed=1
  elif ! grep -q INITED "$log" || [[ $execs -eq 0 ]]; then
    res="FAILED (did not run: no INITED line or 0 executions, log $log)"; failed=1
  else res=ok; fi
  printf '%-12s %12s %8s %8s %8s %s\n' "$t" "$execs" "$cov" "$ft" "$corp" "$res"
  [[ $res == ok ]] || grep -E 'ERROR|SUMMARY|out-of-memory|timeout|leak' "$log" | head -5 >&2 || true
done
exit $failed

#!/usr/bin/env bash
# Checks that a results folder from scripts/reproduce.sh is complete and
# well-formed: every log ends with a final line, report.md has its tables,
# and every figure it names is a real PNG. Used by CI on the --quick sweep.
# usage: scripts/check_report.sh DIR
set -euo pipefail
dir=${1:?usage: scripts/check_report.sh DIR}
fail() { echo "check_report: $*" >&2; exit 1; }
n=0
for f in "$dir"/*.jsonl; do
  [[ -e $f ]] || fail "no logs in $dir"
  n=$((n + 1))
  tail -n 1 "$f" | grep -q '"final": true, "status": "\(ok\|diverged\)"' ||
    fail "$f does not end with a final status line"
  grep -q '"epoch": 1,' "$f" || grep -q '"status": "diverged"' "$f" ||
    fail "$f has no epoch line"
  bad=$(grep -v '^{.*}$' "$f" | head -n 1 || true)
  [[ -z $bad ]] || fail "$f has a line that is not a JSON object: $bad"
done
md=$dir/report.md
[[ -s $md ]] || fail "no $md"
for t in "Table 1 analogue" "Table 3 analogue" "Table 4 analogue" "Learning rate" \
         "(d) Modeled"; do
  grep -q "$t" "$md" || fail "$md lacks '$t'"
done
grep -q '^| 1 | [0-9]' "$md" || fail "$md: the SGD row has no accuracy"
pngs=$(sed -n 's/^!\[[^]]*\](\(.*\))$/\1/p' "$md")
[[ -n $pngs ]] || fail "$md names no figure"
for p in $pngs; do
  [[ -s $dir/$p ]] || fail "missing figure $dir/$p"
  [[ $(head -c 8 "$dir/$p" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] ||
    fail "$dir/$p is not a PNG"
done
echo "check_report: $n logs, report and $(wc -w <<< "$pngs") figure(s) OK in $dir"

#!/usr/bin/env bash
# Plots `deft convex` logs: relative suboptimality (log scale) against
# communication rounds (left) and against bits sent per worker (right, log
# scale), one line per log file, labelled by the run's "label" (from the
# log's config line). Logs can be split into rows of panels with
# --row=TITLE arguments. Needs gnuplot (Debian: gnuplot-nox); no python.
#
# usage: scripts/plot_convex.sh OUT.png [--row=TITLE] LOG.jsonl ...
#                               [--row=TITLE LOG.jsonl ...]
# environment: ROUNDS_MAX=N  cut the rounds axis at N
#              ROUNDS_LOG=1  log scale for the rounds axis too
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUT.png [--row=TITLE] LOG.jsonl ... [--row=TITLE LOG.jsonl ...]" >&2
  exit 2
fi
command -v gnuplot >/dev/null || {
  echo "$0: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
out=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One data file per log: "round rel_subopt bits" for every round object
# (lines with "round" and "rel_subopt", not the config or final objects).
extract() {
  awk '
    function num(key,   s) {
      if (match($0, "\"" key "\": *[-+0-9.eE]+")) {
        s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s); return s
      }
      return ""
    }
    /"round":/ && /"rel_subopt":/ && !/"final":/ {
      r = num("round"); v = num("rel_subopt"); b = num("bits_per_worker")
      if (r != "" && v != "" && v > 0) print r, v, b
    }' "$1"
}

label_of() {
  local label
  label=$(sed -n 's/.*"label": *"\([^"]*\)".*/\1/p' "$1" | head -n 1)
  if [ -z "$label" ]; then # logs without a label: method and compressor
    label=$(awk -F'"' '/"round":/ { for (k = 1; k < NF; k++) {
              if ($k == "method") m = $(k + 2)
              if ($k == "compressor") c = $(k + 2) }
            print m " " c; exit }' "$1")
  fi
  [ -n "$label" ] || label=$(basename "$1" .jsonl)
  printf '%s' "${label//\"/}"
}

# Rows of (rounds plot, bits plot) commands, as gnuplot text.
rows=0
declare -A seen
titles=()
plots_r=()
plots_b=()
i=0
for arg in "$@"; do
  if [[ $arg == --row=* ]]; then
    rows=$((rows + 1))
    titles[rows]=${arg#--row=}
    plots_r[rows]=""
    plots_b[rows]=""
    i=0
    continue
  fi
  if [ "$rows" -eq 0 ]; then
    rows=1
    titles[1]=""
    plots_r[1]=""
    plots_b[1]=""
  fi
  [ -r "$arg" ] || { echo "$0: cannot read $arg" >&2; exit 1; }
  i=$((i + 1))
  data="$tmp/$rows-$i.dat"
  extract "$arg" > "$data"
  label=$(label_of "$arg")
  # One colour per method (the label's first word; eclk's local-anchor
  # variant apart), and within a row the n-th line of a colour gets dash
  # type n: solid, dashed, dotted, dash-dot.
  case "$label" in
    gd*) color='#000000' ;;
    lkatyusha*) color='#009e73' ;;
    eclk*local*) color='#56b4e9' ;;
    eclk*) color='#0072b2' ;;
    ecgd*) color='#d55e00' ;;
    ecsgd*) color='#999999' ;;
    eclsvrg-diana*) color='#cc79a7' ;;
    eclsvrg*) color='#e69f00' ;;
    *) color=$(printf '#%02x%02x%02x' $((i * 70 % 200)) $((i * 130 % 200)) $((i * 190 % 200))) ;;
  esac
  key="$rows-$color"
  seen[$key]=$(( ${seen[$key]:-0} + 1 ))
  style="with lines lw 2 dt $(( (seen[$key] - 1) % 4 + 1 )) lc rgb '$color'"
  xr='1'
  [ "${ROUNDS_LOG:-0}" = 1 ] && xr='($1 > 0 ? $1 : 1/0)' # round 0 off a log axis
  plots_r[rows]+="${plots_r[rows]:+, }'$data' using $xr:2 $style title \"$label\""
  # bits on a log axis: leave out round 0 (nothing sent yet)
  plots_b[rows]+="${plots_b[rows]:+, }'$data' using (\$3 > 0 ? \$3 : 1/0):2 $style title \"$label\""
done

# pngcairo draws smoother lines; plain png (libgd) is the fallback.
height=$((80 + 520 * rows))
if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then
  term="pngcairo size 1500,$height font \"DejaVu Sans,11\""
else
  term="png size 1500,$height"
fi

{
  echo "set terminal $term"
  echo "set output '$out'"
  echo "set multiplot layout $rows,2"
  echo 'set logscale y'
  echo 'set format y "10^{%L}"'
  echo 'set grid'
  echo 'set ylabel "(P(x_t) - P*) / (P(x_0) - P*)"'
  echo 'set key bottom left font ",9" opaque box'
  for r in $(seq 1 "$rows"); do
    t=${titles[r]//\"/}
    echo 'unset logscale x'
    echo 'set format x "%g"'
    [ "${ROUNDS_LOG:-0}" = 1 ] && echo 'set logscale x' &&
      echo 'set format x "10^{%L}"'
    if [ -n "${ROUNDS_MAX:-}" ]; then
      echo "set xrange [*:$ROUNDS_MAX]"
    else
      echo 'set xrange [*:*]'
    fi
    echo "set title \"$t${t:+: }vs rounds\""
    echo 'set xlabel "communication rounds"'
    echo "plot ${plots_r[r]}"
    echo 'set xrange [*:*]'
    echo 'set logscale x'
    echo 'set format x "10^{%L}"'
    echo "set title \"$t${t:+: }vs bits\""
    echo 'set xlabel "bits sent per worker"'
    echo "plot ${plots_b[r]}"
  done
  echo 'unset multiplot'
} > "$tmp/plot.gp"
gnuplot "$tmp/plot.gp"
echo "wrote $out"

#!/usr/bin/env bash
# Tables and figures from a results folder written by scripts/reproduce.sh:
# DIR/report.md (Markdown tables: mean ± std over seeds of final and best
# test accuracy, "diverged" where a run diverged; modeled speedups) and
# DIR/fig1_r*.png, DIR/fig3.png (gnuplot). Reads only the JSON-lines logs.
#
# usage: scripts/report.sh DIR [--tables "1 3 4"] [--model1 M] [--ratios1 "..."]
#                              [--models3 "..."] [--lambdas "..."] [--seeds "..."]
#                              [--lr LR] [--lrs "..."]
#                              [--epochs E] [--target ACC] [--netbench DIR]
# --netbench: where scripts/netbench.sh left its measured table (default
# results/netbench), quoted in section (d) next to the modeled speedups.
set -euo pipefail
dir=${1:?usage: scripts/report.sh DIR [options]}
shift
tables="1 3 4 lr" model1=lenet ratios1="16 64 256 512 1024" models3="mlp lenet vgg"
lambdas="0.1 0.2 0.3 0.4 0.6 0.8" seeds="0 1 2" epochs="" target=""
netbench=results/netbench lr=0.05 lrs="0.01 0.005 0.002"
while [[ $# -gt 0 ]]; do
  case $1 in
    --tables) tables=$2; shift 2 ;;
    --model1) model1=$2; shift 2 ;;
    --ratios1) ratios1=$2; shift 2 ;;
    --models3) models3=$2; shift 2 ;;
    --lambdas) lambdas=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --netbench) netbench=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --lrs) lrs=$2; shift 2 ;;
    *) echo "report: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[[ -d $dir ]] || { echo "report: no folder $dir" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "report: needs gnuplot (scripts/install-deps.sh)" >&2; exit 1; }
md="$dir/report.md"

# log model algo ratio lambda seed [lr]: runs at the default lr have no
# _lr suffix (scripts/reproduce.sh's naming).
log() { echo "$dir/$1_$2_r$3_l$4_s$5$([[ -z ${6:-} || $6 == "$lr" ]] || echo "_lr$6").jsonl"; }

# A number from a JSON line: num FIELD <<< line
num() { sed -n "s/.*\"$1\": \([-0-9.e+]*\).*/\1/p"; }

# "final best status" of one log ("- - missing" when absent/incomplete).
finals() {
  local f=$1
  if [[ ! -f $f ]] || ! grep -q '"final": true' "$f"; then echo "- - missing"; return; fi
  local fin; fin=$(grep '"final": true' "$f" | tail -n 1)
  local status; status=$(sed -n 's/.*"status": "\([a-z]*\)".*/\1/p' <<< "$fin")
  echo "$(num test_acc <<< "$fin") $(num best_test_acc <<< "$fin") $status"
}

# The epochs a completed run ran ("?" when its log is missing), so a table
# mixing models trained for different lengths says so.
run_epochs() {
  [[ -f $1 ]] && grep '"final": true' "$1" | tail -n 1 | num epochs | grep . || echo "?"
}

# One table cell: mean ± std (in %) of the final accuracies over seeds, and
# of the best ones; "diverged" if any seed diverged.
cell() { # cell model algo ratio lambda [lr]
  local fs=() bs=() div=0 miss=0
  for s in $seeds; do
    read -r fa ba st < <(finals "$(log "$1" "$2" "$3" "$4" "$s" "${5:-}")")
    case $st in
      ok) fs+=("$fa"); bs+=("$ba") ;;
      diverged) div=1 ;;
      *) miss=1 ;;
    esac
  done
  if [[ $div -eq 1 ]]; then echo "diverged"; return; fi
  if [[ ${#fs[@]} -eq 0 ]]; then echo "—"; return; fi
  awk -v f="${fs[*]}" -v b="${bs[*]}" -v miss=$miss 'function ms(s,   n, a, i, m, v) {
      n = split(s, a, " "); m = 0; for (i = 1; i <= n; i++) m += a[i]; m /= n
      v = 0; for (i = 1; i <= n; i++) v += (a[i] - m) ^ 2
      v = n > 1 ? sqrt(v / (n - 1)) : 0
      return sprintf("%.2f ± %.2f", 100 * m, 100 * v) }
    BEGIN { printf "%s (best %s)%s\n", ms(f), ms(b), miss ? " *" : "" }'
}

{
  echo "# Reproduction report"
  echo
  echo "Folder \`$dir\`; seeds: $seeds${epochs:+; epochs: $epochs}. Cells: mean ± std over"
  echo "seeds of the final test accuracy (%), and of the best epoch's in"
  echo "parentheses; \"diverged\" if any seed diverged; * if a seed's log is missing."
  echo
  if [[ " $tables " == *" 1 "* ]]; then
    echo "## Table 1 analogue: $model1, RBGS, 8 workers, accuracy by compression ratio"
    echo
    echo "| ratio | SGD | EF | SAEF | PSync | DEF | DEF-A |"
    echo "|---|---|---|---|---|---|---|"
    echo "| 1 | $(cell "$model1" sgd 1 0.3) | — | — | — | — | — |"
    for r in $ratios1; do
      row="| $r | — "
      for a in ef saef psync def defa; do row+="| $(cell "$model1" "$a" "$r" 0.3) "; done
      echo "$row|"
    done
    echo
  fi
  if [[ " $tables " == *" 3 "* ]]; then
    echo "## Table 3 analogue: ratio 64, by model"
    echo
    echo "| model | epochs | SGD | EF | SAEF | PSync | DEF | DEF-A |"
    echo "|---|---|---|---|---|---|---|---|"
    for m in $models3; do
      row="| $m | $(run_epochs "$(log "$m" sgd 1 0.3 "${seeds%% *}")") | $(cell "$m" sgd 1 0.3) "
      for a in ef saef psync def defa; do row+="| $(cell "$m" "$a" 64 0.3) "; done
      echo "$row|"
    done
    echo
  fi
  if [[ " $tables " == *" 4 "* ]]; then
    echo "## Table 4 analogue: λ, $model1, ratio 64"
    echo
    echo "| λ | DEF | DEF-A |"
    echo "|---|---|---|"
    for l in $lambdas; do
      echo "| $l | $(cell "$model1" def 64 "$l") | $(cell "$model1" defa 64 "$l") |"
    done
    echo
  fi
  if [[ " $tables " == *" lr "* ]]; then
    echo "## Learning rate: EF and DEF, $model1, ratio 64"
    echo
    echo "The paper tunes the learning rate per method; the tables above use $lr"
    echo "for all. Is EF's divergence only a matter of the learning rate?"
    echo
    echo "| lr | EF | DEF |"
    echo "|---|---|---|"
    for l in $lr $lrs; do
      echo "| $l | $(cell "$model1" ef 64 0.3 "$l") | $(cell "$model1" def 64 0.3 "$l") |"
    done
    echo
  fi
} > "$md"

# ---- (d) modeled wall-clock speedup to a target accuracy -----------------
# From each seed-0 log of table 1: per-worker compute time (CPU seconds
# outside collectives, measured with 8 workers) and the payload each worker
# handed to the allreduce, re-modeled for 16 workers on 1 and 10 Gbit/s
# links (50 us latency): ring allreduce 2(K-1)(alpha + n/(K beta)) per step.
# With 16 workers each has half the batch, so compute is scaled by 8/16.
s0=${seeds%% *}
if [[ " $tables " == *" 1 "* && -f $(log "$model1" sgd 1 0.3 "$s0") ]]; then
  sgd_final=$(finals "$(log "$model1" sgd 1 0.3 "$s0")" | cut -d' ' -f1)
  [[ -n $target ]] || target=$(awk -v a="$sgd_final" 'BEGIN { printf "%.3f", a - 0.02 }')
  model_time() { # model_time LOG GBPS -> seconds to reach target (or "-")
    awk -v gbps="$2" -v target="$target" '
      /"epoch":/ {
        match($0, /"step": [0-9]+/); steps = substr($0, RSTART + 8, RLENGTH - 8)
        match($0, /"payload_bytes_per_worker": [0-9]+/); pay = substr($0, RSTART + 28, RLENGTH - 28)
        match($0, /"compute_s": [0-9.]+/); comp = substr($0, RSTART + 13, RLENGTH - 13)
        match($0, /"test_acc": [0-9.]+/); acc = substr($0, RSTART + 12, RLENGTH - 12)
        K = 16; beta = gbps * 1e9 / 8; alpha = 50e-6
        t = comp * 8 / K + 2 * (K - 1) * (steps * alpha + pay / (K * beta))
        if (!hit && acc + 0 >= target) { hit = 1; printf "%.1f\n", t; exit }
      }
      END { if (!hit) print "-" }' "$1"
  }
  {
    echo "## (d) Modeled wall-clock to $(awk -v t="$target" 'BEGIN{printf "%.1f%%", 100*t}') test accuracy, 16 workers"
    echo
    echo "Compute measured per worker (8 workers, scaled to 16), communication"
    echo "modeled (ring allreduce, α = 50 µs) from the bytes each worker sent, seed $s0."
    echo
    echo "| method | ratio | 1 Gbit/s: s | speedup | 10 Gbit/s: s | speedup |"
    echo "|---|---|---|---|---|---|"
    t1=$(model_time "$(log "$model1" sgd 1 0.3 "$s0")" 1)
    t10=$(model_time "$(log "$model1" sgd 1 0.3 "$s0")" 10)
    echo "| sgd | 1 | $t1 | 1.00 | $t10 | 1.00 |"
    for r in $ratios1; do
      for a in def defa; do
        f=$(log "$model1" "$a" "$r" 0.3 "$s0")
        [[ -f $f ]] || continue
        a1=$(model_time "$f" 1) a10=$(model_time "$f" 10)
        sp() { [[ $1 == - || $2 == - ]] && echo "-" || awk -v x="$1" -v y="$2" 'BEGIN { printf "%.2f", x / y }'; }
        echo "| $a | $r | $a1 | $(sp "$t1" "$a1") | $a10 | $(sp "$t10" "$a10") |"
      done
    done
    echo
    echo "### Real throttled network (scripts/netbench.sh)"
    echo
    if [[ -s $netbench/summary.md ]]; then
      cat "$netbench/summary.md"
    else
      echo "No measurement in \`$netbench\`: run scripts/netbench.sh (needs root)."
    fi
    echo
  } >> "$md"
fi

# ---- figures ----------------------------------------------------------------
dat() { # dat LOG OUT: epoch test_acc train_loss modeled_s
  awk '/"epoch":/ {
      match($0, /"epoch": [0-9]+/); e = substr($0, RSTART + 9, RLENGTH - 9)
      match($0, /"test_acc": [0-9.]+/); a = substr($0, RSTART + 12, RLENGTH - 12)
      match($0, /"train_loss": [0-9.eE+-]+/); l = substr($0, RSTART + 14, RLENGTH - 14)
      match($0, /"modeled_s": [0-9.]+/); m = substr($0, RSTART + 13, RLENGTH - 13)
      print e, 100 * a, l, m }' "$1" > "$2"
}
pngs=()
if [[ " $tables " == *" 1 "* ]]; then
  for r in 64 256; do
    [[ " $ratios1 " == *" $r "* ]] || continue
    plots1="" plots2="" plots3=""
    for a in sgd ef saef psync def defa; do
      rr=$r; [[ $a == sgd ]] && rr=1
      f=$(log "$model1" "$a" "$rr" 0.3 "$s0")
      [[ -f $f ]] || continue
      dat "$f" "$dir/fig_${a}_r$rr.dat"
      [[ -s $dir/fig_${a}_r$rr.dat ]] || continue
      plots1+="'$dir/fig_${a}_r$rr.dat' using 4:2 with linespoints title '$a', "
      plots2+="'$dir/fig_${a}_r$rr.dat' using 1:2 with linespoints title '$a', "
      plots3+="'$dir/fig_${a}_r$rr.dat' using 1:3 with linespoints title '$a', "
    done
    [[ -n $plots1 ]] || continue
    gnuplot <<GP
set terminal pngcairo size 1500,450 font ",10"
set output '$dir/fig1_r$r.png'
set multiplot layout 1,3 title "$model1 on Fashion-MNIST, 8 workers, RBGS ratio $r (seed $s0)"
set key bottom right
set grid
set xlabel 'modeled wall-clock (s, 1 Gbit/s link)'; set ylabel 'test accuracy (%)'
plot ${plots1%, }
set xlabel 'epoch'; set ylabel 'test accuracy (%)'
plot ${plots2%, }
set key top right
set xlabel 'epoch'; set ylabel 'training loss'; set logscale y
plot ${plots3%, }
unset multiplot
GP
    pngs+=("fig1_r$r.png")
  done
  f1=$(log "$model1" def 64 0.3 "$s0") f2=$(log "$model1" defa 64 0.3 "$s0")
  if [[ -f $f1 && -f $f2 ]]; then
    dat "$f1" "$dir/fig3_def.dat"
    dat "$f2" "$dir/fig3_defa.dat"
    gnuplot <<GP
set terminal pngcairo size 700,450 font ",10"
set output '$dir/fig3.png'
set title "DEF vs DEF-A, $model1, ratio 64 (seed $s0)"
set key bottom right; set grid
set xlabel 'epoch'; set ylabel 'test accuracy (%)'
plot '$dir/fig3_def.dat' using 1:2 with linespoints title 'def', \
     '$dir/fig3_defa.dat' using 1:2 with linespoints title 'defa'
GP
    pngs+=("fig3.png")
  fi
fi
{
  echo "## Figures"
  echo
  for p in "${pngs[@]}"; do echo "![$p]($p)"; echo; done
} >> "$md"
echo "report: wrote $md and ${#pngs[@]} figure(s) in $dir"

#!/usr/bin/env bash
# A virtual cluster on this machine: K hosts, each a network namespace with
# one veth link (eth0, 10.99.0.<i+1>/24) to a bridge that lives in a
# namespace of its own. Each host's link is limited with tc's token bucket
# filter (tbf) to G Gbit/s in both directions (on eth0 for what the host
# sends, on the bridge's end for what it receives). The kernels here have
# no netem, so no delay is added: latency is the veth's own (tens of us).
# Nothing is added to the machine's own namespace, and only the addresses
# above are used.
#
# Open MPI jobs run across the hosts with mpirun --host, over TCP only:
# mpirun runs on host 0, and its rsh launcher is a small agent (written to
# the cluster's state directory) that starts Open MPI's daemon inside the
# namespace of the host it is asked for. Each host's processes are pinned
# to core (host index mod cores), so every method gets the same CPU share,
# and MPI ranks yield the core while they wait (mpi_yield_when_idle):
# busy polling on shared cores would add a scheduler slice per message.
#
# usage:
#   scripts/cluster.sh run [--hosts K] [--gbps G] -- COMMAND [ARGS...]
#       runs COMMAND once on every host, as one Open MPI job (K ranks);
#       in it CLUSTER_MASTER is host 0's address, CLUSTER_HOST the host's
#       index, GLOO_SOCKET_IFNAME=eth0.
#   scripts/cluster.sh bench [options]   deft vs PyTorch DDP (bench/cluster_bench.sh)
#   scripts/cluster.sh faults [--quick]  link down, SIGSTOP, SIGKILL, resume,
#                                        slow link, lose a host and re-shard
#                                        (scripts/cluster_faults.sh)
#   scripts/cluster.sh reshard [options] lose 1 of 4 hosts and continue on 3:
#                                        re-shard vs reset vs uninterrupted
#                                        (scripts/cluster_reshard.sh)
# Everything is torn down on exit, also on failure and on Ctrl-C. Needs
# root (ip netns, tc).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster_die() { echo "cluster: $*" >&2; exit 1; }

cluster_need_root() {
  [[ $(id -u) -eq 0 ]] ||
    cluster_die "needs root: it creates network namespaces and tc qdiscs (run it with sudo, or as root)"
  command -v ip >/dev/null && command -v tc >/dev/null ||
    cluster_die "needs iproute2 (apt-get install iproute2)"
  command -v mpirun >/dev/null ||
    cluster_die "needs Open MPI (apt-get install openmpi-bin libopenmpi-dev)"
}

# Namespaces of clusters whose script is gone (killed with SIGKILL): the
# name carries the owner's pid.
cluster_reap_stale() {
  local ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep '^deftc[0-9]*-' || true); do
    pid=${ns#deftc}; pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "cluster: removing $ns, left behind by a cluster whose script (pid $pid) is gone" >&2
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

# tbf for G Gbit/s: a burst of 2 ms of traffic (at least 64 KB, so that
# one TCP segment train fits) and at most 50 ms of queue.
cluster_tbf() { # dev-args... gbps
  local gbps=${*: -1} n=$(($# - 1))
  local burst
  burst=$(awk -v g="$gbps" 'BEGIN { b = g * 1e9 / 8 * 0.002; if (b < 65536) b = 65536; printf "%d", b }')
  "${@:1:$n}" root tbf rate "$(awk -v g="$gbps" 'BEGIN{printf "%dkbit", g * 1e6}')" \
    burst "$burst" latency 50ms
}

# IPv4 only: the hosts get no IPv6 link-local addresses either, so that
# the only addresses in use are the ones this script assigns.
cluster_no_ipv6() {
  ip netns exec "$1" sh -c 'for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 \
    /proc/sys/net/ipv6/conf/default/disable_ipv6; do [ -w "$f" ] && echo 1 > "$f"; done; true'
}

# cluster_up K G: creates the hosts; sets CLUSTER_NS (prefix), CLUSTER_K,
# CLUSTER_STATE (a directory with the agent and the host map).
cluster_up() {
  local k=$1 gbps=$2 i ns
  [[ $k =~ ^[0-9]+$ && $k -ge 1 && $k -le 64 ]] || cluster_die "--hosts $k: must be 1..64"
  awk -v g="$gbps" 'BEGIN { exit !(g > 0 && g <= 100) }' ||
    cluster_die "--gbps $gbps: must be in (0, 100]"
  cluster_reap_stale
  CLUSTER_NS=deftc$$-
  CLUSTER_K=$k
  CLUSTER_GBPS=$gbps
  CLUSTER_STATE=$(mktemp -d /tmp/deft-cluster.XXXXXX)
  trap cluster_down EXIT
  trap 'exit 130' INT TERM
  ip netns add "${CLUSTER_NS}br"
  cluster_no_ipv6 "${CLUSTER_NS}br"
  ip -n "${CLUSTER_NS}br" link add br0 type bridge
  ip -n "${CLUSTER_NS}br" link set br0 up
  : > "$CLUSTER_STATE/hosts"
  for ((i = 0; i < k; i++)); do
    ns=${CLUSTER_NS}h$i
    ip netns add "$ns"
    cluster_no_ipv6 "$ns"
    # A peer behind a dead link is given up after ~13 s of unanswered
    # retransmissions (tcp_retries2 = 5) instead of ~15 min, as on
    # clusters tuned to detect failures: otherwise Open MPI's launcher
    # waits that long for a daemon it can no longer reach.
    ip netns exec "$ns" sh -c 'echo 5 > /proc/sys/net/ipv4/tcp_retries2'
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name v$i netns "${CLUSTER_NS}br"
    ip -n "${CLUSTER_NS}br" link set v$i master br0 up
    ip -n "$ns" addr add "10.99.0.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    cluster_tbf ip netns exec "$ns" tc qdisc add dev eth0 "$gbps"
    cluster_tbf ip netns exec "${CLUSTER_NS}br" tc qdisc add dev v$i "$gbps"
    echo "10.99.0.$((i + 1)) $ns $i" >> "$CLUSTER_STATE/hosts"
  done
  # Open MPI's rsh agent: "agent [options] HOST COMMAND..." runs COMMAND
  # (a shell command line, as ssh would) inside HOST's namespace.
  cat > "$CLUSTER_STATE/agent" <<'EOF'
#!/bin/sh
# Each host also gets its own host name (a UTS namespace) and TMPDIR, as
# separate machines would: Open MPI's daemons keep session files under
# names made of the host name, and they collided now and then (a launch
# in about six hung) while every namespace was called alike.
state=@STATE@
while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done
host=$1; shift
ns=$(awk -v h="$host" '$1 == h { print $2 }' "$state/hosts")
idx=$(awk -v h="$host" '$1 == h { print $3 }' "$state/hosts")
[ -n "$ns" ] || { echo "cluster agent: unknown host $host" >&2; exit 1; }
mkdir -p "$state/tmp$idx"
exec ip netns exec "$ns" unshare --uts env TMPDIR="$state/tmp$idx" CLUSTER_IDX="$idx" \
  /bin/sh -c 'hostname "host$CLUSTER_IDX" && exec /bin/sh -c "$1"' sh "$*"
EOF
  sed -i "s|@STATE@|$CLUSTER_STATE|" "$CLUSTER_STATE/agent"
  # Per-rank wrapper: host index, CPU pinning, Gloo's interface.
  cat > "$CLUSTER_STATE/on-host" <<EOF
#!/bin/sh
addr=\$(ip -4 -o addr show dev eth0 | awk '{ split(\$4, a, "/"); print a[1] }')
export CLUSTER_HOST=\$(awk -v h="\$addr" '\$1 == h { print \$3 }' "$CLUSTER_STATE/hosts")
export CLUSTER_MASTER=10.99.0.1 CLUSTER_HOSTS=$k GLOO_SOCKET_IFNAME=eth0
exec taskset -c \$((CLUSTER_HOST % $(nproc))) "\$@"
EOF
  chmod +x "$CLUSTER_STATE/agent" "$CLUSTER_STATE/on-host"
  echo "cluster: $k hosts (namespaces ${CLUSTER_NS}h0..$((k - 1)), 10.99.0.1-$k), $gbps Gbit/s per host link (tbf, both directions)" >&2
}

cluster_down() {
  local ns
  [[ -n ${CLUSTER_NS:-} ]] || return 0
  for ns in $(ip netns list | awk '{print $1}' | grep "^${CLUSTER_NS}" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  for ns in $(ip netns list | awk '{print $1}' | grep "^${CLUSTER_NS}" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "${CLUSTER_STATE:-/nonexistent}"
  CLUSTER_NS=
}

# cluster_mpirun [mpirun options...] -- COMMAND...: one rank per host.
cluster_mpirun() {
  local opts=() hostlist
  while [[ $# -gt 0 && $1 != -- ]]; do opts+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  # The first CLUSTER_K hosts (lower it to run on fewer, as after a loss).
  hostlist=$(awk -v k="$CLUSTER_K" 'NR <= k { printf "%s%s:1", (NR > 1 ? "," : ""), $1 }' "$CLUSTER_STATE/hosts")
  mkdir -p "$CLUSTER_STATE/tmp0"
  ip netns exec "${CLUSTER_NS}h0" unshare --uts sh -c 'hostname host0 && exec "$@"' sh \
    env TMPDIR="$CLUSTER_STATE/tmp0" OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_plm_rsh_agent="$CLUSTER_STATE/agent" \
    mpirun --host "$hostlist" -np "$CLUSTER_K" --bind-to none \
    --mca btl tcp,self --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 \
    --mca plm_rsh_no_tree_spawn 1 --mca mpi_yield_when_idle 1 "${opts[@]}" "$CLUSTER_STATE/on-host" "$@"
}

cluster_ns_of() { echo "${CLUSTER_NS}h$1"; }

# For fault scripts: cluster_fault_prelude NAME exits 77 (a skip) without
# root, checks the tools, sets deft to the deft binary's absolute path
# ($DEFT, default build/deft) and failures to 0; check STATUS MESSAGE
# prints "ok" or "FAILED" and counts the failures.
cluster_fault_prelude() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "cluster $1: SKIPPED: needs root for network namespaces and tc" >&2
    exit 77
  fi
  cluster_need_root
  deft=${DEFT:-build/deft}
  [[ -x $deft ]] || cluster_die "$1: $deft is missing (run make)"
  deft=$(realpath "$deft")
  failures=0
}
check() {
  if [[ $1 -eq 0 ]]; then echo "  ok: $2"; else echo "  FAILED: $2"; failures=$((failures + 1)); fi
}

# For fault scripts: cluster_export makes cluster_mpirun usable in child
# shells; limited SECONDS ARGS... runs cluster_mpirun -- ARGS, killed after
# SECONDS so that a hang fails a check instead of hanging the script.
cluster_export() {
  export -f cluster_mpirun
  export CLUSTER_STATE CLUSTER_NS CLUSTER_K
}
limited() { local s=$1; shift; timeout -s KILL "$s" bash -c 'cluster_mpirun -- "$@"' _ "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
wait_for() { # file [seconds]: polls for it, up to seconds (default 60)
  local i n=$(( ${2:-60} * 20 ))
  for ((i = 0; i < n; i++)); do [[ -e $1 ]] && return; sleep 0.05; done
}
deft_pid_on() { # host: pid of the deft rank in that host's namespace
  local p
  for p in $(ip netns pids "$(cluster_ns_of "$1")"); do
    [[ $(cat /proc/$p/comm 2>/dev/null) == deft ]] && { echo "$p"; return; }
  done
}

# cluster_set_rate HOST GBPS: changes one host's link rate, both ways.
cluster_set_rate() {
  cluster_tbf ip netns exec "$(cluster_ns_of "$1")" tc qdisc change dev eth0 "$2"
  cluster_tbf ip netns exec "${CLUSTER_NS}br" tc qdisc change dev "v$1" "$2"
}

# cluster_tx_bytes HOST: bytes host HOST has sent on its link.
cluster_tx_bytes() { ip netns exec "$(cluster_ns_of "$1")" cat /sys/class/net/eth0/statistics/tx_bytes; }

cluster_main() {
  local sub=${1:-} hosts=4 gbps=1
  [[ $# -gt 0 ]] && shift
  case $sub in
    run)
      while [[ $# -gt 0 && $1 != -- ]]; do
        case $1 in
          --hosts) hosts=$2; shift 2 ;;
          --gbps) gbps=$2; shift 2 ;;
          *) cluster_die "run: unknown option '$1' (usage: run [--hosts K] [--gbps G] -- COMMAND)" ;;
        esac
      done
      [[ ${1:-} == -- && $# -ge 2 ]] || cluster_die "run: give the command after --"
      shift
      cluster_need_root
      cluster_up "$hosts" "$gbps"
      cluster_mpirun -- "$@"
      ;;
    bench) exec bench/cluster_bench.sh "$@" ;;
    faults) exec scripts/cluster_faults.sh "$@" ;;
    reshard) exec scripts/cluster_reshard.sh "$@" ;;
    -h|--help|help|"") sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; [[ -n $sub ]] ;;
    *) cluster_die "unknown command '$sub' (run, bench, faults or reshard; see --help)" ;;
  esac
}

# Sourced by bench/cluster_bench.sh and scripts/cluster_faults.sh for the
# functions; run, it does what the usage says.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  cluster_main "$@"
fi

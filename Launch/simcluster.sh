#!/usr/bin/env bash
# Launch/simcluster.sh HOSTS RATE COMMAND...: a simulated cluster on this machine for COMMAND's duration (root).
#
# HOSTS network namespaces ocrsim0 … ocrsim<HOSTS-1> are made, each with a veth pair to a bridge (ocrsimbr, address
# 10.77.0.254 in this namespace) and address 10.77.0.<i+1>; both directions of each host's link are shaped to RATE
# with tc's token bucket (tc units: 1gbit, 10gbit, 25gbit; "none" leaves them unshaped). This kernel has no netem,
# so links add no delay: latency comes out of the measured small-message all-reduce time instead.
#
# COMMAND runs here with HOSTFILE set (one line per host, "10.77.0.<i+1> slots=SLOTS", SLOTS default 1; mpirun
# also takes it as its default hostfile) and Open MPI pointed at the hosts: mpirun starts each host's processes through Launch/netns-ssh (ip netns exec, pinned
# to core i mod cores with taskset) and its TCP transport runs over the veths. Everything is removed afterwards,
# also when COMMAND fails or the script is interrupted. Example:
#   Launch/simcluster.sh 2 10gbit mpirun -n 2 .build/release/ocr-ddp bench
set -euo pipefail
if (( $# < 3 )); then
    echo "usage: $0 HOSTS RATE COMMAND... (RATE: e.g. 1gbit, 10gbit, none)" >&2
    exit 2
fi
HOSTS=$1 RATE=$2
shift 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=${SIMCLUSTER_PREFIX:-ocrsim}
BRIDGE=${PREFIX}br
SLOTS=${SLOTS:-1}

if [[ $(id -u) -ne 0 ]] || ! ip netns add "${PREFIX}probe" 2>/dev/null; then
    echo "SKIP: network namespaces need root (ip netns add failed)" >&2
    exit 77
fi
ip netns del "${PREFIX}probe"

cleanup() {
    for (( i = 0; i < HOSTS; i++ )); do
        # What COMMAND left running on a host (an orted whose mpirun died) goes with it.
        ip netns pids "$PREFIX$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$PREFIX$i" 2>/dev/null || true
        ip link del "${PREFIX}v$i" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -f "${HOSTFILE_PATH:-}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup

# shape DEV [NETNS]: a token bucket of RATE on DEV's egress (burst of a few milliseconds at the rate).
shape() {
    [[ $RATE == none ]] && return
    local run=()
    [[ -n ${2:-} ]] && run=(ip netns exec "$2")
    "${run[@]}" tc qdisc add dev "$1" root tbf rate "$RATE" burst 1mb latency 100ms
}

ip link add "$BRIDGE" type bridge
ip addr add 10.77.0.254/24 dev "$BRIDGE"
ip link set "$BRIDGE" up
HOSTFILE_PATH=$(mktemp "${TMPDIR:-/tmp}/ocr-ddp-simcluster.XXXXXX")
cores=$(nproc)
for (( i = 0; i < HOSTS; i++ )); do
    ns=$PREFIX$i outside=${PREFIX}v$i
    ip netns add "$ns"
    ip link add "$outside" type veth peer name eth0 netns "$ns"
    ip link set "$outside" master "$BRIDGE" up
    ip -n "$ns" addr add "10.77.0.$(( i + 1 ))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    shape eth0 "$ns"          # host → bridge
    shape "$outside"          # bridge → host
    echo "10.77.0.$(( i + 1 )) slots=$SLOTS" >> "$HOSTFILE_PATH"
done

export HOSTFILE=$HOSTFILE_PATH OMPI_MCA_orte_default_hostfile=$HOSTFILE_PATH
export SIMCLUSTER_PREFIX=$PREFIX SIMCLUSTER_CORES=$cores
export OMPI_MCA_plm_rsh_agent="$ROOT/Launch/netns-ssh"
export OMPI_MCA_btl=tcp,self
export OMPI_MCA_btl_tcp_if_include=10.77.0.0/24
export OMPI_MCA_oob_tcp_if_include=10.77.0.0/24
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Every "host" is this machine: mpirun's own binding would put each host's first rank on core 0 (netns-ssh pins
# instead), and its hwloc runtime component shares the topology through a shared-memory mapping that crashed
# mpirun (hwloc_shmem_topology_write, SIGSEGV) once the daemons were "remote".
export OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_rtc=^hwloc
echo "simcluster: $HOSTS host(s) at 10.77.0.1-$HOSTS, links shaped to $RATE, hostfile $HOSTFILE" >&2
status=0
"$@" || status=$?
exit "$status"

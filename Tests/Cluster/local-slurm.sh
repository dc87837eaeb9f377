#!/usr/bin/env bash
# A real Slurm cluster of one node, this machine, for the cluster tests (Tests/Cluster/*.sh): slurmctld and slurmd
# run as root, munge authenticates, srun starts ranks through PMIx (MpiDefault=pmix) as on a production cluster.
#
#   Tests/Cluster/local-slurm.sh start    install slurm-wlm and munge if missing, (re)write the config, start what is
#                                         not running, wait until the node takes jobs. Safe to repeat.
#   Tests/Cluster/local-slurm.sh stop     cancel jobs, stop the daemons, remove the state (jobs, logs, config).
#   Tests/Cluster/local-slurm.sh status   sinfo and squeue.
#
# Needs root (the daemons run as SlurmUser=root). Exit 0 when the cluster is ready; 3 when it cannot be had
# (not root, no package, a daemon that does not come up), so that a test can skip.
set -euo pipefail

action=${1:-start}
node=$(hostname -s)
ncpu=$(nproc)
conf_dir=/etc/slurm
conf=$conf_dir/slurm.conf
spool=/var/spool/ocr-ddp-slurm          # everything of ours but the config and munge lives here
log_dir=$spool/log
ctld_pid=$spool/slurmctld.pid
slurmd_pid=$spool/slurmd.pid
munge_ours=$spool/munged.ours            # present when this script started munged (stop stops it then)

say() { echo "local-slurm: $*" >&2; }

# alive PIDFILE: the process named in PIDFILE is running.
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_daemon PIDFILE NAME: SIGTERM, up to 10 s to exit, then SIGKILL.
stop_daemon() {
    local pidfile=$1 name=$2 pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "$name ($pid) ignored SIGTERM: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$pidfile"
}

node_state() { sinfo -h -n "$node" -o %t 2>/dev/null | head -n1; }

case $action in
stop)
    if alive "$ctld_pid"; then
        # Kill what still runs while slurmd is there to end its job steps (no slurmstepd is left behind).
        mapfile -t jobs < <(squeue -h -o %i 2>/dev/null)
        if (( ${#jobs[@]} )); then
            scancel --full --signal=KILL --quiet "${jobs[@]}" 2>/dev/null || true   # running ones
            scancel --quiet "${jobs[@]}" 2>/dev/null || true                      # pending ones
            for _ in $(seq 1 20); do [[ -z $(squeue -h -t R,CG 2>/dev/null) ]] && break; sleep 0.5; done
        fi
    fi
    stop_daemon "$slurmd_pid" slurmd
    stop_daemon "$ctld_pid" slurmctld
    if [[ -f $munge_ours ]]; then su -s /bin/sh munge -c 'munged --stop' >/dev/null 2>&1 || true; fi
    if [[ -f $conf ]] && grep -q '^# written by ocr-ddp Tests/Cluster/local-slurm.sh' "$conf"; then rm -f "$conf"; fi
    rm -rf "$spool"
    say "stopped"
    exit 0
    ;;
status)
    sinfo; squeue; exit 0
    ;;
start) ;;
*)
    echo "usage: $0 start|stop|status" >&2; exit 2
    ;;
esac

if [[ $(id -u) -ne 0 ]]; then say "needs root (slurmctld and slurmd run as SlurmUser=root)"; exit 3; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt-get)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }; then
        say "apt-get install slurm-wlm munge failed"; exit 3
    fi
fi

mkdir -p "$conf_dir" "$spool/ctld" "$spool/slurmd" "$log_dir"

# munge: a key (the package makes one; make it if it is missing) and one daemon on the default socket.
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 700 /etc/munge; chmod 600 /etc/munge/munge.key; chmod 755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    su -s /bin/sh munge -c 'munged --force' || { say "munged does not start"; exit 3; }
    touch "$munge_ours"
    for _ in $(seq 1 20); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
fi
munge -n </dev/null | unmunge >/dev/null 2>&1 || { say "munge does not authenticate"; exit 3; }

# The config. proctrack/linuxproc and task/none need no cgroup setup (containers often lack it). KillWait is the
# grace between SIGTERM and SIGKILL on scancel or the time limit: what the trainer has to finish a step and
# checkpoint. JobRequeue=1 makes batch jobs requeueable (scontrol requeue); MinJobAge keeps ended jobs in
# `scontrol show job` briefly only. OverSubscribe=YES with --overcommit lets tests run more ranks than cores.
if [[ -f $conf ]] && ! grep -q '^# written by ocr-ddp Tests/Cluster/local-slurm.sh' "$conf"; then
    say "$conf exists and is not ours: this machine has a Slurm of its own; not touching it"; exit 3
fi
new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# written by ocr-ddp Tests/Cluster/local-slurm.sh: one node, $node, for tests
ClusterName=ocrddp-local
SlurmctldHost=$node
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$spool/ctld
SlurmdSpoolDir=$spool/slurmd
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=$slurmd_pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
KillWait=30
MinJobAge=30
JobRequeue=1
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$node CPUs=$ncpu Boards=1 SocketsPerBoard=1 CoresPerSocket=$ncpu ThreadsPerCore=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
changed=0
if ! cmp -s "$new_conf" "$conf"; then cp "$new_conf" "$conf"; chmod 644 "$conf"; changed=1; fi
rm -f "$new_conf"

if (( changed )) && { alive "$ctld_pid" || alive "$slurmd_pid"; }; then
    say "config changed: restarting the daemons"
    stop_daemon "$slurmd_pid" slurmd
    stop_daemon "$ctld_pid" slurmctld
fi
if ! alive "$ctld_pid"; then
    slurmctld || { say "slurmctld does not start (see $log_dir/slurmctld.log)"; exit 3; }
fi
for _ in $(seq 1 40); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.25; done
scontrol ping 2>/dev/null | grep -q UP || { say "slurmctld does not answer (see $log_dir/slurmctld.log)"; exit 3; }
if ! alive "$slurmd_pid"; then
    slurmd || { say "slurmd does not start (see $log_dir/slurmd.log)"; exit 3; }
fi

# Wait for the node: idle (or busy with jobs of an earlier start). A node left down/drained by an earlier run is
# resumed.
state=
for _ in $(seq 1 60); do
    state=$(node_state)
    case $state in
        idle*|mix*|alloc*) break ;;
        down*|drain*|drng*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case $state in
    idle*|mix*|alloc*) say "ready: node $node ($ncpu CPUs) is $state in partition debug" ;;
    *) say "node $node is '${state:-unknown}' after 30 s (see $log_dir/slurmd.log)"; exit 3 ;;
esac

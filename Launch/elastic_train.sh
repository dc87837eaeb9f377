#!/usr/bin/env bash
# Launch/elastic_train.sh CONFIG [train args...]
# Trains across the hosts of HOSTFILE (an Open MPI hostfile: "host slots=N" per line) and, when the job fails
# because a rank or a host died, restarts it with --resume on the hosts that still answer, up to MAX_RESTARTS times
# (default 3), as torchrun --max-restarts does, but keeping the run's global batch: on fewer ranks ocr-ddp chooses
# the per-rank batch and accumulation itself (README "Changing the number of ranks").
#
# A host answers when HEALTH_CHECK succeeds within HEALTH_TIMEOUT seconds (default 10); HEALTH_CHECK is a shell
# command with $HOST set, default 'ssh "$HOST" true'. After a failure the job restarts when a host stopped
# answering or a process died of a signal (killed, out of memory); an error ocr-ddp reported itself (bad input,
# exit status 1) ends the script with that status, since restarting would not help. A restart waits
# RESTART_DELAY seconds (default 5) first. Stop requests (SIGTERM, SIGINT, SIGUSR1) are passed on as in
# dist_train.sh: the ranks checkpoint and the script exits 0 without restarting.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( $# < 1 )) || [[ -z "${HOSTFILE:-}" ]]; then
    echo "usage: HOSTFILE=hosts $0 CONFIG [train args...]" >&2
    exit 2
fi
CONFIG=$1
shift
require_binary
MAX_RESTARTS=${MAX_RESTARTS:-3}
HEALTH_CHECK=${HEALTH_CHECK:-'ssh "$HOST" true'}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-10}
RESTART_DELAY=${RESTART_DELAY:-5}
ALL_HOSTS=$HOSTFILE

# The work directory the ranks write (train's default: work_dirs/<config name>), to know whether a checkpoint
# exists to resume from.
WORK_DIR="work_dirs/$(basename "${CONFIG%.*}")"
TRAIN_ARGS=("$@")
for (( i = 0; i < ${#TRAIN_ARGS[@]}; i++ )); do
    case "${TRAIN_ARGS[i]}" in
        --work-dir) WORK_DIR=${TRAIN_ARGS[i + 1]:-} ;;
        --work-dir=*) WORK_DIR=${TRAIN_ARGS[i]#--work-dir=} ;;
    esac
done

# The arguments of a restart: --resume (the newest complete checkpoint) instead of --load-from, once a checkpoint
# exists; before that the run starts again as it was asked to.
restart_args() {
    RESTART=()
    if [[ ! -e "$WORK_DIR/last_checkpoint" ]]; then
        RESTART=("${TRAIN_ARGS[@]}")
        return
    fi
    local skip=0 arg
    for arg in "${TRAIN_ARGS[@]}"; do
        if (( skip )); then skip=0; continue; fi
        case "$arg" in
            --load-from|--resume) skip=1 ;;
            --load-from=*|--resume=*) ;;
            *) RESTART+=("$arg") ;;
        esac
    done
    RESTART+=(--resume)
}

# Writes the hosts of $ALL_HOSTS that answer to $1; prints their slot count (hosts without slots= count 1).
answering_hosts() {
    local out=$1 slots=0 line host count
    : > "$out"
    while IFS= read -r line || [[ -n "$line" ]]; do
        line=${line%%#*}
        read -r host _ <<< "$line" || true
        [[ -n "${host:-}" ]] || continue
        if HOST=$host timeout "$HEALTH_TIMEOUT" bash -c "$HEALTH_CHECK" < /dev/null > /dev/null 2>&1; then
            echo "$line" >> "$out"
            count=$(grep -o 'slots=[0-9]*' <<< "$line" | cut -d= -f2 || true)
            slots=$(( slots + ${count:-1} ))
        else
            echo "elastic_train.sh: host $host does not answer ($HEALTH_CHECK)" >&2
        fi
    done < "$ALL_HOSTS"
    echo "$slots"
}

ALIVE=$(mktemp "${TMPDIR:-/tmp}/ocr-ddp-hosts.XXXXXX")
trap 'rm -f "$ALIVE"' EXIT
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-${KILL_GRACE:-30}}
export OCR_DDP_STOP_FORWARDED=1
restarts=0
ARGS=("${TRAIN_ARGS[@]}")
while true; do
    NPROC=$(answering_hosts "$ALIVE")
    if (( NPROC == 0 )); then
        echo "elastic_train.sh: no host of $ALL_HOSTS answers" >&2
        exit 1
    fi
    HOSTFILE=$ALIVE
    mpirun_flags "$NPROC"
    echo "elastic_train.sh: launching $NPROC rank(s) on $(cut -d' ' -f1 "$ALIVE" | paste -sd' ')" >&2
    status=0
    run_forwarding_stop mpirun "${MPIRUN_FLAGS[@]}" -n "$NPROC" "$OCR_DDP" train "$CONFIG" "${ARGS[@]}" || status=$?
    if (( status == 0 || STOP_FORWARDED )); then exit "$status"; fi
    before=$NPROC
    NPROC=$(answering_hosts "$ALIVE")
    if (( NPROC == before && status <= 128 )); then
        echo "elastic_train.sh: the job failed (status $status) with every host answering; not restarting" >&2
        exit "$status"
    fi
    if (( restarts >= MAX_RESTARTS )); then
        echo "elastic_train.sh: the job failed (status $status) after $restarts restart(s) (MAX_RESTARTS)" >&2
        exit "$status"
    fi
    restarts=$(( restarts + 1 ))
    restart_args
    ARGS=("${RESTART[@]}")
    echo "elastic_train.sh: the job failed (status $status); restart $restarts of $MAX_RESTARTS in ${RESTART_DELAY} s" >&2
    sleep "$RESTART_DELAY"
done

#!/usr/bin/env bash
# End-to-end test of Launch/slurm_train.sh under a real Slurm (one node, this machine; Tests/Cluster/local-slurm.sh):
#   a. srun job: scancel sends SIGTERM to the ranks (SIGKILL KillWait=30 s later); the ranks finish the step,
#      checkpoint, and srun ends 0 well before the kill; the same command with --resume goes on to max_iters.
#   b. REQUEUE=1 batch job with a one-minute limit and SIGNAL_LEAD=45: the batch shell gets SIGUSR1 ahead of the
#      limit, the ranks checkpoint, the job requeues itself, the requeued run resumes, and in the end the job
#      completes with the checkpoint of max_iters.
# Prints a PASS/FAIL line per check and "N passed, N failed" at the end; exits 1 if anything failed. Skips (exit 0)
# when Slurm cannot be started here (not root, no slurm-wlm package, daemons that do not come up).
#
#   Tests/Cluster/slurm_preemption.sh                 OCR_DDP=path/to/ocr-ddp to test another binary
#   KEEP_TMP=1 ...                                    keep the data, work dirs and outputs (printed at the end)
#   REAL_REQUEUE_DELAY=1 ...                          let Slurm hold each requeued job its ~2 minutes (BeginTime)
#                                                     instead of releasing it at once (scontrol update StartTime=now)
# Takes about 2-3 minutes on 2 cores. Stops the Slurm daemons at the end if it started them.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export OCR_DDP=${OCR_DDP:-$ROOT/.build/release/ocr-ddp}
LAUNCH=$ROOT/Launch/slurm_train.sh
CONFIG=$ROOT/Configs/quickstart.yaml
NPROC=2
CASE_TIMEOUT=${CASE_TIMEOUT:-300}      # seconds, for each of the long waits below

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [[ ! -x $OCR_DDP ]]; then
    echo "error: $OCR_DDP not built (swift build -c release), or set OCR_DDP" >&2
    exit 2
fi

# --- the cluster -------------------------------------------------------------------------------------------------
started_slurm=0
if ! scontrol ping 2>/dev/null | grep -q UP; then started_slurm=1; fi
if ! "$HERE/local-slurm.sh" start; then
    echo "SKIP: cannot start a local Slurm here (needs root and the slurm-wlm and munge packages)"
    exit 0
fi

TMP=$(mktemp -d /tmp/ocr-ddp-slurm-test.XXXXXX)
TAG=ocrddp-test-$$
cleanup() {
    local ids
    mapfile -t ids < <(squeue -h -o '%i %j' 2>/dev/null | awk -v t="$TAG" 'index($2, t) == 1 { print $1 }')
    if (( ${#ids[@]} )); then scancel --signal=KILL --full "${ids[@]}" 2>/dev/null || true; fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "kept: $TMP"; else rm -rf "$TMP"; fi
    if (( started_slurm )); then "$HERE/local-slurm.sh" stop || true; fi
}
trap cleanup EXIT

DATA=$TMP/data
"$OCR_DDP" make-synthetic "$DATA" --train 16 --val 4 >/dev/null
# The quick-start config shrunk to a few seconds per step on 2 ranks (2 cores).
CFG=(--cfg-options data.data_root="$DATA" model.backbone.base_channels=48 model.decode_head.0.channels=96
     model.decode_head.1.channels=96 model.decode_head.1.ocr_channels=8 data.batch_size=1
     train_cfg.val_interval=1000 checkpoint.interval=1000 log.interval=1 data.num_workers=1)
# More ranks than cores needs --overcommit (the partition has OverSubscribe=YES).
SRUN_ARGS=${SRUN_ARGS:-}
(( NPROC > $(nproc) )) && SRUN_ARGS="$SRUN_ARGS --overcommit"
export SRUN_ARGS

# complete_checkpoint WORK_DIR ITER: last_checkpoint names iter_ITER and it has all its files.
complete_checkpoint() {
    local dir=$1 iter=$2 f
    [[ -f $dir/last_checkpoint && $(tr -d '[:space:]' <"$dir/last_checkpoint") == "iter_$iter" ]] || return 1
    for f in model.safetensors optimizer.safetensors trainer_state.json; do [[ -s $dir/iter_$iter/$f ]] || return 1; done
}
complete_checkpoint_after_1() { (( $2 >= 1 )) && complete_checkpoint "$1" "$2"; }
# train_iters LOG: the iterations logged in a work dir's log.jsonl, one a line (evaluation lines left out).
train_iters() { grep '"loss"' "$1" 2>/dev/null | grep -o '"iter":[0-9]*' | cut -d: -f2; }
# step_time LOG: the median step time there (the first step, with its warm-up, left out), 5 s if none.
step_time() {
    grep '"loss"' "$1" 2>/dev/null | grep -v '"iter":1,' | grep -o '"time":[0-9.]*' | cut -d: -f2 | sort -n |
        awk '{ t[NR] = $1 } END { printf "%.1f\n", NR ? t[int((NR + 1) / 2)] : 5 }'
}
last_iter() { tr -d '[:space:]' <"$1/last_checkpoint" 2>/dev/null | sed -n 's/^iter_\([0-9][0-9]*\)$/\1/p'; }

# wait_for PATTERN FILE PID SECONDS: until FILE has PATTERN (0), PID ends (1) or time is up (2).
wait_for() {
    local pattern=$1 file=$2 pid=$3 deadline=$(( $(date +%s) + $4 ))
    while (( $(date +%s) < deadline )); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { grep -q -- "$pattern" "$file" 2>/dev/null && return 0; return 1; }
        sleep 0.5
    done
    return 2
}

# --- a. scancel of an srun job -----------------------------------------------------------------------------------
echo "== a. NPROC=$NPROC Launch/slurm_train.sh debug (srun), scancel after iteration 1, then --resume"
A_ITERS=6
WA=$TMP/work-a OUT_A=$TMP/a.out
NPROC=$NPROC "$LAUNCH" debug "$TAG-a" "$CONFIG" "$WA" "${CFG[@]}" train_cfg.max_iters=$A_ITERS >"$OUT_A" 2>&1 &
pid=$!
if wait_for '"iter":1,' "$WA/log.jsonl" "$pid" "$CASE_TIMEOUT"; then
    job=$(squeue -h -n "$TAG-a" -o %i | head -n1)
    [[ -n $job ]] || { echo "error: no Slurm job named $TAG-a" >&2; exit 1; }
    echo "   iteration 1 logged; scancel $job (SIGTERM to the tasks, SIGKILL KillWait=30 s later)"
    t0=$(now)
    scancel "$job"
    status=0; wait "$pid" || status=$?
    took=$(since "$t0")
    echo "   srun ended $took s after scancel, status $status"
    check "a: srun ends with status 0 after scancel" test "$status" -eq 0
    check "a: the ranks report the stop (SIGTERM) and checkpoint" grep -q 'stop requested (SIGTERM): checkpointed' "$OUT_A"
    check "a: ended before Slurm's SIGKILL (${took} s < KillWait 30 s)" awk -v t="$took" 'BEGIN { exit !(t < 30) }'
    n=$(last_iter "$WA"); n=${n:-0}
    echo "   last_checkpoint: iter_$n"
    check "a: last_checkpoint names a complete iter_N, N >= 1 (iter_$n)" complete_checkpoint_after_1 "$WA" "$n"
    # the step time on this machine now, for case b
    STEP=$(step_time "$WA/log.jsonl")

    echo "   resume: the same command with --resume"
    t0=$(now)
    status=0
    NPROC=$NPROC timeout "$CASE_TIMEOUT" "$LAUNCH" debug "$TAG-a2" "$CONFIG" "$WA" "${CFG[@]}" \
        train_cfg.max_iters=$A_ITERS --resume >"$TMP/a2.out" 2>&1 || status=$?
    echo "   resumed run ended after $(since "$t0") s, status $status"
    check "a: resumed run ends with status 0" test "$status" -eq 0
    check "a: resumed run prints \"resumed from .../iter_$n at iteration $n\"" \
        grep -q "resumed from .*iter_$n at iteration $n" "$TMP/a2.out"
    check "a: last_checkpoint is a complete iter_$A_ITERS" complete_checkpoint "$WA" "$A_ITERS"
    check "a: log.jsonl has each of iterations 1..$A_ITERS once" \
        test "$(train_iters "$WA/log.jsonl" | tr '\n' ' ')" = "$(seq 1 "$A_ITERS" | tr '\n' ' ')"
else
    fail "a: iteration 1 never logged (output: $OUT_A)"; sed 's/^/   | /' "$OUT_A" | tail -n 20
    kill "$pid" 2>/dev/null || true
    STEP=5.0
fi

# --- b. REQUEUE=1: signal ahead of the limit, requeue, resume ----------------------------------------------------
# slurmctld checks --signal once per 30 s and may signal up to that much early: with TIME=1:00 and SIGNAL_LEAD=45 a
# run gets SIGUSR1 0-30 s after it starts. max_iters is chosen so that the first run cannot finish in 35 s.
# The cap only guards against absurdly short steps: a low one (24) let 0.6-s steps finish in 18 s, before any signal.
B_ITERS=$(awk -v s="$STEP" 'BEGIN { n = int(35 / s) + 2; if (n < 6) n = 6; if (n > 400) n = 400; print n }')
echo "== b. REQUEUE=1 TIME=00:01:00 SIGNAL_LEAD=45 NPROC=$NPROC Launch/slurm_train.sh (sbatch), max_iters=$B_ITERS" \
     "(steps of ${STEP} s)"
WB=$TMP/work-b
submitted=$(REQUEUE=1 TIME=00:01:00 SIGNAL_LEAD=45 NPROC=$NPROC "$LAUNCH" debug "$TAG-b" "$CONFIG" "$WB" \
    "${CFG[@]}" train_cfg.max_iters="$B_ITERS" 2>&1) || true
echo "   $submitted"
job=$(sed -n 's/^Submitted batch job \([0-9][0-9]*\).*/\1/p' <<<"$submitted")
if [[ -z $job ]]; then
    fail "b: sbatch did not submit the job"
else
    OUT_B=$WB/slurm-$job.out
    t0=$(now) deadline=$(( $(date +%s) + CASE_TIMEOUT )) last='' released=0 restarts=0 final='' held_since=
    while (( $(date +%s) < deadline )); do
        info=$(scontrol show job -o "$job" 2>/dev/null || true)
        [[ -z $info ]] && { final=PURGED; break; }
        state=$(grep -o 'JobState=[A-Z_]*' <<<"$info" | cut -d= -f2)
        reason=$(grep -o 'Reason=[^ ]*' <<<"$info" | cut -d= -f2)
        restarts=$(grep -o 'Restarts=[0-9]*' <<<"$info" | cut -d= -f2)
        if [[ "$state $reason $restarts" != "$last" ]]; then
            echo "   +$(since "$t0") s  $state ($reason) restarts=$restarts"
            last="$state $reason $restarts"
        fi
        case $state in
            COMPLETED) final=$state; break ;;
            FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) final=$state; break ;;
        esac
        # Slurm holds a requeued job ~2 minutes (BeginTime) and would start it then; this starts it 5 s after the
        # requeue instead. Not at once: slurmd must first end the previous run, or the launch fails with "Job
        # credential revoked" (measured with a release 0.1 s after the requeue).
        if [[ $state == PENDING && $reason == BeginTime && ${REAL_REQUEUE_DELAY:-0} != 1 ]] && (( restarts > released ))
        then
            if [[ -z ${held_since:-} ]]; then held_since=$(date +%s)
            elif (( $(date +%s) - held_since >= 5 )); then
                scontrol update JobId="$job" StartTime=now && released=$restarts
                held_since=
            fi
        fi
        sleep 1
    done
    echo "   job $job: ${final:-still running after ${CASE_TIMEOUT} s} after $(since "$t0") s, $restarts requeue(s)"
    if [[ -z $final ]]; then scancel --signal=KILL --full "$job" 2>/dev/null || true; fi
    check "b: the job completes (COMPLETED within ${CASE_TIMEOUT} s)" test "${final:-}" = COMPLETED
    check "b: it was requeued at least once (Restarts=$restarts)" test "${restarts:-0}" -ge 1
    check "b: the ranks got SIGUSR1 ahead of the limit and checkpointed" \
        grep -q 'stop requested (SIGUSR1): checkpointed' "$OUT_B"
    check "b: the batch job requeued itself" grep -q "requeueing job $job" "$OUT_B"
    check "b: a requeued run resumed (\"resumed from\" in slurm-$job.out)" grep -q 'resumed from' "$OUT_B"
    check "b: last_checkpoint is a complete iter_$B_ITERS" complete_checkpoint "$WB" "$B_ITERS"
    check "b: the last run finished training" grep -q "finished .* iterations" "$OUT_B"
    check "b: log.jsonl has each of iterations 1..$B_ITERS once (every run went on where the last stopped)" \
        test "$(train_iters "$WB/log.jsonl" | tr '\n' ' ')" = "$(seq 1 "$B_ITERS" | tr '\n' ' ')"
    echo "   slurm-$job.out without the per-iteration lines:"
    grep -v -E '^(Iter\(|Class|---|[a-z ]+\|)' "$OUT_B" 2>/dev/null | sed 's/^/   | /' || true
fi

echo
echo "slurm_preemption: $passed passed, $failed failed"
(( failed == 0 ))

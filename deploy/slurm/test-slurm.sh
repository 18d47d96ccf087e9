#!/bin/bash
# Runs the shipped Slurm recipe (deploy/slurm/submit.sh, study.sbatch) on a one-node Slurm
# started here, on the mini-aligner with 3 array tasks, and checks the merged outputs against
# the same study run unsharded, byte for byte apart from the provenance. Needs root and
# Debian's slurm-wlm and munge (installed with apt-get when missing); elsewhere it prints one
# SKIPPED line and exits 0. It stops the daemons it started, by their process ids.
# Usage: deploy/slurm/test-slurm.sh (from the repository root; ALENS= the binary to test,
# default target/debug/alens, built when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
skip() {
    echo "SKIPPED deploy/slurm/test-slurm.sh: $*"
    exit 0
}
[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(id -u)" = 0 ] || skip "not root (a one-node Slurm needs root here)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || skip "no slurm-wlm and no apt-get to install it"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge; } \
        >/tmp/alens-slurm-apt.log 2>&1 || skip "apt-get could not install slurm-wlm and munge (/tmp/alens-slurm-apt.log)"
fi
ALENS=${ALENS:-target/debug/alens}
[ -x "$ALENS" ] || cargo build --quiet --bin alens
ALENS=$(realpath "$ALENS")

T=$(mktemp -d /tmp/alens-slurm.XXXXXX)
chmod 700 "$T"
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
fail() {
    echo "FAILED deploy/slurm/test-slurm.sh: $*" >&2
    for log in "$T"/*.log "$T"/out/alens-study-*.out; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -5 "$log" >&2; }
    done
    exit 1
}
trap 'stop; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT

# munge: a generated key, its socket and files under $T.
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge.key"
munged --foreground --force --key-file="$T/munge.key" --socket="$T/munge.sock" --pid-file="$T/munged.pid" \
    --log-file="$T/munged.log" --seed-file="$T/munged.seed" >"$T/munged.out.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$T/munge.sock" ] && break; sleep 0.1; done
[ -S "$T/munge.sock" ] || fail "munged did not start"

host=$(hostname -s)
port=$((20000 + RANDOM % 20000))
mkdir -p "$T/state" "$T/spool" "$T/out"
cat >"$T/slurm.conf" <<CONF
ClusterName=alenstest
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge.sock
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$T/slurm.conf
slurmctld -D -f "$SLURM_CONF" >"$T/slurmctld.out.log" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$T/slurmd.out.log" 2>&1 &
pids+=($!)
for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 1
done
[ "${state:-}" = idle ] || fail "the node did not come up (sinfo: ${state:-nothing})"

# The study: a few records, so each of 3 tasks has some.
head -12 notebooks-data/corpus/test.jsonl >"$T/eval.jsonl"
head -24 notebooks-data/stimuli/copy-correct.jsonl >"$T/stimuli.jsonl"
export OUT=$T/out ALENS MODEL=mini-aligner EVAL_DATA=$T/eval.jsonl LAT_DATA=$T/stimuli.jsonl ALPHAS=-2,0,2
export EVAL_ARGS="--max-new-tokens 24" SWEEP_ARGS="--max-new-tokens 24"
export RAYON_NUM_THREADS=1 BATCH_SIZE=2
deploy/slurm/submit.sh 3 --cpus-per-task=1 --wait --chdir="$PWD" --output="$T/out/alens-study-%A_%a.out" >/dev/null ||
    fail "the jobs did not all succeed"

# The same study on one machine, unsharded.
mkdir -p "$T/ref"
a() { "$ALENS" "$@" --model mini-aligner >/dev/null; }
a capture --data "$LAT_DATA" --batch-size 2 --positions last --out "$T/ref/capture.safetensors"
a eval --data "$EVAL_DATA" $EVAL_ARGS --json "$T/ref/eval.json" --outputs "$T/ref/outputs.jsonl"
a lat --data "$LAT_DATA" --batch-size 2 --out "$T/ref/vectors.safetensors"
a sweep --data "$EVAL_DATA" $SWEEP_ARGS --vectors "$T/ref/vectors.safetensors" --alphas "$ALPHAS" --random-control 0 \
    --json "$T/ref/sweep.json" --csv "$T/ref/sweep.csv" --out "$T/ref/sweep.png"
for f in capture.safetensors eval.json outputs.jsonl vectors.safetensors vectors.json sweep.json sweep.csv sweep.png; do
    deploy/slurm/same-but-provenance.py "$T/ref/$f" "$OUT/$f" || fail "$f: merged differs from unsharded"
done
echo "PASSED deploy/slurm/test-slurm.sh: 3 array tasks per stage, merged capture, eval (with outputs), LAT vectors and sweep (with CSV and figure) equal the unsharded run"

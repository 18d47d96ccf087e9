#!/usr/bin/env bash
# alens beside another job on the same cores: a fixed workload run quiet and then beside CPU
# hogs (busy-loop processes), alternating, and the median slowdown.
#   cargo build --release && benches/shared_node.sh
# The workload is `alens eval` of the mini-aligner on its 600 test records
# (notebooks-data/corpus/test.jsonl), with alens' default thread count. Settings (env):
#   ALENS   the binary (default target/release/alens)
#   HOGS    busy-loop processes beside the loaded runs (default 1: one of 2 cores taken)
#   ROUNDS  quiet/loaded pairs (default 3); the medians of each are compared
#   LIMIT   the slowdown the run must stay under (default 2.5); exits 1 above it
# Run it on an otherwise idle machine: other work counts as load in the quiet runs too (the
# script prints the load average it started at).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
alens=${ALENS:-$repo/target/release/alens}
hogs=${HOGS:-1}
rounds=${ROUNDS:-3}
limit=${LIMIT:-2.5}
[ -x "$alens" ] || { echo "error: no alens binary at $alens (cargo build --release)" >&2; exit 2; }

work=$(mktemp -d)
hog_pids=()
stop_hogs() {
    for pid in "${hog_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${hog_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    hog_pids=()
}
trap 'stop_hogs; rm -rf "$work"' EXIT

# Wall-clock seconds of one run of the workload.
run_once() {
    local start end
    start=$(date +%s.%N)
    "$alens" eval --model mini-aligner --json "$work/eval.json" >/dev/null 2>"$work/stderr" ||
        { cat "$work/stderr" >&2; exit 2; }
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "alens: $alens"
echo "cpus: $(nproc), threads: ${RAYON_NUM_THREADS:-alens default}, hogs: $hogs, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
run_once >/dev/null # warm the page cache
quiet=()
loaded=()
for round in $(seq 1 "$rounds"); do
    q=$(run_once)
    for _ in $(seq 1 "$hogs"); do
        bash -c 'while :; do :; done' &
        hog_pids+=($!)
    done
    l=$(run_once)
    stop_hogs
    quiet+=("$q")
    loaded+=("$l")
    printf 'round %d: quiet %.2f s, beside %d hog(s) %.2f s\n' "$round" "$q" "$hogs" "$l"
done
mq=$(median "${quiet[@]}")
ml=$(median "${loaded[@]}")
ratio=$(echo "scale=4; $ml / $mq" | bc)
printf 'median: quiet %.2f s, beside %d hog(s) %.2f s, slowdown %.2fx (limit %sx)\n' "$mq" "$hogs" "$ml" "$ratio" "$limit"
if [ "$(echo "$ratio > $limit" | bc)" = 1 ]; then
    echo "FAIL: slower than ${limit}x beside the hog(s)"
    exit 1
fi

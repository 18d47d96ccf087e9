#!/bin/bash
# Submits the whole study (deploy/slurm/study.sbatch) as N array tasks per sharded stage, each
# stage after the one before it (--dependency=afterok). Usage: submit.sh N [sbatch flags...]
# (e.g. --partition=cpu --wait). The settings are study.sbatch's (OUT, ALENS, MODEL, ...),
# exported to the jobs. Prints the last job's id; with --wait, returns when it has ended.
set -euo pipefail
n=${1:?usage: submit.sh N [sbatch flags...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
flags=(--parsable --export=ALL "$@")
# --wait belongs to the last job only: the others are chained by their dependencies.
early=()
for f in "${flags[@]}"; do [ "$f" = --wait ] || early+=("$f"); done
last=$((n - 1))
read_job=$(sbatch "${early[@]}" --array=0-$last "$here/study.sbatch" read)
fit_job=$(sbatch "${early[@]}" --dependency=afterok:$read_job "$here/study.sbatch" fit)
sweep_job=$(sbatch "${early[@]}" --dependency=afterok:$fit_job --array=0-$last "$here/study.sbatch" sweep)
sbatch "${flags[@]}" --dependency=afterok:$sweep_job "$here/study.sbatch" merge

#!/bin/bash
# The same study on one many-core machine, without a scheduler: N shards per sharded stage,
# P at a time (xargs -P), each stage after the one before it. Usage: study-local.sh N P.
# The settings are study.sbatch's (OUT, ALENS, MODEL, ...). Give each shard its share of the
# cores: RAYON_NUM_THREADS=$(( $(nproc) / P )).
set -euo pipefail
n=${1:?usage: study-local.sh N P}
p=${2:?usage: study-local.sh N P}
here=$(cd "$(dirname "$0")" && pwd)
for stage in read fit sweep merge; do
    case $stage in
    read | sweep) seq 0 $((n - 1)) | xargs -P "$p" -I{} "$here/study.sbatch" $stage {} "$n" ;;
    *) "$here/study.sbatch" $stage ;;
    esac
done

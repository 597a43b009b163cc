#!/bin/bash
# N shards of one URL list into shared storage, as a Slurm job array: sbatch slurm-array.sh
# Each task downloads the files whose path hashes to its index (SLURM_ARRAY_TASK_ID, 0..N-1).
#SBATCH --job-name=haul-shards
#SBATCH --array=0-7            # N = 8
#SBATCH --cpus-per-task=2
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@120    # SIGTERM two minutes before the limit: haul saves state, exits 143
#SBATCH --requeue
set -euo pipefail
N=8
exec haul get --progress lines \
  --shard "${SLURM_ARRAY_TASK_ID}/${N}" \
  --log-file "logs/shard-${SLURM_ARRAY_TASK_ID}.log" \
  -j 16 -d /shared/out -i /shared/urls.txt

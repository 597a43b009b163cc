#!/bin/bash
# N shards of one URL list into shared storage, as a Slurm job array: sbatch slurm-array.sh
# Each task downloads the files whose path hashes to its index (SLURM_ARRAY_TASK_ID, 0..N-1).
# N is the array's own size (SLURM_ARRAY_TASK_COUNT): change it in --array only.
#SBATCH --job-name=haul-shards
#SBATCH --array=0-7            # N = 8 shards, indexes 0..N-1
#SBATCH --cpus-per-task=2
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120    # two minutes before the limit: haul is stopped, saves state, exits 143
#SBATCH --requeue              # a task lost with its node runs again
#SBATCH --open-mode=append     # a requeued task appends to slurm-%A_%a.out instead of truncating it
set -euo pipefail

# Where things are; the defaults are this cluster's, the environment may say otherwise.
HAUL=${HAUL:-haul}
URLS=${HAUL_URLS:-/shared/urls.txt}
OUT=${HAUL_OUT:-/shared/out}
LOGS=${HAUL_LOGS:-/shared/logs}   # made by haul when missing

TASK=${SLURM_ARRAY_TASK_ID:?submit this script with sbatch as a job array}
N=${SLURM_ARRAY_TASK_COUNT:?submit this script with sbatch as a job array}
if [ "${SLURM_ARRAY_TASK_MIN}" -ne 0 ] || [ "${SLURM_ARRAY_TASK_MAX}" -ne $((N - 1)) ]; then
  echo "error: the array must be 0-$((N - 1)) (one task per shard), not" \
    "${SLURM_ARRAY_TASK_MIN}-${SLURM_ARRAY_TASK_MAX}" >&2
  exit 2
fi

# haul runs as a child, not exec'd, so that this script can requeue the task when haul was
# stopped. The time-limit warning (USR1, to this shell only) becomes a SIGTERM for haul; a SIGTERM
# for the whole job (`scancel --signal=TERM --full`; without --full it never reaches haul) reaches
# haul itself, and the shell only stays alive to requeue. One SIGTERM each: a second one would
# make haul quit at once.
"$HAUL" get --progress lines --shard "${TASK}/${N}" \
  --log-file "${LOGS}/shard-${TASK}.log" --json-file "${LOGS}/shard-${TASK}.jsonl" \
  ${HAUL_ARGS:-} -j 16 -d "$OUT" -i "$URLS" &
haul_pid=$!
trap 'kill -TERM "$haul_pid" 2>/dev/null || true' USR1
trap ':' TERM
status=0
while kill -0 "$haul_pid" 2>/dev/null; do
  wait "$haul_pid" || status=$?
done

# Exit 143: stopped by SIGTERM with its state saved. Slurm's --requeue does not requeue a task
# that ended itself after the warning (it ends FAILED), so the task requeues itself; the next run
# resumes every `.part` at the byte its state recorded.
if [ "$status" -eq 143 ]; then
  # (A job cancelled with a plain `scancel` is not requeued: Slurm refuses, and that is fine.)
  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${TASK}" || true
fi
exit "$status"

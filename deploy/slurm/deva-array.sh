#!/usr/bin/env bash
# A benchmark run as a Slurm job array: one task per shard, each running `deva run --shard auto`
# (the shard comes from SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT;
# use a regular range such as --array=0-7 or --array=1-8). OUT must be on a file system all
# nodes share and that supports flock (NFSv4, Lustre, BeeGFS, CephFS).
#
# Submit the array, then the merge once every task ended:
#   jid=$(sbatch --parsable --export=ALL,DATASET=/data/VIPSeg_720P,LAYOUT=vipseg,OUT=/scratch/vipseg \
#         deploy/slurm/deva-array.sh --detections /data/detections/vipseg \
#         --config configs/vipseg_semionline.toml)
#   sbatch --dependency=afterany:$jid --wrap "deva merge /scratch/vipseg"
# Arguments after the script name go to `deva run` (segmenter, propagator, config flags).
# Rerunning the same array resumes: finished videos are skipped, interrupted ones redone.
#
#SBATCH --job-name=deva-run
#SBATCH --array=0-7
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=24:00:00
#SBATCH --output=deva-run-%A_%a.log
# With a CUDA build of deva:
##SBATCH --gres=gpu:1
set -euo pipefail

: "${DATASET:?set DATASET to the dataset folder}"
: "${LAYOUT:?set LAYOUT to davis, vipseg, burst, youtube-vos or folders}"
: "${OUT:?set OUT to the shared output folder}"
DEVA="${DEVA:-deva}"

# Inside a container runtime, replace the line below with e.g.
#   apptainer exec --bind /data,/scratch deva.sif deva run ...
exec "$DEVA" run "$DATASET" --layout "$LAYOUT" --out "$OUT" --shard auto "$@"

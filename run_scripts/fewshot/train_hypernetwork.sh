#!/usr/bin/env bash
# Stage 2: train the hypernetwork and the projector on isometry-augmented episodes of the seen modalities (runs
# stages 0-1 first when missing).
# docs/fewshot.md. Arguments go to `python -m epalm.studies.fewshot hypernetwork` (e.g. --quick, --set key=value,
# --force).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
exec python -m epalm.studies.fewshot hypernetwork "$@"

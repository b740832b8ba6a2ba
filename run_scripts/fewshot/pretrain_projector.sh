#!/usr/bin/env bash
# Stage 1: pretrain the shared projector on the seen modalities (runs stage 0 first when missing).
# docs/fewshot.md. Arguments go to `python -m epalm.studies.fewshot pretrain` (e.g. --quick, --set key=value, --force).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
exec python -m epalm.studies.fewshot pretrain "$@"

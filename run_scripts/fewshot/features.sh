#!/usr/bin/env bash
# Stage 0: build the synthetic data sets (seen image, video, audio; the new sensor modality) and cache every
# modality's encoder features.
# docs/fewshot.md. Arguments go to `python -m epalm.studies.fewshot features` (e.g. --quick, --set key=value, --force).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
exec python -m epalm.studies.fewshot features "$@"

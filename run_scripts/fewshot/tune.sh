#!/usr/bin/env bash
# Choose each training method's learning rate on the sensor validation split (runs stages 0-2 first when missing).
# docs/fewshot.md. Arguments go to `python -m epalm.studies.fewshot tune` (e.g. --quick, --set key=value, --force).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
exec python -m epalm.studies.fewshot tune "$@"

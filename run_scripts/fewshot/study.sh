#!/usr/bin/env bash
# The sample-efficiency study on the sensor test split: every method, k and seed, the tables and the curve (runs
# stages 0-2 first when missing).
# docs/fewshot.md. Arguments go to `python -m epalm.studies.fewshot study` (e.g. --quick, --set key=value, --force).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
exec python -m epalm.studies.fewshot study "$@"

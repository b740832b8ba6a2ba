#!/usr/bin/env bash
# Train eP-ALM (OPT-2.7B + TimeSformer) on MSVD-QA, then test the best validation checkpoint.
# Set DATA_DIR (see docs/datasets.md), OUTPUT_DIR and NUM_GPUS to taste; extra arguments go to main.py.
set -euo pipefail
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/video/qa/epalm_msvd}
export DATA_DIR
exec "$(dirname "$0")/../../launch.sh" configs/video/epalm_msvd_qa.yaml "$OUTPUT_DIR" --save_best "$@"

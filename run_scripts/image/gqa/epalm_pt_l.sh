#!/usr/bin/env bash
# Train eP-ALM_pt-L (OPT-6.7B + ViT-L/16) on GQA, then test the best validation checkpoint.
# Set DATA_DIR (see docs/datasets.md), OUTPUT_DIR and NUM_GPUS to taste; extra arguments go to main.py.
set -euo pipefail
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/image/gqa/epalm_pt_l}
export DATA_DIR
exec "$(dirname "$0")/../../launch.sh" configs/image/epalm_pt_l_gqa.yaml "$OUTPUT_DIR" --save_best "$@"

#!/usr/bin/env bash
# Train eP-ALM (OPT-2.7B + AST) on AudioCaps, then test the best validation checkpoint.
# Set DATA_DIR (see docs/datasets.md), OUTPUT_DIR and NUM_GPUS to taste; extra arguments go to main.py.
set -euo pipefail
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/audio/caption/epalm}
export DATA_DIR
exec "$(dirname "$0")/../../launch.sh" configs/audio/epalm_audiocaps.yaml "$OUTPUT_DIR" --save_best "$@"

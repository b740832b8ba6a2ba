#!/usr/bin/env bash
# eP-ALM on VQA v2 with OPT-125m, -350m, -1.3b, -2.7b and -6.7b (the same recipe), then the table and plot
# of VQA accuracy vs LM size in $OUTPUT_DIR/ablation.{csv,md,png}. Finished sizes are skipped on a rerun.
# Set DATA_DIR, OUTPUT_DIR, NUM_GPUS and LMS to taste; extra arguments go to epalm.studies.ablation / main.py.
set -euo pipefail
OUTPUT_DIR=${OUTPUT_DIR:-outputs/ablation/opt_sizes_vqa}
LMS=${LMS:-opt-125m opt-350m opt-1.3b opt-2.7b opt-6.7b}
exec "$(dirname "$0")/sweep.sh" configs/ablation/lm_sizes_vqa.yaml "$OUTPUT_DIR" "$LMS" --save_best "$@"

#!/usr/bin/env bash
# eP-ALM on VQA v2 with Llama-family LMs of several sizes (gated checkpoints: log in to the hub first), then
# the table and plot of VQA accuracy vs LM size in $OUTPUT_DIR/ablation.{csv,md,png}.
# Set DATA_DIR, OUTPUT_DIR, NUM_GPUS and LMS to taste; extra arguments go to epalm.studies.ablation / main.py.
set -euo pipefail
OUTPUT_DIR=${OUTPUT_DIR:-outputs/ablation/llama_sizes_vqa}
LMS=${LMS:-llama-3.2-1b llama-2-7b llama-2-13b}
exec "$(dirname "$0")/sweep.sh" configs/ablation/lm_sizes_vqa.yaml "$OUTPUT_DIR" "$LMS" --save_best "$@"

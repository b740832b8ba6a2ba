#!/usr/bin/env bash
# Evaluate eP-ALM_pt-L (OPT-6.7B + ViT-L/16) on GQA from a checkpoint: a run's best/ folder, or a released eP-ALM .pth
# (scored with configs/compat/reference_eval.yaml: the reference's exact evaluation inputs, as published).
set -euo pipefail
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/image/gqa/epalm_pt_l}
CHECKPOINT=${CHECKPOINT:-$OUTPUT_DIR/best}
export DATA_DIR
reference=()
case "$CHECKPOINT" in *.pth|*.pt|*.bin) reference=(--config configs/compat/reference_eval.yaml) ;; esac
exec "$(dirname "$0")/../../launch.sh" configs/image/epalm_pt_l_gqa.yaml "$OUTPUT_DIR/evaluate" --evaluate --checkpoint "$CHECKPOINT" \
  "${reference[@]}" "$@"

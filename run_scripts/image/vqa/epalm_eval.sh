#!/usr/bin/env bash
# Evaluate eP-ALM (OPT-2.7B + ViT-B/16) on VQA v2 from a checkpoint: a run's best/ folder, or a released eP-ALM .pth
# (scored with configs/compat/reference_eval.yaml: the reference's exact evaluation inputs, as published).
set -euo pipefail
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/image/vqa/epalm}
CHECKPOINT=${CHECKPOINT:-$OUTPUT_DIR/best}
export DATA_DIR
reference=()
case "$CHECKPOINT" in *.pth|*.pt|*.bin) reference=(--config configs/compat/reference_eval.yaml) ;; esac
exec "$(dirname "$0")/../../launch.sh" configs/image/epalm_vqa.yaml "$OUTPUT_DIR/evaluate" --evaluate --checkpoint "$CHECKPOINT" \
  "${reference[@]}" "$@"

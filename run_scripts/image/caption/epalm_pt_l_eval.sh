#!/usr/bin/env bash
# Evaluate eP-ALM_pt-L (OPT-6.7B + ViT-L/16) on COCO captioning from a checkpoint: a run's best/ folder, or a released eP-ALM .pth
# (scored in the reference's 'epalm' injection mode, as published).
set -euo pipefail
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/image/caption/epalm_pt_l}
CHECKPOINT=${CHECKPOINT:-$OUTPUT_DIR/best}
export DATA_DIR
mode=()
case "$CHECKPOINT" in *.pth) mode=(--set model.injection_mode=epalm) ;; esac
exec "$(dirname "$0")/../../launch.sh" configs/image/epalm_pt_l_caption.yaml "$OUTPUT_DIR/evaluate" --evaluate --checkpoint "$CHECKPOINT" \
  "${mode[@]}" "$@"

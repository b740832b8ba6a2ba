#!/usr/bin/env bash
# Evaluate eP-ALM (OPT-2.7B + TimeSformer) on MSR-VTT captioning from a checkpoint: a run's best/ folder, or a released eP-ALM .pth
# (scored in the reference's 'epalm' injection mode, as published).
set -euo pipefail
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/video/caption/epalm}
CHECKPOINT=${CHECKPOINT:-$OUTPUT_DIR/best}
export DATA_DIR
mode=()
case "$CHECKPOINT" in *.pth) mode=(--set model.injection_mode=epalm) ;; esac
exec "$(dirname "$0")/../../launch.sh" configs/video/epalm_msrvtt_caption.yaml "$OUTPUT_DIR/evaluate" --evaluate --checkpoint "$CHECKPOINT" \
  "${mode[@]}" "$@"

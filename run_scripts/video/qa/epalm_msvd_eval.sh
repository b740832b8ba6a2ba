#!/usr/bin/env bash
# Evaluate eP-ALM (OPT-2.7B + TimeSformer) on MSVD-QA from a checkpoint: a run's best/ folder, or a released eP-ALM .pth
# (scored with configs/compat/reference_eval_video.yaml: the reference's exact evaluation inputs, as published).
set -euo pipefail
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/video/qa/epalm_msvd}
CHECKPOINT=${CHECKPOINT:-$OUTPUT_DIR/best}
export DATA_DIR
reference=()
case "$CHECKPOINT" in *.pth|*.pt|*.bin) reference=(--config configs/compat/reference_eval_video.yaml) ;; esac
exec "$(dirname "$0")/../../launch.sh" configs/video/epalm_msvd_qa.yaml "$OUTPUT_DIR/evaluate" --evaluate --checkpoint "$CHECKPOINT" \
  "${reference[@]}" "$@"

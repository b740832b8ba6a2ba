#!/usr/bin/env bash
# Shared by the LM-size sweeps: python -m epalm.studies.ablation with each size launched like run_scripts/launch.sh
# (accelerate on N GPUs, fp16; in-process on the CPU when there is no GPU).
#   run_scripts/ablation/sweep.sh CONFIG OUTPUT_DIR "LM SIZES" [epalm.studies.ablation / main.py arguments ...]
# Environment: NUM_GPUS (default: all visible), DATA_DIR (default: data), MIXED_PRECISION (fp16).
set -euo pipefail
config=$1; output_dir=$2; lms=$3; shift 3
cd "$(dirname "$0")/../.."
num_gpus=${NUM_GPUS:-$(python -c "import torch; print(torch.cuda.device_count())")}
args=(-m epalm.studies.ablation --config "$config" --output_dir "$output_dir" --data_dir "${DATA_DIR:-data}" --lms $lms)
if [ "$num_gpus" -eq 0 ]; then
  echo "no GPU visible: training each size in this CPU process" >&2
  exec python "${args[@]}" "$@"
fi
launcher="accelerate launch --num_processes $num_gpus --num_machines 1 --mixed_precision ${MIXED_PRECISION:-fp16} --dynamo_backend no"
[ "$num_gpus" -gt 1 ] && launcher+=" --multi_gpu"
exec python "${args[@]}" --launcher "$launcher" "$@"

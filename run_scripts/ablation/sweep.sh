#!/usr/bin/env bash
# Shared by the LM-size sweeps: python -m epalm.studies.ablation with each size launched like run_scripts/launch.sh
# (accelerate on N GPUs, fp16; in-process on the CPU when there is no GPU).
#   run_scripts/ablation/sweep.sh CONFIG OUTPUT_DIR "LM SIZES" [epalm.studies.ablation / main.py arguments ...]
# Environment: NUM_GPUS (default: all visible), DATA_DIR (default: data), MIXED_PRECISION (fp16),
#   MAIN_PROCESS_PORT (default: a free port).
set -euo pipefail
config=$1; output_dir=$2; lms=$3; shift 3
cd "$(dirname "$0")/../.."
num_gpus=${NUM_GPUS:-$(python -c "import torch; print(torch.cuda.device_count())")}
args=(-m epalm.studies.ablation --config "$config" --output_dir "$output_dir" --data_dir "${DATA_DIR:-data}" --lms $lms)
if [ "$num_gpus" -eq 0 ]; then
  echo "no GPU visible: training each size in this CPU process" >&2
  exec python "${args[@]}" "$@"
fi
# A port of this sweep's own (MAIN_PROCESS_PORT, or a free one): two jobs on one host must not share accelerate's 29500.
port=${MAIN_PROCESS_PORT:-$(python -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")}
launcher="accelerate launch --num_processes $num_gpus --num_machines 1 --mixed_precision ${MIXED_PRECISION:-fp16} --dynamo_backend no"
launcher+=" --main_process_port $port"
[ "$num_gpus" -gt 1 ] && launcher+=" --multi_gpu"
exec python "${args[@]}" --launcher "$launcher" "$@"

#!/usr/bin/env bash
# Shared launcher of every run script: accelerate on N GPUs (fp16), or the CPU when there is none.
#   run_scripts/launch.sh CONFIG OUTPUT_DIR [main.py arguments ...]
# Environment: NUM_GPUS (default: all visible), DATA_DIR (default: data), MIXED_PRECISION (fp16),
#   ACCELERATE_CONFIG (an accelerate config file, e.g. configs/accelerate/deepspeed_zero2.yaml).
set -euo pipefail
config=$1; output_dir=$2; shift 2
cd "$(dirname "$0")/.."
num_gpus=${NUM_GPUS:-$(python -c "import torch; print(torch.cuda.device_count())")}
data_dir=${DATA_DIR:-data}
args=(main.py --config "$config" --data_dir "$data_dir" --output_dir "$output_dir" "$@")
if [ "$num_gpus" -eq 0 ]; then
  echo "no GPU visible: running one CPU process" >&2
  exec python "${args[@]}"
fi
launch=(accelerate launch --num_processes "$num_gpus" --num_machines 1 --mixed_precision "${MIXED_PRECISION:-fp16}"
        --dynamo_backend no)
[ -n "${ACCELERATE_CONFIG:-}" ] && launch+=(--config_file "$ACCELERATE_CONFIG")
[ "$num_gpus" -gt 1 ] && [ -z "${ACCELERATE_CONFIG:-}" ] && launch+=(--multi_gpu)
exec "${launch[@]}" "${args[@]}"

#!/usr/bin/env bash
# Shared launcher of every run script: accelerate on N GPUs (fp16) on one or several machines, or the CPU.
#   run_scripts/launch.sh CONFIG OUTPUT_DIR [main.py arguments ...]
# Environment: NUM_GPUS (per machine; default: all visible), DATA_DIR (default: data), MIXED_PRECISION (fp16 on
#   GPUs, no on the CPU), ACCELERATE_CONFIG (an accelerate config file, e.g. configs/accelerate/deepspeed_zero2.yaml).
# Several machines: run it once on each (run_scripts/slurm/ does under Slurm) with NUM_MACHINES, MACHINE_RANK
#   (0 .. NUM_MACHINES-1), MAIN_PROCESS_IP (the address of machine 0) and MAIN_PROCESS_PORT (default 29500).
#   Without a GPU each machine runs one CPU process (gloo).
# MAIN_PROCESS_PORT is passed on in every launch, one machine too (two jobs on one host must not share a port);
#   one machine without it gets a free port of its own.
# Exit status: the run's; 75 when it was preempted (SIGTERM / SIGUSR1) after saving its resumable state
#   (training/preemption.py; docs/training.md, "Clusters: preemption and requeueing").
set -euo pipefail
config=$1; output_dir=$2; shift 2
cd "$(dirname "$0")/.."
num_gpus=${NUM_GPUS:-$(python -c "import torch; print(torch.cuda.device_count())")}
num_machines=${NUM_MACHINES:-1}
machine_rank=${MACHINE_RANK:-0}
data_dir=${DATA_DIR:-data}
args=(main.py --config "$config" --data_dir "$data_dir" --output_dir "$output_dir" "$@")
if [ "$num_gpus" -eq 0 ] && [ "$num_machines" -eq 1 ]; then
  echo "no GPU visible: running one CPU process" >&2
  exec python "${args[@]}"
fi
if [ "$num_machines" -gt 1 ]; then
  if [ -z "${MAIN_PROCESS_IP:-}" ] || [ "$machine_rank" -ge "$num_machines" ]; then
    echo "error: NUM_MACHINES=$num_machines needs MAIN_PROCESS_IP (machine 0's address) and MACHINE_RANK" \
         "in 0..$((num_machines - 1)) (got '${MACHINE_RANK:-}')" >&2
    exit 2
  fi
fi

per_machine=$num_gpus
precision=${MIXED_PRECISION:-fp16}
if [ "$num_gpus" -eq 0 ]; then  # several machines without GPUs: one CPU process each
  echo "no GPU visible: one CPU process on this machine (machine $machine_rank of $num_machines)" >&2
  export ACCELERATE_USE_CPU=true
  per_machine=1
  precision=${MIXED_PRECISION:-no}
fi
# accelerate's --num_processes counts the processes of all machines together.
launch=(accelerate launch --num_processes $((per_machine * num_machines)) --num_machines "$num_machines"
        --mixed_precision "$precision" --dynamo_backend no)
port=${MAIN_PROCESS_PORT:-}
if [ -z "$port" ] && [ "$num_machines" -eq 1 ]; then  # a free port, not accelerate's 29500 that every job shares
  port=$(python -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
fi
launch+=(--main_process_port "${port:-29500}")
if [ "$num_machines" -gt 1 ]; then
  launch+=(--machine_rank "$machine_rank" --main_process_ip "$MAIN_PROCESS_IP")
  # One launcher per machine (as here), not DeepSpeed's pdsh launcher that would start the others over ssh.
  if [ -n "${ACCELERATE_CONFIG:-}" ] && grep -q "distributed_type: *DEEPSPEED" "$ACCELERATE_CONFIG"; then
    launch+=(--deepspeed_multinode_launcher standard)
  fi
fi
[ -n "${ACCELERATE_CONFIG:-}" ] && launch+=(--config_file "$ACCELERATE_CONFIG")
[ $((per_machine * num_machines)) -gt 1 ] && [ -z "${ACCELERATE_CONFIG:-}" ] && launch+=(--multi_gpu)

# Preemption. Slurm signals every process of a job step; the training processes handle SIGTERM and SIGUSR1
# themselves (save at the next step boundary, write OUTPUT_DIR/preempted.json, exit 75). This shell and
# accelerate's launcher must outlive them to pass that status on: they ignore both signals (torchrun would die
# of SIGUSR1; the trainer installs its own handlers over the inherited 'ignore'), and torchrun (its
# --signals_to_handle, read from PET_SIGNALS_TO_HANDLE) leaves SIGTERM alone instead of passing it on and
# killing the training processes 30 s later, whatever they are doing.
trap '' TERM USR1
export PET_SIGNALS_TO_HANDLE=${PET_SIGNALS_TO_HANDLE:-SIGINT,SIGHUP,SIGQUIT}
marker="$output_dir/preempted.json"
rm -f "$marker"
status=0
"${launch[@]}" "${args[@]}" || status=$?
# torchrun reports any failed process as 1: the marker tells a preempted run from a failed one.
if [ "$status" -ne 0 ] && [ -f "$marker" ]; then
  echo "preempted: the resumable state is saved ($marker); continue with --resume (exit status 75)" >&2
  status=75
fi
exit "$status"

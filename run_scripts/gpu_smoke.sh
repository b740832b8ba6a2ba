#!/usr/bin/env bash
# One command for a lent CUDA GPU (H100/H200), meant to finish within 10 minutes: the benchmark shapes (opt-2.7b MFU,
# train_cached against train_encode, 3-beam generation tokens/s; opt-6.7b-pt-l peak memory) with their targets, the
# demo's image VQA in fp16 with the LM held in fp16 (eP-ALM must gain 40 points over blind), every engine on one GPU
# (plain, DeepSpeed ZeRO-2, ZeRO-3, FSDP: an uninterrupted run, a run preempted mid-way and resumed, compared with it;
# --evaluate of the checkpoint against the score the run logged), KV-cached generation against recomputation.
# One table, also in $OUT/smoke.md and $OUT/smoke.json; exit status 1 when a row FAILs or a target is NOT MET
# (--targets_as_information: targets reported only).
# A machine without a package index: benchmarks/gpu_wheels.sh fetches what a CUDA PyTorch image lacks into .whl/
# (elsewhere); copy it along and it is installed into /tmp/site here.
#   DEVICE=cpu SMOKE=tiny bash run_scripts/gpu_smoke.sh    # the same checks on a CPU (tiny sizes, CUDA rows skipped)
# DEVICE (cuda), SMOKE (full | tiny), OUT (outputs/gpu_smoke), PYTHON (python3); extra arguments go to
# python -m benchmarks.gpu_smoke (e.g. --only engines --engines zero3 fsdp).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "${DEVICE:-cuda}" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$PYTHON" -m benchmarks.gpu_smoke --device "${DEVICE:-cuda}" --sizes "${SMOKE:-full}" \
  --out "${OUT:-outputs/gpu_smoke}" "$@"

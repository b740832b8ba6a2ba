#!/usr/bin/env bash
# The GPU targets in one run, on a machine with one CUDA GPU (a few minutes on an H100):
#   opt-2.7b       the eP-ALM recipe (OPT-2.7B + ViT-B/16, batch 64) in fp16: model FLOPs utilisation of a
#                  training step (target >= 40 %)
#   opt-6.7b-pt-l  the eP-ALM_pt-L recipe (OPT-6.7B + ViT-L/16) at batch 2 in fp16: peak GPU memory of a
#                  training step (target <= 20 GB)
# Weights are random (the speed and memory of a shape do not depend on their values): nothing is downloaded.
# Writes benchmarks/results/<shape>-cuda-float16.json (RESULTS=folder to change it).
# A machine without internet whose Python lacks the media decoders (PyAV, librosa): fetch their wheels
# elsewhere with benchmarks/gpu_wheels.sh into .whl/ and copy that folder along; they are installed into
# /tmp/site here. SHAPES, DEVICE, DTYPE, REPEATS and WARMUP override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-float16}
PYTHON=${PYTHON:-python3}
source benchmarks/gpu_env.sh  # .whl/ into /tmp/site; epalm importable from here without an install
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONUNBUFFERED=1
for shape in ${SHAPES:-opt-2.7b opt-6.7b-pt-l}; do
  "$PYTHON" -m benchmarks.run --shape "$shape" --device "$DEVICE" --dtype "$DTYPE" \
    --repeats "${REPEATS:-5}" --warmup "${WARMUP:-2}" --out "$RESULTS/$shape-$DEVICE-$DTYPE.json"
done

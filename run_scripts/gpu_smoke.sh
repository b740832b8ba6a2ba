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
# DEVICE (cuda), SMOKE (full | tiny), OUT (outputs/gpu_smoke), PYTHON (python3), LIMIT (seconds before the smoke
# is stopped; the rows finished by then are in smoke.md), RESULTS (a folder that gets smoke.md, smoke.json and
# smoke-logs.tar.gz); extra arguments go to python -m benchmarks.gpu_smoke (e.g. --only engines --engines zero3).
# On a lent H200 (device tool; .whl/ from benchmarks/gpu_wheels.sh carried), in one call of at most 600 s:
#   LIMIT=540 RESULTS=$OUT bash run_scripts/gpu_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
source benchmarks/gpu_env.sh  # .whl/ into /tmp/site; epalm importable from here without an install
if [ "${DEVICE:-cuda}" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out=${OUT:-outputs/gpu_smoke}
status=0
timeout --signal=TERM --kill-after=20 "${LIMIT:-36000}" \
  "$PYTHON" -m benchmarks.gpu_smoke --device "${DEVICE:-cuda}" --sizes "${SMOKE:-full}" --out "$out" "$@" || status=$?
if [ -n "${RESULTS:-}" ]; then  # a few files to take away: the table and the logs (a lent GPU's call returns 8)
  mkdir -p "$RESULTS"
  cp "$out/smoke.md" "$out/smoke.json" "$RESULTS/" 2>/dev/null || echo "no smoke table in $out" >&2
  find "$out" -maxdepth 2 \( -name '*.log' -o -path '*/bench/*.json' \) -print0 \
    | tar -czf "$RESULTS/smoke-logs.tar.gz" --null -T - 2>/dev/null || true
fi
exit "$status"

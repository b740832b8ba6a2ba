#!/usr/bin/env bash
# Wheels of what this project needs beyond a CUDA PyTorch image (torch, transformers, timm, accelerate there;
# the lent H100/H200 image: torch 2.11, transformers 5.17, timm 1.0.29, accelerate 1.15, Python 3.12):
#   - the media decoders PyAV and librosa and what librosa needs (every modality's module imports its decoder);
#   - DeepSpeed (built here into a wheel with `pip wheel --no-deps`: it ships as a source archive) and what it
#     imports: pydantic 2 with pydantic-core, annotated-types, typing-inspection; hjson, py-cpuinfo, msgpack,
#     psutil, ninja, einops, nvidia-ml-py;
#   - with CAPTIONS=1 only, pycocoevalcap and pycocotools (caption metrics: 105 MB, Java jars inside; the smoke and
#     the benchmarks score VQA and need neither).
# The versions are those of the tested environment (docs/installation.md). For Python 3.12 on x86-64 Linux
# (PYTHON_VERSION to change), into .whl/ (ignored by git); benchmarks/gpu_env.sh installs them on a machine that
# cannot reach a package index (pip install --no-deps --target /tmp/site). About 40 MB without CAPTIONS: with the
# repository's 19 MB, within the 64 MiB a lent GPU's call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
PYTHON=${PYTHON:-python3}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
binary() {  # wheels for the target Python and platform, never built here
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    "${platforms[@]}" -d .whl "$@"
}
binary av==18.1.0 librosa==0.11.0 audioread decorator pooch platformdirs soundfile soxr cffi pycparser
binary pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  hjson==3.1.0 py-cpuinfo==9.0.0 msgpack==1.2.4 ninja==1.13.2 einops==0.8.2 nvidia-ml-py psutil
if [ "${CAPTIONS:-0}" = 1 ]; then
  binary pycocoevalcap==1.2 pycocotools==2.0.11
fi
# DeepSpeed's source archive, built into a pure-Python wheel (its CUDA ops compile on first use, if ever)
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8 \
  || DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-deps -w .whl deepspeed==0.19.8
ls -l .whl
du -sh .whl

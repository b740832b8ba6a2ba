#!/usr/bin/env bash
# Wheels of the packages this project needs beyond a typical CUDA PyTorch image (PyTorch, transformers,
# timm, accelerate there): the media decoders PyAV and librosa and what librosa needs. For Python 3.12 on
# x86-64 Linux (PYTHON_VERSION to change), into .whl/ (ignored by git); benchmarks/gpu_check.sh installs
# them on a machine that cannot reach a package index. About 36 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for pkg in av librosa audioread decorator pooch platformdirs soundfile soxr cffi pycparser; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    "${platforms[@]}" -d .whl "$pkg"
done
ls -l .whl

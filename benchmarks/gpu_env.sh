# Sourced by benchmarks/gpu_check.sh and run_scripts/gpu_smoke.sh, from the repository root: the environment of a
# machine that may not have this project installed, such as a lent GPU's image (PyTorch, transformers, timm,
# accelerate; no package index):
# - the wheels of benchmarks/gpu_wheels.sh in .whl/ (fetched where pip works, copied along) go into /tmp/site;
# - where `import epalm` does not find this checkout, its library folders are linked as /tmp/epalm-src/epalm/<folder>
#   (what setup.py's package_dir maps), so that `epalm.models` ... import from here without an install.
PYTHON=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "$("$PYTHON" -c 'import epalm.models, os; print(os.path.dirname(epalm.models.__file__))' 2>/dev/null)" != "$PWD/models" ]; then
  src=/tmp/epalm-src-$$
  mkdir -p "$src/epalm"
  for home in common models dataset training inference demo studies; do ln -sfn "$PWD/$home" "$src/epalm/$home"; done
  export PYTHONPATH=$src${PYTHONPATH:+:$PYTHONPATH}
  echo "epalm imported from $PWD through $src (the project is not installed here)" >&2
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

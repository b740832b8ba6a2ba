#!/usr/bin/env bash
# The offline demo: builds the synthetic data and the tiny pretrained models if missing, trains eP-ALM and
# its blind baseline on each task, prints the table and writes outputs/demo/summary.json.
# Arguments go to `python -m epalm.demo` (e.g. --tasks image_vqa image_caption).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m epalm.demo "$@"

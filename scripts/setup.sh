#!/usr/bin/env bash
# Create .venv (if needed) and install Hone into it. Usage: scripts/setup.sh [EXTRAS]  e.g. "test"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# the CPU build of torch first: a plain "torch" requirement would pull a multi-GB CUDA build
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".${1:+[$1]}"

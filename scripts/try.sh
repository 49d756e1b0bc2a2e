#!/usr/bin/env bash
# Install Hone and complete a line of examples/demo.py with the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
echo "--- examples/demo.py, cursor at line 6, column 40 (0-based, after 'in '):"
sed -n '1,12p' examples/demo.py
echo "--- Hone's completion:"
hone complete examples/demo.py 6 40

#!/usr/bin/env bash
# Install Hone with its test extras and run every test: unit, end-to-end over stdio, Neovim, VS Code.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
python -m pytest -q -m "not e2e"
python -m pytest -q -m e2e
if [ -f scripts/vscode_e2e.sh ]; then
  bash scripts/vscode_e2e.sh
fi

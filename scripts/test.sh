#!/usr/bin/env bash
# Install Hone with its test extras and run every test: unit, end-to-end over stdio and in Neovim,
# the extension's unit tests, and the extension in real VS Code (code-server + headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
# one compile cache for both runs (tests/conftest.py): the end-to-end run reuses the tiny models' packages
HONE_TEST_CACHE=$(mktemp -d) && export HONE_TEST_CACHE && trap 'rm -rf "$HONE_TEST_CACHE"' EXIT
python -m pytest -q -m "not e2e"
python -m pytest -q -m e2e
(cd extension && npm ci --no-audit --no-fund && npm test && npm run package)
rc=0
HONE_E2E_SCREENSHOT="${HONE_E2E_SCREENSHOT-}" bash scripts/vscode_e2e.sh || rc=$?
if [ "$rc" -eq 3 ]; then
  echo "VS Code end-to-end test NOT RUN: its tools cannot be installed on this machine (reason above)."
elif [ "$rc" -ne 0 ]; then
  exit "$rc"
fi

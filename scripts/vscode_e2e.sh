#!/usr/bin/env bash
# End-to-end test of the Hone VS Code extension in real VS Code (code-server) with the real server
# and model, driven by headless Debian Chromium through playwright-core (tests/e2e_vscode/drive.js).
#
# Usage: scripts/vscode_e2e.sh
#   HONE_E2E_CACHE   where installs are cached (default /tmp/hone-e2e)
#   HONE_E2E_OUT     screenshots, logs and results (default $HONE_E2E_CACHE/out)
#   HONE_E2E_PYTHON  interpreter with Hone installed (default <repo>/.venv/bin/python)
#   HONE_E2E_SCREENSHOT  where the ghost-text screenshot is also copied
#                        (default extension/images/ghost-text.png; empty: nowhere)
# Exit: 0 all checks passed; 1 a check or step failed; 3 the tools cannot be installed on this
# machine (prints "VSCODE E2E: SKIPPED-IMPOSSIBLE: <reason>"). Ends with "N passed, M failed".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${HONE_E2E_CACHE:-/tmp/hone-e2e}
OUT=${HONE_E2E_OUT:-$CACHE/out}
PYTHON=${HONE_E2E_PYTHON:-$ROOT/.venv/bin/python}
SCREENSHOT=${HONE_E2E_SCREENSHOT-$ROOT/extension/images/ghost-text.png}
CODE_SERVER_VERSION=4.100.3       # VS Code 1.100.3, the last code-server release on Node 20
PLAYWRIGHT_VERSION=1.65.1
CS_DIR=$CACHE/code-server
DRIVER_DIR=$CACHE/driver
CODE_SERVER=$CS_DIR/node_modules/.bin/code-server
# Nothing of code-server's or chromium's may land in ~ (code-server writes ~/.config on any run).
export XDG_CONFIG_HOME=$CACHE/xdg/config XDG_DATA_HOME=$CACHE/xdg/data XDG_CACHE_HOME=$CACHE/xdg/cache

PASSED=0
FAILED=0
T0=$SECONDS
CS_PGID=""
DRIVE_PGID=""
RUN=""

log() { printf '[vscode-e2e %3ds] %s\n' $((SECONDS - T0)) "$*"; }
pass() { PASSED=$((PASSED + 1)); log "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); log "FAIL $1"; }
summary() { echo "$PASSED passed, $FAILED failed"; }
impossible() {
  echo "VSCODE E2E: SKIPPED-IMPOSSIBLE: $1"
  summary
  exit 3
}
# A step that later steps depend on: on failure, report and stop.
must() {
  local name=$1
  shift
  if "$@" >"$OUT/step-$name.log" 2>&1; then
    pass "$name"
  else
    fail "$name (see $OUT/step-$name.log)"
    tail -n 30 "$OUT/step-$name.log" | sed 's/^/    /'
    summary
    exit 1
  fi
}

cleanup() {
  local group
  for group in "$DRIVE_PGID" "$CS_PGID"; do
    [ -n "$group" ] && kill -TERM -- "-$group" 2>/dev/null
  done
  sleep 1
  for group in "$DRIVE_PGID" "$CS_PGID"; do
    [ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null
  done
  [ -n "$RUN" ] && rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$CACHE" "$OUT"
rm -f "$OUT"/step-*.log "$OUT"/*.png "$OUT"/results.json "$OUT"/*.log

# --- Tools: chromium (apt), code-server and playwright-core (npm) --------------------------------
registry_ok() { timeout 60 npm view "code-server@$CODE_SERVER_VERSION" version >/dev/null 2>&1; }

apt_install() {
  [ "$(id -u)" = 0 ] || impossible "need root to apt-get install $*"
  command -v apt-get >/dev/null || impossible "no apt-get to install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >"$OUT/apt.log" 2>&1 && return 0
  apt-get update >>"$OUT/apt.log" 2>&1 || impossible "apt-get update failed (no Debian mirror?): $(tail -n 1 "$OUT/apt.log")"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >>"$OUT/apt.log" 2>&1 \
    || impossible "apt-get install $* failed: $(tail -n 1 "$OUT/apt.log")"
}

command -v chromium >/dev/null || { log "installing chromium (apt)"; apt_install chromium; }
command -v node >/dev/null && command -v npm >/dev/null || impossible "node and npm are needed (Node 20)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || impossible "Node >= 20 is needed, found $(node --version)"

install_code_server() {
  # code-server's postinstall builds native modules and downloads ripgrep from GitHub:
  # build them from source, and pre-seed @vscode/ripgrep's download cache with Debian's rg.
  apt_install build-essential python3 pkg-config libkrb5-dev ripgrep
  local rgtmp v tag
  rgtmp=$(mktemp -d)
  cp /usr/bin/rg "$rgtmp/rg"
  for v in 1.15.11 1.15.14 1.17.0 $(npm view @vscode/ripgrep version 2>/dev/null); do
    mkdir -p "/tmp/vscode-ripgrep-cache-$v"
    for tag in v13.0.0-10 v13.0.0-13 v14.1.1-1 v15.0.0; do
      tar czf "/tmp/vscode-ripgrep-cache-$v/ripgrep-$tag-x86_64-unknown-linux-musl.tar.gz" -C "$rgtmp" rg
    done
  done
  rm -rf "$rgtmp" "$CS_DIR"
  mkdir -p "$CS_DIR"
  (cd "$CS_DIR" && npm init -y >/dev/null &&
    npm_config_yes=true npm_config_unsafe_perm=true npm install --no-audit --no-fund --foreground-scripts \
      "code-server@$CODE_SERVER_VERSION")
}

if ! "$CODE_SERVER" --version 2>/dev/null | grep -q "^$CODE_SERVER_VERSION "; then
  registry_ok || impossible "the npm registry is unreachable (npm view code-server failed)"
  log "installing code-server $CODE_SERVER_VERSION into $CS_DIR (a few minutes)"
  must install-code-server install_code_server
fi
if [ "$(node -p "require('$DRIVER_DIR/node_modules/playwright-core/package.json').version" 2>/dev/null)" != "$PLAYWRIGHT_VERSION" ]; then
  registry_ok || impossible "the npm registry is unreachable (npm view code-server failed)"
  log "installing playwright-core $PLAYWRIGHT_VERSION into $DRIVER_DIR"
  mkdir -p "$DRIVER_DIR"
  must install-playwright bash -c "cd '$DRIVER_DIR' && { [ -f package.json ] || npm init -y; } &&
    npm install --no-audit --no-fund playwright-core@$PLAYWRIGHT_VERSION"
fi
log "tools ready: code-server $("$CODE_SERVER" --version | grep "^$CODE_SERVER_VERSION "), chromium $(chromium --version 2>/dev/null | cut -d' ' -f2)"

# --- The server and the extension ---------------------------------------------------------------
must server-runs "$PYTHON" -m lsp_server --help

build_vsix() {
  cd "$ROOT/extension" || return 1
  local stamp=node_modules/.hone-lock-hash hash
  hash=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
    npm ci --no-audit --no-fund && echo "$hash" >"$stamp" || return 1
  fi
  rm -f hone-vscode.vsix
  npm run package
}
must build-vsix build_vsix

RUN=$(mktemp -d "$CACHE/run.XXXXXX")
WS=$RUN/workspace
export XDG_CONFIG_HOME=$RUN/xdg/config XDG_DATA_HOME=$RUN/xdg/data XDG_CACHE_HOME=$RUN/xdg/cache
mkdir -p "$WS/.vscode" "$RUN/user/User"
cs_args=(--user-data-dir "$RUN/user" --extensions-dir "$RUN/ext")
must install-vsix "$CODE_SERVER" "${cs_args[@]}" --install-extension "$ROOT/extension/hone-vscode.vsix"

# Quiet, deterministic editor: no suggest widget competing for Tab, nothing changing saved files.
cat >"$RUN/user/User/settings.json" <<'EOF'
{
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "workbench.enableExperiments": false,
  "workbench.colorTheme": "Default Dark Modern",
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.ignoreRecommendations": true,
  "extensions.autoCheckUpdates": false,
  "chat.commandCenter.enabled": false,
  "git.enabled": false,
  "editor.minimap.enabled": false,
  "editor.fontSize": 15,
  "editor.inlineSuggest.enabled": true,
  "editor.quickSuggestions": { "other": "off", "comments": "off", "strings": "off" },
  "editor.suggestOnTriggerCharacters": false,
  "editor.autoClosingBrackets": "never",
  "editor.autoClosingQuotes": "never",
  "files.autoSave": "off",
  "files.insertFinalNewline": false,
  "files.trimTrailingWhitespace": false,
  "files.trimFinalNewlines": false,
  "hone.trace.server": "messages"
}
EOF
# hone.pythonPath from the workspace, as a project would set it (machine-overridable).
printf '{\n  "hone.pythonPath": "%s"\n}\n' "$PYTHON" >"$WS/.vscode/settings.json"

PORT=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
# setsid: code-server leads its own process group, so cleanup can kill it with its file watcher.
setsid "$CODE_SERVER" "${cs_args[@]}" --config "$RUN/config.yaml" --auth none --bind-addr "127.0.0.1:$PORT" \
  --disable-telemetry --disable-update-check --disable-workspace-trust --disable-getting-started-override \
  "$WS" >"$OUT/code-server.log" 2>&1 &
CS_PGID=$!
healthy() {
  local i
  for i in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$CS_PGID" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
must code-server-up healthy

# --- Drive VS Code ------------------------------------------------------------------------------
log "driving VS Code at http://127.0.0.1:$PORT (log: $OUT/drive.log)"
: >"$OUT/drive.log"
URL="http://127.0.0.1:$PORT/?folder=$WS" WS="$WS" OUT="$OUT" SCREENSHOT="$SCREENSHOT" \
  NODE_PATH="$DRIVER_DIR/node_modules" setsid node "$ROOT/tests/e2e_vscode/drive.js" >"$OUT/drive.log" 2>&1 &
DRIVE_PGID=$!
tail -n +1 -f --pid="$DRIVE_PGID" "$OUT/drive.log" | sed 's/^/    /'
wait "$DRIVE_PGID"
log "drive.js exited with $?"
DRIVE_PGID=""

# Keep the extension's own log (the "Hone" output channel) and its LSP trace next to the results.
while IFS= read -r -d '' channel; do
  case "$channel" in
    *Trace*) cp "$channel" "$OUT/hone-trace.log" ;;
    *) cp "$channel" "$OUT/hone-output.log" ;;
  esac
done < <(find "$RUN/user/logs" -name '*Hone*.log' -print0 2>/dev/null)

if [ -f "$OUT/results.json" ]; then
  read -r drive_passed drive_failed < <(node -e '
    const r = require(process.argv[1]);
    console.log(r.checks.filter(c => c.ok).length, r.checks.filter(c => !c.ok).length)' "$OUT/results.json")
  PASSED=$((PASSED + drive_passed))
  FAILED=$((FAILED + drive_failed))
else
  fail "drive.js wrote no results (see $OUT/drive.log)"
fi
# The extension tells the server where the cursor is placed (hone/cursor); the server says so once in its log.
if grep -q "the editor reports where the cursor is placed" "$OUT/hone-output.log" 2>/dev/null; then
  pass "cursor placements reach the server (hone/cursor)"
else
  fail "cursor placements reach the server (hone/cursor): not in $OUT/hone-output.log"
fi
log "done in $((SECONDS - T0))s; artifacts in $OUT"
summary
[ "$FAILED" -eq 0 ]

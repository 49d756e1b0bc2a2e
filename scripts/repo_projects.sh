#!/usr/bin/env bash
# Fetch the held-out projects of `hone eval-repo`: real multi-file pure-Python packages the model has not
# trained on (its corpus is this interpreter's stdlib, which holds the base site-packages, plus the venv's
# site-packages: none of these is installed in either, nor a dependency of what is). Pinned versions, one
# folder per project holding only the package's own source (no tests, no vendored copies). Idempotent.
# Usage: scripts/repo_projects.sh [DIR]   (default ${HONE_RUNS:-$HOME/.cache/hone}/repos)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-${HONE_RUNS:-$HOME/.cache/hone}/repos}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
# name==version  top-level package folder in the wheel
PROJECTS="
isort==5.13.2 isort
pyflakes==3.2.0 pyflakes
marshmallow==3.21.3 marshmallow
toolz==0.12.1 toolz
invoke==2.2.0 invoke
mako==1.3.5 mako
tinydb==4.8.0 tinydb
sqlparse==0.5.1 sqlparse
voluptuous==0.15.2 voluptuous
radon==6.0.1 radon
"
mkdir -p "$DIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "$PROJECTS" | while read -r spec pkg; do
    [ -n "$spec" ] || continue
    dest="$DIR/${spec/==/-}"
    if [ -d "$dest/$pkg" ]; then
        echo "$spec: already in $dest"
        continue
    fi
    "$PY" -m pip download -q --no-deps --only-binary :all: --python-version 3.11 -d "$TMP/$spec" "$spec"
    "$PY" -m zipfile -e "$TMP/$spec"/*.whl "$TMP/$spec/x"
    rm -rf "$dest.part"
    mkdir -p "$dest.part"
    cp -r "$TMP/$spec/x/$pkg" "$dest.part/$pkg"
    find "$dest.part" -depth -type d \( -name tests -o -name test -o -name vendor -o -name _vendor \
        -o -name _vendored -o -name vendored -o -name third_party -o -name __pycache__ \) -exec rm -rf {} +
    mv "$dest.part" "$dest"  # complete or absent: an interrupted fetch is redone
    echo "$spec: $(find "$dest" -name '*.py' | wc -l) .py files in $dest"
done

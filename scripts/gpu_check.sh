#!/usr/bin/env bash
# The GPU check of issue #25: `hone bench thirdparty` at the real 7B shapes (Dream/Dream-Coder/DiffuCoder 7B and
# LLaDA 8B, random weights drawn on the GPU, nothing downloaded), recompute vs dual cache, one family at a time.
# One command, well under 8 minutes on one H100 (each family is stopped at HONE_GPU_CHECK_FAMILY_S).
#
# Runs from a plain copy of the work tree (no `pip install -e .`): PYTHONPATH is the tree. Needs python3 with
# torch, safetensors, numpy and tokenizers (the GPU image has them) and msgspec, which the image lacks: it travels
# as a wheel in .whl/ (ignored by git). Once, here:  bash scripts/gpu_check.sh --fetch-wheels
# then on the device machine, carrying .whl:  bash scripts/gpu_check.sh
# Writes thirdparty.json (the bench's final JSON, per family), thirdparty_<family>.log and env.txt under $OUT
# (else runs/gpu_check).
# Rehearsal on a CPU:  HONE_GPU_CHECK_SIZE=small HONE_GPU_CHECK_DEVICE=cpu HONE_GPU_CHECK_CASES=1 bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${PYTHON:-python3}

if [[ "${1:-}" == "--fetch-wheels" ]]; then  # here, where pip reaches a registry: the wheel the GPU image lacks
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    version=$("$py" -c 'import msgspec; print(msgspec.__version__)' 2>/dev/null || echo 0.23.0)
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "msgspec==$version"
    ls .whl
    exit 0
fi

size=${HONE_GPU_CHECK_SIZE:-7b}
device=${HONE_GPU_CHECK_DEVICE:-cuda}
cases=${HONE_GPU_CHECK_CASES:-8}
families=${HONE_GPU_CHECK_FAMILIES:-qwen2 llada}
family_s=${HONE_GPU_CHECK_FAMILY_S:-200}  # each family's limit: two of them leave 8 minutes room to spare
out=${OUT:-$root/runs/gpu_check}
mkdir -p "$out"

if ! "$py" -c 'import msgspec' 2>/dev/null; then
    wheel=$(ls .whl/msgspec-*.whl 2>/dev/null | head -n 1 || true)
    if [[ -z "$wheel" ]]; then
        echo "gpu_check: python3 has no msgspec and .whl/ holds no msgspec wheel: run 'bash scripts/gpu_check.sh" \
             "--fetch-wheels' where pip works and carry .whl" >&2
        exit 2
    fi
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hone-site "$wheel"
    export PYTHONPATH=/tmp/hone-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
"$py" -c 'import torch, safetensors, numpy, tokenizers, msgspec' || {
    echo "gpu_check: needs torch, safetensors, numpy, tokenizers and msgspec in $py" >&2; exit 2; }

{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
    echo "size=$size device=$device cases=$cases families=$families"
} | tee "$out/env.txt"

status=0
for family in $families; do
    log=$out/thirdparty_$family.log
    timeout "$family_s" "$py" -m model.reports.thirdparty --family "$family" --size "$size" --device "$device" \
        --cases "$cases" --refresh "${HONE_GPU_CHECK_REFRESH:-block}" ${HONE_GPU_CHECK_THREADS:+--threads "$HONE_GPU_CHECK_THREADS"} 2>&1 | tee "$log" || status=$?
done

# one JSON: each family's final line, under its name (a family that failed or ran out of time is missing)
"$py" - "$out" $families <<'EOF' | tee "$out/thirdparty.json"
import json, sys
from pathlib import Path

out, families = Path(sys.argv[1]), sys.argv[2:]
merged = {"bench": "thirdparty", "families": {}}
for f in families:
    lines = (out / f"thirdparty_{f}.log").read_text().strip().splitlines()
    last = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if last is None:
        merged.setdefault("missing", []).append(f)
        continue
    for key in ("size", "device", "gpu", "refresh", "cases"):
        if key in last:
            merged[key] = last[key]
    merged["families"][f] = last["families"][f]
for key in ("speedup_cached_vs_recompute_line", "speedup_cached_vs_recompute_block", "token_agreement_line",
            "token_agreement_block"):
    merged[key] = {f: v[key] for f, v in merged["families"].items()}
print(json.dumps(merged))
EOF
exit "$status"

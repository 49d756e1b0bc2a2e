#!/usr/bin/env bash
# Equal-compute recipe comparison: the same network, seed, held-out batches and token budget for each arm,
# two arms at a time on one thread each; then the curves, a quick infill eval and the card section.
# Usage: scripts/compare_recipes.sh [TOKENS]   (needs data/corpus; uses the shipped tokenizer)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p runs
TOKENS=${1:-3000000}  # ~190 steps of 16 x 323 tokens per million
ARMS=(
  "ar-then-diffusion|--route ar-diffusion"
  "spm|--route spm"
  "spm-muon|--route spm --optimizer muon"
  "spm-clipped-complementary|--route spm --mask-schedule clipped --complementary"
)
run_arm() {
  local name=${1%%|*} flags=${1#*|}
  rm -rf "runs/recipe-$name"  # a fresh start: an old folder would resume instead
  # shellcheck disable=SC2086
  hone train --preset cpu $flags --tokens "$TOKENS" --threads 1 --eval-every 120 --warmup-steps 50 \
    --tokenizer model/default/tokenizer.json --run-dir "runs/recipe-$name" > "runs/recipe-$name.log" 2>&1
}
export -f run_arm
export TOKENS
printf '%s\n' "${ARMS[@]}" | xargs -P 2 -I{} bash -c 'run_arm "$@"' _ {}
hone routes $(for a in "${ARMS[@]}"; do echo "runs/recipe-${a%%|*}"; done) --threads 2 \
  --out model/default/recipes.png --card model/default/MODEL_CARD.md

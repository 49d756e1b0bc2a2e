#!/usr/bin/env bash
# Equal-compute route comparison: diffusion from scratch vs AR then masked diffusion, same network, seed and
# token budget, one thread each side by side; then both curves, a quick infill eval, and the card section.
# Usage: scripts/compare_routes.sh [TOKENS]   (needs data/corpus; uses the shipped tokenizer)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p runs
TOKENS=${1:-1000000}  # ~190 steps of 16 x 322 tokens per million
for route in diffusion ar-diffusion; do
  rm -rf "runs/route-$route"  # a fresh start: an old folder would resume instead
  hone train --preset cpu --route "$route" --tokens "$TOKENS" --threads 1 --eval-every 90 --warmup-steps 20 \
    --tokenizer model/default/tokenizer.json --run-dir "runs/route-$route" > "runs/route-$route.log" 2>&1 &
done
wait
hone routes runs/route-diffusion runs/route-ar-diffusion --threads 2 --out model/default/routes.png --card model/default/MODEL_CARD.md

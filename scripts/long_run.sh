#!/usr/bin/env bash
# The default model's long run (spm recipe, warmup-stable-decay over 8 hours, from the shipped weights).
#   scripts/long_run.sh train      start it, or resume it from runs/long/state.pt (Ctrl-C / SIGINT checkpoints)
#   scripts/long_run.sh cool HOURS copy runs/long to runs/long-cool and cool that copy down for HOURS, then
#                                  evaluate it into its card (ship it with `hone ship runs/long-cool/model`)
# Without runs/long (a fresh machine) `train` starts from model/default with a fresh optimizer.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
FLAGS=(--preset cpu --route spm --optimizer muon --init-from model/default --schedule wsd --hours 8 --lr 1e-3 --warmup-steps 100
       --threads 2 --eval-every 600 --corpus data/corpus ${HONE_LONG_FLAGS:-})
case "${1:-train}" in
  train) exec hone train "${FLAGS[@]}" --run-dir runs/long ;;
  cool)
    rm -rf runs/long-cool && cp -r runs/long runs/long-cool
    hone train "${FLAGS[@]}" --run-dir runs/long-cool --cooldown "${2:-0.25}"
    hone eval --model runs/long-cool/model --write-card --threads 2 ;;
  *) echo "usage: $0 train | cool HOURS" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The default model's long run (spm recipe, warmup-stable-decay over 8 hours, from the shipped weights).
#   scripts/long_run.sh train      start it, or resume it from $HONE_RUNS/long/state.pt (Ctrl-C / SIGINT checkpoints)
#   scripts/long_run.sh cool HOURS copy $HONE_RUNS/long to $HONE_RUNS/long-cool and cool that copy down for HOURS,
#                                  then evaluate it into its card (ship it with `hone ship $HONE_RUNS/long-cool/model`)
# The run folder and the corpus live outside the work tree (default ~/.cache/hone), so a checkout laid anew on the
# same machine still resumes. Without the run folder (a fresh machine) `train` starts from model/default with a
# fresh optimizer; without the corpus it is built first.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
HONE_RUNS=${HONE_RUNS:-${XDG_CACHE_HOME:-$HOME/.cache}/hone}
CORPUS=$HONE_RUNS/corpus
[ -f "$CORPUS/corpus.json" ] || hone corpus --out "$CORPUS"
FLAGS=(--preset cpu --route spm --optimizer muon --init-from model/default --schedule wsd --hours ${HONE_LONG_HOURS:-8} --lr 1e-3 --warmup-steps 100
       --threads 2 --eval-every 600 --corpus "$CORPUS" ${HONE_LONG_FLAGS:-})
case "${1:-train}" in
  train) exec hone train "${FLAGS[@]}" --run-dir "$HONE_RUNS/long" ;;
  cool)
    rm -rf "$HONE_RUNS/long-cool" && cp -r "$HONE_RUNS/long" "$HONE_RUNS/long-cool"
    hone train "${FLAGS[@]}" --run-dir "$HONE_RUNS/long-cool" --cooldown "${2:-0.25}"
    hone eval --model "$HONE_RUNS/long-cool/model" --corpus "$CORPUS" --write-card --threads 2 ;;
  *) echo "usage: $0 train | cool HOURS" >&2; exit 2 ;;
esac

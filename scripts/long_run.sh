#!/usr/bin/env bash
# The default model's long run, one segment per session (spm recipe + Muon). Sessions rarely get the same machine
# twice, so each segment is a whole warmup-stable-decay schedule that ends cooled down and ready to ship:
#   scripts/long_run.sh train [HOURS]  a segment of HOURS (default 1.8) from the shipped weights with a fresh
#                                      optimizer; rerun the same command to resume it ($HONE_RUNS/long/state.pt,
#                                      Ctrl-C / SIGINT checkpoints).
#   scripts/long_run.sh eval           evaluate the segment's model into its card; then `hone ship $HONE_RUNS/long/model`
#                                      and move $HONE_RUNS/long aside, so the next segment starts from the new default.
# The run folder and the corpus live outside the work tree (default ~/.cache/hone); without the corpus it is built.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
HONE_RUNS=${HONE_RUNS:-${XDG_CACHE_HOME:-$HOME/.cache}/hone}
CORPUS=$HONE_RUNS/corpus
[ -f "$CORPUS/corpus.json" ] || hone corpus --out "$CORPUS"
case "${1:-train}" in
  train)
    # a low constant lr (re-warming cooled weights to 7e-4 cost segment 4 more than it gained; segment 6 at 1.5e-4
    # lowered both held-out CEs), decay over the last 45%; half the batches carry cross-file context (repository layout)
    exec hone train --preset cpu --route spm --optimizer muon --init-from model/default --schedule wsd \
      --hours "${2:-1.8}" --decay-share 0.45 --lr 1.5e-4 --warmup-steps 150 --threads 2 --eval-every 900 \
      --context-tokens 256 --context-share 0.5 --corpus "$CORPUS" --run-dir "$HONE_RUNS/long" ${HONE_LONG_FLAGS:-} ;;
  eval) exec hone eval --model "$HONE_RUNS/long/model" --corpus "$CORPUS" --write-card --threads 2 ;;
  *) echo "usage: $0 train [HOURS] | eval" >&2; exit 2 ;;
esac

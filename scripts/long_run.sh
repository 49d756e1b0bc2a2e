#!/usr/bin/env bash
# The default model's long run, one segment per session (spm recipe + Muon). Sessions rarely get the same machine
# twice, so each segment is a whole warmup-stable-decay schedule that ends cooled down and ready to ship:
#   scripts/long_run.sh train [HOURS]  a segment of HOURS (default 1.8) from the shipped weights with a fresh
#                                      optimizer; rerun the same command to resume it ($HONE_RUNS/long/state.pt,
#                                      Ctrl-C / SIGINT checkpoints).
#   scripts/long_run.sh eval [RUN]     evaluate the segment's model ($HONE_RUNS/RUN, default long) into its card; then
#                                      `hone ship $HONE_RUNS/long/model` and move $HONE_RUNS/long aside, so the next
#                                      segment starts from the new default.
# Where the machine keeps its run folder from one session to the next, a trunk avoids re-warming cooled weights
# (each segment's stable phase sat 0.03-0.07 nats above the cooled weights it started from, segments 9 and 10):
#   scripts/long_run.sh trunk [HOURS]  the trunk ($HONE_RUNS/trunk): constant lr, never cooled; a rerun continues it
#                                      for HOURS more (default 1.3: its optimizer and step carry on, no warmup). Without
#                                      a trunk it starts from $HONE_TRUNK_FROM (default: the shipped model).
#   scripts/long_run.sh cool [HOURS]   a copy of the trunk ($HONE_RUNS/cool) cooled down over HOURS (default 0.5):
#                                      the weights to evaluate (`eval cool`) and ship; the trunk goes on untouched.
# The run folder and the corpus live outside the work tree (default ~/.cache/hone); without the corpus it is built.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
HONE_RUNS=${HONE_RUNS:-${XDG_CACHE_HOME:-$HOME/.cache}/hone}
CORPUS=$HONE_RUNS/corpus
[ -f "$CORPUS/corpus.json" ] || hone corpus --out "$CORPUS"
RECIPE=(--preset cpu --route spm --optimizer muon --schedule wsd --lr 1.5e-4 --warmup-steps 150 --threads 2
        --eval-every 900 --context-tokens 256 --context-share 0.5 --corpus "$CORPUS")
case "${1:-train}" in
  train)
    # a low constant lr (re-warming cooled weights to 7e-4 cost segment 4 more than it gained; segment 6 at 1.5e-4
    # lowered both held-out CEs), decay over the last 45%; half the batches carry cross-file context (repository layout)
    exec hone train "${RECIPE[@]}" --init-from model/default --hours "${2:-1.8}" --decay-share 0.45 \
      --run-dir "$HONE_RUNS/long" ${HONE_LONG_FLAGS:-} ;;
  trunk)
    T=$HONE_RUNS/trunk
    # the trunk's schedule so far (0 without one) plus HOURS
    hours=$(python -c 'import json, pathlib, sys; p = pathlib.Path(sys.argv[1]); done = json.loads(p.read_text())["hours"] if p.is_file() else 0
print(done + float(sys.argv[2]))' "$T/model/train_state.json" "${2:-1.3}")
    exec hone train "${RECIPE[@]}" --init-from "${HONE_TRUNK_FROM:-model/default}" --decay-share 0 --hours "$hours" \
      --run-dir "$T" ${HONE_LONG_FLAGS:-} ;;
  cool)
    [ -f "$HONE_RUNS/trunk/state.pt" ] || { echo "no trunk in $HONE_RUNS/trunk: run '$0 trunk' first" >&2; exit 2; }
    rm -rf "$HONE_RUNS/cool" && cp -r "$HONE_RUNS/trunk" "$HONE_RUNS/cool"
    exec hone train "${RECIPE[@]}" --init-from "$HONE_RUNS/trunk/model" --hours 1 --cooldown "${2:-0.5}" \
      --run-dir "$HONE_RUNS/cool" ;;
  eval) exec hone eval --model "$HONE_RUNS/${2:-long}/model" --corpus "$CORPUS" --write-card --threads 2 ;;
  *) echo "usage: $0 train [HOURS] | trunk [HOURS] | cool [HOURS] | eval [RUN]" >&2; exit 2 ;;
esac

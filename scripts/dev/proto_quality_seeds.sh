#!/usr/bin/env bash
# Runs scripts/dev/proto_quality.py over seeds of an existing bench-quality work directory.
# usage: scripts/dev/proto_quality_seeds.sh NAME WORK DATASET-DIM "SEEDS" [prototype args...]
#   e.g. NAME=z1scr WORK=/tmp/bagel4/w1 DATASET-DIM=bagel-quality "1 2 3" --logs @RUN@/sim/logs.jsonl
#   --mse 0 --scramble 1.0 (@RUN@ is replaced by the seed's run directory). Scores go to
#   $OUT/<dataset-dim>-<seed>/scores-NAME.jsonl (OUT default /tmp/proto), with a link to the
#   run's sim/ so /tmp/bagel4/summ.py-style summaries can read them. PEER_PYTHON as bench-quality.
set -uo pipefail
name=$1; src=$2; ds=$3; seeds=$4; shift 4
here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-/tmp/proto}"
PEER_PYTHON="${PEER_PYTHON:-/tmp/evalloop-pyenv/bin/python}"
for s in $seeds; do
  run=$src/$ds-$s; out=$OUT/$ds-$s; mkdir -p "$out"
  args=(); for a in "$@"; do args+=("${a//@RUN@/$run}"); done
  [[ -f $out/scores-$name.jsonl ]] && continue
  [[ -e $out/sim ]] || ln -s "$run/sim" "$out/sim"
  "$PEER_PYTHON" "$here/proto_quality.py" --dataset "$run/ds-none" --model "$here/../../models/all-MiniLM-L6-v2" \
    --heldout "$run/sim/heldout.jsonl" --output "$out/scores-$name.jsonl" --epochs 4 --batch-size 16 --lr 1e-4 \
    --max-length 128 --seed "$s" --threads 1 "${args[@]}" > "$out/train-$name.log" 2>&1 \
    || { echo "failed: $out/train-$name.log"; tail "$out/train-$name.log"; }
done

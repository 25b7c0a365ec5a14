#!/usr/bin/env bash
# Two builds of evalloop on the same work, same machine, same run: ingest, the analytics
# commands, scoring and a short training run, each timed with both binaries in turn (best of
# REPEAT), printed as seconds and as the ratio old/new (above 1: the new build is faster).
# Used to show that a change which should not touch performance does not.
#
# Usage: scripts/bench/compare-builds.sh OLD_BIN NEW_BIN
#   LOGS=200000 FEEDBACK=100000   synthetic store size (scripts/gen-logs)
#   MODEL=out/weekly/run/model     a trained model directory for scoring (scripts/demo.sh writes it)
#   DATASET=out/weekly/run/dataset a dataset directory for training
#   STEPS=20 REPEAT=3
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
old="$(realpath "$1")"; new="$(realpath "$2")"
logs=${LOGS:-200000}; feedback=${FEEDBACK:-100000}; steps=${STEPS:-20}; repeat=${REPEAT:-3}
model="$(realpath "${MODEL:-$root/out/weekly/run/model}")"
dataset="$(realpath "${DATASET:-$root/out/weekly/run/dataset}")"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cd "$work"
"$root/scripts/gen-logs" --logs "$logs" --feedback "$feedback" --out gen --seed 7 >/dev/null
cat "$dataset"/*.jsonl | head -n 2000 > pairs.jsonl
cat > train.toml <<TOML
[train]
base_model = "$root/models/all-MiniLM-L6-v2"
epochs = 1
max_steps = $steps
batch_size = 16
max_length = 128
seed = 7
TOML

best() { # best wall time of "$@" over $repeat runs, in seconds
  local b=""
  for _ in $(seq "$repeat"); do
    local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    b=$(python3 -c "t=$e-$s; b='$b'; print(t if not b else min(t, float(b)))")
  done
  echo "$b"
}
row() { # name old_seconds new_seconds
  python3 -c "print(f'{\"$1\":<28} {$2:9.3f} {$3:9.3f} {$2/$3:7.3f}')"
}
echo "$(printf '%-28s %9s %9s %7s' step 'old s' 'new s' 'old/new')"
for b in old new; do rm -f "$b.db"; done
for step in ingest_logs ingest_feedback; do
  kind=${step#ingest_}
  to=$(best bash -c "rm -f o.db; '$old' --db o.db ingest logs gen/logs.jsonl && { [ $kind = logs ] || '$old' --db o.db ingest feedback gen/feedback.jsonl; }")
  tn=$(best bash -c "rm -f n.db; '$new' --db n.db ingest logs gen/logs.jsonl && { [ $kind = logs ] || '$new' --db n.db ingest feedback gen/feedback.jsonl; }")
  row "ingest ($([ $kind = logs ] && echo logs || echo "logs, then feedback"))" "$to" "$tn"
done
for cmd in "correlate --group-key group_id" "calibration" "bias" "disagreements --limit 20"; do
  to=$(best "$old" --db o.db $cmd); tn=$(best "$new" --db n.db $cmd)
  row "${cmd%% *}" "$to" "$tn"
done
to=$(best "$old" score --model "$model" --input pairs.jsonl --output o.scored.jsonl)
tn=$(best "$new" score --model "$model" --input pairs.jsonl --output n.scored.jsonl)
row "score ($(wc -l < pairs.jsonl) pairs)" "$to" "$tn"
cmp -s o.scored.jsonl n.scored.jsonl && echo "  scores identical" || echo "  scores DIFFER"
to=$(best "$old" --config train.toml train --dataset "$dataset" --out o.model)
tn=$(best "$new" --config train.toml train --dataset "$dataset" --out n.model)
row "train ($steps steps)" "$to" "$tn"
cmp -s o.model/model.safetensors n.model/model.safetensors && echo "  trained weights identical" || echo "  trained weights DIFFER"

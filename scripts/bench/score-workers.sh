#!/usr/bin/env bash
# Scoring a store with worker processes: one process with THREADS threads against 1 and
# THREADS worker processes of one thread each (`evalloop score --store --workers N`), on the
# same N_REQUESTS logs, the real MiniLM-based evaluator, the same run. Prints requests/s and the
# ratio to the one-process run, and what a weekly scoring of 10 and 100 million requests needs
# at the best measured per-core rate.
#
# Usage: scripts/bench/score-workers.sh
# Environment (defaults): N_REQUESTS (20000), THREADS (2), MODEL (models/all-MiniLM-L6-v2: a
# base model, given a classification head by a one-step fine-tune here), DB (a SQLite file in a
# temp directory; a postgres:// URL to measure a server).
# Needs: a release build, the model (scripts/fetch-model.sh), python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${N_REQUESTS:-20000}"
THREADS="${THREADS:-2}"
MODEL="${MODEL:-models/all-MiniLM-L6-v2}"
BIN="${EVALLOOP_BIN:-target/release/evalloop}"
[[ -x "$BIN" ]] || cargo build --release
[[ -f "$MODEL/model.safetensors" ]] || { echo "no model in $MODEL (scripts/fetch-model.sh)" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DB="${DB:-$WORK/s.db}"

# N logs: the example's outputs repeated under new ids, with their prompts.
python3 - "$N" data/example/logs.jsonl > "$WORK/logs.jsonl" <<'PY'
import json, sys
n = int(sys.argv[1])
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
for i in range(n):
    r = dict(rows[i % len(rows)])
    r["request_id"] = f"bench-{i:08d}"
    print(json.dumps(r))
PY
"$BIN" --db "$DB" ingest logs "$WORK/logs.jsonl" > /dev/null
# A scorer: one optimizer step from the base model on the example's labels.
"$BIN" --db "$WORK/train.db" ingest logs data/example/logs.jsonl > /dev/null
"$BIN" --db "$WORK/train.db" ingest feedback data/example/feedback.jsonl > /dev/null
printf '[dataset]\nlabel = "graded"\n\n[train]\nbase_model = "%s"\nepochs = 1\nmax_steps = 1\nmax_length = 128\n' "$MODEL" > "$WORK/c.toml"
"$BIN" --db "$WORK/train.db" --config "$WORK/c.toml" dataset build --out "$WORK/ds" > /dev/null 2>&1
"$BIN" --db "$WORK/train.db" --config "$WORK/c.toml" train --dataset "$WORK/ds" --out "$WORK/model" > /dev/null 2>&1

run() { # name, then score arguments
  local name="$1"; shift
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'{\"$name\":<34} {($end - $start):8.1f} s {$N / ($end - $start):9.1f} requests/s')"
  echo "$name $(python3 -c "print($N / ($end - $start))")" >> "$WORK/rates"
}
echo "scoring $N requests with $MODEL (max_length 128), store $( [[ "$DB" == postgres* ]] && echo postgres || echo sqlite )"
RAYON_NUM_THREADS="$THREADS" run "1 process, $THREADS threads" \
  "$BIN" --db "$DB" score --store --model "$WORK/model" --evaluator-name one --evaluator baseline-unigram-f1
RAYON_NUM_THREADS=1 run "1 worker process, 1 thread" \
  "$BIN" --db "$DB" score --store --model "$WORK/model" --evaluator-name w1 --evaluator baseline-unigram-f1 --workers 1
RAYON_NUM_THREADS=1 run "$THREADS worker processes, 1 thread each" \
  "$BIN" --db "$DB" score --store --model "$WORK/model" --evaluator-name w2 --evaluator baseline-unigram-f1 --workers "$THREADS"
python3 - "$WORK/rates" "$THREADS" <<'PY'
import sys
rates = [l.rsplit(" ", 1) for l in open(sys.argv[1]) if l.strip()]
threads = int(sys.argv[2])
base = float(rates[0][1])
for name, r in rates:
    print(f"  {name:<34} ratio to one process: {float(r) / base:.2f}")
per_core = max(float(rates[1][1]), float(rates[2][1]) / threads)
print(f"best per-core rate: {per_core:.1f} requests/s")
for n in (10_000_000, 100_000_000):
    core_hours = n / per_core / 3600
    print(f"  {n:>11,} requests a week: {core_hours:,.0f} core-hours; on 16-core machines in 8 hours: {core_hours / 16 / 8:,.1f} machines")
PY

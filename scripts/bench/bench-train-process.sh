#!/usr/bin/env bash
# The whole training process, evalloop against a Hugging Face Trainer script, in one run:
# `evalloop train` (process start, model load, tokenization, training, evaluation each epoch,
# checkpoints, the model directory written) against scripts/bench/trainer_peer.py (interpreter
# start, imports, model load, tokenization, Trainer with an evaluation and a checkpoint each
# epoch, the best model saved), the same dataset, model, epochs, batch, sequence length, learning
# rate, warm-up, weight decay, clipping, seed and threads. Wall time of each whole process, best
# of REPEAT runs alternating, and the ratio.
#
# The dataset: about 500 outputs of REALSumm (the first 21 documents, 24 systems each) logged
# with one 1-5 rating each (the expert pyramid recall scaled to 1-5), built by `dataset build`
# (85% train, 15% validation, graded labels).
#
# Usage: scripts/bench/bench-train-process.sh
# Environment (defaults): DATA (../shared/data/judgements), EPOCHS (4), BATCH (16), MAX_LENGTH
# (128), LR (1e-4), THREADS (2), REPEAT (2), MODEL (models/all-MiniLM-L6-v2), PYTHON
# (target/py-export/bin/python, else python3; needs torch, transformers, accelerate, datasets:
# scripts/python-env.sh).
# Needs: a release build, the model (scripts/fetch-model.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA="${DATA:-../shared/data/judgements}"
EPOCHS="${EPOCHS:-4}"
BATCH="${BATCH:-16}"
MAX_LENGTH="${MAX_LENGTH:-128}"
LR="${LR:-1e-4}"
THREADS="${THREADS:-2}"
REPEAT="${REPEAT:-2}"
MODEL="${MODEL:-models/all-MiniLM-L6-v2}"
PYTHON="${PYTHON:-$([[ -x target/py-export/bin/python ]] && echo target/py-export/bin/python || echo python3)}"
BIN="${EVALLOOP_BIN:-target/release/evalloop}"
[[ -x "$BIN" ]] || cargo build --release
[[ -f "$MODEL/model.safetensors" ]] || scripts/fetch-model.sh
[[ -f "$DATA/realsumm.jsonl" ]] || { echo "no $DATA/realsumm.jsonl (set DATA)" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

python3 - "$DATA/realsumm.jsonl" "$WORK" <<'PY'
import json, sys, hashlib
src, work = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(src) if l.strip()]
docs = []
for r in rows:
    if r["group_id"] not in docs:
        docs.append(r["group_id"])
keep = set(docs[:21])
with open(f"{work}/logs.jsonl", "w") as logs, open(f"{work}/feedback.jsonl", "w") as fb:
    for r in rows:
        if r["group_id"] not in keep:
            continue
        rid = r["item_id"]
        logs.write(json.dumps({"request_id": rid, "timestamp": "2026-05-15T00:00:00Z", "prompt": r["source"], "output": r["output"],
                               "evaluator": "none", "eval_scores": {"overall": 0.5},
                               "metadata": {"group_id": r["group_id"]}}) + "\n")
        score = list(r["human"].values())[0]
        rating = max(1, min(5, round(1 + 4 * score)))
        fb.write(json.dumps({"event_id": hashlib.sha256(rid.encode()).hexdigest()[:32], "request_id": rid,
                             "feedback_type": "explicit_rating", "value": rating,
                             "timestamp": "2026-05-15T00:00:00Z"}) + "\n")
PY
DB="$WORK/t.db"
"$BIN" --db "$DB" ingest logs "$WORK/logs.jsonl" > /dev/null
"$BIN" --db "$DB" ingest feedback "$WORK/feedback.jsonl" > /dev/null
cat > "$WORK/c.toml" <<EOF
[dataset]
label = "graded"
weighting = ["none"]
group_key = "group_id"
train_fraction = 0.85
validation_fraction = 0.15
min_effective_size = 0.0
seed = 7

[train]
base_model = "$MODEL"
epochs = $EPOCHS
batch_size = $BATCH
max_length = $MAX_LENGTH
learning_rate = $LR
seed = 7
objective = "graded"
truncation = "longest_first"
eval_metric = "spearman"
keep_best = true
EOF
"$BIN" --db "$DB" --config "$WORK/c.toml" dataset build --out "$WORK/ds" > /dev/null
n_train=$(wc -l < "$WORK/ds/train.jsonl")
n_val=$(wc -l < "$WORK/ds/validation.jsonl")
echo "dataset: $n_train train, $n_val validation rows; $EPOCHS epochs, batch $BATCH, max_length $MAX_LENGTH, lr $LR, $THREADS threads"

now() { date +%s.%N; }
ours=()
theirs=()
for i in $(seq "$REPEAT"); do
    rm -rf "$WORK/m-ours" "$WORK/m-peer"
    t0=$(now)
    RAYON_NUM_THREADS=$THREADS "$BIN" --db "$DB" --config "$WORK/c.toml" train --dataset "$WORK/ds" --out "$WORK/m-ours" > /dev/null
    t1=$(now)
    OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS PYTHONPATH=scripts/bench "$PYTHON" scripts/bench/trainer_peer.py \
        --dataset "$WORK/ds" --model "$MODEL" --out "$WORK/m-peer" --epochs "$EPOCHS" --batch-size "$BATCH" \
        --lr "$LR" --max-length "$MAX_LENGTH" --threads "$THREADS" > "$WORK/peer.json" 2> "$WORK/peer.err" \
        || { cat "$WORK/peer.err" >&2; exit 1; }
    t2=$(now)
    ours+=("$(python3 -c "print(round($t1 - $t0, 2))")")
    theirs+=("$(python3 -c "print(round($t2 - $t1, 2))")")
    echo "run $i: evalloop train ${ours[-1]} s, Trainer script ${theirs[-1]} s"
done
python3 - "${ours[*]}" "${theirs[*]}" "$WORK/m-ours/metrics.json" "$WORK/peer.json" <<'PY'
import json, sys
ours = min(float(x) for x in sys.argv[1].split())
theirs = min(float(x) for x in sys.argv[2].split())
m = json.load(open(sys.argv[3]))
peer = json.loads(open(sys.argv[4]).read().strip().splitlines()[-1])
val = (m.get("validation") or {}).get("spearman")
print(f"whole process, best of each: evalloop train {ours:.1f} s, Trainer script {theirs:.1f} s, "
      f"ratio {theirs / ours:.2f}x (above 1: evalloop faster)")
print(f"validation Spearman of the kept model: evalloop {val}, Trainer {peer.get('best_spearman')}")
PY

#!/usr/bin/env bash
# Training and scoring throughput of evalloop (candle) vs PyTorch + transformers on the same
# model (MiniLM-L6), data shape and thread count, in one run, printed as ratios.
#
#   training: full fine-tuning, batch 16 x seq 128, AdamW, dropout on (examples/s)
#   scoring:  batch 32 x seq 128, no gradients (sequences/s)
#
# Usage: scripts/bench-train.sh [TRAIN_STEPS] [SCORE_BATCHES]      (defaults 4 and 4)
# Env:   THREADS (default 2), MODEL_DIR (default models/all-MiniLM-L6-v2, see fetch-model.sh),
#        PYTHON (default python3; needs torch and transformers).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
steps="${1:-4}"
batches="${2:-4}"
threads="${THREADS:-2}"
model="${MODEL_DIR:-models/all-MiniLM-L6-v2}"
python="${PYTHON:-python3}"
[[ -f "$model/model.safetensors" ]] || scripts/fetch-model.sh

cargo build --release --quiet --example bench
ours="$(RAYON_NUM_THREADS=$threads target/release/examples/bench "$model" "$steps" "$batches")"
theirs="$(OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$python" scripts/bench_torch.py "$model" "$steps" "$batches" "$threads")"
echo "evalloop: $ours"
echo "pytorch:  $theirs"
"$python" - "$ours" "$theirs" "$threads" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# ~130 GFLOP per training step of 16 x 128 on MiniLM-L6 (forward + backward = 3x forward).
print(f"threads {sys.argv[3]}")
for k, unit in [("train_examples_per_sec", "examples/s"), ("score_seq_per_sec", "seq/s")]:
    print(f"{k:24s} evalloop {a[k]:7.2f} {unit:10s} pytorch {b[k]:7.2f}  ratio {a[k] / b[k]:.2f}x")
PY

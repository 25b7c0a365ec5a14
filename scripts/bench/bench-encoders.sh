#!/usr/bin/env bash
# Training and scoring throughput of each encoder family at one size (MiniLM-L6's: hidden 384,
# 6 layers, 12 heads, feed-forward 1536; random weights from scripts/bench/make_encoder_bases.py),
# with examples/bench's workload: full fine-tuning, batch 16 x seq 128, AdamW, dropout on
# (examples/s); scoring batch 32 x seq 128 (sequences/s). Prints one line per family and the
# ratio to BERT.
#
# Usage: scripts/bench/bench-encoders.sh [TRAIN_STEPS] [SCORE_BATCHES]      (defaults 4 and 4)
# Env:   THREADS (default 2), PYTHON (default target/py-export/bin/python, scripts/python-env.sh;
#        needs torch and transformers), BASES (default target/encoder-bases; written when absent).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
steps="${1:-4}"
batches="${2:-4}"
threads="${THREADS:-2}"
python="${PYTHON:-target/py-export/bin/python}"
bases="${BASES:-target/encoder-bases}"
families=(bert roberta modernbert deberta-v3)
[[ -f "$bases/deberta-v3/model.safetensors" ]] || "$python" scripts/bench/make_encoder_bases.py "$bases"
cargo build --release --quiet --example bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/bench"
results=()
for f in "${families[@]}"; do
    line="$(RAYON_NUM_THREADS=$threads "$bin" "$bases/$f" "$steps" "$batches")"
    echo "$f: $line"
    results+=("$f $line")
done
python3 - "$threads" "${results[@]}" <<'PY'
import json, sys
threads, rows = sys.argv[1], [r.split(" ", 1) for r in sys.argv[2:]]
figs = {f: json.loads(j) for f, j in rows}
base = figs["bert"]
print(f"\n{threads} threads, batch 16 x seq 128 training, 32 x 128 scoring (MiniLM-L6 size)")
print(f"{'family':<12}{'train ex/s':>12}{'vs BERT':>9}{'score seq/s':>13}{'vs BERT':>9}")
for f, r in figs.items():
    t, s = r["train_examples_per_sec"], r["score_seq_per_sec"]
    print(f"{f:<12}{t:>12.1f}{t / base['train_examples_per_sec']:>9.2f}{s:>13.1f}{s / base['score_seq_per_sec']:>9.2f}")
PY

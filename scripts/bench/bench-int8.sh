#!/usr/bin/env bash
# Int8 scoring on real data: the Spearman correlation of each runtime's int8 scores with its own
# fp32 scores (evalloop `score --precision int8`, PyTorch dynamic quantization, ONNX Runtime
# dynamic quantization) on the judgement sets' outputs, and each one's scoring rate, in one run.
# The throughput comparison at fixed shapes (batch 32 x 128 tokens) is bench-train.sh's.
#
# Usage: scripts/bench/bench-int8.sh [MODEL_DIR] [-- bench_int8.py options]
#   MODEL_DIR: a trained evaluator (default out/weekly/run/model, which scripts/demo.sh writes)
# Env:   PYTHON (default target/py-export/bin/python: torch, transformers, onnxruntime),
#        THREADS (default 2), JUDGEMENTS (default ../shared/data/judgements)
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:-out/weekly/run/model}"
[[ "${1:-}" == "--" ]] && model="out/weekly/run/model"
[[ $# -gt 0 && "$1" != "--" ]] && shift
[[ "${1:-}" == "--" ]] && shift
[[ -f "$model/model.safetensors" ]] || { echo "no model at $model: run scripts/demo.sh, or name one" >&2; exit 2; }
python="${PYTHON:-target/py-export/bin/python}"
judgements="${JUDGEMENTS:-../shared/data/judgements}"
[[ -d "$judgements" ]] || { echo "no judgements directory at $judgements (set JUDGEMENTS)" >&2; exit 2; }
cargo build --release --quiet --bin evalloop
exec "$python" scripts/bench/bench_int8.py target/release/evalloop "$model" "$judgements" --threads "${THREADS:-2}" "$@"

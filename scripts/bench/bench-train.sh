#!/usr/bin/env bash
# Training and scoring throughput of evalloop (candle) vs PyTorch + transformers on the same
# model (MiniLM-L6), data shape and thread count, in one run, printed as ratios.
#
#   training: full fine-tuning, batch 16 x seq 128, AdamW, dropout on (examples/s)
#   scoring:  batch 32 x seq 128, no gradients (sequences/s); with onnxruntime installed in
#             PYTHON's environment also ONNX Runtime fp32 and int8 and PyTorch int8 (dynamic
#             quantization), each as a ratio to evalloop's fp32 scoring; evalloop's int8 scoring
#             (`--precision int8`) against its fp32 and the peers' int8
#
# Usage: scripts/bench/bench-train.sh [TRAIN_STEPS] [SCORE_BATCHES]      (defaults 4 and 4)
# Env:   THREADS (default 2), MODEL_DIR (default models/all-MiniLM-L6-v2, see fetch-model.sh),
#        PYTHON (default python3; needs torch and transformers),
#        REPEAT (default 2): the two sides run alternately REPEAT times each and the best figure
#        of each side is kept, which damps the noise of a shared machine.
#        RT (default unset): set to 1 to run both sides under `chrt -f 10` (real-time FIFO
#        priority; needs root), so that other processes on a shared machine do not take the
#        cores from either side during its run. Both sides get the same priority; the kernel
#        still leaves 5% of each second to other tasks (sched_rt_runtime_us).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
steps="${1:-4}"
batches="${2:-4}"
threads="${THREADS:-2}"
model="${MODEL_DIR:-models/all-MiniLM-L6-v2}"
python="${PYTHON:-python3}"
[[ -f "$model/model.safetensors" ]] || scripts/fetch-model.sh

repeat="${REPEAT:-2}"
prio=()
[[ -n "${RT:-}" ]] && prio=(chrt -f 10)

cargo build --release --quiet --example bench
ours=()
theirs=()
for _ in $(seq "$repeat"); do
    ours+=("$(RAYON_NUM_THREADS=$threads "${prio[@]}" target/release/examples/bench "$model" "$steps" "$batches")")
    theirs+=("$(OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "${prio[@]}" "$python" scripts/bench/bench_torch.py "$model" "$steps" "$batches" "$threads" 2>/dev/null)")
    echo "evalloop: ${ours[-1]}"
    echo "pytorch:  ${theirs[-1]}"
done
"$python" - "$threads" "$(printf '%s\n' "${ours[@]}")" "$(printf '%s\n' "${theirs[@]}")" <<'PY'
import json, sys
def best(lines):
    runs = [json.loads(l) for l in lines.splitlines() if l.strip()]
    return {k: max(r[k] for r in runs) for k in ("train_examples_per_sec", "score_seq_per_sec")}
a, b = best(sys.argv[2]), best(sys.argv[3])
peer_runs = [json.loads(l) for l in sys.argv[3].splitlines() if l.strip()]
# Model FLOPs of MiniLM-L6 at 128 tokens: 6 layers x (4 h^2 + 2 h i) weights = 10.6M, so
# 2 x 10.6M + attention (4 s h x 6 = 1.2M) = 22.4 MFLOP a token forward, 2.87 GFLOP a sequence;
# training = 3x forward = 8.6 GFLOP an example (138 GFLOP a step of 16). Peak for the
# utilisation figure: PEAK_GFLOPS, default 485 = 2 cores x 242.4 GFLOP/s measured by
# scripts/bench/peak_fma.c with both cores busy (2 AVX-512 FMA units x 16 f32 lanes x 2 FLOP at about
# 3.8 GHz on this machine, a Sapphire Rapids Xeon; an earlier estimate of 150-190 was too low).
import os
peak = float(os.environ.get("PEAK_GFLOPS", "485"))
flop = {"train_examples_per_sec": 8.6, "score_seq_per_sec": 2.87}
print(f"threads {sys.argv[1]}, best of each side, MFU against {peak:.0f} GFLOP/s")
for k, unit in [("train_examples_per_sec", "examples/s"), ("score_seq_per_sec", "seq/s")]:
    ga, gb = a[k] * flop[k], b[k] * flop[k]
    print(f"{k:24s} evalloop {a[k]:7.2f} {unit:10s} ({ga:5.1f} GFLOP/s, MFU {ga / peak:4.0%})"
          f"  pytorch {b[k]:7.2f} ({gb:5.1f} GFLOP/s, MFU {gb / peak:4.0%})  ratio {a[k] / b[k]:.2f}x")
# evalloop's int8 scoring (`--precision int8`), against its fp32 and the peers' int8.
our_runs = [json.loads(l) for l in sys.argv[2].splitlines() if l.strip()]
int8 = max((r["int8_score_seq_per_sec"] for r in our_runs if "int8_score_seq_per_sec" in r), default=None)
if int8:
    rho = min(r["int8_spearman_vs_fp32"] for r in our_runs if "int8_spearman_vs_fp32" in r)
    print(f"{'evalloop int8 scoring':24s} {int8:7.2f} seq/s  / evalloop fp32: {int8 / a['score_seq_per_sec']:.2f}x  "
          f"(Spearman with its fp32 scores {rho:.4f} on the synthetic pairs)")
    for key, name in [("torch_int8_score_seq_per_sec", "pytorch int8"), ("ort_int8_score_seq_per_sec", "onnxruntime int8")]:
        vals = [r[key] for r in peer_runs if key in r]
        if vals:
            print(f"{'  against ' + name:24s} {max(vals):7.2f} seq/s  evalloop int8 / it: {int8 / max(vals):.2f}x")
# Scoring on the other runtimes (bench_torch.py runs them when onnxruntime is installed).
score = a["score_seq_per_sec"]
for key, name in [("ort_score_seq_per_sec", "onnxruntime fp32"), ("torch_int8_score_seq_per_sec", "pytorch int8"),
                  ("ort_int8_score_seq_per_sec", "onnxruntime int8")]:
    vals = [r[key] for r in peer_runs if key in r]
    if vals:
        rho_key = key.replace("score_seq_per_sec", "spearman_vs_fp32")
        rho = min(r[rho_key] for r in peer_runs if rho_key in r)
        print(f"{'score on ' + name:24s} {max(vals):7.2f} seq/s  evalloop fp32 / it: {score / max(vals):.2f}x  "
              f"(Spearman with the fp32 scores {rho:.4f} on these synthetic near-identical pairs: not a "
              f"quality check)")
PY

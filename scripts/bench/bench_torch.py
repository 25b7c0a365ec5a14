#!/usr/bin/env python3
"""PyTorch + transformers side of scripts/bench/bench-train.sh: the same model, data shape and thread
count as examples/bench.rs. Prints one JSON line.

When onnxruntime is importable, the same scoring also runs on ONNX Runtime (CPU, the same
threads): the trained model exported with torch.onnx.export (opset 17, dynamic batch and
sequence axes), all graph optimisations on; and, for reference, PyTorch's dynamic int8
quantization of the linear layers and ONNX Runtime's dynamic int8 quantization of the exported
model (with the Spearman of their scores against the fp32 scores).

    python3 scripts/bench/bench_torch.py BASE_DIR [TRAIN_STEPS] [SCORE_BATCHES] [THREADS]
"""
import json
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def long_pair(i):
    prompt = f"question {i}: " + "please explain how the system handles requests " * 12
    output = f"answer {i}: " + "the service validates input and returns a helpful reply " * 12
    return prompt, output


def main():
    base = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    score_batches = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(7)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, problem_type="multi_label_classification", use_safetensors=True
    )
    batch = 16

    def encode(pairs):
        return tok([p for p, _ in pairs], [o for _, o in pairs], truncation="longest_first",
                   max_length=128, padding=True, return_tensors="pt")

    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    model.train()
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        pairs = [long_pair(step * batch + i) for i in range(batch)]
        enc = encode(pairs)
        assert enc["input_ids"].shape == (batch, 128), enc["input_ids"].shape
        labels = torch.tensor([float(i % 2) for i in range(batch)])
        weights = torch.ones(batch)
        logits = model(**enc).logits[:, 0]
        loss = (loss_fn(logits, labels) * weights).sum() / weights.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    train_eps = batch * steps / sum(times[1:])

    model.eval()
    pairs = [long_pair(i) for i in range(32 * score_batches)]
    with torch.no_grad():
        model(**encode(pairs[:32]))  # warmup
        t0 = time.perf_counter()
        for b in range(score_batches):
            model(**encode(pairs[32 * b: 32 * (b + 1)]))
        score_sps = len(pairs) / (time.perf_counter() - t0)
    result = {"impl": "pytorch", "torch": torch.__version__, "train_examples_per_sec": train_eps,
              "score_seq_per_sec": score_sps, "train_steps_timed": steps, "score_seqs_timed": len(pairs)}
    result.update(other_runtimes(model, encode, pairs, score_batches, threads))
    print(json.dumps(result))


def spearman(x, y):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for k, i in enumerate(order):
            r[i] = float(k)
        return r
    rx, ry = ranks(x), ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else float("nan")


def other_runtimes(model, encode, pairs, score_batches, threads):
    """Scoring throughput of ONNX Runtime (fp32, int8) and PyTorch int8, when onnxruntime is there."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return {}
    import os
    import tempfile
    out = {"onnxruntime": ort.__version__}
    batches = [encode(pairs[32 * b: 32 * (b + 1)]) for b in range(score_batches)]
    with torch.no_grad():
        reference = [v for enc in batches for v in model(**enc).logits[:, 0].tolist()]

    def timed(run):
        run(batches[0])  # warmup
        t0 = time.perf_counter()
        scores = [v for enc in batches for v in run(enc)]
        return len(pairs) / (time.perf_counter() - t0), spearman(scores, reference)

    qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        sps, rho = timed(lambda enc: qmodel(**enc).logits[:, 0].tolist())
    out.update({"torch_int8_score_seq_per_sec": sps, "torch_int8_spearman_vs_fp32": rho})

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        sample = batches[0]
        torch.onnx.export(model, tuple(sample[n] for n in names), path, input_names=names, output_names=["logits"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in names} | {"logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(p):
            s = ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
            return lambda enc: s.run(None, {n: enc[n].numpy() for n in names})[0][:, 0].tolist()

        sps, rho = timed(session(path))
        out.update({"ort_score_seq_per_sec": sps, "ort_spearman_vs_fp32": rho})
        qpath = os.path.join(d, "model.int8.onnx")
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        sps, rho = timed(session(qpath))
        out.update({"ort_int8_score_seq_per_sec": sps, "ort_int8_spearman_vs_fp32": rho})
    return out


if __name__ == "__main__":
    main()

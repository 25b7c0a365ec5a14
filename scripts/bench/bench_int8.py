#!/usr/bin/env python3
"""Int8 scoring on real data (driven by scripts/bench/bench-int8.sh): how far each runtime's int8
scores move from its own fp32 scores, as their Spearman correlation, on the outputs of the
judgement sets, for evalloop (`evalloop score --precision int8`), PyTorch (dynamic quantization
of the linear layers, torch.ao.quantization.quantize_dynamic) and ONNX Runtime (the model exported
by torch.onnx.export, then onnxruntime.quantization.quantize_dynamic, QInt8 weights). Also the
scoring rate of each (sequences per second, tokenization left out for the Python runtimes and
included for evalloop, whose figure is the `score` command's own: process start and model
load cancel out between a run of the rows once and a run of them twice).

Each set's pairs are (source, output) rows of JUDGEMENTS/NAME.jsonl, at most --max-rows of them
spread evenly over the file. The model's own score is compared (a blend.json is left out: the
blend is a linear function of it and the logged score).

    bench_int8.py BIN MODEL_DIR JUDGEMENTS [--sets newsroom bagel realsumm] [--max-rows 600] [--threads 2]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from rank_stats import spearman as rank_spearman  # scripts/bench/ is on sys.path: it holds this script


def spearman(x, y):
    """Spearman's rho, NaN where it is undefined (a constant column)."""
    rho = rank_spearman(x, y)
    return float("nan") if rho is None else rho


def evalloop_scores(bin_, model, rows, precision, threads, work):
    """Scores and the rate of `evalloop score --input`: the rows over the time a run of them twice
    takes beyond a run of them once (process start and model load cancel out)."""
    def run(subset, tag):
        inp, out = os.path.join(work, f"in-{tag}.jsonl"), os.path.join(work, f"out-{tag}.jsonl")
        with open(inp, "w") as f:
            for i, (p, o) in enumerate(subset):
                f.write(json.dumps({"request_id": f"r{i}", "prompt": p, "output": o}) + "\n")
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        t0 = time.perf_counter()
        subprocess.run([bin_, "score", "--model", model, "--input", inp, "--output", out, "--precision", precision],
                       check=True, capture_output=True, env=env)
        secs = time.perf_counter() - t0
        return [json.loads(line)["score"] for line in open(out)], secs

    scores, once = run(rows, precision)
    _, twice = run(rows + rows, f"{precision}-twice")
    return scores, len(rows) / max(twice - once, 1e-9)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bin")
    ap.add_argument("model")
    ap.add_argument("judgements")
    ap.add_argument("--sets", nargs="+", default=["newsroom", "bagel", "realsumm"])
    ap.add_argument("--max-rows", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(a.threads)
    work = tempfile.mkdtemp(prefix="evalloop-int8-")
    try:
        model = os.path.join(work, "model")
        shutil.copytree(a.model, model, ignore=shutil.ignore_patterns("blend.json", "checkpoints", "*.jsonl"))
        max_length, truncation = 512, "longest_first"
        tc = os.path.join(model, "training_config.json")
        if os.path.exists(tc):
            cfg = json.load(open(tc))
            max_length = cfg.get("max_length", max_length)
            truncation = cfg.get("truncation", truncation)
        if json.load(open(os.path.join(model, "config.json"))).get("model_type") != "bert":
            truncation = "longest_first"  # the pair layout below is BERT's
        tok = AutoTokenizer.from_pretrained(model) if os.path.exists(os.path.join(model, "tokenizer_config.json")) \
            else PreTrainedTokenizerFast(tokenizer_file=os.path.join(model, "tokenizer.json"), pad_token="[PAD]")
        pt = AutoModelForSequenceClassification.from_pretrained(model).eval()
        pt8 = torch.ao.quantization.quantize_dynamic(pt, {torch.nn.Linear}, dtype=torch.qint8)
        names = ["input_ids", "attention_mask", "token_type_ids"]

        def encode(batch):
            if truncation == "longest_first":
                return tok([p for p, _ in batch], [o for _, o in batch], truncation="longest_first",
                           max_length=max_length, padding=True, return_token_type_ids=True, return_tensors="pt")
            # output_first as evalloop cuts: the output up to the budget, the prompt to what is left.
            budget = max_length - tok.num_special_tokens_to_add(pair=True)
            rows = []
            for p, o in batch:
                ids_o = tok(o, add_special_tokens=False)["input_ids"][:budget]
                ids_p = tok(p, add_special_tokens=False)["input_ids"][:budget - len(ids_o)]
                # BERT's pair layout: [CLS] prompt [SEP] output [SEP], types 0 then 1.
                ids = [tok.cls_token_id, *ids_p, tok.sep_token_id, *ids_o, tok.sep_token_id]
                types = [0] * (len(ids_p) + 2) + [1] * (len(ids_o) + 1)
                rows.append({"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids)})
            return tok.pad(rows, padding=True, return_tensors="pt")

        onnx = os.path.join(work, "model.onnx")
        sample = encode([("a prompt", "an output")] * 2)
        torch.onnx.export(pt, tuple(sample[n] for n in names), onnx, input_names=names, output_names=["logits"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in names} | {"logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
        onnx8 = os.path.join(work, "model.int8.onnx")
        quantize_dynamic(onnx, onnx8, weight_type=QuantType.QInt8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sessions = {p: ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for p in (onnx, onnx8)}

        def python_scores(rows, fn):
            order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
            batches = [[rows[i] for i in order[b:b + 32]] for b in range(0, len(order), 32)]
            encoded = [encode(b) for b in batches]
            fn(encoded[0])  # warmup
            t0 = time.perf_counter()
            out = [v for enc in encoded for v in fn(enc)]
            rate = len(rows) / (time.perf_counter() - t0)
            scores = [0.0] * len(rows)
            for i, v in zip(order, out):
                scores[i] = v
            return scores, rate

        def torch_fn(m):
            def run(enc):
                with torch.no_grad():
                    return m(**enc).logits[:, -1].tolist()
            return run

        def ort_fn(s):
            return lambda enc: s.run(None, {n: enc[n].numpy() for n in names})[0][:, -1].tolist()

        print(f"model {a.model} (max_length {max_length}, truncation {truncation}); threads {a.threads}; torch {torch.__version__}, "
              f"onnxruntime {ort.__version__}")
        print(f"{'set':<10} {'rows':>5}  {'runtime':<12} {'Spearman int8 vs fp32':>22}  {'fp32 seq/s':>10}  "
              f"{'int8 seq/s':>10}  {'int8 / fp32':>11}")
        results = []
        for name in a.sets:
            lines = [json.loads(line) for line in open(os.path.join(a.judgements, f"{name}.jsonl"))]
            step = max(1, len(lines) // a.max_rows)
            rows = [(r["source"], r["output"]) for r in lines[::step][:a.max_rows]]
            runs = {
                "evalloop": (evalloop_scores(a.bin, model, rows, "fp32", a.threads, work),
                             evalloop_scores(a.bin, model, rows, "int8", a.threads, work)),
                "pytorch": (python_scores(rows, torch_fn(pt)), python_scores(rows, torch_fn(pt8))),
                "onnxruntime": (python_scores(rows, ort_fn(sessions[onnx])), python_scores(rows, ort_fn(sessions[onnx8]))),
            }
            for rt, ((s32, r32), (s8, r8)) in runs.items():
                rho = spearman(s32, s8)
                results.append({"set": name, "rows": len(rows), "runtime": rt, "spearman_int8_vs_fp32": rho,
                                "fp32_seq_per_sec": r32, "int8_seq_per_sec": r8})
                print(f"{name:<10} {len(rows):>5}  {rt:<12} {rho:>22.5f}  {r32:>10.1f}  {r8:>10.1f}  {r8 / r32:>10.2f}x",
                      flush=True)
            # The runtimes' fp32 scores against evalloop's: the same model (tokenization aside).
            e32 = runs["evalloop"][0][0]
            print(f"{'':<10} {'':>5}  fp32 Spearman with evalloop's fp32: pytorch "
                  f"{spearman(e32, runs['pytorch'][0][0]):.5f}, onnxruntime {spearman(e32, runs['onnxruntime'][0][0]):.5f}")
        print("json: " + json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

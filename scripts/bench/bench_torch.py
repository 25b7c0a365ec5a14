#!/usr/bin/env python3
"""PyTorch + transformers side of scripts/bench/bench-train.sh: the same model, data shape and thread
count as examples/bench.rs. Prints one JSON line.

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
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "train_examples_per_sec": train_eps,
                      "score_seq_per_sec": score_sps, "train_steps_timed": steps,
                      "score_seqs_timed": len(pairs)}))


if __name__ == "__main__":
    main()

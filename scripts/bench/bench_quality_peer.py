#!/usr/bin/env python3
"""The PyTorch + transformers peer of scripts/bench/bench-quality.sh: the usual recipe.

Fine-tunes the same MiniLM as `evalloop train` under objective "graded" with default
truncation, on the same dataset directory (`dataset build`'s train.jsonl / validation.jsonl:
request_id, prompt, output, label in [0, 1], weight, group):

- `AutoModelForSequenceClassification` with `num_labels=1`, `problem_type="regression"`;
- pairs tokenized as `tokenizer(prompt, output, truncation="longest_first", max_length=...)`
  (evalloop's `truncation = "longest_first"`, `[CLS] prompt [SEP] output [SEP]`);
- per-example weighted MSE (sum of w * (y_hat - y)^2 over the sum of w; weights are 1 unless the
  dataset was built with a weighting);
- AdamW (weight decay 0.01 except biases and LayerNorm weights, betas 0.9/0.999, eps 1e-8),
  linear warmup over 10% of the steps then linear decay to 0, gradient clipping at norm 1.0;
- after each epoch, the validation Spearman; the best epoch's weights are kept (evalloop's
  default `eval_metric = "spearman"`, `patience = 0` in the benchmark).

The seed seeds torch (head initialisation, dropout) and Python's shuffle of the training
examples each epoch: the same seed number as evalloop's run, not the same random streams, so the
two implementations see different data orders and head initialisations.

Then scores `--heldout` (JSONL with request_id, prompt, output) and writes each line back with
`score` added, as `evalloop score` does. Prints `train_seconds S` (training and validation
passes only, not loading python, torch or the model) to stdout.

    python scripts/bench/bench_quality_peer.py --dataset DS --model MODEL_DIR --heldout H.jsonl \
        --output SCORES.jsonl [--epochs 3] [--batch-size 16] [--lr 5e-5] [--max-length 256] \
        [--seed 7] [--threads 1]

Needs torch and transformers (tested with torch 2.x, transformers 5.x), CPU.
"""
import argparse
import json
import math
import random
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rank_stats import spearman  # scripts/bench/ is on sys.path: it holds this script


def read_jsonl(path, required=True):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        if required:
            raise
        return []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train = read_jsonl(f"{args.dataset}/train.jsonl")
    validation = read_jsonl(f"{args.dataset}/validation.jsonl", required=False)
    heldout = read_jsonl(args.heldout)
    for i, r in enumerate(train):
        if not 0.0 <= r["label"] <= 1.0:
            sys.exit(f"{args.dataset}/train.jsonl:{i + 1}: label {r['label']} not in [0, 1]")

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=1, problem_type="regression", use_safetensors=True
    )
    max_length = min(args.max_length, model.config.max_position_embeddings)

    def encode(rows):
        return tok([r["prompt"] for r in rows], [r["output"] for r in rows], truncation="longest_first",
                   max_length=max_length, padding=True, return_tensors="pt")

    def predict(rows, batch=32):
        model.eval()
        out = [0.0] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["prompt"]) + len(rows[i]["output"]))
        with torch.no_grad():
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                vals = model(**encode([rows[i] for i in idx])).logits[:, 0].tolist()
                for i, v in zip(idx, vals):
                    out[i] = v
        return out

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, math.ceil(total * args.warmup_ratio)) if args.warmup_ratio > 0 else 0

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        if total <= warmup:
            return 1.0
        return max(0.0, (total - step) / (total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(args.seed)
    best, best_state, history = None, None, []
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        for s in range(0, len(order), args.batch_size):
            rows = [train[i] for i in order[s:s + args.batch_size]]
            enc = encode(rows)
            y = torch.tensor([float(r["label"]) for r in rows])
            w = torch.tensor([float(r.get("weight", 1.0)) for r in rows])
            if float(w.sum()) <= 0:
                continue
            pred = model(**enc).logits[:, 0]
            loss = (w * (pred - y) ** 2).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        if validation:
            rho = spearman(predict(validation), [r["label"] for r in validation])
            rho = float("nan") if rho is None else rho
            history.append({"epoch": epoch + 1, "spearman": rho})
            print(f"epoch {epoch + 1} validation spearman {rho:.4f}", file=sys.stderr)
            if not math.isnan(rho) and (best is None or rho > best):
                best = rho
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    train_seconds = time.perf_counter() - started

    scores = predict(heldout)
    with open(args.output, "w") as f:
        for r, s in zip(heldout, scores):
            f.write(json.dumps({**r, "score": s}) + "\n")
    print(json.dumps({"history": history, "best_spearman": best}), file=sys.stderr)
    print(f"train_seconds {train_seconds:.3f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Exploratory prototype of the fifth session (docs/quality-bench.md, "fifth session"): a hacked
# copy of scripts/bench_quality_peer.py with options for mean pooling (--pool mean), a pairwise
# term (--pairwise W), output-first inputs (--of), word-swap ranking pairs (--scramble W: each
# batch row above a copy with max(1, round(0.15 n)) neighbour swaps, redrawn each step), a weight
# on the MSE term (--mse W), training on every logged output of a simulate run instead of the
# labelled rows (--logs LOGS.jsonl: no labels, no validation) or beside them (--joint-logs).
# Not part of the benchmark; kept so the prototype figures quoted there can be re-run:
#   python scripts/dev/proto_quality.py --dataset RUN/ds-none --model models/all-MiniLM-L6-v2 \
#     --heldout RUN/sim/heldout.jsonl --output OUT.jsonl --epochs 4 --batch-size 16 --lr 1e-4 \
#     --max-length 128 --seed S --threads 1 --logs RUN/sim/logs.jsonl --mse 0 --scramble 1.0
"""The PyTorch + transformers peer of scripts/bench-quality.sh (issue 8): the usual recipe.

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

    python scripts/bench_quality_peer.py --dataset DS --model MODEL_DIR --heldout H.jsonl \
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

import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from rank_stats import spearman  # scripts/ is on sys.path: it holds this script


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
    ap.add_argument("--pool", default="cls")
    ap.add_argument("--pairwise", type=float, default=0.0)
    ap.add_argument("--of", action="store_true")
    ap.add_argument("--scramble", type=float, default=0.0)
    ap.add_argument("--mse", type=float, default=1.0)
    ap.add_argument("--logs", default=None)
    ap.add_argument("--joint-logs", default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train = read_jsonl(f"{args.dataset}/train.jsonl")
    validation = read_jsonl(f"{args.dataset}/validation.jsonl", required=False)
    heldout = read_jsonl(args.heldout)
    if args.joint_logs:
        jl = [dict(prompt=r["prompt"], output=r["output"]) for r in read_jsonl(args.joint_logs)]
        random.Random(args.seed).shuffle(jl)
    if args.logs:
        train = [dict(prompt=r["prompt"], output=r["output"], label=0.5, weight=1.0, group=r["metadata"]["group_id"]) for r in read_jsonl(args.logs)]
        validation = []
    for i, r in enumerate(train):
        if not 0.0 <= r["label"] <= 1.0:
            sys.exit(f"{args.dataset}/train.jsonl:{i + 1}: label {r['label']} not in [0, 1]")

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=1, problem_type="regression", use_safetensors=True
    )
    max_length = min(args.max_length, model.config.max_position_embeddings)
    if args.pool == "mean":
        head = torch.nn.Linear(model.config.hidden_size, 1)
        torch.nn.init.normal_(head.weight, std=0.02); torch.nn.init.zeros_(head.bias)
        bert = model.bert
        class M(torch.nn.Module):
            def __init__(s):
                super().__init__(); s.bert = bert; s.head = head; s.drop = torch.nn.Dropout(0.1)
            def forward(s, **enc):
                h = s.bert(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                e = (h * m).sum(1) / m.sum(1)
                class O: pass
                o = O(); o.logits = s.head(s.drop(e)); return o
        model = M()

    def encode(rows):
        if args.of:
            return tok([r["output"] for r in rows], [r["prompt"] for r in rows], truncation="only_second",
                       max_length=max_length, padding=True, return_tensors="pt")
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
            loss = args.mse * (w * (pred - y) ** 2).sum() / w.sum()
            if args.scramble > 0:
                cr = random.Random(args.seed * 1000003 + s + epoch * 7919)
                copies = []
                srows = rows
                if args.joint_logs:
                    gpos = getattr(main, "gpos", 0); main.gpos = gpos + args.batch_size
                    srows = [jl[(gpos + k) % len(jl)] for k in range(args.batch_size)]
                    pred_s = model(**encode(srows)).logits[:, 0]
                else:
                    pred_s = pred
                for r in srows:
                    ws = r["output"].split()
                    if len(ws) >= 2:
                        for _ in range(max(1, round(0.15 * len(ws)))):
                            j = cr.randrange(len(ws) - 1); ws[j], ws[j + 1] = ws[j + 1], ws[j]
                    copies.append(dict(r, output=" ".join(ws)))
                cp = model(**encode(copies)).logits[:, 0]
                loss = loss + args.scramble * torch.nn.functional.softplus(-(pred_s - cp)).mean()
            if args.pairwise > 0:
                gs = [r["group"] for r in rows]
                pl, pw = [], []
                for i in range(len(rows)):
                    for j in range(len(rows)):
                        if gs[i] == gs[j] and float(y[i]) - float(y[j]) >= 0.1:
                            pl.append(torch.nn.functional.softplus(-(pred[i] - pred[j])) * w[i] * w[j]); pw.append(w[i] * w[j])
                if pl:
                    loss = loss + args.pairwise * torch.stack(pl).sum() / torch.stack(pw).sum()
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

#!/usr/bin/env python3
"""The whole-process peer of `evalloop train`: a plain Hugging Face `Trainer` script.

What a team writes in a notebook to fine-tune the same MiniLM as `evalloop train` does with the
plain recipe (`objective = "graded"`, `truncation = "longest_first"`, `eval_metric =
"spearman"`, keep the best epoch): `AutoModelForSequenceClassification` with one regression
output on `dataset build`'s train.jsonl / validation.jsonl (prompt, output, label in [0, 1]),
`TrainingArguments` with the same epochs, batch size, learning rate, warm-up ratio, weight decay,
gradient clipping and seed, evaluation and a checkpoint at each epoch end, the best epoch by the
validation Spearman loaded at the end and saved to `--out` with its tokenizer. Run by
scripts/bench/bench-train-process.sh, which times the whole process (interpreter start, imports,
model load, tokenization, training, checkpoints, saving) against `evalloop train`'s.

    python scripts/bench/trainer_peer.py --dataset DS --model MODEL_DIR --out DIR [--epochs 4]
        [--batch-size 16] [--lr 1e-4] [--max-length 128] [--seed 7] [--threads 2]

Needs torch, transformers, accelerate and datasets (CPU).
"""
import argparse
import json

import torch
from datasets import Dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)

from rank_stats import spearman  # scripts/bench/ is on sys.path: it holds this script


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, problem_type="regression")

    def dataset(path):
        rows = read_jsonl(path)
        enc = tok([r["prompt"] for r in rows], [r["output"] for r in rows], truncation="longest_first",
                  max_length=args.max_length)
        enc["labels"] = [float(r["label"]) for r in rows]
        return Dataset.from_dict(dict(enc))

    train = dataset(f"{args.dataset}/train.jsonl")
    validation = dataset(f"{args.dataset}/validation.jsonl")

    def metrics(p):
        rho = spearman([float(x) for x in p.predictions.reshape(-1)], [float(y) for y in p.label_ids.reshape(-1)])
        return {"spearman": float("nan") if rho is None else rho}

    targs = TrainingArguments(
        output_dir=args.out,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=32,
        learning_rate=args.lr,
        weight_decay=0.01,
        warmup_steps=0.1,  # a float below 1: the share of the steps (transformers 5)
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="spearman",
        greater_is_better=True,
        seed=args.seed,
        use_cpu=True,
        report_to=[],
        logging_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=validation,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics)
    trainer.train()
    trainer.save_model(args.out)
    tok.save_pretrained(args.out)
    print(json.dumps({"best_spearman": trainer.state.best_metric, "steps": trainer.state.global_step}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks that transformers reads an evalloop model directory as we do.

Loads MODEL_DIR with AutoModelForSequenceClassification and AutoTokenizer (safetensors only),
scores the sample pairs that `examples/hf_logits.rs` wrote to LOGITS_JSON (truncated as the
model's training_config.json says), and asserts every output's logits agree within 1e-4
(absolute).

    cargo run --release --example hf_logits -- MODEL_DIR /tmp/ours.json [--train-from BASE_DIR]
    python3 scripts/reference/check_hf_parity.py MODEL_DIR /tmp/ours.json

Needs: pip install torch transformers (CPU is enough).
"""
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def encode_output_first(tok, pairs, max_length):
    """evalloop's "output_first": keep as much of the output as fits in max_length less the
    three special tokens, then as much of the prompt as is left (transformers has no such
    rule: "only_first" fails when the output alone is too long)."""
    budget = max_length - 3
    rows = []
    for prompt, output in pairs:
        a = tok(prompt, add_special_tokens=False)["input_ids"]
        b = tok(output, add_special_tokens=False)["input_ids"][:budget]
        a = a[: budget - len(b)]
        ids = [tok.cls_token_id] + a + [tok.sep_token_id] + b + [tok.sep_token_id]
        rows.append((ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)))
    width = max(len(ids) for ids, _ in rows)
    pad = lambda xs, v: xs + [v] * (width - len(xs))
    return {
        "input_ids": torch.tensor([pad(ids, tok.pad_token_id) for ids, _ in rows]),
        "token_type_ids": torch.tensor([pad(t, 0) for _, t in rows]),
        "attention_mask": torch.tensor([pad([1] * len(ids), 0) for ids, _ in rows]),
    }


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    model_dir, logits_json = sys.argv[1], sys.argv[2]
    ours = json.load(open(logits_json))
    pairs = ours["pairs"]
    training = json.load(open(f"{model_dir}/training_config.json"))
    max_length = training["max_length"]
    output_first = training.get("truncation") == "output_first"

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
    model.eval()
    if output_first:
        enc = encode_output_first(tok, pairs, max_length)
    else:
        enc = tok(
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            truncation="longest_first",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
    with torch.no_grad():
        theirs = model(**enc).logits.double()
    mine = torch.tensor(ours["logits"], dtype=torch.float64)
    diff = (theirs - mine).abs().max().item()
    print(f"pairs: {len(pairs)}  max |logit diff|: {diff:.3e}")
    for p, a, b in zip(pairs, mine.tolist(), theirs.tolist()):
        print(f"  ours {a[0]: .6f}  transformers {b[0]: .6f}  {p[0][:30]!r} / {p[1][:30]!r}")
    if diff > 1e-4:
        print("FAIL: logits differ by more than 1e-4")
        return 1
    print("OK: logits agree within 1e-4")
    return 0


if __name__ == "__main__":
    sys.exit(main())

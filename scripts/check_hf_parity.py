#!/usr/bin/env python3
"""Checks that transformers reads an evalloop model directory as we do.

Loads MODEL_DIR with AutoModelForSequenceClassification and AutoTokenizer (safetensors only),
scores the sample pairs that `examples/hf_logits.rs` wrote to LOGITS_JSON, and asserts the
logits agree within 1e-4 (absolute).

    cargo run --release --example hf_logits -- MODEL_DIR /tmp/ours.json [--train-from BASE_DIR]
    python3 scripts/check_hf_parity.py MODEL_DIR /tmp/ours.json

Needs: pip install torch transformers (CPU is enough).
"""
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    model_dir, logits_json = sys.argv[1], sys.argv[2]
    ours = json.load(open(logits_json))
    pairs = ours["pairs"]
    max_length = json.load(open(f"{model_dir}/training_config.json"))["max_length"]

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
    model.eval()
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

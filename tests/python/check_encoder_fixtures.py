#!/usr/bin/env python3
"""Checks the committed encoder fixtures (tests/fixtures/encoders/) against the transformers at
hand: each model directory loads with AutoModelForSequenceClassification and AutoTokenizer, the
sample pairs tokenize to the ids in expected.json and give its logits within 1e-5. The Rust
parity test compares evalloop with the same expected.json, so this ties evalloop to the
transformers that runs here (the fixtures were written with the versions recorded in them).

    target/py-export/bin/python tests/python/check_encoder_fixtures.py [FIXTURES_DIR]
"""
import json
import os
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def check(dest):
    expected = json.load(open(os.path.join(dest, "expected.json")))
    pairs = expected["pairs"]
    tok = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForSequenceClassification.from_pretrained(dest, attn_implementation="eager")
    model.eval()
    enc = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    ids = [[i for i, m in zip(row, mr) if m] for row, mr in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())]
    if ids != expected["input_ids"]:
        return f"token ids differ from expected.json: {ids} vs {expected['input_ids']}"
    with torch.no_grad():
        logits = model(**enc).logits.double()
    diff = (logits - torch.tensor(expected["logits"], dtype=torch.float64)).abs().max().item()
    if diff > 1e-5:
        return f"logits differ from expected.json by {diff:.3e}"
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures", "encoders")
    passed = failed = 0
    for family in sorted(os.listdir(root)):
        err = check(os.path.join(root, family))
        if err:
            failed += 1
            print(f"FAIL {family}: {err}")
        else:
            passed += 1
            print(f"ok   {family}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

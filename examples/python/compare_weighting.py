"""Compare weighting schemes for biased feedback on the shipped example, as in a notebook.

Feedback in data/example is biased: the `enterprise` cohort leaves feedback on 95% of its
requests, `free` on 55%, so an unweighted dataset over-represents enterprise outputs. Each
scheme below builds the same dataset (evalloop's labels, splits and effective-sample-size
checks) with other weights; we compare what matters for a researcher: how close the weighted
mean label gets to the true mean quality of all logged outputs (`truth.jsonl`, known here
because the example is simulated), and what it costs in effective sample size.

    pip install ./crates/evalloop-py matplotlib
    python examples/python/compare_weighting.py [OUT_DIR]     # default out/compare-weighting

Writes OUT_DIR/compare_weighting.png and prints the table it plots. Two biases are shown per
scheme: of the weighted mean label (what training sees) and of the weighted mean *true* quality
of the same rows. The second isolates selection: on the shipped example the cohort weights move
it towards the truth, while the labels themselves (the `[human]` policy's scores: thumbs as 5
and 1, rounded ratings) sit above the true quality whatever the weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import evalloop  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "data" / "example"
out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out" / "compare-weighting"
out.mkdir(parents=True, exist_ok=True)

# The store: the example's logs and feedback, ingested once.
db = out / "example.db"
fresh = not db.exists()
store = evalloop.Store.open(db)
if fresh:
    store.ingest("logs", EXAMPLE / "logs.jsonl")
    store.ingest("feedback", EXAMPLE / "feedback.jsonl")

# What we are after: the mean quality, as a graded label in [0, 1], of every logged output.
truth = [json.loads(line) for line in (EXAMPLE / "truth.jsonl").read_text().splitlines()]
true_label = {t["request_id"]: (t["human_score_5"] - 1) / 4 for t in truth}
true_mean = float(np.mean([true_label[t["request_id"]] for t in truth if not t["heldout"]]))


def sqrt_inverse_rate(rows: pa.Table) -> np.ndarray:
    """A scheme of one's own: half-way (in logs) between no weighting and inverse rate, trading
    some bias for a larger effective sample."""
    return 1.0 / np.sqrt(np.asarray(rows["cohort_rate"]) + 0.01)


schemes = {
    "none": "none",
    "inverse_rate": "inverse_rate",
    "ipw": "ipw",
    "sqrt_inverse_rate (custom)": sqrt_inverse_rate,
}
section = {"label": "graded", "seed": 7}
rows = []
for name, weighting in schemes.items():
    d = out / name.split()[0]
    card = evalloop.dataset.build(store, section, out=d, weighting=weighting)
    labels, truths, weights = [], [], []
    for split in ("train", "validation", "test"):
        for line in (d / f"{split}.jsonl").read_text().splitlines():
            r = json.loads(line)
            labels.append(r["label"])
            truths.append(true_label[r["request_id"]])
            weights.append(r["weight"])
    w = np.asarray(weights)
    label_bias = float(np.average(labels, weights=w)) - true_mean
    selection_bias = float(np.average(truths, weights=w)) - true_mean
    ess = float(w.sum() ** 2 / (w**2).sum())
    train = card["splits"]["train"]
    rows.append((name, label_bias, selection_bias, ess, len(w), train["effective_size"], len(card["warnings"])))

print(f"true mean quality of the logged outputs: {true_mean:.4f}")
print(f"{'weighting':<28} {'label bias':>10} {'selection':>10} {'ESS':>7} {'rows':>5} {'train ESS':>9} {'warnings':>8}")
for name, label_bias, selection_bias, ess, n, train_ess, warnings in rows:
    print(f"{name:<28} {label_bias:>+10.4f} {selection_bias:>+10.4f} {ess:>7.1f} {n:>5} {train_ess:>9.1f} {warnings:>8}")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
names = [r[0].replace(" (custom)", "\n(custom)") for r in rows]
colors = ["#999999", "#4C72B0", "#55A868", "#C44E52"]
x = np.arange(len(rows))
ax1.bar(x - 0.2, [r[1] for r in rows], width=0.4, color=colors, label="labels")
ax1.bar(x + 0.2, [r[2] for r in rows], width=0.4, color=colors, alpha=0.45, hatch="//", label="true quality of the rows")
ax1.set_xticks(x, names)
ax1.axhline(0, color="black", linewidth=0.8)
ax1.set_ylabel("weighted mean - true mean (0-1 scale)")
ax1.set_title("Bias against the true mean quality")
ax1.legend(fontsize=8)
ax2.bar(names, [r[3] for r in rows], color=colors)
ax2.set_ylabel("Kish effective sample size")
ax2.set_title(f"Effective sample size (of {rows[0][4]} rows)")
for ax in (ax1, ax2):
    ax.tick_params(axis="x", labelsize=8)
fig.suptitle("evalloop weighting schemes on data/example (graded labels)")
fig.tight_layout()
png = out / "compare_weighting.png"
fig.savefig(png, dpi=120)
print(f"plot: {png}")

#!/usr/bin/env python3
"""Writes tests/fixtures/analysis/{logs,feedback}.jsonl and expected.json: a small store whose
correlation, calibration and impact figures are computed here with scipy / scikit-learn, under
the human-score policy (docs/guide/ingest.md) (explicit ratings as given, thumbs up 5, thumbs down 1, mean over
explicit events; implicit ignored). Run once; tests/integration/analysis_cli.rs compares evalloop against it.
"""
import json, os
import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, brier_score_loss

out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "analysis")
os.makedirs(out, exist_ok=True)
logs, fb = [], []
for i in range(40):
    score = round(((i * 7) % 40) / 39, 3)
    rating = min(5, max(1, 1 + ((i * 7) % 40) // 9 + (-1 if i % 3 == 0 else 0) + (1 if i % 5 == 0 else 0)))
    day = "10" if i < 20 else "20"
    logs.append({"request_id": f"r{i:02d}", "timestamp": f"2026-05-{day}T12:00:00Z", "prompt": f"prompt {i}",
                 "output": f"output {i}", "eval_scores": {"overall": score},
                 "metadata": {"user_cohort": "a" if i % 2 == 0 else "b", "prompt_version": "v3" if i < 20 else "v4",
                              "group_id": f"g{i // 4}"}})
    fb.append({"request_id": f"r{i:02d}", "feedback_type": "explicit_rating", "value": rating, "user_id": f"u{i}"})
# Regression cases for the human-score policy: a thumbs-up does not win over a thumbs-down and a low rating ...
logs.append({"request_id": "t1", "timestamp": "2026-05-20T12:00:00Z", "prompt": "p", "output": "o",
             "eval_scores": {"overall": 0.5}, "metadata": {"user_cohort": "a", "prompt_version": "v4", "group_id": "gt"}})
fb += [{"request_id": "t1", "feedback_type": t, "value": v} for t, v in
       [("explicit_thumbs_up", True), ("explicit_thumbs_down", True), ("explicit_rating", 2)]]
# ... a rating counts by its value (a 1 under a high score is a disagreement) ...
logs.append({"request_id": "t2", "timestamp": "2026-05-20T12:00:00Z", "prompt": "p2", "output": "o2",
             "eval_scores": {"overall": 0.95}, "metadata": {"user_cohort": "b", "prompt_version": "v4", "group_id": "gt"}})
fb.append({"request_id": "t2", "feedback_type": "explicit_rating", "value": 1})
# ... and implicit signals carry no score by default.
logs.append({"request_id": "t3", "timestamp": "2026-05-20T12:00:00Z", "prompt": "p3", "output": "o3",
             "eval_scores": {"overall": 0.9}, "metadata": {"user_cohort": "c", "prompt_version": "v4"}})
fb.append({"request_id": "t3", "feedback_type": "implicit_discard", "value": True})

with open(os.path.join(out, "logs.jsonl"), "w") as f:
    for r in logs:
        f.write(json.dumps(r) + "\n")
with open(os.path.join(out, "feedback.jsonl"), "w") as f:
    for r in fb:
        f.write(json.dumps(r) + "\n")

def human_of(rid):
    s = []
    for e in fb:
        if e["request_id"] != rid:
            continue
        t = e["feedback_type"]
        if t == "explicit_rating": s.append(e["value"])
        elif t == "explicit_thumbs_up": s.append(5)
        elif t == "explicit_thumbs_down": s.append(1)
    return np.mean(s) if s else None

rows = [(l["request_id"], l["eval_scores"]["overall"], human_of(l["request_id"]), l) for l in logs]
rows = [r for r in rows if r[2] is not None]
x = np.array([r[1] for r in rows]); y = np.array([r[2] for r in rows])
pr = stats.pearsonr(x, y); sr = stats.spearmanr(x, y); kt = stats.kendalltau(x, y)
ci = pr.confidence_interval(0.95)
good = y >= 4; bad = y <= 2; lab = good | bad
exp = {
    "n_samples": len(rows),
    "pearson_r": pr.statistic, "pearson_p": pr.pvalue, "pearson_ci": [ci.low, ci.high],
    "spearman_r": sr.statistic, "spearman_p": sr.pvalue,
    "kendall_tau": kt.statistic, "kendall_p": kt.pvalue,
    "t1_human": human_of("t1"),
    "n_labelled": int(lab.sum()),
    "brier": brier_score_loss(good[lab], x[lab]),
    "roc_auc": roc_auc_score(good[lab], x[lab]),
    "disagreements": int(((x > 0.7) & bad).sum() + ((x <= 0.7) & good).sum()),
}
before = [r for r in rows if r[3]["timestamp"] < "2026-05-15"]; after = [r for r in rows if r[3]["timestamp"] >= "2026-05-15"]
hb = [r[2] for r in before]; ha = [r[2] for r in after]
w = stats.ttest_ind(ha, hb, equal_var=False); m = stats.mannwhitneyu(ha, hb)
eb = [l["eval_scores"]["overall"] for l in logs if l["timestamp"] < "2026-05-15"]
ea = [l["eval_scores"]["overall"] for l in logs if l["timestamp"] >= "2026-05-15"]
we = stats.ttest_ind(ea, eb, equal_var=False)
exp["impact"] = {"human_welch_t": w.statistic, "human_welch_p": w.pvalue, "human_mwu_u": m.statistic,
                 "human_mwu_p": m.pvalue, "eval_welch_t": we.statistic, "eval_welch_p": we.pvalue,
                 "eval_mean_before": float(np.mean(eb)), "eval_mean_after": float(np.mean(ea))}
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(exp, f, indent=1, sort_keys=True)
print(json.dumps(exp, indent=1))

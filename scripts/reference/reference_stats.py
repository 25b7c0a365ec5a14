#!/usr/bin/env python3
"""Writes the reference fixtures for tests/integration/stats_reference.rs into tests/fixtures/stats/.

Run once (needs numpy, scipy, scikit-learn) and commit the JSON files:

    python3 scripts/reference/reference_stats.py

Every expected figure comes from scipy / scikit-learn, except where no library function exists
(ECE from sklearn's calibration_curve bins, the Spearman Fisher interval and Williams' test),
where the formula is written out below. Undefined results (NaN in scipy, a ValueError in
sklearn, zero_division) are written as {"undefined": true}.

The 1,000,000-row cases are not stored: `splitmix64` below is implemented identically in the
Rust test, which regenerates the rows and compares against the statistics stored here.
"""

import json
import math
import os
import sys
import warnings

import numpy as np
import scipy
import sklearn
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "stats")
UNDEF = {"undefined": True}
warnings.simplefilter("ignore")

MASK64 = (1 << 64) - 1


def splitmix64(state):
    """One splitmix64 step: returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def uniforms(seed, n):
    """n pairs (u1, u2) of floats in [0, 1): (output >> 11) * 2^-53."""
    s = seed
    out = np.empty((n, 2))
    scale = 2.0**-53
    for i in range(n):
        s, a = splitmix64(s)
        s, b = splitmix64(s)
        out[i, 0] = (a >> 11) * scale
        out[i, 1] = (b >> 11) * scale
    return out[:, 0], out[:, 1]


def generated(kind, seed, n):
    """The large-case columns; mirrored by `generated` in tests/integration/stats_reference.rs."""
    u1, u2 = uniforms(seed, n)
    if kind == "ties_correlated":
        return np.floor(u1 * 50.0), np.floor((0.7 * u1 + 0.3 * u2) * 20.0)
    if kind == "ties_independent":
        return np.floor(u1 * 100.0), np.floor(u2 * 7.0)
    if kind == "continuous_weak":
        return u1, 0.003 * u1 + u2
    raise ValueError(kind)


def f(v):
    """A float, or UNDEF for NaN / None."""
    if v is None:
        return UNDEF
    v = float(v)
    return UNDEF if math.isnan(v) else v


def data(v):
    """A float list for JSON, NaN written as null (JSON has no NaN)."""
    return [None if math.isnan(a) else float(a) for a in v]


def corr_case(name, x, y, store_data=True, generator=None):
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    case = {"name": name, "n": n}
    if store_data:
        case["x"] = data(x)
        case["y"] = data(y)
    if generator:
        case["generator"] = generator
    finite = np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    if n >= 3 and finite:
        pr = stats.pearsonr(x, y)
        sr = stats.spearmanr(x, y)
        kr = stats.kendalltau(x, y)
    else:
        pr = sr = kr = None
    if pr is None or math.isnan(pr.statistic):
        case["pearson"] = UNDEF
    else:
        ci = pr.confidence_interval(0.95)
        ci90 = pr.confidence_interval(0.90)
        case["pearson"] = {
            "r": float(pr.statistic), "p": float(pr.pvalue),
            "ci95": [float(ci.low), float(ci.high)], "ci90": [float(ci90.low), float(ci90.high)],
        }
    if sr is None or math.isnan(sr.statistic):
        case["spearman"] = UNDEF
    else:
        rho = float(sr.statistic)
        # Fisher z with Fieller, Hartley & Pearson (1957): se = sqrt(1.06 / (n - 3))
        if n > 3:
            h = stats.norm.ppf(0.975)
            se = math.sqrt(1.06 / (n - 3))
            z = math.atanh(rho) if abs(rho) < 1 else math.copysign(math.inf, rho)
            ci = [math.tanh(z - h * se), math.tanh(z + h * se)]
        else:
            ci = [-1.0, 1.0]
        case["spearman"] = {"rho": rho, "p": float(sr.pvalue), "ci95": ci}
    if kr is None or math.isnan(kr.statistic):
        case["kendall"] = UNDEF
    else:
        # which p-value scipy's method="auto" used: exact iff no ties and
        # (n <= 33 or min(dis, tot - dis) <= 1)
        no_ties = len(np.unique(x)) == n and len(np.unique(y)) == n
        tot = n * (n - 1) // 2
        dis = round(tot * (1 - float(kr.statistic)) / 2) if no_ties else None
        exact = no_ties and (n <= 33 or min(dis, tot - dis) <= 1)
        p = float(kr.pvalue)
        method = "exact" if exact else "normal"
        case["kendall"] = {"tau": float(kr.statistic), "p": p, "p_method": method}
    return case


def correlation_cases(rng):
    cases = []
    # tiny n
    cases.append(corr_case("n3", [1.0, 2.0, 3.5], [2.0, 1.0, 4.0]))
    cases.append(corr_case("n3_perfect", [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]))
    cases.append(corr_case("n4_tie", [1.0, 2.0, 2.0, 4.0], [3.0, 1.0, 2.0, 5.0]))
    cases.append(corr_case("n4_negative", [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 3.5]))
    # undefined
    cases.append(corr_case("n2", [1.0, 2.0], [2.0, 1.0]))
    cases.append(corr_case("const_x", [3.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    cases.append(corr_case("const_y", [1.0, 2.0, 3.0, 4.0, 5.0], [7.0] * 5))
    cases.append(corr_case("nan_in_x", [1.0, float("nan"), 3.0, 4.0], [1.0, 2.0, 3.0, 5.0]))
    # ties on a 1-5 Likert scale, both columns
    for n in (10, 30, 80):
        x = rng.integers(1, 6, n).astype(float)
        y = np.clip(x + rng.integers(-2, 3, n), 1, 5).astype(float)
        cases.append(corr_case(f"likert_ties_n{n}", x, y))
    # evaluator probabilities rounded to 0.1 vs binary human labels
    n = 60
    y = rng.integers(0, 2, n).astype(float)
    x = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1), 1)
    cases.append(corr_case("prob_vs_binary_n60", x, y))
    # no ties: exact Kendall (n <= 33) and normal Kendall (n > 33)
    for n in (5, 12, 33, 34, 120):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        cases.append(corr_case(f"continuous_n{n}", x, y))
    # n > 33 without ties and a single discordant pair: exact path with c = 1
    x = np.arange(40.0)
    y = x.copy()
    y[[10, 11]] = y[[11, 10]]
    cases.append(corr_case("n40_one_swap_exact", x, y))
    cases.append(corr_case("n50_reversed_exact", np.arange(50.0), -np.arange(50.0)))
    # outliers
    x = rng.normal(size=25)
    y = x + 0.3 * rng.normal(size=25)
    x[3], y[3] = 40.0, -35.0
    cases.append(corr_case("outlier_n25", x, y))
    # near-zero correlation, moderate n
    cases.append(corr_case("independent_n200", rng.normal(size=200), rng.normal(size=200)))
    # heavy ties with joint ties
    x = rng.integers(0, 3, 150).astype(float)
    y = np.where(rng.uniform(size=150) < 0.6, x, rng.integers(0, 3, 150)).astype(float)
    cases.append(corr_case("joint_ties_n150", x, y))
    return cases


def large_cases():
    cases = []
    n = 1_000_000
    for kind, seed in (("ties_correlated", 1), ("ties_independent", 2), ("continuous_weak", 3)):
        x, y = generated(kind, seed, n)
        cases.append(corr_case(f"large_{kind}", x, y, store_data=False,
                               generator={"kind": kind, "seed": seed, "n": n}))
    return cases


def two_sample_case(name, a, b):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    case = {"name": name, "a": a.tolist(), "b": b.tolist()}
    t = stats.ttest_ind(a, b, equal_var=False)
    case["welch"] = UNDEF if math.isnan(t.statistic) else {
        "t": float(t.statistic), "p": float(t.pvalue), "df": float(t.df)}
    u = stats.mannwhitneyu(a, b)
    ties = len(np.unique(np.concatenate([a, b]))) < len(a) + len(b)
    exact = not (len(a) > 8 and len(b) > 8) and not ties
    case["mann_whitney"] = {"u": float(u.statistic), "p": float(u.pvalue),
                            "p_method": "exact" if exact else "normal"}
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    case["cohens_d"] = UNDEF if pooled == 0 else (float(np.mean(a)) - float(np.mean(b))) / pooled
    mb = float(np.mean(b))
    case["diff_means"] = float(np.mean(a)) - mb
    case["improvement_pct"] = None if mb == 0 else 100.0 * (float(np.mean(a)) - mb) / abs(mb)
    return case


def two_sample_cases(rng):
    cases = []
    cases.append(two_sample_case("exact_small", [1.2, 3.4, 2.2, 5.1], [0.3, 1.1, 0.7, 2.5, 0.9]))
    cases.append(two_sample_case("exact_n8_n8", rng.normal(1, 1, 8), rng.normal(0, 1, 8)))
    cases.append(two_sample_case("exact_n3_n60", rng.normal(0.5, 1, 3), rng.normal(0, 1, 60)))
    cases.append(two_sample_case("exact_n7_n300", rng.normal(0.3, 1, 7), rng.normal(0, 1, 300)))
    cases.append(two_sample_case("ties_small", [1.0, 2.0, 2.0, 3.0], [2.0, 3.0, 3.0, 4.0, 5.0]))
    cases.append(two_sample_case("normal_n9_n9", rng.normal(1, 1, 9), rng.normal(0, 2, 9)))
    cases.append(two_sample_case("likert_ties_n40_n50",
                                 rng.integers(1, 6, 40).astype(float),
                                 rng.integers(2, 6, 50).astype(float)))
    cases.append(two_sample_case("unequal_var_n200_n30",
                                 rng.normal(0.1, 0.5, 200), rng.normal(0.0, 3.0, 30)))
    cases.append(two_sample_case("zero_baseline", [1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]))
    cases.append(two_sample_case("all_tied", [2.0] * 10, [2.0] * 12))
    return cases


def calibration_case(name, scores, labels, weights, n_bins, threshold):
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    w = None if weights is None else np.asarray(weights, dtype=float)
    case = {"name": name, "scores": s.tolist(), "labels": [bool(v) for v in y],
            "weights": None if w is None else w.tolist(), "n_bins": n_bins, "threshold": threshold}
    case["brier"] = float(brier_score_loss(y, s, sample_weight=w))
    try:
        case["roc_auc"] = f(roc_auc_score(y, s, sample_weight=w))
    except ValueError:
        case["roc_auc"] = UNDEF
    pred = (s > threshold).astype(int)
    nan = np.nan
    case["accuracy"] = f(accuracy_score(y, pred, sample_weight=w))
    case["precision"] = f(precision_score(y, pred, sample_weight=w, zero_division=nan))
    case["recall"] = f(recall_score(y, pred, sample_weight=w, zero_division=nan))
    case["f1"] = f(f1_score(y, pred, sample_weight=w, zero_division=nan))
    case["cohen_kappa"] = f(cohen_kappa_score(y, pred, sample_weight=w))
    if w is None:
        for strategy in ("uniform", "quantile"):
            prob_true, prob_pred = calibration_curve(y, s, n_bins=n_bins, strategy=strategy)
            if strategy == "quantile":
                edges = np.percentile(s, np.linspace(0, 1, n_bins + 1) * 100)
            else:
                edges = np.linspace(0.0, 1.0, n_bins + 1)
            binids = np.searchsorted(edges[1:-1], s)
            counts = np.bincount(binids, minlength=n_bins)
            nonzero = counts[counts > 0]
            ece = float(np.sum(nonzero / len(s) * np.abs(prob_true - prob_pred)))
            case[strategy] = {"edges": edges.tolist(), "counts": counts.tolist(),
                              "prob_true": prob_true.tolist(), "prob_pred": prob_pred.tolist(),
                              "ece": ece}
    return case


def calibration_cases(rng):
    cases = []
    n = 200
    p = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p).astype(int)
    cases.append(calibration_case("calibrated_n200", p, y, None, 10, 0.5))
    s = np.round(np.clip(0.2 + 0.6 * p, 0, 1), 1)  # ties on edges, overconfident-ish
    cases.append(calibration_case("rounded_ties_n200", s, y, None, 5, 0.5))
    cases.append(calibration_case("rounded_ties_quantile_n200", s, y, None, 10, 0.6))
    cases.append(calibration_case("edges_exact", [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 1.0, 0.3],
                                  [0, 0, 1, 0, 1, 1, 0, 1, 1, 0], None, 10, 0.3))
    w = rng.uniform(0.1, 3.0, n)
    cases.append(calibration_case("weighted_n200", p, y, w, 10, 0.4))
    cases.append(calibration_case("one_class", [0.2, 0.4, 0.9], [1, 1, 1], None, 4, 0.5))
    cases.append(calibration_case("nothing_predicted_good", [0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1],
                                  None, 4, 0.5))
    cases.append(calibration_case("all_good_all_predicted_good", [0.8, 0.9], [1, 1], None, 2, 0.5))
    return cases


def williams(r_xz, r_yz, r_xy, n):
    det = 1 - r_xy**2 - r_xz**2 - r_yz**2 + 2 * r_xy * r_xz * r_yz
    rbar = (r_xz + r_yz) / 2
    t = (r_xz - r_yz) * math.sqrt((n - 1) * (1 + r_xy)) / math.sqrt(
        2 * (n - 1) / (n - 3) * det + rbar**2 * (1 - r_xy) ** 3)
    return {"r_xz": r_xz, "r_yz": r_yz, "r_xy": r_xy, "n": n,
            "t": t, "df": n - 3, "p": float(2 * stats.t.sf(abs(t), n - 3))}


def group_cases(rng):
    out = []
    for name, n_groups, size_lo, size_hi in (("groups_mixed", 30, 1, 9), ("groups_pairs", 20, 2, 3)):
        rows = []
        for g in range(n_groups):
            m = int(rng.integers(size_lo, size_hi + 1))
            x = rng.integers(1, 6, m).astype(float)
            y = np.clip(x + rng.integers(-1, 2, m), 1, 5).astype(float)
            if g % 7 == 3:
                y[:] = 4.0  # constant human column
            rows += [[f"g{g:02d}", float(a), float(b)] for a, b in zip(x, y)]
        keys = sorted({r[0] for r in rows})
        for min_size in (2, 3):
            sp, kt = [], []
            for k in keys:
                x = np.array([r[1] for r in rows if r[0] == k])
                y = np.array([r[2] for r in rows if r[0] == k])
                if len(x) < min_size or np.all(x == x[0]) or np.all(y == y[0]):
                    continue
                sp.append(float(stats.spearmanr(x, y).statistic))
                kt.append(float(stats.kendalltau(x, y).statistic))
            out.append({"name": f"{name}_min{min_size}", "rows": rows, "min_group_size": min_size,
                        "mean_spearman": float(np.mean(sp)) if sp else UNDEF,
                        "mean_kendall": float(np.mean(kt)) if kt else UNDEF,
                        "groups_total": len(keys), "groups_used": len(sp)})
    return out


def write(name, payload):
    path = os.path.join(OUT, name)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=None, separators=(",", ":"), allow_nan=False)
        fh.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261124)
    meta = {"numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__}
    write("correlation.json", {"meta": meta, "cases": correlation_cases(rng)})
    write("large.json", {"meta": meta, "cases": large_cases()})
    write("two_sample.json", {"meta": meta, "cases": two_sample_cases(rng)})
    write("calibration.json", {"meta": meta, "cases": calibration_cases(rng)})
    write("williams.json", {"meta": meta, "cases": [
        williams(0.6, 0.4, 0.5, 50), williams(0.45, 0.52, 0.8, 120), williams(0.2, -0.1, 0.1, 10),
        williams(0.91, 0.88, 0.95, 1000)]})
    write("groups.json", {"meta": meta, "cases": group_cases(rng)})


if __name__ == "__main__":
    main()

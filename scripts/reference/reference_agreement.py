#!/usr/bin/env python3
"""Writes the reference fixtures for tests/integration/agreement_reference.rs into tests/fixtures/agreement/.

Run once (needs numpy, scikit-learn and krippendorff from PyPI) and commit the JSON file:

    pip install krippendorff scikit-learn numpy
    python3 scripts/reference/reference_agreement.py

Krippendorff's alpha comes from the `krippendorff` package
(`alpha(reliability_data=..., level_of_measurement=...)`, rows = raters there), Cohen's kappa
from scikit-learn's `cohen_kappa_score(y1, y2, weights=None|"linear"|"quadratic")`. The mean
kappa over rater pairs and the percent agreement have no library function and are written out
below. Undefined results (a ValueError or NaN) are written as {"undefined": true}.

Matrices are stored as units x raters with null for a missing rating.
"""

import json
import math
import os
import warnings
from importlib.metadata import version

import krippendorff
import numpy as np
import sklearn
from sklearn.metrics import cohen_kappa_score

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "agreement")
UNDEF = {"undefined": True}
LEVELS = ("nominal", "ordinal", "interval", "ratio")
WEIGHTS = (("unweighted", None), ("linear", "linear"), ("quadratic", "quadratic"))
MIN_SHARED_ITEMS = 2
warnings.simplefilter("ignore")


def f(v):
    """A float, or UNDEF for NaN."""
    v = float(v)
    return UNDEF if math.isnan(v) else v


def alpha(units, level):
    """krippendorff.alpha on the raters x units transpose, UNDEF where it raises or gives NaN."""
    data = np.array([[np.nan if v is None else v for v in row] for row in units], dtype=float).T
    try:
        return f(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    except ValueError:
        return UNDEF


def pairs(units):
    """cohen_kappa_score for every rater pair a < b sharing MIN_SHARED_ITEMS or more units."""
    n_raters = max(len(row) for row in units)
    out = []
    for a in range(n_raters):
        for b in range(a + 1, n_raters):
            shared = [(row[a], row[b]) for row in units if row[a] is not None and row[b] is not None]
            if len(shared) < MIN_SHARED_ITEMS:
                continue
            y1 = [x for x, _ in shared]
            y2 = [y for _, y in shared]
            pair = {"a": a, "b": b, "n_shared": len(shared)}
            for key, weights in WEIGHTS:
                pair[key] = f(cohen_kappa_score(y1, y2, weights=weights))
            out.append(pair)
    return out


def mean_kappa(pair_list, key):
    """Unweighted mean of the defined pair kappas, with the pairs used and left out."""
    defined = [p[key] for p in pair_list if p[key] != UNDEF]
    if not defined:
        return UNDEF
    return {"mean": float(np.mean(defined)), "pairs_used": len(defined),
            "pairs_undefined": len(pair_list) - len(defined)}


def percent_agreement(units):
    """Mean over units with two or more values of the share of equal ordered rater pairs."""
    shares = []
    for row in units:
        values = [v for v in row if v is not None]
        m = len(values)
        if m < 2:
            continue
        agree = sum(1 for i in range(m) for j in range(m) if i != j and values[i] == values[j])
        shares.append(agree / (m * (m - 1)))
    return float(np.mean(shares)) if shares else UNDEF


def case(name, units):
    units = [[None if v is None else float(v) for v in row] for row in units]
    pair_list = pairs(units)
    pairable = [row for row in units if sum(v is not None for v in row) >= 2]
    n_raters = max(len(row) for row in units)
    return {
        "name": name,
        "units": units,
        "alpha": {level: alpha(units, level) for level in LEVELS},
        "pairs": pair_list,
        "mean_kappa": {key: mean_kappa(pair_list, key) for key, _ in WEIGHTS},
        "percent_agreement": percent_agreement(units),
        "items_used": len(pairable),
        "raters_used": sum(1 for j in range(n_raters) if any(row[j] is not None for row in pairable)),
        "pairs_used": len(pair_list),
    }


def from_raters(rows):
    """Units x raters from a raters x units list with None for missing."""
    return [list(col) for col in zip(*rows)]


def generated(rng, name, n_units, n_raters, scale, missing, noise):
    """Each unit has a latent quality; each rater adds a bias and noise, then rounds onto the
    scale; a share `missing` of ratings is dropped."""
    truth = rng.uniform(0, 1, n_units)
    bias = rng.normal(0, 0.08, n_raters)
    units = []
    for u in range(n_units):
        row = []
        for r in range(n_raters):
            if rng.uniform() < missing:
                row.append(None)
                continue
            x = truth[u] + bias[r] + rng.normal(0, noise)
            if scale == "likert":
                row.append(float(np.clip(np.round(1 + 4 * x), 1, 5)))
            else:
                row.append(float(x > 0.5))
        units.append(row)
    return case(name, units)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261219)
    cases = []
    # Krippendorff (2011), 4 coders x 12 units: nominal 0.743, ordinal 0.815, interval 0.849.
    cases.append(case("krippendorff_2011", from_raters([
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ])))
    # The krippendorff package's docstring: 3 coders x 15 units, nominal 0.691358.
    cases.append(case("package_docstring", from_raters([
        [None, None, None, None, None, 3, 4, 1, 2, 1, 1, 3, 3, None, 3],
        [1, None, 2, 1, 3, 3, 4, 3, None, None, None, None, None, None, None],
        [None, None, 2, 1, 3, 4, 4, None, 2, 1, 1, 3, 3, None, 4],
    ])))
    # Seeded matrices: 2-6 raters, 1-5 ratings and thumbs, missing values, ties.
    specs = [
        ("likert_r2_n30", 30, 2, "likert", 0.1, 0.10),
        ("likert_r3_n50", 50, 3, "likert", 0.25, 0.12),
        ("likert_r4_n40_noisy", 40, 4, "likert", 0.3, 0.30),
        ("likert_r5_n80", 80, 5, "likert", 0.4, 0.10),
        ("likert_r6_n60_sparse", 60, 6, "likert", 0.6, 0.15),
        ("likert_r6_n12_tiny", 12, 6, "likert", 0.5, 0.05),
        ("binary_r2_n40", 40, 2, "binary", 0.1, 0.15),
        ("binary_r3_n60", 60, 3, "binary", 0.3, 0.20),
        ("binary_r5_n50_sparse", 50, 5, "binary", 0.55, 0.10),
        ("binary_r6_n25", 25, 6, "binary", 0.2, 0.40),
    ]
    for name, n_units, n_raters, scale, missing, noise in specs:
        cases.append(generated(rng, name, n_units, n_raters, scale, missing, noise))
    # Almost full agreement on one value: heavy ties, some pair kappas undefined.
    cases.append(case("nearly_constant", [[3, 3, 3], [3, 3, None], [3, 3, 3], [3, 4, 3], [None, 3, 3]]))
    # A pair sharing a single unit is left out of the kappa mean.
    cases.append(case("one_shared_unit", [[1, 2, None], [2, 2, None], [1, 1, None], [None, 5, 4], [4, None, 5]]))
    # Undefined alpha: a constant matrix, and one with no unit rated twice.
    cases.append(case("constant", [[2, 2], [2, 2], [2, None], [2, 2]]))
    cases.append(case("no_pairable_unit", [[1, None], [None, 2], [3, None]]))
    meta = {"krippendorff": version("krippendorff"), "numpy": np.__version__, "sklearn": sklearn.__version__}
    path = os.path.join(OUT, "agreement.json")
    with open(path, "w") as fh:
        json.dump({"meta": meta, "cases": cases}, fh, indent=None, separators=(",", ":"), allow_nan=False)
        fh.write("\n")


if __name__ == "__main__":
    main()

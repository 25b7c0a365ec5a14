#!/usr/bin/env python3
"""Writes the reference fixtures for tests/integration/ppi_reference.rs into tests/fixtures/ppi/.

Run once (needs ppi-python and numpy from PyPI) and commit the JSON file:

    pip install ppi-python==0.2.3 numpy
    python3 scripts/reference/reference_ppi.py

The PPI++ point estimate and interval of a mean come from `ppi_py.ppi_mean_pointestimate` and
`ppi_py.ppi_mean_ci` (lam=None: power-tuned; lam=1: plain PPI), the classical interval from
`ppi_py.classical_mean_ci`, the tuned lambda from `ppi_py.ppi._calc_lam_glm` called the way
`ppi_mean_ci` calls it. The data are generated here: human scores on a 1-5 scale or pass/fail,
evaluator predictions of varying quality (good, noisy, biased, useless, constant), rounded to
4 decimals. Where ppi_py gives NaN (a constant evaluator: 0 / 0 in lambda) the figure is null;
evalloop then takes lambda = 0, the classical estimate.
"""

import json
import os
from importlib.metadata import version

import numpy as np
from ppi_py import classical_mean_ci, ppi_mean_ci, ppi_mean_pointestimate
from ppi_py.ppi import _calc_lam_glm

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "ppi")
ALPHA = 0.05


def tuned_lambda(y, yhat, yhat_u):
    """The lambda ppi_mean_ci(lam=None) uses."""
    p = ppi_mean_pointestimate(y, yhat, yhat_u, lam=1)
    g = (y - p)[:, None]
    gh = (yhat - p)[:, None]
    ghu = (yhat_u - p)[:, None]
    return float(_calc_lam_glm(g, gh, ghu, np.eye(1), coord=None, clip=True))


def num(v):
    """A float, or None for NaN (ppi_py divides 0 by 0 for a constant evaluator)."""
    v = float(np.squeeze(v))
    return None if np.isnan(v) else v


def case(name, y, yhat, yhat_u, lam):
    yhat, yhat_u = np.round(yhat, 4), np.round(yhat_u, 4)
    lo, hi = ppi_mean_ci(y, yhat, yhat_u, alpha=ALPHA, lam=lam)
    c_lo, c_hi = classical_mean_ci(y, alpha=ALPHA)
    return {
        "name": name,
        "y": y.tolist(),
        "yhat": yhat.tolist(),
        "yhat_unlabelled": yhat_u.tolist(),
        "lam": lam,
        "lambda": num(tuned_lambda(y, yhat, yhat_u)) if lam is None else lam,
        "estimate": num(ppi_mean_pointestimate(y, yhat, yhat_u, lam=lam)),
        "ci": [num(lo), num(hi)],
        "classical_estimate": float(y.mean()),
        "classical_ci": [float(np.squeeze(c_lo)), float(np.squeeze(c_hi))],
    }


def main():
    rng = np.random.default_rng(20261207)
    cases = []
    for n, big_n in ((30, 300), (120, 1000), (8, 40)):
        truth = rng.uniform(1, 5, n + big_n)
        y_all = np.clip(np.round(truth + rng.normal(0, 0.5, n + big_n)), 1, 5)
        preds = {
            "good": np.clip(1 + 4 * (truth - 1) / 4 + rng.normal(0, 0.4, n + big_n), 1, 5),
            "noisy": truth + rng.normal(0, 2.0, n + big_n),
            "biased": 0.6 * truth + 1.5 + rng.normal(0, 0.3, n + big_n),
            "useless": rng.uniform(1, 5, n + big_n),
        }
        for kind, p in preds.items():
            for lam in (None, 1.0):
                cases.append(case(f"score_{kind}_n{n}_N{big_n}_lam{lam}", y_all[:n], p[:n], p[n:], lam))
        passed = (y_all >= 4).astype(float)
        prob = np.clip((truth - 1) / 4 + rng.normal(0, 0.15, n + big_n), 0, 1)
        cases.append(case(f"pass_rate_n{n}_N{big_n}", passed[:n], prob[:n], prob[n:], None))
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 3.0])
    cases.append(case("constant_evaluator", y, np.full(6, 0.5), np.full(20, 0.5), None))
    os.makedirs(OUT, exist_ok=True)
    doc = {"generator": f"ppi-python {version('ppi-python')}, numpy {np.__version__}", "alpha": ALPHA, "cases": cases}
    with open(os.path.join(OUT, "ppi.json"), "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(os.path.join(OUT, 'ppi.json'))}")


if __name__ == "__main__":
    main()

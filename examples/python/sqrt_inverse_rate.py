"""A weighting of one's own for scripts/bench/bench-weighting.sh (PY_WEIGHTING=this file).

`weights(rows)` gets the labelled rows as a pyarrow table (evalloop.dataset.WEIGHT_COLUMNS: the
request, its cohort, the cohort's feedback rate, ...) and returns one weight per row: here the
square root of inverse-rate weighting, halfway between no weights and `inverse_rate`, trading
some of the selection bias for effective sample size.
"""


def weights(rows):
    rates = rows.column("cohort_rate").to_pylist()
    return [1.0 / (max(r, 1e-6) ** 0.5) for r in rates]

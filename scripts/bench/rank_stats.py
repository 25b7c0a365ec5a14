"""Spearman's rank correlation in plain Python (standard library only), shared by the quality
benchmark's summary (scripts/bench/bench-quality.sh, run by python3) and its PyTorch peer
(scripts/bench/bench_quality_peer.py, run by the torch environment's python)."""

import math


def ranks(xs):
    """Ranks from 1, ties given their mean rank (as scipy.stats.rankdata)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            r[k] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x, y):
    """Spearman's rho of two equal-length sequences, or None when it is undefined (fewer than
    two values, or a constant column)."""
    if len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return None if sxx <= 0 or syy <= 0 else sxy / math.sqrt(sxx * syy)

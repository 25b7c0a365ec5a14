#!/usr/bin/env python3
"""Active learning with evalloop's annotation queues, measured (driven by scripts/bench/active.sh).

A simulated reviewer (the judgement set's human score plus rater noise, rounded to 1-5) labels
the picks of a queue in rounds of K items; after each round the evaluator is retrained from the
labels so far with configs/weekly.toml's [train] settings and scored on held-out groups (whole
source documents kept out of the pool by `evalloop simulate --holdout-groups`). Round 1 is a
random queue for every strategy (there is no retrained evaluator yet); later rounds use the
strategy, `disagreement` comparing the base evaluator with the latest retrained one, each round
leaving out requests labelled before (`--exclude-labelled`). Printed: held-out group-level
Spearman (the mean over held-out groups of the within-group Spearman correlation) per round.

Coverage: on one pool (with the first retrained evaluator's scores), D draws of a queue of
size N by `random` and by `disagreement`, labelled by the simulated reviewer; how often the 95%
interval of the inverse-probability (Hajek) mean from `evalloop queue show` covers the pool's
true mean label, beside the plain (unweighted) mean of the disagreement queue's labels.

Standard library only. Usage: active_driver.py BIN JUDGEMENTS WORK [options]; see --help.
"""

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time


def run(bin_, db, *args, config=None, capture=True):
    cmd = [bin_, "--db", db]
    if config:
        cmd += ["--config", config]
    cmd += [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=capture, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def rng_for(*parts):
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def label(truth, request_id, sigma, *seed):
    """The simulated reviewer's rating: the human score plus N(0, sigma), rounded, in 1-5."""
    r = rng_for("rater", request_id, *seed)
    return int(min(5, max(1, round(truth[request_id] + r.gauss(0.0, sigma)))))


def expected_label(h, sigma):
    """E[label] for human score h under the noise model (exact, from the normal CDF)."""
    cdf = lambda x: 0.5 * (1.0 + math.erf(x / (sigma * math.sqrt(2.0))))
    e = 0.0
    for k in range(1, 6):
        lo = -math.inf if k == 1 else k - 0.5 - h
        hi = math.inf if k == 5 else k + 0.5 - h
        p = (1.0 if hi == math.inf else cdf(hi)) - (0.0 if lo == -math.inf else cdf(lo))
        e += k * p
    return e


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return r


def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def group_spearman(rows):
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    vals = []
    for g in groups.values():
        if len(g) < 3:
            continue
        s = spearman([r["score"] for r in g], [r["human_score"] for r in g])
        if s is not None:
            vals.append(s)
    return statistics.fmean(vals) if vals else float("nan")


def answers_file(bin_, db, queue, truth, sigma, seed, path):
    out = run(bin_, db, "queue", "export", queue)
    with open(path, "w") as f:
        for line in out.splitlines():
            it = json.loads(line)
            rid = it["request_id"]
            f.write(json.dumps({"request_id": rid, "reviewer": "sim", "answer": label(truth, rid, sigma, seed)}) + "\n")


def train_round(a, bin_, db, work, evaluator, heldout, tag):
    ds_cfg = os.path.join(work, f"ds-{tag}.toml")
    with open(ds_cfg, "w") as f:
        f.write(
            '[dataset]\nlabel = "graded"\nweighting = ["none"]\ngroup_key = "group_id"\n'
            f'evaluator = "{evaluator}"\ntrain_fraction = 0.85\nvalidation_fraction = 0.15\n'
            "min_effective_size = 0.0\nseed = 7\nunlabelled = 1000\n"
        )
    ds = os.path.join(work, f"ds-{tag}")
    run(bin_, db, "dataset", "build", "--out", ds, config=ds_cfg)
    model = os.path.join(work, f"model-{tag}")
    t0 = time.time()
    run(bin_, db, "train", "--dataset", ds, "--out", model, config=a.train_config)
    secs = time.time() - t0
    scored = os.path.join(work, f"heldout-{tag}.jsonl")
    run(bin_, db, "score", "--model", model, "--input", heldout, "--output", scored)
    rows = [json.loads(l) for l in open(scored)]
    return model, group_spearman(rows), secs


def curves(a, bin_, truth, sim, heldout, evaluator):
    results = []  # (seed, strategy, round, labels, spearman)
    for seed in a.seeds:
        base = os.path.join(a.work, f"seed{seed}")
        os.makedirs(base, exist_ok=True)
        db0 = os.path.join(base, "round1.db")
        run(bin_, db0, "ingest", "logs", os.path.join(sim, "logs.jsonl"))
        run(bin_, db0, "queue", "create", "--name", "round1", "--strategy", "random", "--size", a.k, "--seed", seed,
            "--evaluator", evaluator)
        answers_file(bin_, db0, "round1", truth, a.sigma, seed, os.path.join(base, "a1.jsonl"))
        run(bin_, db0, "queue", "import", "round1", os.path.join(base, "a1.jsonl"))
        model1, s1, secs = train_round(a, bin_, db0, base, evaluator, heldout, "r1")
        print(f"seed {seed} round 1 (random, {a.k} labels): held-out group Spearman {s1:.4f} (train {secs:.0f} s)",
              flush=True)
        run(bin_, db0, "score", "--model", model1, "--store", "--evaluator-name", "m1")
        for strategy in a.strategies:
            results.append((seed, strategy, 1, a.k, s1))
            work = os.path.join(base, strategy)
            os.makedirs(work, exist_ok=True)
            db = os.path.join(work, "e.db")
            shutil.copy(db0, db)
            for r in range(2, a.rounds + 1):
                name = f"round{r}"
                args = ["queue", "create", "--name", name, "--size", a.k, "--seed", seed * 100 + r,
                        "--evaluator", evaluator, "--exclude-labelled", "--strategy", strategy]
                if strategy in ("disagreement", "mix"):
                    args += ["--against", f"m{r - 1}"]
                run(bin_, db, *args)
                answers_file(bin_, db, name, truth, a.sigma, seed, os.path.join(work, f"a{r}.jsonl"))
                run(bin_, db, "queue", "import", name, os.path.join(work, f"a{r}.jsonl"))
                model, s, secs = train_round(a, bin_, db, work, evaluator, heldout, f"r{r}")
                run(bin_, db, "score", "--model", model, "--store", "--evaluator-name", f"m{r}")
                results.append((seed, strategy, r, a.k * r, s))
                print(f"seed {seed} round {r} ({strategy}, {a.k * r} labels): held-out group Spearman {s:.4f} "
                      f"(train {secs:.0f} s)", flush=True)
            if strategy == a.strategies[0] and seed == a.seeds[0]:
                a.coverage_db = db0
    return results


def coverage(a, bin_, truth, evaluator):
    db = os.path.join(a.work, "coverage.db")
    shutil.copy(a.coverage_db, db)
    pop = [json.loads(l)["request_id"] for l in open(os.path.join(a.sim, "logs.jsonl"))]
    target = statistics.fmean(expected_label(truth[r], a.sigma) for r in pop)
    hits = {"random": 0, "disagreement": 0, "disagreement_unweighted": 0}
    widths = {k: [] for k in hits}
    for d in range(a.draws):
        for strategy in ("random", "disagreement"):
            name = f"cov-{strategy}-{d}"
            args = ["queue", "create", "--name", name, "--size", a.n, "--seed", 1000 + d, "--evaluator", evaluator,
                    "--strategy", strategy]
            if strategy == "disagreement":
                args += ["--against", "m1"]
            run(bin_, db, *args)
            path = os.path.join(a.work, "cov.jsonl")
            answers_file(bin_, db, name, truth, a.sigma, f"cov{d}", path)
            run(bin_, db, "queue", "import", name, path)
            shown = json.loads(run(bin_, db, "--json", "queue", "show", name, "--bootstrap", "0"))
            m = shown["ipw_mean"]
            hits[strategy] += int(m["low"] <= target <= m["high"])
            widths[strategy].append(m["high"] - m["low"])
            if strategy == "disagreement":
                ys = [json.loads(l)["answer"] for l in open(path)]
                mean = statistics.fmean(ys)
                se = statistics.stdev(ys) / math.sqrt(len(ys))
                hits["disagreement_unweighted"] += int(mean - 1.96 * se <= target <= mean + 1.96 * se)
                widths["disagreement_unweighted"].append(2 * 1.96 * se)
    return target, {k: (hits[k] / a.draws, statistics.fmean(widths[k])) for k in hits}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bin")
    p.add_argument("judgements")
    p.add_argument("work")
    p.add_argument("--dataset", default="newsroom")
    p.add_argument("--dimension", default="coherence")
    p.add_argument("--holdout-groups", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--strategies", nargs="+", default=["random", "disagreement"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=40, help="labels per round")
    p.add_argument("--sigma", type=float, default=0.5, help="rater noise (sd, 1-5 scale)")
    p.add_argument("--train-config", required=True)
    p.add_argument("--draws", type=int, default=200, help="queue draws for the coverage")
    p.add_argument("--n", type=int, default=60, help="queue size for the coverage")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    bin_ = os.path.abspath(a.bin)
    a.sim = os.path.join(a.work, "sim")
    run(bin_, os.path.join(a.work, "sim.db"), "simulate", "--judgements",
        os.path.join(a.judgements, f"{a.dataset}.jsonl"), "--dimension", a.dimension, "--out", a.sim,
        "--holdout-groups", a.holdout_groups, "--seed", 1)
    truth = {}
    for line in open(os.path.join(a.sim, "truth.jsonl")):
        t = json.loads(line)
        truth[t["request_id"]] = t["human_score"]
    heldout = os.path.join(a.sim, "heldout.jsonl")
    evaluator = json.loads(open(os.path.join(a.sim, "logs.jsonl")).readline())["evaluator"]
    pool = sum(1 for _ in open(os.path.join(a.sim, "logs.jsonl")))
    held = sum(1 for _ in open(heldout))
    print(f"{a.dataset} {a.dimension}: pool {pool} requests, held out {held} ({a.holdout_groups} groups); "
          f"rater noise sd {a.sigma}; {a.rounds} rounds of {a.k} labels; seeds {a.seeds}", flush=True)
    results = curves(a, bin_, truth, a.sim, heldout, evaluator)
    print("\nheld-out group Spearman by labels spent (mean over seeds):")
    print(f"{'strategy':<14}" + "".join(f"{a.k * r:>10}" for r in range(1, a.rounds + 1)))
    for s in a.strategies:
        row = []
        for r in range(1, a.rounds + 1):
            v = [x[4] for x in results if x[1] == s and x[2] == r]
            row.append(statistics.fmean(v))
        print(f"{s:<14}" + "".join(f"{v:>10.4f}" for v in row))
    print("per seed: " + json.dumps([{"seed": x[0], "strategy": x[1], "round": x[2], "labels": x[3],
                                      "group_spearman": round(x[4], 4)} for x in results]))
    target, cov = coverage(a, bin_, truth, evaluator)
    print(f"\ncoverage of 95% intervals for the pool's mean label ({target:.4f}), {a.draws} draws of {a.n} items:")
    for k, (c, w) in cov.items():
        print(f"  {k:<26} coverage {c:.3f}  mean width {w:.4f}")


if __name__ == "__main__":
    main()

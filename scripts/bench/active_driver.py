#!/usr/bin/env python3
"""Active learning with evalloop's annotation queues, measured (driven by scripts/bench/active.sh).

A simulated reviewer (the judgement set's human score plus rater noise, rounded to 1-5) labels
the picks of a queue in rounds of about K labels; after each round the evaluator is retrained
from the labels so far with configs/weekly.toml's [train] settings and scored on held-out groups
(whole source documents kept out of the pool by `evalloop simulate --holdout-groups`). A
strategy is a queue strategy, optionally drawn by whole prompt groups (`NAME:group`, `queue
create --whole-groups`: K / group size groups a round). Round 1 is a random queue of the same
unit for every strategy (there is no retrained evaluator yet); later rounds use the strategy,
`disagreement` and `mix` comparing the base evaluator with the latest retrained one,
`uncertainty` ranking by the spread of an ensemble's members (retrained each round, `--ensemble-
seeds`), each round leaving out requests labelled before (`--exclude-labelled`). Printed: held-out group-level
Spearman (the mean over held-out groups of the within-group Spearman correlation) per round, and
for each strategy the fewest labels at which its mean curve reaches `random`'s final value.

Coverage: on one pool (with the first retrained evaluator's scores), D draws of a queue of about
N labels by each strategy's selection (random probabilities, or the disagreement with that
evaluator), labelled by the simulated reviewer; how often the 95% intervals of `evalloop queue
show` cover the pool's true values: the inverse-probability (Hajek) mean label, and the
evaluator's weighted Pearson correlation with the labels; beside the plain (unweighted) mean and
correlation of the same labels.

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
        if len(g) < 2:
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


def train_seed(path):
    """The `seed` of a [train] config file (evalloop's default 7 when it names none)."""
    section = ""
    for line in open(path):
        s = line.split("#")[0].strip()
        if s.startswith("["):
            section = s
        elif section == "[train]" and s.replace(" ", "").startswith("seed="):
            return int(s.split("=", 1)[1])
    return 7


def ensemble_seeds(a):
    """The ensemble's seeds: the config's own first, then --ensemble-seeds."""
    return [a.main_seed] + [s for s in a.ensemble_seeds if s != a.main_seed]


def ensemble_config(a):
    """The training config with `seeds = [seed, extra...]`: an ensemble whose member with the
    config's own seed is the model a single run trains (the held-out figure comes from it, so
    the curves of all strategies measure the same kind of evaluator)."""
    path = os.path.join(a.work, "train-ensemble.toml")
    if not os.path.exists(path):
        seeds = ensemble_seeds(a)
        out, done = [], False
        for line in open(a.train_config):
            out.append(line)
            if line.strip() == "[train]" and not done:
                out.append(f"seeds = [{', '.join(map(str, seeds))}]\n")
                done = True
        if not done:
            sys.exit(f"{a.train_config}: no [train] section to add the ensemble's seeds to")
        with open(path, "w") as f:
            f.write("".join(out))
    return path


def needs_members(strategy):
    return strategy == "uncertainty"


def train_round(a, bin_, db, work, evaluator, heldout, tag, ensemble=False):
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
    run(bin_, db, "train", "--dataset", ds, "--out", model, config=ensemble_config(a) if ensemble else a.train_config)
    secs = time.time() - t0
    if ensemble:
        model = os.path.join(model, f"member-{a.main_seed}")
    scored = os.path.join(work, f"heldout-{tag}.jsonl")
    run(bin_, db, "score", "--model", model, "--input", heldout, "--output", scored)
    rows = [json.loads(l) for l in open(scored)]
    return model, group_spearman(rows), secs


def parse_strategy(s):
    """`NAME` or `NAME:group` -> (queue strategy, whole groups?)."""
    name, _, unit = s.partition(":")
    if unit not in ("", "group"):
        sys.exit(f"strategy {s!r}: the unit after ':' can only be 'group'")
    return name, unit == "group"


def queue_args(a, name, size, seed, evaluator, strategy, groups):
    args = ["queue", "create", "--name", name, "--seed", seed, "--evaluator", evaluator, "--strategy", strategy]
    if groups:
        args += ["--whole-groups", "--group-key", "group_id", "--size", max(1, round(size / a.group_size))]
    else:
        args += ["--size", size]
    return args


def queue_items(bin_, db, queue):
    return [json.loads(line)["request_id"] for line in run(bin_, db, "queue", "export", queue).splitlines()]


def score_members(a, bin_, db, model, r):
    """Scores each ensemble member of round r's model into the store as `m{r}-s{seed}`; returns
    the names for `queue create --members`."""
    ens = os.path.dirname(model)
    names = []
    for seed in ensemble_seeds(a):
        name = f"m{r}-s{seed}"
        run(bin_, db, "score", "--model", os.path.join(ens, f"member-{seed}"), "--store", "--evaluator-name", name)
        names.append(name)
    return ",".join(names)


def curves(a, bin_, truth, sim, heldout, evaluator):
    results = []  # (seed, strategy, round, labels, spearman)
    members_wanted = any(needs_members(parse_strategy(x)[0]) for x in a.strategies)
    for seed in a.seeds:
        base = os.path.join(a.work, f"seed{seed}")
        os.makedirs(base, exist_ok=True)
        first = {}  # unit -> (db, model, labels, spearman)
        for groups in sorted({parse_strategy(x)[1] for x in a.strategies}):
            tag = "group" if groups else "request"
            db0 = os.path.join(base, f"round1-{tag}.db")
            run(bin_, db0, "ingest", "logs", os.path.join(sim, "logs.jsonl"))
            run(bin_, db0, *queue_args(a, "round1", a.k, seed, evaluator, "random", groups))
            answers_file(bin_, db0, "round1", truth, a.sigma, seed, os.path.join(base, f"a1-{tag}.jsonl"))
            run(bin_, db0, "queue", "import", "round1", os.path.join(base, f"a1-{tag}.jsonl"))
            n1 = len(queue_items(bin_, db0, "round1"))
            model1, s1, secs = train_round(a, bin_, db0, base, evaluator, heldout, f"r1-{tag}", members_wanted)
            print(f"seed {seed} round 1 (random by {tag}, {n1} labels): held-out group Spearman {s1:.4f} "
                  f"(train {secs:.0f} s)", flush=True)
            run(bin_, db0, "score", "--model", model1, "--store", "--evaluator-name", "m1")
            members1 = score_members(a, bin_, db0, model1, 1) if members_wanted else None
            first[groups] = (db0, n1, s1, members1)
            if seed == a.seeds[0]:
                a.coverage_db = db0
        for label in a.strategies:
            strategy, groups = parse_strategy(label)
            db0, n, s1, members = first[groups]
            results.append((seed, label, 1, n, s1))
            work = os.path.join(base, label.replace(":", "-"))
            os.makedirs(work, exist_ok=True)
            db = os.path.join(work, "e.db")
            shutil.copy(db0, db)
            for r in range(2, a.rounds + 1):
                name = f"round{r}"
                args = queue_args(a, name, a.k, seed * 100 + r, evaluator, strategy, groups) + ["--exclude-labelled"]
                if strategy in ("disagreement", "mix"):
                    args += ["--against", f"m{r - 1}"]
                if needs_members(strategy):
                    args += ["--members", members]
                run(bin_, db, *args)
                answers_file(bin_, db, name, truth, a.sigma, seed, os.path.join(work, f"a{r}.jsonl"))
                run(bin_, db, "queue", "import", name, os.path.join(work, f"a{r}.jsonl"))
                n += len(queue_items(bin_, db, name))
                # An ensemble only where the next round's queue reads its members.
                ensemble = needs_members(strategy) and r < a.rounds
                model, s, secs = train_round(a, bin_, db, work, evaluator, heldout, f"r{r}", ensemble)
                run(bin_, db, "score", "--model", model, "--store", "--evaluator-name", f"m{r}")
                if ensemble:
                    members = score_members(a, bin_, db, model, r)
                results.append((seed, label, r, n, s))
                print(f"seed {seed} round {r} ({label}, {n} labels): held-out group Spearman {s:.4f} "
                      f"(train {secs:.0f} s)", flush=True)
    return results


def label_moments(h, sigma):
    """E[label] and Var[label] for human score h under the noise model (exact)."""
    cdf = lambda x: 0.5 * (1.0 + math.erf(x / (sigma * math.sqrt(2.0))))
    probs = []
    for k in range(1, 6):
        lo = 0.0 if k == 1 else cdf(k - 0.5 - h)
        hi = 1.0 if k == 5 else cdf(k + 0.5 - h)
        probs.append(hi - lo)
    mean = sum(k * p for k, p in zip(range(1, 6), probs))
    return mean, sum((k - mean) ** 2 * p for k, p in zip(range(1, 6), probs))


def plain_correlation(xs, ys):
    """Pearson r with the Fisher-z 95% interval (independent observations)."""
    n = len(xs)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0 or n < 4:
        return None
    r = sxy / math.sqrt(sxx * syy)
    z, se = math.atanh(max(-0.999999, min(0.999999, r))), 1.0 / math.sqrt(n - 3)
    return math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)


def coverage(a, bin_, truth, evaluator):
    db = os.path.join(a.work, "coverage.db")
    shutil.copy(a.coverage_db, db)
    logs = [json.loads(line) for line in open(os.path.join(a.sim, "logs.jsonl"))]
    score = {r["request_id"]: r["eval_scores"]["overall"] for r in logs}
    moments = {r: label_moments(truth[r], a.sigma) for r in score}
    # The pool's true values: the mean label and the correlation of the evaluator's score with
    # the label (whose variance adds the rater noise to that of the expected label).
    n = len(score)
    target_mean = statistics.fmean(m[0] for m in moments.values())
    mx = statistics.fmean(score.values())
    cov = sum((score[r] - mx) * (moments[r][0] - target_mean) for r in score) / n
    var_x = sum((x - mx) ** 2 for x in score.values()) / n
    var_y = sum((m[0] - target_mean) ** 2 + m[1] for m in moments.values()) / n
    target_r = cov / math.sqrt(var_x * var_y)
    stats = {}

    def hit(key, low, high, target):
        h = stats.setdefault(key, [0, []])
        h[0] += int(low <= target <= high)
        h[1].append(high - low)

    for d in range(a.draws):
        for label in a.coverage_strategies:
            strategy, groups = parse_strategy(label)
            name = f"cov-{label.replace(':', '-')}-{d}"
            args = queue_args(a, name, a.n, 1000 + d, evaluator, strategy, groups)
            if strategy in ("disagreement", "mix"):
                args += ["--against", "m1"]
            run(bin_, db, *args)
            path = os.path.join(a.work, "cov.jsonl")
            answers_file(bin_, db, name, truth, a.sigma, f"cov{d}", path)
            run(bin_, db, "queue", "import", name, path)
            shown = json.loads(run(bin_, db, "--json", "queue", "show", name, "--bootstrap", "0"))
            m, c = shown["ipw_mean"], shown["ipw_correlation"]
            hit((label, "mean", "weighted"), m["low"], m["high"], target_mean)
            if "low" in c:
                hit((label, "correlation", "weighted"), c["low"], c["high"], target_r)
            answers = [json.loads(line) for line in open(path)]
            ys = [x["answer"] for x in answers]
            xs = [score[x["request_id"]] for x in answers]
            mean, se = statistics.fmean(ys), statistics.stdev(ys) / math.sqrt(len(ys))
            hit((label, "mean", "unweighted"), mean - 1.96 * se, mean + 1.96 * se, target_mean)
            ci = plain_correlation(xs, ys)
            if ci:
                hit((label, "correlation", "unweighted"), ci[0], ci[1], target_r)
    return target_mean, target_r, {k: (v[0] / a.draws, statistics.fmean(v[1]), len(v[1])) for k, v in stats.items()}


def svg_plot(path, title, curves):
    """The mean curves (strategy -> [(labels, spearman)]) as a small standalone SVG line chart."""
    w, h, left, right, top, bottom = 640, 400, 60, 170, 40, 50
    xs = [n for c in curves.values() for n, _ in c]
    ys = [v for c in curves.values() for _, v in c]
    x0, x1 = 0, max(xs)
    y0, y1 = min(0.0, math.floor(min(ys) * 10) / 10), math.ceil(max(ys) * 10) / 10
    px = lambda x: left + (x - x0) / (x1 - x0) * (w - left - right)
    py = lambda y: top + (y1 - y) / (y1 - y0) * (h - top - bottom)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14">{title}</text>']
    for i in range(int(round((y1 - y0) * 10)) + 1):
        y = y0 + i / 10
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
    for n in sorted(set(xs)):
        out.append(f'<text x="{px(n):.1f}" y="{h - bottom + 18}" text-anchor="middle">{n:.0f}</text>')
    out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 12}" text-anchor="middle">labels spent</text>')
    out.append(f'<text x="16" y="{(top + h - bottom) / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(top + h - bottom) / 2:.0f})">held-out group-level Spearman</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}" stroke="black"/>'
               f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" stroke="black"/>')
    for i, (name, c) in enumerate(curves.items()):
        col = colours[i % len(colours)]
        pts = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in c)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2"/>')
        out += [f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{col}"/>' for n, v in c]
        ly = top + 16 + 20 * i
        out.append(f'<line x1="{w - right + 12}" x2="{w - right + 36}" y1="{ly}" y2="{ly}" stroke="{col}" '
                   f'stroke-width="2"/><text x="{w - right + 42}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bin")
    p.add_argument("judgements")
    p.add_argument("work")
    p.add_argument("--dataset", default="newsroom")
    p.add_argument("--dimension", default="coherence")
    p.add_argument("--holdout-groups", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--strategies", nargs="+", default=["random", "random:group", "disagreement:group"],
                   help="queue strategies, NAME or NAME:group (drawn by whole prompt groups); the first is the "
                        "baseline")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--k", type=int, default=21, help="labels per round (whole groups: k / group size groups)")
    p.add_argument("--sigma", type=float, default=0.5, help="rater noise (sd, 1-5 scale)")
    p.add_argument("--train-config", required=True)
    p.add_argument("--ensemble-seeds", type=int, nargs="+", default=[8, 9],
                   help="`uncertainty`: the seeds of the ensemble trained each round besides the config's own "
                        "(whose member gives the held-out figure)")
    p.add_argument("--draws", type=int, default=200, help="queue draws for the coverage")
    p.add_argument("--n", type=int, default=56, help="labels per queue for the coverage")
    p.add_argument("--plot", help="write the mean curves as an SVG line chart to this file")
    p.add_argument("--coverage-strategies", nargs="+",
                   default=["random", "disagreement", "random:group", "disagreement:group"])
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    bin_ = os.path.abspath(a.bin)
    a.main_seed = train_seed(a.train_config)
    a.sim = os.path.join(a.work, "sim")
    run(bin_, os.path.join(a.work, "sim.db"), "simulate", "--judgements",
        os.path.join(a.judgements, f"{a.dataset}.jsonl"), "--dimension", a.dimension, "--out", a.sim,
        "--holdout-groups", a.holdout_groups, "--seed", 1)
    truth = {}
    for line in open(os.path.join(a.sim, "truth.jsonl")):
        t = json.loads(line)
        truth[t["request_id"]] = t["human_score"]
    heldout = os.path.join(a.sim, "heldout.jsonl")
    logs = [json.loads(line) for line in open(os.path.join(a.sim, "logs.jsonl"))]
    evaluator = logs[0]["evaluator"]
    groups = {r["metadata"]["group_id"] for r in logs}
    a.group_size = len(logs) / len(groups)
    held = sum(1 for _ in open(heldout))
    print(f"{a.dataset} {a.dimension}: pool {len(logs)} requests in {len(groups)} groups, held out {held} "
          f"({a.holdout_groups} groups); rater noise sd {a.sigma}; {a.rounds} rounds of about {a.k} labels; "
          f"seeds {a.seeds}", flush=True)
    if a.rounds > 0:
        results = curves(a, bin_, truth, a.sim, heldout, evaluator)
        print("\nheld-out group Spearman by round (mean over seeds; labels: mean over seeds):")
        print(f"{'strategy':<22}" + "".join(f"{'round ' + str(r):>16}" for r in range(1, a.rounds + 1)))
        curve = {}
        for s in a.strategies:
            row = []
            for r in range(1, a.rounds + 1):
                v = [x for x in results if x[1] == s and x[2] == r]
                row.append((statistics.fmean(x[3] for x in v), statistics.fmean(x[4] for x in v)))
            curve[s] = row
            print(f"{s:<22}" + "".join(f"{sp:>8.4f} ({n:>4.0f})" for n, sp in row))
        final_n, final = curve[a.strategies[0]][-1]
        print(f"\n{a.strategies[0]}'s final value {final:.4f} at {final_n:.0f} labels; the fewest labels at which "
              "each mean curve reaches it:")
        for s in a.strategies:
            reach = next(((n, sp) for n, sp in curve[s] if sp >= final), None)
            share = f"{reach[0]:.0f} labels ({reach[0] / final_n:.0%})" if reach else "not within the rounds"
            print(f"  {s:<22} {share}")
        if a.plot:
            svg_plot(a.plot, f"{a.dataset} {a.dimension}: mean of seeds {' '.join(map(str, a.seeds))}",
                     {s: [(n, v) for n, v in curve[s]] for s in a.strategies})
            print(f"plot: {a.plot}")
        print("per seed: " + json.dumps([{"seed": x[0], "strategy": x[1], "round": x[2], "labels": x[3],
                                          "group_spearman": round(x[4], 4)} for x in results]))
    else:
        # Coverage alone: a first random round trained on the pool gives the evaluator to disagree with.
        a.strategies, a.rounds = ["random"], 1
        curves(a, bin_, truth, a.sim, heldout, evaluator)
    if a.draws > 0:
        target_mean, target_r, cov = coverage(a, bin_, truth, evaluator)
        print(f"\ncoverage of 95% intervals over {a.draws} draws of about {a.n} labels: the pool's mean label "
              f"{target_mean:.4f}, the evaluator's correlation with the label {target_r:.4f}")
        for (label, what, how), (c, w, k) in sorted(cov.items()):
            print(f"  {label:<20} {what:<12} {how:<11} coverage {c:.3f}  mean width {w:.4f}  ({k} defined)")


if __name__ == "__main__":
    main()

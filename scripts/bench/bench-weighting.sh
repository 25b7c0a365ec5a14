#!/usr/bin/env bash
# Research benchmark for cohort weighting: on Newsroom (coherence) and REALSumm
# (litepyramid_recall), simulate biased feedback, ingest it, build datasets under `none`,
# `inverse_rate` and `ipw` (cohort rates from any feedback, the default, and from
# labelled requests), and print how close the weighted label mean comes to the truth, per cohort
# and over the whole population of logged requests.
#
# Three bias scenarios (rates as simulate's defaults):
#   cohort   feedback rate depends on the cohort only (free 0.3, pro 0.5, enterprise 0.8;
#            cohorts by system, so cohort and quality are correlated: informative bias).
#   users    the same rates, but cohorts by synthetic user, so cohort and quality are
#            independent: the bias is not informative and weighting can only cost variance.
#   outcome  as cohort, plus outcome-dependent feedback (outcome_slope = 2: bad outputs are
#            reported more) and per-cohort standards (shift free -0.5, enterprise +0.5):
#            selection within a cohort, which no cohort weight can undo.
# Truth: the binary label (true rating >= 4 good, <= 2 bad, neutral left out) of every logged
# request, what the dataset would hold if every request got a rating.
#
# Usage: scripts/bench/bench-weighting.sh [JUDGEMENTS_DIR] [SEEDS]   (default ../shared/data/judgements, seeds 1-10)
# Needs: a release build (cargo build --release) and python3 (standard library only).
#
# A weighting of your own, from Python: PY_WEIGHTING=FILE.py[:FUNCTION] (default function
# `weights`) adds a row `custom` built with the Python package (`evalloop.dataset.build(...,
# weighting=FUNCTION)`: the function gets the labelled rows as a pyarrow table, with cohorts and
# feedback rates, and returns one weight per row), through the same dataset config, splits and
# checks as the built-in schemes. PY (default: target/py-bindings/bin/python, made by
# scripts/python-bindings.sh) is a python with the package installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA="${1:-}"
if [[ -z "$DATA" ]]; then
  for d in ../shared/data/judgements ../../shared/data/judgements /work/shared/data/judgements; do
    [[ -d "$d" ]] && DATA="$d" && break
  done
fi
[[ -d "$DATA" ]] || { echo "no judgements directory; pass it as the first argument" >&2; exit 2; }
SEEDS="${2:-1 2 3 4 5 6 7 8 9 10}"
BIN="${EVALLOOP_BIN:-target/release/evalloop}"
[[ -x "$BIN" ]] || cargo build --release
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

scenario_toml() {
  case "$1" in
    cohort) echo "[simulate]" ;;
    users) printf '[simulate]\ncohort_by = "user"\n' ;;
    outcome) cat <<'T'
[simulate]
outcome_slope = 2.0
[[simulate.cohorts]]
name = "free"
share = 3.0
feedback_rate = 0.3
shift = -0.5
[[simulate.cohorts]]
name = "pro"
share = 2.0
feedback_rate = 0.5
[[simulate.cohorts]]
name = "enterprise"
share = 2.0
feedback_rate = 0.8
shift = 0.5
T
    ;;
  esac
}

WEIGHTINGS="none inverse_rate ipw ipw_labelled"
PY="${PY:-target/py-bindings/bin/python}"
if [[ -n "${PY_WEIGHTING:-}" ]]; then
  [[ -f "${PY_WEIGHTING%%:*}" ]] || { echo "PY_WEIGHTING: no file ${PY_WEIGHTING%%:*}" >&2; exit 2; }
  "$PY" -c 'import evalloop' 2>/dev/null \
    || { echo "PY_WEIGHTING needs a python with the evalloop package: set PY (scripts/python-bindings.sh)" >&2; exit 2; }
fi
for spec in "newsroom:coherence" "realsumm:litepyramid_recall"; do
  name="${spec%%:*}"; dim="${spec#*:}"
  for scen in cohort users outcome; do
    for seed in $SEEDS; do
      run="$WORK/$name-$scen-$seed"
      mkdir -p "$run"
      scenario_toml "$scen" > "$run/sim.toml"
      "$BIN" --config "$run/sim.toml" simulate --judgements "$DATA/$name.jsonl" --dimension "$dim" \
        --out "$run/sim" --seed "$seed" > /dev/null
      "$BIN" --db "$run/e.db" ingest logs "$run/sim/logs.jsonl" --strict > /dev/null
      "$BIN" --db "$run/e.db" ingest feedback "$run/sim/feedback.jsonl" --strict > /dev/null
      for w in $WEIGHTINGS; do
        scheme="$w"; rate="feedback"
        [[ "$w" == ipw_labelled ]] && scheme="ipw" && rate="labelled"
        printf '[dataset]\nlabel = "binary"\nweighting = ["%s"]\nrate = "%s"\ntrain_fraction = 1.0\nvalidation_fraction = 0.0\nmin_effective_size = 0.0\ngroup_key = "group_id"\n' \
          "$scheme" "$rate" > "$run/ds-$w.toml"
        "$BIN" --db "$run/e.db" --config "$run/ds-$w.toml" dataset build --out "$run/ds-$w" > /dev/null 2>&1
      done
      if [[ -n "${PY_WEIGHTING:-}" ]]; then
        # The same dataset config as `none`, weights from the Python function.
        "$PY" - "$run/e.db" "$run/ds-none.toml" "$run/ds-custom" "$PY_WEIGHTING" <<'PY' > /dev/null
import importlib.util, sys
import evalloop
db, config, out, spec = sys.argv[1:5]
path, _, name = spec.partition(":")
loader = importlib.util.spec_from_file_location("py_weighting", path)
module = importlib.util.module_from_spec(loader)
loader.loader.exec_module(module)
evalloop.dataset.build(evalloop.Store.open(db), config, out=out, weighting=getattr(module, name or "weights"))
PY
      fi
    done
  done
done

[[ -n "${PY_WEIGHTING:-}" ]] && WEIGHTINGS="$WEIGHTINGS custom"
python3 - "$WORK" "$SEEDS" "$WEIGHTINGS" <<'PY'
import json, sys, statistics as st
work, seeds, weightings = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def rows(p):
    with open(p) as f:
        return [json.loads(l) for l in f if l.strip()]
for name in ["newsroom", "realsumm"]:
    for scen in ["cohort", "users", "outcome"]:
        res = {w: {"overall": [], "cohort": [], "ess": [], "n": []} for w in weightings}
        truth_overall = []
        for seed in seeds:
            run = f"{work}/{name}-{scen}-{seed}"
            truth = [t for t in rows(f"{run}/sim/truth.jsonl") if not t["heldout"]]
            lab = lambda t: 1 if t["true_rating"] >= 4 else (0 if t["true_rating"] <= 2 else None)
            tl = [(t["cohort"], lab(t)) for t in truth if lab(t) is not None]
            cohorts = sorted({c for c, _ in tl})
            t_all = st.mean(l for _, l in tl)
            t_c = {c: st.mean(l for cc, l in tl if cc == c) for c in cohorts}
            truth_overall.append(t_all)
            for w in weightings:
                ex = rows(f"{run}/ds-{w}/train.jsonl")
                sw = sum(e["weight"] for e in ex)
                est = sum(e["weight"] * e["label"] for e in ex) / sw
                res[w]["overall"].append(abs(est - t_all))
                errs = []
                for c in cohorts:
                    ec = [e for e in ex if e["cohort"] == c]
                    if ec:
                        m = sum(e["weight"] * e["label"] for e in ec) / sum(e["weight"] for e in ec)
                        errs.append(abs(m - t_c[c]))
                res[w]["cohort"].append(st.mean(errs))
                res[w]["ess"].append(sum(e["weight"] for e in ex) ** 2 / sum(e["weight"] ** 2 for e in ex))
                res[w]["n"].append(len(ex))
        print(f"\n{name} / {scen} bias: truth label mean {st.mean(truth_overall):.3f} (over {len(seeds)} seeds)")
        print(f"  {'weighting':<14} {'|overall err|':>14} {'(sd)':>7} {'mean |cohort err|':>18} {'examples':>9} {'Kish ESS':>9}")
        for w in weightings:
            r = res[w]
            sd = st.pstdev(r["overall"]) if len(r["overall"]) > 1 else 0.0
            print(f"  {w:<14} {st.mean(r['overall']):>14.4f} {sd:>7.4f} {st.mean(r['cohort']):>18.4f} {st.mean(r['n']):>9.1f} {st.mean(r['ess']):>9.1f}")
PY

#!/usr/bin/env bash
# Ratings against preferences for the same labelling budget: does "which of these two outputs is
# better" teach the evaluator as much as a 1-5 rating?
#
# For each dataset and seed, `evalloop simulate` writes the same week twice with the same users,
# cohorts, feedback decisions, thumbs and implicit signals (biased as in bench-quality.sh:
# cohorts by system, outcome_slope 1.5, cohort shifts):
#   ratings      every explicit verdict that is not a thumb is a 1-5 rating;
#   preferences  each of those is a preference between the user's output and another output of
#                the same group instead ([simulate.preferences] share = 1.0, tie_margin 0.25):
#                as many events, so the same labelling budget.
# Each arm is ingested into its own store, `dataset build` writes its splits (and pairs.jsonl),
# and one evaluator is trained per arm with the same recipe (graded+pairwise, output_first,
# layer_lr_decay 0.9, last epoch); the preferences arm adds preference_pairs = 1.0. Both are
# scored on the held-out groups (HOLDOUT_FRAC of the groups, in neither arm's logs), against
# the experts' scores: mean within-group Spearman, and pairwise accuracy over the held-out
# pairs of a group whose expert scores differ.
#
# Usage: scripts/bench/bench-preferences.sh
# Environment (defaults): DATA (../shared/data/judgements), DATASETS ("newsroom:coherence
# bagel:quality"), SEEDS ("1 2"), EPOCHS (3), MAX_LENGTH (256), BATCH (16), LR (5e-5), THREADS
# (2), MODEL (models/all-MiniLM-L6-v2), HOLDOUT_FRAC (0.3), WORK (a fresh temp directory; an
# existing one is reused: finished runs are not trained again).
# Needs: a release build and python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA="${DATA:-}"
if [[ -z "$DATA" ]]; then
  for d in ../shared/data/judgements ../../shared/data/judgements /work/shared/data/judgements; do
    [[ -d "$d" ]] && DATA="$d" && break
  done
fi
[[ -d "$DATA" ]] || { echo "no judgements directory; set DATA" >&2; exit 2; }
DATASETS="${DATASETS:-newsroom:coherence bagel:quality}"
SEEDS="${SEEDS:-1 2}"
EPOCHS="${EPOCHS:-3}"
MAX_LENGTH="${MAX_LENGTH:-256}"
BATCH="${BATCH:-16}"
LR="${LR:-5e-5}"
MODEL="${MODEL:-models/all-MiniLM-L6-v2}"
HOLDOUT_FRAC="${HOLDOUT_FRAC:-0.3}"
export RAYON_NUM_THREADS="${THREADS:-2}"
[[ -f "$MODEL/model.safetensors" ]] || { echo "no model in $MODEL (scripts/fetch-model.sh)" >&2; exit 2; }
BIN="${EVALLOOP_BIN:-target/release/evalloop}"
[[ -x "$BIN" ]] || cargo build --release
if [[ -n "${WORK:-}" ]]; then
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi

sim_toml() {
  cat <<T
[simulate]
cohort_by = "system"
outcome_slope = 1.5
[simulate.preferences]
share = $1
tie_margin = 0.25
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
}

for spec in $DATASETS; do
  name="${spec%%:*}"; dim="${spec#*:}"
  groups=$(python3 -c "import json,sys; print(len({json.loads(l)['group_id'] for l in open(sys.argv[1]) if l.strip()}))" "$DATA/$name.jsonl")
  holdout=$(python3 -c "print(max(1, round($groups * $HOLDOUT_FRAC)))")
  for seed in $SEEDS; do
    for arm in ratings preferences; do
      run="$WORK/$name-$dim-$seed/$arm"
      [[ -f "$run/scores.jsonl" ]] && continue
      rm -rf "$run" && mkdir -p "$run"
      share=0.0; extra=""
      [[ "$arm" == preferences ]] && share=1.0 && extra="preference_pairs = 1.0"
      sim_toml "$share" > "$run/sim.toml"
      "$BIN" --config "$run/sim.toml" simulate --judgements "$DATA/$name.jsonl" --dimension "$dim" \
        --out "$run/sim" --seed "$seed" --holdout-groups "$holdout" > "$run/simulate.txt"
      "$BIN" --db "$run/e.db" ingest logs "$run/sim/logs.jsonl" --strict > /dev/null
      "$BIN" --db "$run/e.db" ingest feedback "$run/sim/feedback.jsonl" --strict --group-key group_id > /dev/null
      printf '[dataset]\nlabel = "graded"\nweighting = ["none"]\ntrain_fraction = 0.8\nvalidation_fraction = 0.2\nmin_effective_size = 0.0\ngroup_key = "group_id"\nseed = %s\n' \
        "$seed" > "$run/ds.toml"
      "$BIN" --db "$run/e.db" --config "$run/ds.toml" dataset build --out "$run/ds" > "$run/dataset.txt" 2>&1
      cat > "$run/train.toml" <<T
[train]
seed = $seed
base_model = "$MODEL"
epochs = $EPOCHS
batch_size = $BATCH
max_length = $MAX_LENGTH
learning_rate = $LR
patience = 0
log_every = 1000
objective = "graded+pairwise"
truncation = "output_first"
eval_metric = "group_spearman"
layer_lr_decay = 0.9
keep_best = false
$extra
T
      start=$(date +%s.%N)
      "$BIN" --config "$run/train.toml" train --dataset "$run/ds" --out "$run/m" > "$run/train.log" 2>&1 \
        || { echo "train failed: $run/train.log" >&2; tail -5 "$run/train.log" >&2; exit 1; }
      end=$(date +%s.%N)
      python3 -c "print($end - $start)" > "$run/train_seconds"
      "$BIN" score --model "$run/m" --input "$run/sim/heldout.jsonl" --output "$run/scores.jsonl.tmp" > /dev/null
      mv "$run/scores.jsonl.tmp" "$run/scores.jsonl"
      echo "done: $name/$dim seed $seed $arm ($(cut -c1-6 < "$run/train_seconds") s)" >&2
    done
  done
done

python3 - "$WORK" "$DATASETS" "$SEEDS" <<'PY'
import json, sys, statistics as st
from collections import defaultdict
sys.path.insert(0, "scripts/bench")
from rank_stats import spearman
work, datasets, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()

def rows(p):
    with open(p) as f:
        return [json.loads(l) for l in f if l.strip()]

def by_group(rs, key):
    g = defaultdict(list)
    for r in rs:
        g[r["group"]].append((r[key], r["human_score"]))
    return g

def group_spearman(rs, key):
    vals = [spearman([a for a, _ in v], [b for _, b in v]) for v in by_group(rs, key).values() if len(v) >= 2]
    vals = [v for v in vals if v is not None]
    return st.mean(vals) if vals else float("nan")

def pair_accuracy(rs, key):
    hit = n = 0
    for v in by_group(rs, key).values():
        for i in range(len(v)):
            for j in range(i + 1, len(v)):
                (si, hi), (sj, hj) = v[i], v[j]
                if hi == hj:
                    continue
                n += 1
                hit += 1.0 if (si - sj) * (hi - hj) > 0 else 0.5 if si == sj else 0.0
    return hit / n if n else float("nan")

def labels(run):
    card = json.load(open(f"{run}/ds/dataset_card.json"))
    rated = card["examples"]
    pairs = sum((card.get("preference_pairs") or {}).get("pairs", {}).values())
    sim = open(f"{run}/simulate.txt").read()
    prefs = 0
    for line in sim.splitlines():
        if line.strip().startswith("preferences:"):
            prefs = int(line.split()[1])
    return rated, pairs, prefs

print(f"ratings vs preferences, same labelling budget; held-out groups vs expert scores (seeds {' '.join(seeds)})")
print(f"{'dataset':<20} {'arm':<12} {'group Spearman':>15} {'pair acc':>9} {'labelled rows':>14} {'pref events':>12} {'train pairs':>12}  per seed")
for spec in datasets:
    name, dim = spec.split(":")
    held = {s: rows(f"{work}/{name}-{dim}-{s}/ratings/sim/heldout.jsonl") for s in seeds}
    base = [group_spearman(held[s], "eval_score") for s in seeds]
    base_acc = [pair_accuracy(held[s], "eval_score") for s in seeds]
    print(f"{name + '/' + dim:<20} {'unigram F1':<12} {st.mean(base):15.3f} {st.mean(base_acc):9.3f} {'-':>14} {'-':>12} {'-':>12}  "
          + " ".join(f"{v:.3f}" for v in base))
    for arm in ["ratings", "preferences"]:
        gs, acc, lab = [], [], []
        for s in seeds:
            run = f"{work}/{name}-{dim}-{s}/{arm}"
            rs = rows(f"{run}/scores.jsonl")
            gs.append(group_spearman(rs, "score")); acc.append(pair_accuracy(rs, "score")); lab.append(labels(run))
        print(f"{name + '/' + dim:<20} {arm:<12} {st.mean(gs):15.3f} {st.mean(acc):9.3f} "
              f"{st.mean(l[0] for l in lab):14.0f} {st.mean(l[2] for l in lab):12.0f} {st.mean(l[1] for l in lab):12.0f}  "
              + " ".join(f"{v:.3f}" for v in gs))
PY

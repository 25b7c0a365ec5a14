#!/usr/bin/env bash
# The weekly loop on real human judgements: Newsroom (coherence), REALSumm (litepyramid_recall)
# and BAGEL (quality) from ../shared/data/judgements. For each: simulate logs + biased feedback,
# run the loop (dataset split by source document, so the held-out test split is whole groups),
# and print held-out Spearman pre (base unigram-F1 evaluator) and post (retrained MiniLM),
# dataset- and group-level, the gate's decision, and the time per stage.
#   BENCH_EPOCHS=2 BENCH_MAX_EXAMPLES=500 BENCH_MAX_LENGTH=128 scripts/bench/bench-real.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="${JUDGEMENTS:-$root/../shared/data/judgements}"
epochs=${BENCH_EPOCHS:-2}
max_examples=${BENCH_MAX_EXAMPLES:-500}
max_length=${BENCH_MAX_LENGTH:-128}
cd "$root"
cargo build --release --quiet --bins
scripts/fetch-model.sh >/dev/null
ev="$root/target/release/evalloop"
work=${BENCH_DIR:-$(mktemp -d)}
echo "epochs $epochs, max_examples $max_examples, max_length $max_length; work dir $work"
printf '%-10s %-20s %6s %8s %8s %9s %9s %-14s %s\n' dataset dimension n_test pre_rho post_rho pre_group post_group gate "seconds per stage"
for spec in newsroom:coherence realsumm:litepyramid_recall bagel:quality; do
  ds=${spec%%:*}; dim=${spec#*:}
  d="$work/$ds"; rm -rf "$d"; mkdir -p "$d"
  "$ev" simulate --judgements "$data/$ds.jsonl" --dimension "$dim" --out "$d/sim" --seed 7 >/dev/null
  cat > "$d/weekly.toml" <<TOML
[store]
db = "$d/evalloop.db"
[run]
ingest_logs = ["$d/sim/logs.jsonl"]
ingest_feedback = ["$d/sim/feedback.jsonl"]
out_dir = "$d/runs"
group_key = "group_id"
[dataset]
label = "graded"
group_key = "group_id"
train_fraction = 0.7
validation_fraction = 0.15
max_examples = $max_examples
[train]
epochs = $epochs
batch_size = 16
max_length = $max_length
TOML
  start=$(date +%s.%N)
  "$ev" --config "$d/weekly.toml" --json run --out "$d/run" > "$d/run.json"
  python3 - "$ds" "$dim" "$d/run.json" "$d/run/report.json" "$start" <<'PY'
import json, sys, time
ds, dim, run, rep, start = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4])), float(sys.argv[5])
f = lambda x: "-" if x is None else f"{x:.3f}"
pre, post = rep["pre"], rep["post"]
gate = "promoted" if run["promoted"] else "kept baseline"
t = run["timings"]
stages = " ".join(f"{k} {t[k]:.0f}" for k in ["ingest", "dataset", "train", "score", "report"] if k in t)
print(f"{ds:<10} {dim:<20} {pre['n_samples']:6d} {f(pre['spearman_r']):>8} {f(post['spearman_r']):>8} "
      f"{f(pre.get('group_mean_spearman')):>9} {f(post.get('group_mean_spearman')):>9} {gate:<14} {stages} (total {time.time() - start:.0f})")
PY
done

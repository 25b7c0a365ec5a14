#!/usr/bin/env bash
# Agreement between people and the human ceiling on the real judgement sets
# (../shared/data/judgements): each file is simulated with a review panel (`[simulate.raters]`:
# 30% of the requests rated by 3 of 20 reviewers, each with their own bias and noise), ingested,
# and `evalloop agreement` measured on every human dimension. Prints, per dataset and dimension:
# requests rated by two or more people, Krippendorff's alpha (ordinal) with its 95% bootstrap
# interval, mean quadratic-weighted kappa, and the ceiling: one person vs the others, the
# logged unigram-F1 evaluator vs the same others, and the share of the ceiling it reaches.
#   PANEL_NOISE=1.0 PANEL_BIAS=0.5 scripts/bench/agreement-ceiling.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="${JUDGEMENTS:-$root/../shared/data/judgements}"
noise=${PANEL_NOISE:-0.5}
bias=${PANEL_BIAS:-0.3}
share=${PANEL_SHARE:-0.3}
cd "$root"
cargo build --release --quiet --bin evalloop
ev="${CARGO_TARGET_DIR:-$root/target}/release/evalloop"
work=${BENCH_DIR:-$(mktemp -d)}
echo "panel: multi_rated $share, 3 of 20 reviewers, bias_sd $bias, noise_sd $noise; work dir $work"
printf '%-10s %-18s %6s %7s %-17s %7s %8s %8s %6s\n' \
  dataset dimension items alpha "alpha 95% CI" kappa_q ceiling eval share
for spec in newsroom:coherence,fluency,informativeness,relevance bagel:quality,informativeness,naturalness \
    sfres:quality,informativeness,naturalness realsumm:litepyramid_recall qags-cnn:fact qags-xsum:fact; do
  ds=${spec%%:*}; dims=${spec#*:}; primary=${dims%%,*}
  d="$work/$ds"; rm -rf "$d"; mkdir -p "$d"
  printf '[simulate.raters]\nmulti_rated = %s\nbias_sd = %s\nnoise_sd = %s\n' "$share" "$bias" "$noise" > "$d/sim.toml"
  extra=()
  [ "$dims" != "$primary" ] && extra=(--dimensions "${dims#*,}")
  "$ev" --config "$d/sim.toml" simulate --judgements "$data/$ds.jsonl" --dimension "$primary" \
    "${extra[@]}" --out "$d/sim" --seed 7 >/dev/null
  "$ev" --db "$d/e.db" ingest logs "$d/sim/logs.jsonl" >/dev/null
  "$ev" --db "$d/e.db" ingest feedback "$d/sim/feedback.jsonl" >/dev/null
  for dim in ${dims//,/ }; do
    flag=()
    [ "$dim" != "$primary" ] && flag=(--dimension "$dim")
    "$ev" --db "$d/e.db" agreement "${flag[@]}" --bootstrap 1000 --json > "$d/$dim.json"
    python3 - "$ds" "$dim" "$d/$dim.json" <<'PY'
import json, sys
ds, dim, path = sys.argv[1:]
r = json.load(open(path))["ratings"]
a, c = r["agreement"], r["ceiling"]
num = lambda v, f="{:.3f}": f.format(v) if isinstance(v, (int, float)) else "undef"
ci = a["alpha_ci"]
ci = f"[{ci['lower']:.3f}, {ci['upper']:.3f}]" if "lower" in ci else "undef"
kq = a["kappa_quadratic"].get("mean")
print(f"{ds:<10} {dim:<18} {a['items_used']:>6} {num(a['alpha']):>7} {ci:<17} {num(kq):>7} "
      f"{num(c.get('person_vs_others')):>8} {num(c.get('evaluator_vs_others')):>8} "
      f"{num(c.get('share_of_ceiling'), '{:.0%}'):>6}")
PY
  done
done

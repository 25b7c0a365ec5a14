#!/usr/bin/env bash
# The main job on the shipped example data: build evalloop, put the real pretrained model in
# place (scripts/fetch-model.sh), and run the weekly loop (configs/weekly.toml) on the example
# logs and biased feedback in data/example/: ingest -> dataset build -> fine-tune MiniLM ->
# score the held-out split -> report -> gate. Prints where report.html is.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
echo "== build (release)"
cargo build --release --quiet --bins
ev="$root/target/release/evalloop"
echo "== model"
scripts/fetch-model.sh
rm -rf out/weekly
echo "== the weekly loop (configs/weekly.toml)"
"$ev" --config configs/weekly.toml run --out out/weekly/run
export EVALLOOP_DB=out/weekly/evalloop.db
echo; echo "== the store after the run"
"$ev" stats
echo; echo "== who leaves feedback"
"$ev" bias
echo; echo "== base evaluator vs people, all labelled requests"
"$ev" correlate --evaluator baseline-unigram-f1 --by cohort --group-key group_id
echo; echo "== the CI gate on the base evaluator (configs/ci.toml)"
"$ev" check --evaluator baseline-unigram-f1 --config configs/ci.toml --junit out/weekly/check.xml \
  || echo "(the gate failed: the base evaluator is out of calibration; see out/weekly/check.xml)"
echo
echo "report: $root/out/weekly/run/report.html"

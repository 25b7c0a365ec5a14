#!/usr/bin/env bash
# The main job on the shipped example data: build, ingest the example logs and feedback into a
# fresh store under out/demo/, and print what the loop measures.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release --quiet --bins
ev="$root/target/release/evalloop"
out="$root/out/demo"
rm -rf "$out"; mkdir -p "$out"
export EVALLOOP_DB="$out/evalloop.db"
"$ev" ingest logs data/example/logs.jsonl
"$ev" ingest feedback data/example/feedback.jsonl
echo; "$ev" stats
first=$(head -1 data/example/feedback.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_id"])')
echo; "$ev" summary "$first"
echo; "$ev" correlate --by cohort --group-key group_id
echo; "$ev" calibration
echo; "$ev" bias
echo; "$ev" disagreements --limit 3 --export "$out/disagreements.jsonl"
echo; "$ev" check --config configs/ci.toml --junit "$out/check.xml" || echo "(the CI gate failed on the baseline evaluator, as expected: see $out/check.xml)"

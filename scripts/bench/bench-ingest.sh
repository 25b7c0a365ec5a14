#!/usr/bin/env bash
# Ingest benchmark: N logs and M feedback events (default 1,000,000 / 200,000) from gen-logs,
# rows/s and peak RSS for `evalloop ingest`, and in the same run `sqlite3 .import` of the same
# rows into the same schema, with our time as a ratio to it.
#   BENCH_LOGS=1000000 BENCH_FEEDBACK=200000 scripts/bench/bench-ingest.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
logs=${BENCH_LOGS:-1000000}
fb=${BENCH_FEEDBACK:-200000}
command -v sqlite3 >/dev/null || { echo "bench-ingest: needs the sqlite3 CLI (apt-get install sqlite3)" >&2; exit 2; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bins
bin="$root/target/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/gen-logs" --logs "$logs" --feedback "$fb" --out "$work" >/dev/null
echo "input: $logs logs ($(du -h "$work/logs.jsonl" | cut -f1)), $fb feedback events ($(du -h "$work/feedback.jsonl" | cut -f1))"

measure() { # label, command...: prints seconds and peak RSS in KB
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null
  read -r secs rss < "$work/time.txt"
  echo "$label $secs $rss"
}
read -r _ l_s l_rss < <(measure logs "$bin/evalloop" --db "$work/ours.db" ingest logs "$work/logs.jsonl")
read -r _ f_s f_rss < <(measure fb "$bin/evalloop" --db "$work/ours.db" ingest feedback "$work/feedback.jsonl")

# The same rows as CSV in the store's column order (untimed), then sqlite3 .import into the same schema.
"$bin/evalloop" --db "$work/peer.db" stats >/dev/null
python3 - "$work" <<'PY'
import csv, json, sys, datetime
d = sys.argv[1]
def us(t):
    return int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1_000_000)
# Schema v5: the narrow eval_logs row, log_texts, scores keyed by (evaluator_id, log_id), the
# other scores in log_scores, feedback keyed by log_id (the line number).
log_ids, evaluators = {}, {}
with open(f"{d}/logs.jsonl") as f, open(f"{d}/logs.csv", "w", newline="") as lo, \
        open(f"{d}/texts.csv", "w", newline="") as to, open(f"{d}/scores.csv", "w", newline="") as so, \
        open(f"{d}/others.csv", "w", newline="") as oo:
    lw, tw, sw, ow = csv.writer(lo), csv.writer(to), csv.writer(so), csv.writer(oo)
    for i, line in enumerate(f, 1):
        r = json.loads(line); m = r["metadata"]
        log_ids[r["request_id"]] = i
        lw.writerow([i, r["request_id"], us(r["timestamp"]), m.get("user_cohort"), m.get("use_case"), m.get("user_id"),
                     m.get("prompt_version"), ""])
        tw.writerow([i, r["prompt"], r["output"], json.dumps(m, separators=(",", ":"))])
        other = {k: v for k, v in r["eval_scores"].items() if k != "overall"}
        e = evaluators.setdefault(r.get("evaluator", "baseline"), len(evaluators) + 1)
        sw.writerow([e, i, r["eval_scores"]["overall"]])
        if other:
            ow.writerow([i, e, json.dumps(other, separators=(",", ":"), sort_keys=True)])
with open(f"{d}/evaluators.csv", "w", newline="") as eo:
    csv.writer(eo).writerows([i, name] for name, i in evaluators.items())
with open(f"{d}/feedback.jsonl") as f, open(f"{d}/feedback.csv", "w", newline="") as fo:
    w = csv.writer(fo)
    for line in f:
        r = json.loads(line); v = r.get("value", True)
        num = None if isinstance(v, str) else float(v)
        w.writerow([r["event_id"], r["request_id"], log_ids.get(r["request_id"]), r["feedback_type"], num,
                    v if isinstance(v, str) else None, r.get("user_id"), us(r["timestamp"])])
PY
read -r _ p_s p_rss < <(measure peer sqlite3 "$work/peer.db" "PRAGMA journal_mode=WAL;" "PRAGMA synchronous=NORMAL;" \
  ".import --csv $work/logs.csv eval_logs" ".import --csv $work/texts.csv log_texts" ".import --csv $work/evaluators.csv evaluators" \
  ".import --csv $work/scores.csv eval_scores" ".import --csv $work/others.csv log_scores" \
  ".import --csv $work/feedback.csv feedback_events")

python3 - "$logs" "$fb" "$l_s" "$l_rss" "$f_s" "$f_rss" "$p_s" "$p_rss" <<'PY'
import sys
logs, fb = int(sys.argv[1]), int(sys.argv[2])
l_s, l_rss, f_s, f_rss, p_s, p_rss = map(float, sys.argv[3:])
ours = l_s + f_s
print(f"evalloop ingest logs      {l_s:7.2f} s  {logs / l_s:10,.0f} rows/s  peak RSS {l_rss / 1024:6.1f} MB")
print(f"evalloop ingest feedback  {f_s:7.2f} s  {fb / f_s:10,.0f} rows/s  peak RSS {f_rss / 1024:6.1f} MB")
print(f"evalloop total            {ours:7.2f} s  {(logs + fb) / ours:10,.0f} rows/s  (target >= 150,000 rows/s, RSS < 200 MB)")
print(f"sqlite3 .import (CSV)     {p_s:7.2f} s  {(logs + fb) / p_s:10,.0f} rows/s  peak RSS {p_rss / 1024:6.1f} MB")
print(f"ratio ours / sqlite3 .import time: {ours / p_s:.2f}x")
PY

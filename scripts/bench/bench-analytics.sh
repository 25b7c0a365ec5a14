#!/usr/bin/env bash
# Analytics benchmark: N logs / M feedback (default 10,000,000 / 1,000,000) from gen-logs,
# ingested once; then `correlate`, `calibration`, `bias` and `disagreements --limit 1000`, each
# with wall time and peak RSS, and in the same run the same aggregation in DuckDB (Python package
# `duckdb`, over the same rows loaded from the same JSONL into a DuckDB file), printed as ratios
# of the median times (one warm-up, then BENCH_REPEAT=3 alternating runs per side).
#   BENCH_LOGS=2000000 BENCH_FEEDBACK=200000 scripts/bench/bench-analytics.sh
# BENCH_BASE_BIN (a directory with another build's evalloop) and BENCH_BASE_DB (its store, e.g. a
# copy of this one kept at the old schema): that build runs too, in the same rounds, alternating.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
logs=${BENCH_LOGS:-10000000}
fb=${BENCH_FEEDBACK:-1000000}
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bins
bin=${BENCH_BIN_DIR:-$root/target/release}  # BENCH_BIN_DIR: time another build
work=${BENCH_DIR:-$(mktemp -d)}
[ -n "${BENCH_DIR:-}" ] || trap 'rm -rf "$work"' EXIT
# BENCH_REUSE=1 with BENCH_DIR: time the queries again on the stores a previous run left there.
if [ -z "${BENCH_REUSE:-}" ]; then
  "$bin/gen-logs" --logs "$logs" --feedback "$fb" --out "$work" >/dev/null
  "$bin/evalloop" --db "$work/t.db" ingest logs "$work/logs.jsonl" >/dev/null
  "$bin/evalloop" --db "$work/t.db" ingest feedback "$work/feedback.jsonl" >/dev/null
fi
echo "input: $logs logs, $fb feedback events (gen-logs, seed 7)"
"$bin/evalloop" --db "$work/t.db" stats >/dev/null  # migrate first, outside the timings
[ -z "${BENCH_BASE_BIN:-}" ] || "$BENCH_BASE_BIN/evalloop" --db "$BENCH_BASE_DB" stats >/dev/null

python3 - "$work" "$bin/evalloop" "${BENCH_BASE_BIN:+$BENCH_BASE_BIN/evalloop}" "${BENCH_BASE_DB:-}" <<'PY'
import json, os, resource, subprocess, sys, time
import duckdb
work, evalloop, base_bin, base_db = sys.argv[1:5]

def ours(*args, binary=None, db=None):
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", binary or evalloop, "--db", db or f"{work}/t.db", "--json", *args],
                       capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"evalloop {' '.join(args)} failed: {p.stderr}")
    rss_kb = int(p.stderr.strip().splitlines()[-1])
    return dt, rss_kb / 1024, json.loads(p.stdout)

reuse = os.environ.get("BENCH_REUSE") and os.path.exists(f"{work}/peer.duckdb")
con = duckdb.connect(f"{work}/peer.duckdb")
con.execute("SET threads TO 2")
if not reuse:
  con.execute(f"""CREATE OR REPLACE TABLE eval_logs AS SELECT request_id, timestamp, prompt, output,
    CAST(eval_scores.overall AS DOUBLE) AS overall, metadata.user_cohort AS cohort
    FROM read_json('{work}/logs.jsonl', format='newline_delimited', columns={{request_id: 'VARCHAR',
      timestamp: 'VARCHAR', prompt: 'VARCHAR', output: 'VARCHAR', eval_scores: 'STRUCT(overall DOUBLE)',
      metadata: 'STRUCT(user_cohort VARCHAR)'}})""")
  con.execute(f"""CREATE OR REPLACE TABLE feedback_events AS SELECT * FROM read_json('{work}/feedback.jsonl',
    format='newline_delimited', columns={{event_id: 'VARCHAR', request_id: 'VARCHAR', feedback_type: 'VARCHAR',
      value: 'JSON', user_id: 'VARCHAR', timestamp: 'VARCHAR'}})""")
HUMAN = """WITH h AS (SELECT request_id, AVG(CASE feedback_type WHEN 'explicit_thumbs_up' THEN 5.0
      WHEN 'explicit_thumbs_down' THEN 1.0 WHEN 'explicit_rating' THEN CAST(value AS DOUBLE) END) AS human
    FROM feedback_events GROUP BY request_id),
  j AS (SELECT l.request_id, l.overall, h.human, l.cohort, l.prompt, l.output FROM h JOIN eval_logs l USING (request_id)
    WHERE h.human IS NOT NULL)"""
peer = {
  "correlate": HUMAN + """, r AS (SELECT overall, human, rank() OVER (ORDER BY overall) AS rx0,
      count(*) OVER (PARTITION BY overall) AS cx, rank() OVER (ORDER BY human) AS ry0,
      count(*) OVER (PARTITION BY human) AS cy FROM j)
    SELECT count(*), corr(overall, human), corr(rx0 + (cx - 1) / 2.0, ry0 + (cy - 1) / 2.0) FROM r""",
  "calibration": HUMAN + """ SELECT floor(least(overall, 0.999999) * 10) AS bin, count(*), avg(overall),
      avg(CASE WHEN human >= 4 THEN 1.0 ELSE 0.0 END), avg(power(overall - CASE WHEN human >= 4 THEN 1.0 ELSE 0.0 END, 2))
    FROM j WHERE human >= 4 OR human <= 2 GROUP BY bin ORDER BY bin""",
  "bias": """WITH h AS (SELECT request_id, max(feedback_type LIKE 'explicit%')::INT AS ex,
      max(feedback_type LIKE 'implicit%')::INT AS im, AVG(CASE feedback_type WHEN 'explicit_thumbs_up' THEN 5.0
      WHEN 'explicit_thumbs_down' THEN 1.0 WHEN 'explicit_rating' THEN CAST(value AS DOUBLE) END) AS human
      FROM feedback_events GROUP BY request_id)
    SELECT l.cohort, count(*), count(h.request_id), sum(h.ex), sum(h.im), count(h.human), sum((h.human >= 4)::INT),
      avg(l.overall) FROM eval_logs l LEFT JOIN h USING (request_id) GROUP BY l.cohort ORDER BY l.cohort""",
  "disagreements": HUMAN + """ SELECT request_id, overall, human, cohort, prompt, output FROM j
    WHERE (overall > 0.7 AND human <= 2) OR (overall <= 0.7 AND human >= 4) ORDER BY request_id LIMIT 1000""",
}
cmds = {"correlate": ["correlate"], "calibration": ["calibration"], "bias": ["bias"],
        "disagreements": ["disagreements", "--limit", "1000"]}
def theirs(name):
    t = time.perf_counter(); con.execute(peer[name]).fetchall(); return time.perf_counter() - t

# Each side runs once untimed (the page cache warm for both), then BENCH_REPEAT (default 3) times
# alternately; the medians are compared (other jobs share the machine's cores).
repeat = int(os.environ.get("BENCH_REPEAT", "3"))
median = lambda xs: sorted(xs)[len(xs) // 2]
base = lambda *args: ours(*args, binary=base_bin, db=base_db)
head = f"{'command':<28} {'evalloop s':>10} {'RSS MB':>8} {'duckdb s':>9} {'ratio':>7}"
print(head + (f" {'base s':>8} {'RSS MB':>8} {'ratio':>7} {'new/base':>8}" if base_bin else ""))
with open("/proc/loadavg") as f:
    load = [f.read().split()[0]]
for name, args in cmds.items():
    ours(*args); theirs(name)
    if base_bin:
        base(*args)
    runs, peers, bases = [], [], []
    for _ in range(repeat):
        if base_bin:
            bases.append(base(*args))
        runs.append(ours(*args)); peers.append(theirs(name))
        if base_bin and json.dumps(bases[-1][2], sort_keys=True) != json.dumps(runs[-1][2], sort_keys=True):
            sys.exit(f"{name}: the base build answers differently")
    dt, rss = median([r[0] for r in runs]), max(r[1] for r in runs)
    pt = median(peers)
    line = f"{' '.join(args):<28} {dt:10.2f} {rss:8.1f} {pt:9.2f} {dt / pt:6.2f}x"
    if base_bin:
        bt, brss = median([r[0] for r in bases]), max(r[1] for r in bases)
        line += f" {bt:8.2f} {brss:8.1f} {bt / pt:6.2f}x {dt / bt:7.2f}x"
    print(line)
    with open("/proc/loadavg") as f:
        load.append(f.read().split()[0])
print(f"load average (1 min) before and after each command: {' '.join(load)}")
print("target: within 2x of DuckDB, peak RSS under 1 GB (DuckDB threads = 2)")
PY

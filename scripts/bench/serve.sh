#!/usr/bin/env bash
# evalloop serve under load, on loopback: the in-repo load generator (evalloop-load, 64 keep-alive
# connections) posts single feedback events for BENCH_SECONDS (requests/s, p50 and p99 latency),
# then batches of 100 events (events/s); in the same run `evalloop ingest feedback` takes the
# same number of the same kind of events from a JSONL file (rows/s), and the batched POSTs are
# printed as a ratio of it. On SQLite always; on PostgreSQL too when EVALLOOP_TEST_PG is set:
#   scripts/bench/serve.sh
#   scripts/with-postgres.sh scripts/bench/serve.sh
# The load generator runs on the same cores as the service (2 on the reference machine).
# BENCH_SECONDS (default 10), BENCH_CONNECTIONS (64), BENCH_QUEUE_LOAD=1 also overloads a server
# with a small queue and reports how many requests got 503 and its peak RSS.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
secs=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-64}
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p evalloop -p evalloop-serve --bins
bin=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d)
pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_server() { # DB CONFIG -> sets pid, addr
  "$bin/evalloop" --db "$1" --config "$2" serve --addr 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
  pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$work/serve.out" 2>/dev/null && break
    sleep 0.1
  done
  addr=$(sed -n 's|^evalloop serve: listening on http://||p' "$work/serve.out")
  [ -n "$addr" ] || { cat "$work/serve.err" >&2; exit 3; }
}

stop_server() {
  kill -TERM "$pid"; wait "$pid"; pid=""
}

field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

run_store() { # NAME DB INGEST_DB
  local name=$1 db=$2 ingest_db=$3
  printf '[serve]\nrate_limit_per_s = 0\n' >"$work/bench.toml"
  key=$("$bin/evalloop" --db "$db" --json keys create --name "bench-$RANDOM" --scope ingest | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  start_server "$db" "$work/bench.toml"
  single=$("$bin/evalloop-load" --addr "$addr" --key "$key" --connections "$conns" --batch 1 --duration-s "$secs" --prefix "s-$name-$RANDOM")
  batched=$("$bin/evalloop-load" --addr "$addr" --key "$key" --connections "$conns" --batch 100 --duration-s "$secs" --prefix "b-$name-$RANDOM")
  stop_server
  n=$(field "$batched" events_acknowledged)
  "$bin/evalloop-load" --emit "$work/events.jsonl" --events "$n" --prefix "f-$name-$RANDOM"
  "$bin/evalloop" --db "$ingest_db" stats >/dev/null  # migrate outside the timing
  t0=$(date +%s.%N)
  "$bin/evalloop" --db "$ingest_db" ingest feedback "$work/events.jsonl" >/dev/null
  t1=$(date +%s.%N)
  python3 - "$name" "$single" "$batched" "$n" "$t0" "$t1" <<'PY'
import json, sys
name, single, batched, n, t0, t1 = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
ingest = n / (t1 - t0)
print(f"{name}: single-event POSTs: {single['requests_per_s']:,.0f} requests/s, p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms "
      f"({single['requests']:,} requests, statuses {single['statuses']})")
print(f"{name}: batched POSTs (100 events): {batched['events_per_s']:,.0f} events/s, p50 {batched['p50_ms']:.2f} ms, p99 {batched['p99_ms']:.2f} ms "
      f"({batched['events_acknowledged']:,} events, statuses {batched['statuses']})")
print(f"{name}: evalloop ingest feedback of {n:,} events from a file: {ingest:,.0f} rows/s in {t1 - t0:.2f} s")
print(f"{name}: batched POSTs / file ingest: {batched['events_per_s'] / ingest:.2f}")
PY
}

echo "evalloop serve on 127.0.0.1, $conns connections, $secs s per phase, $(nproc) cores"
run_store sqlite "$work/serve.db" "$work/ingest.db"
if [ -n "${EVALLOOP_TEST_PG:-}" ]; then
  run_store postgres "$EVALLOOP_TEST_PG" "$EVALLOOP_TEST_PG"
fi

if [ -n "${BENCH_QUEUE_LOAD:-}" ]; then
  # Overload: a queue of 2,000 rows, 256 connections of 100-event batches.
  printf '[serve]\nrate_limit_per_s = 0\nqueue_rows = 2000\n' >"$work/small.toml"
  key=$("$bin/evalloop" --db "$work/over.db" --json keys create --name over --scope ingest | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  start_server "$work/over.db" "$work/small.toml"
  over=$("$bin/evalloop-load" --addr "$addr" --key "$key" --connections 256 --batch 100 --duration-s "$secs" --prefix over)
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  stop_server
  echo "overload (queue_rows 2000, 256 connections x 100 events): statuses $(field "$over" statuses), server peak RSS ${rss} kB"
fi

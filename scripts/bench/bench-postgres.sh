#!/usr/bin/env bash
# Ingest and query benchmark, PostgreSQL and SQLite side by side in the same run.
#
#   scripts/bench/bench-postgres.sh                                   # 10,000,000 logs / 1,000,000 feedback
#   BENCH_LOGS=1000000 BENCH_FEEDBACK=200000 scripts/bench/bench-postgres.sh
#
# Generates the data with the deterministic generator (src/bin/gen-logs.rs), ingests it with
# `evalloop ingest` into a fresh SQLite file and into a throwaway PostgreSQL cluster
# (scripts/with-postgres.sh), and prints rows/s for each and the time of the query `correlate`
# stands on (Store::scored_requests, default policy; examples/bench_query.rs), before and after
# ANALYZE on PostgreSQL. Environment: BENCH_LOGS, BENCH_FEEDBACK, BENCH_BATCH (rows per
# transaction, default 10000), BENCH_DIR (where data and the SQLite file go; default a temp dir,
# removed at the end), PG_SERVER_OPTS (server settings; default a modest bulk-load setup below).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--inside" ]; then
    WORK=$2
    BIN=target/release/evalloop
    Q=target/release/examples/bench_query
    BATCH=${BENCH_BATCH:-10000}
    now() { date +%s.%N; }
    rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
    secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
    run_backend() {
        local name=$1 db=$2 t0 t1 t2
        echo "== $name ($db)"
        t0=$(now)
        "$BIN" --db "$db" ingest logs "$WORK/logs.jsonl" --batch-size "$BATCH"
        t1=$(now)
        "$BIN" --db "$db" ingest feedback "$WORK/feedback.jsonl" --batch-size "$BATCH"
        t2=$(now)
        echo "$name ingest logs: $(secs "$t0" "$t1") s, $(rate "$N_LOGS" "$t0" "$t1") rows/s"
        echo "$name ingest feedback: $(secs "$t1" "$t2") s, $(rate "$N_FEEDBACK" "$t1" "$t2") rows/s"
        "$Q" "$db"
    }
    N_LOGS=$(wc -l <"$WORK/logs.jsonl")
    N_FEEDBACK=$(wc -l <"$WORK/feedback.jsonl")
    run_backend sqlite "$WORK/bench.db"
    echo "sqlite file size: $(du -sh "$WORK/bench.db" | cut -f1)"
    run_backend postgres "$EVALLOOP_DB"
    psql -X -q -d "$EVALLOOP_DB" -c "ANALYZE"
    echo "-- postgres after ANALYZE:"
    "$Q" "$EVALLOOP_DB"
    echo "postgres database size: $(psql -X -qAt -d "$EVALLOOP_DB" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"
    exit 0
fi

N_LOGS=${BENCH_LOGS:-10000000}
N_FEEDBACK=${BENCH_FEEDBACK:-1000000}
cargo build --release --bin evalloop --bin gen-logs --example bench_query

if [ -n "${BENCH_DIR:-}" ]; then
    WORK=$BENCH_DIR
    mkdir -p "$WORK"
    rm -f "$WORK/bench.db" "$WORK/bench.db-wal" "$WORK/bench.db-shm"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/evalloop-bench.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi

echo "generating $N_LOGS logs / $N_FEEDBACK feedback events in $WORK"
t0=$(date +%s.%N)
target/release/gen-logs --logs "$N_LOGS" --feedback "$N_FEEDBACK" --out "$WORK" >/dev/null
echo "generated in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s ($(du -sh "$WORK" | cut -f1))"

export PG_SERVER_OPTS=${PG_SERVER_OPTS:--c shared_buffers=512MB -c max_wal_size=8GB -c checkpoint_timeout=30min -c work_mem=64MB -c maintenance_work_mem=256MB}
scripts/with-postgres.sh scripts/bench/bench-postgres.sh --inside "$WORK"

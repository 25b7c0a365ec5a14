#!/usr/bin/env bash
# Runs CMD... against a throwaway PostgreSQL cluster, then removes the cluster.
#
#   scripts/with-postgres.sh cargo test --release --workspace
#   scripts/with-postgres.sh sh -c 'evalloop stats'
#
# Installs PostgreSQL from Debian packages when no `initdb` is found (apt-get update, then
# apt-get install -y postgresql); initdb's a cluster in a temp dir, starts it with pg_ctl on a
# free port on 127.0.0.1 only (no TCP on other interfaces; its unix socket sits in the temp
# dir), creates database `evalloop`, exports
#   EVALLOOP_DB=postgres://evalloop@127.0.0.1:PORT/evalloop   (what the CLI reads)
#   EVALLOOP_TEST_PG=$EVALLOOP_DB                              (what the test suite reads)
#   EVALLOOP_TEST_PG_RESTART="... pg_ctl ... restart"           (how a probe restarts the server)
# for CMD, runs it, stops and deletes the cluster (also on Ctrl-C), and exits with CMD's status.
# PostgreSQL refuses to run as root: as root, the server runs as user `postgres` (created if
# missing); CMD itself runs as the calling user.
#
# Environment: PG_TMP (where the cluster goes, default $TMPDIR or /tmp), PG_SERVER_OPTS (extra
# `-c name=value` settings for the server), PG_KEEP_LOG=1 (print the server log at the end).
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

find_bindir() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
        return 0
    fi
    return 1
}

if ! BINDIR=$(find_bindir); then
    echo "with-postgres: PostgreSQL not found; installing it from Debian packages" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "with-postgres: need root to apt-get install postgresql (or install it yourself)" >&2
        exit 3
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BINDIR=$(find_bindir) || { echo "with-postgres: no initdb after installing postgresql" >&2; exit 3; }
fi

# As root, run the server as an unprivileged user.
AS=()
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    AS=(runuser -u postgres --)
fi

WORK=$(mktemp -d "${PG_TMP:-${TMPDIR:-/tmp}}/evalloop-pg.XXXXXX")
DATA="$WORK/data"
LOG="$WORK/server.log"
if [ "${#AS[@]}" -gt 0 ]; then
    chown postgres "$WORK"
fi

cleanup() {
    local status=$?
    if [ -f "$DATA/postmaster.pid" ]; then
        "${AS[@]}" "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ "${PG_KEEP_LOG:-0}" = 1 ] && [ -f "$LOG" ]; then
        echo "---- postgres server log ----" >&2
        cat "$LOG" >&2
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${AS[@]}" "$BINDIR/initdb" -D "$DATA" -U evalloop --auth=trust --no-locale -E UTF8 >"$WORK/initdb.log" 2>&1 || {
    cat "$WORK/initdb.log" >&2
    exit 3
}

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Another process may take the port between the check and the start: try a few.
PORT=""
for _ in 1 2 3 4 5; do
    p=$(free_port) || break
    if "${AS[@]}" "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
        -o "-p $p -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK ${PG_SERVER_OPTS:-}" \
        start >/dev/null 2>&1; then
        PORT=$p
        break
    fi
done
if [ -z "$PORT" ]; then
    echo "with-postgres: could not start PostgreSQL; server log:" >&2
    cat "$LOG" >&2 || true
    exit 3
fi

"$BINDIR/psql" -X -q -h 127.0.0.1 -p "$PORT" -U evalloop -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE evalloop" >&2

export EVALLOOP_DB="postgres://evalloop@127.0.0.1:$PORT/evalloop"
export EVALLOOP_TEST_PG="$EVALLOOP_DB"
# How a test restarts this server (the probe of a restart in the middle of an ingest): a command
# line of words without spaces in them.
export EVALLOOP_TEST_PG_RESTART="${AS[*]} $BINDIR/pg_ctl -D $DATA -l $LOG -m fast -w -t 60 restart"
echo "with-postgres: PostgreSQL $("$BINDIR/postgres" -V | awk '{print $3}') at $EVALLOOP_DB" >&2

set +e
"$@"
status=$?
set -e
exit "$status"

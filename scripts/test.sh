#!/usr/bin/env bash
# The test suite, in release mode (the model tests are far too slow in debug):
# - puts the real MiniLM in place (scripts/fetch-model.sh) so the tests that need it run
#   (EVALLOOP_TEST_MODEL_DIR);
# - runs every test against SQLite and, through scripts/with-postgres.sh (a throwaway
#   PostgreSQL cluster, installed from Debian packages if missing), against PostgreSQL too.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
export EVALLOOP_TEST_MODEL_DIR="${EVALLOOP_TEST_MODEL_DIR:-$PWD/models/all-MiniLM-L6-v2}"
exec scripts/with-postgres.sh cargo test --release --workspace "$@"

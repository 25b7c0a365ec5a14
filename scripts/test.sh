#!/usr/bin/env bash
# The test suite, in release mode (the model tests are far too slow in debug):
# - puts the real MiniLM in place (scripts/fetch-model.sh) so the tests that need it run
#   (EVALLOOP_TEST_MODEL_DIR);
# - runs every test against SQLite and, through scripts/with-postgres.sh (a throwaway
#   PostgreSQL cluster, installed from Debian packages if missing), against PostgreSQL too.
# - then checks the `export` files from Python (tests/python/check_export.py) and the encoder
#   parity fixtures (tests/python/check_encoder_fixtures.py) when the venv of
#   scripts/python-env.sh is there;
# - then builds the Python package and tests it against the command line
#   (scripts/python-bindings.sh; skipped, and said so, when its venv cannot be made).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
export EVALLOOP_TEST_MODEL_DIR="${EVALLOOP_TEST_MODEL_DIR:-$PWD/models/all-MiniLM-L6-v2}"
scripts/with-postgres.sh cargo test --release --workspace "$@"
# The export files as their users read them (datasets, TRL's trainers), with the venv that
# scripts/python-env.sh makes; skipped, and said so, without it.
venv="${EVALLOOP_PY_VENV:-$PWD/target/py-export}"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import datasets, trl, torch' 2>/dev/null; then
    "$venv/bin/python" tests/python/check_export.py "${CARGO_TARGET_DIR:-$PWD/target}/release/evalloop"
    # The committed encoder fixtures against this venv's transformers (the Rust parity test
    # compares evalloop with the same expected logits).
    "$venv/bin/python" tests/python/check_encoder_fixtures.py
else
    echo "tests/python/check_export.py SKIPPED: no venv with datasets and trl at $venv (scripts/python-env.sh)" >&2
fi
# The Python package (crates/evalloop-py): its wheel, built with maturin into the same target
# directory, installed into a venv and checked against the binary (tests/python/test_bindings.py),
# on SQLite and on a throwaway PostgreSQL cluster.
scripts/with-postgres.sh scripts/python-bindings.sh

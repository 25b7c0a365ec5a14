#!/usr/bin/env bash
# Builds the Python package `evalloop` (crates/evalloop-py) into a wheel with maturin, installs
# the wheel into a venv and runs tests/python/test_bindings.py against the `evalloop` binary of
# the same tree (built first if missing).
#
# Usage: scripts/python-bindings.sh [--venv-only | PYTEST_ARGS...]
#   --venv-only: only make the venv (what .ci/run does before scripts/test.sh).
#   venv: target/py-bindings, or $EVALLOOP_PY_BINDINGS_VENV (made once: maturin, pytest, numpy,
#   pyarrow from PyPI, pinned); the wheel goes to $CARGO_TARGET_DIR/wheels and reuses the
#   compiled dependencies of $CARGO_TARGET_DIR (default target/). Needs python3 (3.10+) with
#   the venv module. When the venv cannot be made (no PyPI, no venv module) the check is
#   skipped and says so (exit 0); a failing build or test fails (exit 1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
target="${CARGO_TARGET_DIR:-$here/target}"
venv="${EVALLOOP_PY_BINDINGS_VENV:-$here/target/py-bindings}"
# Pinned so that CI builds and checks with the versions this was written for (numpy 2.4 is the
# last line for Python 3.11).
packages=(maturin==1.16.0 pytest==9.2.0 numpy==2.4.6 pyarrow==26.0.1)

start=$(date +%s)
if ! { [[ -x "$venv/bin/maturin" ]] && "$venv/bin/python" -c 'import pytest, numpy, pyarrow' 2>/dev/null; }; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" || ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${packages[@]}"; then
        rm -rf "$venv"
        echo "tests/python/test_bindings.py SKIPPED: could not make the venv $venv (${packages[*]})" >&2
        exit 0
    fi
    echo "python-bindings: installed ${packages[*]} into $venv in $(( $(date +%s) - start )) s"
fi
if [[ "${1:-}" == "--venv-only" ]]; then
    exit 0
fi

t0=$(date +%s)
bin="$target/release/evalloop"
[[ -x "$bin" ]] || cargo build --release --bin evalloop
rm -f "$target"/wheels/evalloop-*.whl
"$venv/bin/maturin" build --release --quiet -m crates/evalloop-py/Cargo.toml --out "$target/wheels" -i "$venv/bin/python"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --force-reinstall --no-deps "$target"/wheels/evalloop-*.whl
t1=$(date +%s)
echo "python-bindings: wheel built and installed in $(( t1 - t0 )) s"

export EVALLOOP_BIN="$bin"
export EVALLOOP_TEST_MODEL_DIR="${EVALLOOP_TEST_MODEL_DIR:-$here/models/all-MiniLM-L6-v2}"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python/test_bindings.py "$@"
echo "python-bindings: tests ran in $(( $(date +%s) - t1 )) s"

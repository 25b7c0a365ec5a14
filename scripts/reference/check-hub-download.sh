#!/usr/bin/env bash
# Manual check of the `hub-download` feature without hub access: builds with the feature,
# serves models/all-MiniLM-L6-v2 from a local stand-in of the hub (scripts/reference/mock_hub.py, via
# HF_ENDPOINT) and trains one step from the repo id `acme/minilm` into an empty cache:
#   1. with HF_HUB_OFFLINE=1 the train must fail, naming the repo, the cache and the reason;
#   2. without it the files must be downloaded into the hub cache layout and the train succeed;
#   3. a second run must find them in the cache with the stand-in stopped.
# Usage: scripts/reference/check-hub-download.sh   (needs scripts/fetch-model.sh to have run)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${MODEL:-models/all-MiniLM-L6-v2}"
PORT="${PORT:-8765}"
[[ -f "$MODEL/model.safetensors" ]] || { echo "no model in $MODEL (scripts/fetch-model.sh)" >&2; exit 2; }
cargo build --release --features hub-download
B=target/release/evalloop
T="$(mktemp -d)"
python3 scripts/reference/mock_hub.py "$MODEL" "$PORT" & server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$T"' EXIT
sleep 1
"$B" --db "$T/e.db" ingest logs data/example/logs.jsonl > /dev/null
"$B" --db "$T/e.db" ingest feedback data/example/feedback.jsonl > /dev/null
"$B" --db "$T/e.db" dataset build --out "$T/ds" > /dev/null 2>&1
printf '[train]\nbase_model = "acme/minilm"\nmax_steps = 1\nbatch_size = 4\nmax_length = 32\n' > "$T/t.toml"
export HF_HUB_CACHE="$T/cache" HF_ENDPOINT="http://127.0.0.1:$PORT"
if HF_HUB_OFFLINE=1 "$B" --config "$T/t.toml" train --dataset "$T/ds" --out "$T/m" 2> "$T/err"; then
  echo "FAIL: trained with HF_HUB_OFFLINE=1 and an empty cache" >&2; exit 1
fi
grep -q "HF_HUB_OFFLINE is set" "$T/err" || { echo "FAIL: unclear offline error: $(cat "$T/err")" >&2; exit 1; }
"$B" --config "$T/t.toml" train --dataset "$T/ds" --out "$T/m" > /dev/null 2>&1
ls "$T"/cache/models--acme--minilm/snapshots/*/model.safetensors > /dev/null
kill $server; wait $server 2>/dev/null || true
HF_HUB_OFFLINE=1 "$B" --config "$T/t.toml" train --dataset "$T/ds" --out "$T/m2" > /dev/null 2>&1
echo "hub-download: offline error, download into the cache layout, offline reuse: ok"

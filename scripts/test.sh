#!/usr/bin/env bash
# The test suite: every Rust test in release mode (the model tests are too slow in debug).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release "$@"

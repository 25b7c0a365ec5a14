#!/usr/bin/env bash
# Active learning with annotation queues, measured: a simulated reviewer labels the picks of
# `random` queues (by request and by whole prompt group) and `disagreement` queues by whole group
# in rounds; after each round the evaluator is retrained with configs/weekly.toml's [train]
# settings and scored on held-out groups (group-level Spearman per round); then the coverage of
# the inverse-probability intervals (mean label, the evaluator's correlation with the labels)
# over repeated queue draws. The figures are in BENCHMARKS.md ("Annotation queues") and
# docs/guide/queues.md.
#
# Usage: scripts/bench/active.sh [JUDGEMENTS_DIR] [-- DRIVER OPTIONS]
#   default: Newsroom coherence, 12 held-out groups, seeds 1 2, 4 rounds of 21 labels (3 whole
#   groups), rater noise sd 0.5, coverage over 200 draws of 56 labels
#   (see scripts/bench/active_driver.py --help); BAGEL:
#   scripts/bench/active.sh -- --dataset bagel --dimension quality --holdout-groups 61 --k 20
#   `uncertainty` among --strategies trains an ensemble each round (--ensemble-seeds, default 8 9
#   besides the config's seed): three times the training of the other strategies.
# Needs: a release build (cargo build --release), the base model in the hub cache
# (scripts/fetch-model.sh), python3 (standard library only). 11 training runs a seed of 1-2
# minutes each (Newsroom) or under a minute (BAGEL) on a quiet 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA="${1:-}"
[[ "$DATA" == "--" ]] && DATA=""
if [[ -z "$DATA" ]]; then
  for d in ../shared/data/judgements ../../shared/data/judgements /work/shared/data/judgements; do
    [[ -d "$d" ]] && DATA="$d" && break
  done
else
  shift
fi
[[ -d "$DATA" ]] || { echo "no judgements directory; pass it as the first argument" >&2; exit 2; }
[[ "${1:-}" == "--" ]] && shift
BIN="${EVALLOOP_BIN:-${CARGO_TARGET_DIR:-target}/release/evalloop}"
[[ -x "$BIN" ]] || cargo build --release
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# configs/weekly.toml's [train] settings (and its corruption mix), nothing else; TRAIN_CONFIG
# names another file to take them from (for example an earlier weekly.toml, to extend curves
# measured with it: `TRAIN_CONFIG=<(git show REV:configs/weekly.toml)`).
python3 - "${TRAIN_CONFIG:-configs/weekly.toml}" "$WORK/train.toml" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
out, keep = [], False
for line in open(src):
    s = line.strip()
    if s.startswith("["):
        keep = s.startswith("[train")
    if keep:
        out.append(line)
open(dst, "w").write("".join(out))
PY
python3 scripts/bench/active_driver.py "$BIN" "$DATA" "$WORK/run" --train-config "$WORK/train.toml" "$@"

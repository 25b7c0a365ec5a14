#!/usr/bin/env bash
# Quality benchmark: does the retrained evaluator agree with people, ranking the
# outputs of one prompt as experts do?
#
# For each dataset (Newsroom coherence and relevance, BAGEL quality, REALSumm's
# litepyramid_recall: 100 documents of 24 summaries, about five times a Newsroom run; from the
# judgements directory) and each seed:
#   1. `evalloop simulate` with biased feedback: cohorts by system (free, pro, enterprise at
#      feedback rates 0.3 / 0.5 / 0.8), outcome-dependent feedback (outcome_slope = 1.5: bad
#      outputs are reported more) and per-cohort standards (shift free -0.5, enterprise +0.5),
#      with HOLDOUT whole groups (prompts) kept out of logs and feedback;
#   2. ingest, `dataset build` (graded labels, groups = metadata group_id, train/validation split
#      by whole groups) under weighting `none` and `inverse_rate`; besides, with weighting `none`:
#      ds-none-imp (implicit labels: [human] implicit_usage = 4, implicit_edit = 3,
#      implicit_discard = 2, the example values of docs/configuration.md; the 0.8 / 0.2 split), ds-none-imp-nv (the
#      same, no validation split: train_fraction 1.0) and ds-none-nv (explicit labels, no
#      validation split); without a validation split both implementations keep the last epoch;
#   3. `evalloop train` from MiniLM under each configuration below, then `evalloop score` on
#      the held-out groups;
#   4. the group-level Spearman with the experts' scores on the held-out groups (mean over
#      groups of the within-group Spearman, groups with a constant column skipped) of the
#      baseline evaluator (simulate's unigram F1) and of every trained model.
# Printed: per dataset and configuration, the mean and spread (population sd) over seeds, and
# the mean training time.
#
# Configurations (name: objective, weighting, truncation, extra keys):
#   graded        graded MSE, no weighting, longest-first   (the plain port of the usual recipe)
#   graded_inv    graded MSE, inverse_rate weights
#   graded_of     graded MSE, output_first truncation
#   pairwise_of   pairwise logistic loss, output_first
#   gp_of         graded+pairwise, output_first, eval_metric group_spearman, layer_lr_decay 0.9
#   gp_of_inv     as gp_of with inverse_rate weights
#   gp_of_sp      as gp_of with eval_metric spearman (dataset-level validation Spearman: with
#                 groups of two, few validation groups have two labelled outputs)
#   gp_of_b       as gp_of with pair_scope = "batch": pairs of any two outputs of a batch
#   gp_of_ens     as gp_of, an ensemble of three members (seeds s, s+100, s+200) whose mean
#                 score is the evaluator
#   gp_of_mt      as gp_of, multi-task (docs/guide/multi-dimension.md): the dataset's other human
#                 dimensions (Newsroom coherence: fluency, informativeness, relevance; BAGEL
#                 quality: informativeness, naturalness) as extra outputs, from the dimension
#                 ratings simulate emits (--dimensions) on the same rated requests; the primary
#                 feedback, labels and splits are those of the other configurations
#   gp_of_imp     as gp_of on the dataset with implicit labels (ds-none-imp): the human-score
#                 policy maps the implicit signals simulate emits (used 4, edited 3, discarded 2,
#                 docs/configuration.md's example values) and averages them with the explicit feedback, so more requests
#                 are labelled (docs/research/quality-bench.md, "Implicit labels and no validation split")
#   gp_of_imp_nv  as gp_of on ds-none-imp-nv: implicit labels, no validation split
#                 (train_fraction 1.0): the last of the EPOCHS epochs is kept, no epoch selection
#   gp_of_nv      as gp_of on ds-none-nv: explicit labels as ds-none, no validation split
#                 (eval_metric unused: nothing to select on)
#   gp_of_cor     as gp_of with corruption_pairs = 1.0: each training output also ranked above a
#                 corrupted copy of itself (words dropped, two swapped); same dataset as gp_of
#   gp_of_u       as gp_of on ds-none-u (ds-none's labelled rows plus unlabelled.jsonl: every
#                 logged request without a human score outside the validation groups, [dataset]
#                 unlabelled) with corruption_pairs = 1.0, corruption = "swap", unlabelled = true:
#                 each output (labelled or not) also ranked above a copy of itself with a few
#                 neighbouring words swapped (same words, same length), copies drawn per epoch
#   pw_u          objective "pairwise" on ds-none-u: the labelled pairs and the swap pairs of
#                 every output, no pointwise loss, keep_best = false (the last epoch is kept)
#   ss_u          as pw_u with pair_min_diff = 2.0, so no labelled pair qualifies (graded labels
#                 lie in [0, 1]): self-supervised, only the swap pairs of the logged outputs; the
#                 labels serve validation reporting only
#   gp_of_last    as gp_of with keep_best = false (the last epoch is kept; same data as gp_of)
#   gp_of_u_last  as gp_of_u with keep_best = false (the last epoch is kept)
#   g_of_u_last   as gp_of_u_last with pair_min_diff = 2.0: no labelled pairs, so graded MSE on
#                 the labels plus the swap pairs
#   gp_of_u4_last as gp_of_u_last with corruption_pairs = 4.0 (each swap pair weighs 4 labelled
#                 pairs in the pairwise mean)
#   ss_u_of       as ss_u with truncation = "output_first"
#   sel_u         model selection ([[train.candidates]]): gp_of_u_last as the base and one
#                 candidate, "self_supervised" (objective "self_supervised", the swap pairs of
#                 every logged output and no label, longest-first truncation, no layer decay:
#                 ss_u's model); each is judged on the labels it did not train on (the base on the
#                 validation split, the self-supervised one on train and validation) and the
#                 better kept
#   gp_of_umix_last  as gp_of_u_last with [train.corruption_mix]: every corruption family at weight 1
#                 (swap drop shuffle remove insert replace repeat truncate negate number entity)
#   gp_of_ucoh_last  the same with the coherence families only (swap shuffle remove insert repeat
#                 truncate)
#   gp_of_u_last_blend, gp_of_umix_last_blend, sel_u_blend
#                 as gp_of_u_last, gp_of_umix_last and sel_u with blend_evaluator = true: the
#                 model's score blended with the production evaluator's, the weight chosen on the
#                 validation split (docs/guide/train.md, "Blending with the production evaluator")
#   gp_of_umix_last_dist, gp_of_umix_last_dist_blend
#                 as gp_of_umix_last (and its _blend) with distill = DISTILL (1.0): every two
#                 outputs of a group (labelled or not) also a soft ranking pair from the production
#                 evaluator's scores (docs/guide/train.md, "Distillation from the production
#                 evaluator"), temperature DISTILL_T (0.5)
#   gp_of_umix_last_dapt
#                 as gp_of_umix_last, after DAPT_EPOCHS (2) epochs of domain-adaptive pretraining
#                 (masked-language-model training of the encoder on the dataset's texts;
#                 docs/guide/train.md, "Domain-adaptive pretraining"), peak rate DAPT_LR (5e-5)
#   gp_of_umix_last_dapt_ens
#                 as gp_of_umix_last_dapt, an ensemble of three members (seeds s, s+100, s+200)
#                 trained from the one pretrained encoder, scored as their mean; its member-<s>
#                 is the gp_of_umix_last_dapt model of the same seed
#                 (with gp_of_umix_last_dapt listed after gp_of_umix_last_dapt_ens in CONFIGS,
#                 it takes that member instead of training again, and has no training time)
#   graded_imp, graded_imp_nv, graded_nv
#                 evalloop's plain recipe (graded MSE, longest-first) on those datasets
#   peer_imp, peer_imp_nv, peer_nv
#                 the PyTorch peer (below) on those datasets
#   peer          the PyTorch + transformers peer (scripts/bench/bench_quality_peer.py): the same
#                 MiniLM, graded MSE, longest-first, same epochs / batch / lr / max_length /
#                 seed, no weighting, on the same dataset directory
#
# Usage: scripts/bench/bench-quality.sh
# Environment (defaults): DATA (../shared/data/judgements), DATASETS ("newsroom:coherence
# newsroom:relevance bagel:quality realsumm:litepyramid_recall"), SEEDS ("1 2 3"), CONFIGS (all above), EPOCHS (3),
# MAX_LENGTH (256), BATCH (16), LR (5e-5), THREADS (2: the CPU threads; with evalloop's default
# data_parallel = 0 also the number of training shards, so THREADS=1 and 2 train differently), MODEL
# (models/all-MiniLM-L6-v2), HOLDOUT_FRAC (0.3: share of groups held out), KEEP (unset: set to
# keep the work directory), WORK (unset: a fresh temp directory; set to an existing work
# directory to reuse it: runs whose scores are already there are not trained again, so a grid
# can be run in parts and printed whole), PEER_PYTHON (/tmp/evalloop-pyenv/bin/python: a python
# with torch and transformers, for `peer`).
# DISTILL (1.0), DISTILL_T (0.5): distill and distill_temperature of the *_dist configurations.
# DAPT_EPOCHS (2), DAPT_LR (5e-5): dapt_epochs and dapt_learning_rate of gp_of_umix_last_dapt.
# A configuration NAME+blend (NAME listed before it in CONFIGS) is NAME's trained model blended
# with the production evaluator by `evalloop train --blend-only` under [train] blend_rule =
# BLEND_RULE (regression); no second training run.
# REUSE (unset): with PROD=judge, a configuration that does not read the production scores
# (not *_dist, not peer) takes the unigram-F1 run's trained model from the same WORK, when there
# is one, instead of training it again (the feedback, splits and seed are the same).
# PROD (f1): the production evaluator of the simulated logs, `f1` (simulate's unigram F1 against
# the reference) or `judge` (simulate's noisy judge: correlation JUDGE_R (0.5) with the human
# score, judge_bias +0.5 sd for cohort free and -0.5 for enterprise; its runs go to
# <dataset>-<dim>-judge-<seed>); its held-out figure is the `baseline_f1` / `production` row.
# Needs: a release build, python3 (standard library only), and for `peer` PEER_PYTHON. CPU
# time: about one training run of MiniLM per (dataset, seed, configuration); see BENCHMARKS.md
# for what one took here.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA="${DATA:-}"
if [[ -z "$DATA" ]]; then
  for d in ../shared/data/judgements ../../shared/data/judgements /work/shared/data/judgements; do
    [[ -d "$d" ]] && DATA="$d" && break
  done
fi
[[ -d "$DATA" ]] || { echo "no judgements directory; set DATA" >&2; exit 2; }
DATASETS="${DATASETS:-newsroom:coherence newsroom:relevance bagel:quality realsumm:litepyramid_recall}"
SEEDS="${SEEDS:-1 2 3}"
CONFIGS="${CONFIGS:-peer graded graded_inv graded_of pairwise_of gp_of gp_of_inv gp_of_sp gp_of_mt gp_of_b gp_of_ens gp_of_cor gp_of_u gp_of_last gp_of_u_last g_of_u_last gp_of_u4_last pw_u ss_u ss_u_of sel_u peer_imp graded_imp gp_of_imp peer_imp_nv graded_imp_nv gp_of_imp_nv peer_nv graded_nv gp_of_nv}"
EPOCHS="${EPOCHS:-3}"
MAX_LENGTH="${MAX_LENGTH:-256}"
BATCH="${BATCH:-16}"
LR="${LR:-5e-5}"
MODEL="${MODEL:-models/all-MiniLM-L6-v2}"
PROD="${PROD:-f1}"
JUDGE_R="${JUDGE_R:-0.5}"
DISTILL="${DISTILL:-1.0}"
DISTILL_T="${DISTILL_T:-0.5}"
DAPT_EPOCHS="${DAPT_EPOCHS:-2}"
DAPT_LR="${DAPT_LR:-5e-5}"
BLEND_RULE="${BLEND_RULE:-regression}"
REUSE="${REUSE:-}"
case "$PROD" in f1 | judge) ;; *) echo "PROD is f1 or judge, not $PROD" >&2; exit 2 ;; esac
HOLDOUT_FRAC="${HOLDOUT_FRAC:-0.3}"
export RAYON_NUM_THREADS="${THREADS:-2}"
[[ -f "$MODEL/model.safetensors" ]] || { echo "no model in $MODEL (scripts/fetch-model.sh)" >&2; exit 2; }
BIN="${EVALLOOP_BIN:-target/release/evalloop}"
[[ -x "$BIN" ]] || cargo build --release
PEER_PYTHON="${PEER_PYTHON:-/tmp/evalloop-pyenv/bin/python}"
if [[ -n "${WORK:-}" ]]; then
  mkdir -p "$WORK"
  echo "work directory: $WORK" >&2
else
  WORK="$(mktemp -d)"
  if [[ -z "${KEEP:-}" ]]; then trap 'rm -rf "$WORK"' EXIT; else echo "work directory: $WORK" >&2; fi
fi

sim_toml() {
  if [[ "$PROD" == judge ]]; then
    printf '[simulate]\nproduction = "judge"\nevaluator = "llm-judge"\njudge_correlation = %s\n' "$JUDGE_R"
  else
    printf '[simulate]\n'
  fi
  cat <<T
cohort_by = "system"
outcome_slope = 1.5
[[simulate.cohorts]]
name = "free"
share = 3.0
feedback_rate = 0.3
shift = -0.5
$([[ "$PROD" == judge ]] && echo "judge_bias = 0.5")
[[simulate.cohorts]]
name = "pro"
share = 2.0
feedback_rate = 0.5
[[simulate.cohorts]]
name = "enterprise"
share = 2.0
feedback_rate = 0.8
shift = 0.5
$([[ "$PROD" == judge ]] && echo "judge_bias = -0.5")
T
}

# The corruption mixtures of the *_umix / *_ucoh configurations ([train.corruption_mix] lines).
MIX_ALL="$(printf '%s = 1.0\n' swap drop shuffle remove insert replace repeat truncate negate number entity)"
MIX_COH="$(printf '%s = 1.0\n' swap shuffle remove insert repeat truncate)"

# config name -> "weighting|[train] lines"
config_spec() {
  local common="base_model = \"$MODEL\"
epochs = $EPOCHS
batch_size = $BATCH
max_length = $MAX_LENGTH
learning_rate = $LR
patience = 0
log_every = 1000"
  case "$1" in
    graded) printf 'none|%s\nobjective = "graded"\n' "$common" ;;
    graded_inv) printf 'inverse_rate|%s\nobjective = "graded"\n' "$common" ;;
    graded_of) printf 'none|%s\nobjective = "graded"\ntruncation = "output_first"\n' "$common" ;;
    pairwise_of) printf 'none|%s\nobjective = "pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\n' "$common" ;;
    gp_of) printf 'none|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\n' "$common" ;;
    gp_of_sp) printf 'none|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "spearman"\nlayer_lr_decay = 0.9\n' "$common" ;;
    peer) printf 'none|%s\nobjective = "graded"\n' "$common" ;;
    gp_of_mt) printf 'none-mt|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\n' "$common" ;;
    gp_of_inv) printf 'inverse_rate|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\n' "$common" ;;
    gp_of_cor) printf 'none|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\n' "$common" ;;
    gp_of_u) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\n' "$common" ;;
    pw_u) printf 'none-u|%s\nobjective = "pairwise"\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\n' "$common" ;;
    gp_of_last) printf 'none|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\nkeep_best = false\n' "$common" ;;
    gp_of_u_last) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\n' "$common" ;;
    g_of_u_last) printf 'none-u|%s\nobjective = "graded+pairwise"\npair_min_diff = 2.0\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\n' "$common" ;;
    gp_of_u4_last) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 4.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\n' "$common" ;;
    gp_of_u_last_blend) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\nblend_evaluator = true\n' "$common" ;;
    sel_u_blend) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\nblend_evaluator = true\n[[train.candidates]]\nname = "self_supervised"\nobjective = "self_supervised"\ntruncation = "longest_first"\nlayer_lr_decay = 1.0\n' "$common" ;;
    gp_of_umix_last_blend) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\nunlabelled = true\nkeep_best = false\nblend_evaluator = true\n[train.corruption_mix]\n%s\n' "$common" "$MIX_ALL" ;;
    gp_of_umix_last_dist) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\nunlabelled = true\nkeep_best = false\ndistill = %s\ndistill_temperature = %s\n[train.corruption_mix]\n%s\n' "$common" "$DISTILL" "$DISTILL_T" "$MIX_ALL" ;;
    gp_of_umix_last_dist_blend) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\nunlabelled = true\nkeep_best = false\ndistill = %s\ndistill_temperature = %s\nblend_evaluator = true\n[train.corruption_mix]\n%s\n' "$common" "$DISTILL" "$DISTILL_T" "$MIX_ALL" ;;
    gp_of_umix_last_dapt) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\nunlabelled = true\nkeep_best = false\ndapt_epochs = %s\ndapt_learning_rate = %s\n[train.corruption_mix]\n%s\n' "$common" "$DAPT_EPOCHS" "$DAPT_LR" "$MIX_ALL" ;;
    gp_of_umix_last_dapt_ens) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\nunlabelled = true\nkeep_best = false\ndapt_epochs = %s\ndapt_learning_rate = %s\nseeds = [%s, %s, %s]\n[train.corruption_mix]\n%s\n' "$common" "$DAPT_EPOCHS" "$DAPT_LR" "$2" "$(($2 + 100))" "$(($2 + 200))" "$MIX_ALL" ;;
    gp_of_umix_last) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\nunlabelled = true\nkeep_best = false\n[train.corruption_mix]\n%s\n' "$common" "$MIX_ALL" ;;
    gp_of_ucoh_last) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\nunlabelled = true\nkeep_best = false\n[train.corruption_mix]\n%s\n' "$common" "$MIX_COH" ;;
    ss_u_of) printf 'none-u|%s\nobjective = "pairwise"\npair_min_diff = 2.0\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\ntruncation = "output_first"\n' "$common" ;;
    ss_u) printf 'none-u|%s\nobjective = "pairwise"\npair_min_diff = 2.0\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\n' "$common" ;;
    sel_u) printf 'none-u|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\ncorruption_pairs = 1.0\ncorruption = "swap"\nunlabelled = true\nkeep_best = false\n[[train.candidates]]\nname = "self_supervised"\nobjective = "self_supervised"\ntruncation = "longest_first"\nlayer_lr_decay = 1.0\n' "$common" ;;
    gp_of_b) printf 'none|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\npair_scope = "batch"\n' "$common" ;;
    peer_imp | graded_imp) printf 'none-imp|%s\nobjective = "graded"\n' "$common" ;;
    peer_imp_nv | graded_imp_nv) printf 'none-imp-nv|%s\nobjective = "graded"\n' "$common" ;;
    gp_of_imp) printf 'none-imp|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\n' "$common" ;;
    gp_of_imp_nv) printf 'none-imp-nv|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\n' "$common" ;;
    peer_nv | graded_nv) printf 'none-nv|%s\nobjective = "graded"\n' "$common" ;;
    gp_of_nv) printf 'none-nv|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\n' "$common" ;;
    gp_of_ens) printf 'none|%s\nobjective = "graded+pairwise"\ntruncation = "output_first"\neval_metric = "group_spearman"\nlayer_lr_decay = 0.9\nseeds = [%s, %s, %s]\n' "$common" "$2" "$(($2 + 100))" "$(($2 + 200))" ;;
    *) echo "unknown config $1" >&2; exit 2 ;;
  esac
}

# Scores RUN/m-CONFIG on RUN's held-out rows into RUN/scores-CONFIG.jsonl (written whole, then
# renamed: a file there is a finished run).
score_heldout() {
  "$BIN" score --model "$1/m-$2" --input "$1/sim/heldout.jsonl" --output "$1/scores-$2.jsonl.tmp" > /dev/null
  mv "$1/scores-$2.jsonl.tmp" "$1/scores-$2.jsonl"
}

for spec in $DATASETS; do
  name="${spec%%:*}"; dim="${spec#*:}"
  groups=$(python3 -c "import json,sys; print(len({json.loads(l)['group_id'] for l in open(sys.argv[1]) if l.strip()}))" "$DATA/$name.jsonl")
  holdout=$(python3 -c "print(max(1, round($groups * $HOLDOUT_FRAC)))")
  # The dataset's other human dimensions, for the multi-task configuration.
  others=$(python3 -c "import json,sys; print(','.join(sorted({k for l in open(sys.argv[1]) if l.strip() for k in json.loads(l)['human']} - {sys.argv[2]})))" "$DATA/$name.jsonl" "$dim")
  dims_flag=()
  [[ -n "$others" ]] && dims_flag=(--dimensions "$others")
  for seed in $SEEDS; do
    run="$WORK/$name-$dim-$seed"
    [[ "$PROD" == judge ]] && run="$WORK/$name-$dim-judge-$seed"
    mkdir -p "$run"
    if [[ ! -f "$run/prepared" ]]; then
    sim_toml > "$run/sim.toml"
    "$BIN" --config "$run/sim.toml" simulate --judgements "$DATA/$name.jsonl" --dimension "$dim" \
      --out "$run/sim" --seed "$seed" --holdout-groups "$holdout" "${dims_flag[@]}" > /dev/null
    "$BIN" --db "$run/e.db" ingest logs "$run/sim/logs.jsonl" --strict > /dev/null
    "$BIN" --db "$run/e.db" ingest feedback "$run/sim/feedback.jsonl" --strict > /dev/null
    for w in none inverse_rate; do
      printf '[dataset]\nlabel = "graded"\nweighting = ["%s"]\ntrain_fraction = 0.8\nvalidation_fraction = 0.2\nmin_effective_size = 0.0\ngroup_key = "group_id"\nseed = %s\n' \
        "$w" "$seed" > "$run/ds-$w.toml"
      "$BIN" --db "$run/e.db" --config "$run/ds-$w.toml" dataset build --out "$run/ds-$w" > /dev/null 2>&1
    done
    touch "$run/prepared"
    fi
    if [[ -n "$others" && ! -f "$run/prepared-mt" ]]; then
      # A work directory prepared before multi-task: simulating again with --dimensions writes
      # the same logs and primary feedback (those events are duplicates on ingest) plus the
      # dimension ratings.
      if ! grep -q '"dimension"' "$run/sim/feedback.jsonl"; then
        "$BIN" --config "$run/sim.toml" simulate --judgements "$DATA/$name.jsonl" --dimension "$dim" \
          --out "$run/sim" --seed "$seed" --holdout-groups "$holdout" "${dims_flag[@]}" > /dev/null
        "$BIN" --db "$run/e.db" ingest feedback "$run/sim/feedback.jsonl" --strict > /dev/null
      fi
      printf '[dataset]\nlabel = "graded"\nweighting = ["none"]\ntrain_fraction = 0.8\nvalidation_fraction = 0.2\nmin_effective_size = 0.0\ngroup_key = "group_id"\nseed = %s\ndimensions = [%s]\n' \
        "$seed" "$(python3 -c "import json,sys; print(', '.join(json.dumps(d) for d in sys.argv[1].split(',')))" "$others")" > "$run/ds-none-mt.toml"
      "$BIN" --db "$run/e.db" --config "$run/ds-none-mt.toml" dataset build --out "$run/ds-none-mt" > /dev/null 2>&1
      touch "$run/prepared-mt"
    fi
    if [[ ! -f "$run/prepared-imp" ]]; then
      # Implicit labels: the same store, with the human-score policy mapping implicit signals
      # (simulate always emits them; the explicit-only datasets above ignore them).
      for v in imp imp-nv; do
        fr="train_fraction = 0.8\nvalidation_fraction = 0.2"
        [[ "$v" == imp-nv ]] && fr="train_fraction = 1.0\nvalidation_fraction = 0.0"
        printf "[human]\nimplicit_usage = 4.0\nimplicit_edit = 3.0\nimplicit_discard = 2.0\n\n[dataset]\nlabel = \"graded\"\nweighting = [\"none\"]\n$fr\nmin_effective_size = 0.0\ngroup_key = \"group_id\"\nseed = %s\n" \
          "$seed" > "$run/ds-none-$v.toml"
        "$BIN" --db "$run/e.db" --config "$run/ds-none-$v.toml" dataset build --out "$run/ds-none-$v" > /dev/null 2>&1
      done
      touch "$run/prepared-imp"
    fi
    if [[ ! -f "$run/prepared-u" ]]; then
      # ds-none plus unlabelled.jsonl: every logged request without a human score outside the
      # validation groups (the labelled splits are ds-none's, byte for byte).
      printf '[dataset]\nlabel = "graded"\nweighting = ["none"]\ntrain_fraction = 0.8\nvalidation_fraction = 0.2\nmin_effective_size = 0.0\ngroup_key = "group_id"\nseed = %s\nunlabelled = 1000000\n' \
        "$seed" > "$run/ds-none-u.toml"
      "$BIN" --db "$run/e.db" --config "$run/ds-none-u.toml" dataset build --out "$run/ds-none-u" > /dev/null 2>&1
      cmp -s "$run/ds-none/train.jsonl" "$run/ds-none-u/train.jsonl" || { echo "ds-none-u: labelled rows differ from ds-none" >&2; exit 1; }
      touch "$run/prepared-u"
    fi
    if [[ ! -f "$run/prepared-nv" ]]; then
      # No validation split: every labelled (explicit) request is a training example.
      printf '[dataset]\nlabel = "graded"\nweighting = ["none"]\ntrain_fraction = 1.0\nvalidation_fraction = 0.0\nmin_effective_size = 0.0\ngroup_key = "group_id"\nseed = %s\n' \
        "$seed" > "$run/ds-none-nv.toml"
      "$BIN" --db "$run/e.db" --config "$run/ds-none-nv.toml" dataset build --out "$run/ds-none-nv" > /dev/null 2>&1
      touch "$run/prepared-nv"
    fi
    for c in $CONFIGS; do
      [[ -f "$run/scores-$c.jsonl" ]] && continue
      if [[ "$c" == *+blend ]]; then
        # The model of the configuration before `+blend` (listed earlier in CONFIGS), blended
        # with the production evaluator by `train --blend-only` (the same model as a run with
        # blend_evaluator = true), BLEND_RULE choosing the weight.
        b="${c%+blend}"
        [[ -f "$run/m-$b/metrics.json" ]] || { echo "$c: train $b first (list it before $c in CONFIGS)" >&2; exit 1; }
        rm -rf "$run/m-$c"; cp -r "$run/m-$b" "$run/m-$c"
        sed "0,/^\[train\]\$/s//[train]\nblend_evaluator = true\nblend_rule = \"$BLEND_RULE\"/" "$run/train-$b.toml" > "$run/train-$c.toml"
        s="$(config_spec "$b" "$seed")"
        "$BIN" --config "$run/train-$c.toml" train --blend-only --dataset "$run/ds-${s%%|*}" \
          --out "$run/m-$c" > "$run/train-$c.log" 2>&1 \
          || { echo "blend failed: $run/train-$c.log" >&2; tail -5 "$run/train-$c.log" >&2; exit 1; }
        score_heldout "$run" "$c"
        echo "done: $name/$dim seed $seed $c ($(cat "$run/train-$c.log"))" >&2
        continue
      fi
      s="$(config_spec "$c" "$seed")"
      w="${s%%|*}"
      printf '[train]\nseed = %s\n%s\n' "$seed" "${s#*|}" > "$run/train-$c.toml"
      # A model trained already is taken instead of training it again: CONFIG_ens's member with
      # this seed is CONFIG's model (the same settings and seed, from the same pretrained
      # encoder); with REUSE, the unigram-F1 run's model is the judge run's (the judge changes
      # only each row's evaluator_score, which this configuration does not read).
      taken=""; from=""
      f1run="$WORK/$name-$dim-$seed"
      if [[ -f "$run/m-${c}_ens/member-$seed/metrics.json" ]]; then
        taken="$run/m-${c}_ens/member-$seed"; from="member $seed of ${c}_ens"
      elif [[ -n "$REUSE" && "$PROD" == judge && "$c" != *dist* && "$c" != peer* && -f "$f1run/m-$c/metrics.json" ]]; then
        taken="$f1run/m-$c"; from="the unigram-F1 run's model"
      fi
      if [[ -n "$taken" ]]; then
        rm -rf "$run/m-$c"; cp -r "$taken" "$run/m-$c"
        score_heldout "$run" "$c"
        echo "done: $name/$dim seed $seed $c ($from)" >&2
        continue
      fi
      start=$(date +%s.%N)
      # The PyTorch peer: `peer`, and `peer_<variant>` on that variant's dataset.
      if [[ "$c" == peer || "$c" == peer_* ]]; then
        mkdir -p "$run/m-$c"
        "$PEER_PYTHON" scripts/bench/bench_quality_peer.py --dataset "$run/ds-$w" --model "$MODEL" \
          --heldout "$run/sim/heldout.jsonl" --output "$run/scores-$c.jsonl.tmp" --epochs "$EPOCHS" \
          --batch-size "$BATCH" --lr "$LR" --max-length "$MAX_LENGTH" --seed "$seed" \
          --threads "$RAYON_NUM_THREADS" > "$run/train-$c.log" 2>&1 \
          || { echo "peer failed: $run/train-$c.log" >&2; tail -5 "$run/train-$c.log" >&2; exit 1; }
        # The peer's own training time (without loading python and torch).
        grep -o 'train_seconds [0-9.]*' "$run/train-$c.log" | cut -d' ' -f2 > "$run/m-$c/train_seconds"
        mv "$run/scores-$c.jsonl.tmp" "$run/scores-$c.jsonl"
        echo "done: $name/$dim seed $seed $c ($(cut -c1-6 < "$run/m-$c/train_seconds") s)" >&2
        continue
      fi
      "$BIN" --config "$run/train-$c.toml" train --dataset "$run/ds-$w" --out "$run/m-$c" > "$run/train-$c.log" 2>&1 \
        || { echo "train failed: $run/train-$c.log" >&2; tail -5 "$run/train-$c.log" >&2; exit 1; }
      end=$(date +%s.%N)
      python3 -c "print($end - $start)" > "$run/m-$c/train_seconds"
      score_heldout "$run" "$c"
      echo "done: $name/$dim seed $seed $c ($(cat "$run/m-$c/train_seconds" | cut -c1-6) s)" >&2
    done
  done
done

python3 - "$WORK" "$DATASETS" "$SEEDS" "$CONFIGS" "$PROD" <<'PY'
import json, os, sys, statistics as st
from collections import defaultdict
sys.path.insert(0, "scripts/bench")
from rank_stats import spearman
work, datasets, seeds, configs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
prod = sys.argv[5]
tag = "-judge" if prod == "judge" else ""

def group_spearman(rows, key):
    g = defaultdict(list)
    for r in rows:
        g[r["group"]].append((r[key], r["human_score"]))
    vals = [spearman([a for a, _ in v], [b for _, b in v]) for v in g.values() if len(v) >= 2]
    vals = [v for v in vals if v is not None]
    return (st.mean(vals) if vals else float("nan")), len(vals)

def rows(p):
    with open(p) as f:
        return [json.loads(l) for l in f if l.strip()]

print(f"held-out group-level Spearman with expert scores (mean, sd over seeds {' '.join(seeds)}); production evaluator: {prod}")
print(f"{'dataset':<22} {'evaluator':<14} {'mean':>7} {'sd':>7} {'groups':>7} {'train s':>8}  per seed")
for spec in datasets:
    name, dim = spec.split(":")
    res = defaultdict(list); ng = {}; secs = defaultdict(list)
    for seed in seeds:
        run = f"{work}/{name}-{dim}{tag}-{seed}"
        held = rows(f"{run}/sim/heldout.jsonl")
        base = "production" if prod == "judge" else "baseline_f1"
        v, n = group_spearman(held, "eval_score"); res[base].append(v); ng[base] = n
        for c in configs:
            p = f"{run}/scores-{c}.jsonl"
            if not os.path.exists(p):
                continue  # not run (yet): the row says how many seeds it has
            v, n = group_spearman(rows(p), "score")
            res[c].append(v); ng[c] = n
            t = f"{run}/m-{c}/train_seconds"
            if os.path.exists(t):  # not for a model taken from an ensemble's member
                secs[c].append(float(open(t).read()))
    for c in [base] + configs:
        if not res[c]:
            continue
        sd = st.pstdev(res[c]) if len(res[c]) > 1 else 0.0
        t = f"{st.mean(secs[c]):8.0f}" if secs[c] else f"{'-':>8}"
        per = " ".join(f"{v:.3f}" for v in res[c])
        print(f"{name + '/' + dim:<22} {c:<14} {st.mean(res[c]):7.3f} {sd:7.3f} {ng[c]:7d} {t}  {per}")

# Multi-task models: each extra output against the experts' score on its dimension.
lines = []
for spec in datasets:
    name, dim = spec.split(":")
    for c in configs:
        per_dim = defaultdict(list)
        for seed in seeds:
            p = f"{work}/{name}-{dim}{tag}-{seed}/scores-{c}.jsonl"
            if not os.path.exists(p):
                continue
            rs = rows(p)
            for d in sorted(rs[0].get("scores", {})) if rs else []:
                flat = [dict(r, score_d=r["scores"][d], human_score=r["human_scores"][d]) for r in rs]
                per_dim[d].append(group_spearman(flat, "score_d")[0])
        for d, vals in per_dim.items():
            sd = st.pstdev(vals) if len(vals) > 1 else 0.0
            lines.append(f"{name + '/' + dim:<22} {c + ':' + d:<30} {st.mean(vals):7.3f} {sd:7.3f}  "
                         + " ".join(f"{v:.3f}" for v in vals))
if lines:
    print("\nmulti-task outputs: held-out group-level Spearman of scores.<dimension> with the experts' <dimension>")
    print("\n".join(lines))
PY

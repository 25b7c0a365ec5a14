//! Turns labelled feedback into cohort-weighted, leakage-free train/validation/test splits.
//!
//! `evalloop dataset build --config FILE --out DIR` reads every request with an evaluator score
//! and a human score (the `[human]` policy, see [`crate::feedback`]) from the store and writes
//! `train.jsonl`, `validation.jsonl`, `test.jsonl` (fields `cohort`, `group`, `is_disagreement`,
//! `label`, `output`, `prompt`, `request_id`, `weight`, rows sorted by `request_id`) and
//! `dataset_card.json` + `dataset_card.md`. Same config and same store give byte-identical files.
//!
//! # Labels
//! `label = "binary"` (default): good (human score `>= good_min`) is 1, bad (`<= bad_max`) is 0,
//! neutral requests are dropped. `"graded"`: `(human_score - 1) / 4`, in [0, 1], all requests.
//!
//! # Dimension labels (multi-task)
//! With `dimensions = ["coherence", "relevance"]` (default none) every row also gets
//! `labels: {"coherence": 0.75, "relevance": null}`: the request's mean rating on each
//! dimension (feedback events with that `dimension`, the store's `dimension_ratings`) mapped as
//! graded labels are, `(h - 1) / 4`, or `null` when the request has no rating on it. `label`
//! stays the primary label from the human-score policy, which never counts dimension ratings;
//! a request needs a primary label to be a row. The card gains per-dimension label counts.
//!
//! # Disagreements
//! The evaluator says good when `eval_score > eval_threshold` (default 0.7, as in the feedback-loop article). A request
//! is a disagreement when the evaluator says good and the human verdict is bad, or the evaluator
//! does not say good and the human verdict is good. A neutral human verdict never disagrees.
//! `source = "all"` (default) keeps every labelled request with disagreements marked;
//! `"disagreements"` keeps only those (the article's narrower set).
//!
//! # Weights
//! Each scheme in `weighting` is a factor; an example's weight is their product. Cohort rates come
//! from the store over all logged requests of the cohort: with `rate = "feedback"` (default, as in
//! the feedback-loop article) `r_c = with_feedback_c / requests_c` (any feedback event), `"explicit"` counts requests
//! with explicit feedback, `"labelled"` requests with a human score under the policy (the
//! probability that a request enters this dataset, the right one for `ipw` when implicit events
//! carry no score).
//!
//! - `none`: 1.
//! - `inverse_rate`: `1 / (r_c + 0.01)` (the article's).
//! - `ipw`: `min(1 / r~_c, max_weight)` with the smoothed rate
//!   `r~_c = (k_c + a * r) / (n_c + a)`, where `k_c / n_c` is the cohort's rate as counts,
//!   `r = sum k / sum n` the overall rate and `a = ipw_smoothing` (default 1 pseudo-request);
//!   `max_weight` defaults to 20.
//! - `class_balance`: `N / (K * N_k)` for an example of class k (good/bad for binary,
//!   good/neutral/bad for graded), N examples and K classes present, counted after `source`.
//! - `disagreement_boost`: `disagreement_boost` (default 2) for disagreements, 1 otherwise.
//! - `queue`: `min(1 / pi, max_weight)` for a request labelled through an annotation queue
//!   (`evalloop queue`) that selected it with probability `pi` (the largest, when several
//!   queues hold it), 1 for the others: inverse-probability weights that keep the actively
//!   chosen labels unbiased for the whole traffic. Whether or not it is on, the card counts the
//!   examples whose labels came from queues (`queue_examples`).
//! - `normalize`: applied last whatever its position: every weight is divided by the mean weight
//!   of the train split, so train weights average 1 (validation and test use the same divisor).
//!
//! Per split and cohort the card reports counts, weight sums and Kish's effective sample size
//! `(sum w)^2 / sum w^2`; a split-cohort cell with an effective size below `min_effective_size`
//! (default 30) gets a warning.
//!
//! # Subsampling (`max_examples`)
//! When there are more examples than `max_examples`, strata (cohort x class) are sampled without
//! replacement: stratum s with `N_s` examples keeps `m_s` of them, its proportional share of
//! `max_examples` by largest remainders, raised to `min(N_s, min_per_stratum)` (default 10), and each
//! kept weight is multiplied by `N_s / m_s` (Horvitz-Thompson: inclusion probability `m_s / N_s`),
//! so every stratum's weighted total is preserved in expectation. Subsampling runs before the
//! split; the floors can make the total exceed `max_examples` slightly.
//!
//! # Splits
//! Groups are the value of metadata `group_key` (default: none, a hash of the prompt; a request
//! without the key falls back to the hash too). A group's stratum is its most common cohort x class.
//! Groups are ordered by stratum and, within a stratum, by a seeded shuffle; each in turn goes to
//! the split whose example count falls furthest below its target share (`train_fraction`,
//! default 0.8, `validation_fraction`, default 0.1, test the rest). The result is a systematic,
//! stratified assignment where counts allow, exact overall fractions up to a group's size, and no
//! group in two splits.
//!
//! # Unlabelled outputs (`unlabelled`)
//! With `unlabelled = N` (default 0: none) the build also writes `unlabelled.jsonl` (fields
//! `cohort`, `group`, `output`, `prompt`, `request_id`, sorted by `request_id`): up to N logged
//! requests of the window that have no human score, drawn by a seeded shuffle, leaving out every
//! request whose group is in the validation or test split (so nothing of an evaluation group
//! reaches training). Training uses them only for self-supervised ranking pairs
//! (`[train] unlabelled`, `corruption_pairs`): the logged output against a corrupted copy of itself.
//!
//! # Preference pairs
//! When the store holds preferences between two outputs (`explicit_preference`), the build
//! also writes `pairs.jsonl` (fields `chosen`, `cohort`, `group`, `margin`, `prompt`,
//! `rejected`, `request_id_chosen`, `request_id_rejected`, `split`, `weight`): each pair of a
//! group that people compared, the preferred output first, in its group's split, weighted by
//! its cohort; see `pairs.rs`. A store with preferences and no ratings builds a dataset of
//! pairs alone. Training uses them with `[train] preference_pairs`.
//!
//! # Code
//! [`build_in`] (here) runs the steps in order, each in its own file: `config.rs` (the settings
//! and their checks), `example.rs` (a labelled request, its group and disagreement flag),
//! `weights.rs` (cohort rates and the weighting factors), `subsample.rs`, `split.rs`, `cells.rs`
//! (per split and cohort statistics), `unlabelled.rs` and `card.rs` (the card's tables and its
//! Markdown). The row and card formats themselves are defined in [`crate::files`].

mod card;
mod cells;
mod config;
#[cfg(test)]
mod fixtures;
mod pairs;
mod request;
mod split;
mod subsample;
mod unlabelled;
mod weights;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

pub use cells::{CellStats, r6};
pub use config::{DatasetConfig, LabelKind, RateBasis, Scheme, SourceKind};
pub use request::{LabelledRequest, NO_COHORT, is_disagreement, metadata_group, prompt_group};
pub use split::{Split, assign_splits};
pub use subsample::{StratumSample, subsample};
pub use weights::{
    CohortRate, apply_weights, class_balance_factors, cohort_rates, inverse_rate_weight, ipw_weight, kish_ess,
    normalize_on, overall_rate,
};

use card::{card_markdown, cohort_cards, dimension_cards};
use unlabelled::write_unlabelled;

use crate::atomic::{self, AtomicWriter};
use crate::feedback::{HumanPolicy, Verdict};
use crate::files::{CARD_FILE, DatasetCard, DatasetRow, Label, PAIRS_FILE, PairRow, SplitCard, sorted_value};
use crate::store::{Filter, ScoredQuery, Store};
use crate::{Error, Result};

/// The result of [`build`]: the summary for people and the card.
#[derive(Debug, Clone)]
pub struct Built {
    pub text: String,
    pub card: DatasetCard,
    pub warnings: Vec<String>,
}

/// Builds the dataset from the store into `out` (created if needed).
pub fn build(store: &dyn Store, policy: &HumanPolicy, cfg: &DatasetConfig, out: &Path) -> Result<Built> {
    build_in(store, &Filter::default(), policy, cfg, out)
}

/// The examples of a build and their splits, before any file is written: what
/// [`build_in`] writes, and what `export` reads to leave out the same held-out groups.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The evaluator whose scores the examples carry.
    pub evaluator: String,
    /// The examples after weighting (all factors but `normalize`) and subsampling.
    pub examples: Vec<LabelledRequest>,
    /// Group -> split, for every group of `examples`.
    pub splits: BTreeMap<String, Split>,
    /// Per-cohort rates under `cfg.rate`, over the window's logged requests.
    pub rates: BTreeMap<String, CohortRate>,
    /// Each cohort's factor per cohort-level scheme, for the card.
    pub factors: BTreeMap<String, BTreeMap<&'static str, f64>>,
    /// The window's per-cohort feedback counts.
    pub stats: Vec<crate::store::CohortStats>,
    /// The strata of `max_examples` subsampling (empty without it).
    pub strata: Vec<StratumSample>,
    /// Requests with a human score.
    pub candidates: usize,
    pub dropped_neutral: usize,
    pub dropped_agreeing: usize,
    /// Examples before subsampling.
    pub available: usize,
    /// The decisive preference pairs of the window (split by their groups in `splits`).
    pub pairs: Vec<pairs::Pair>,
    /// The card's counts of the preferences (without the per-split ones).
    pub pairs_card: crate::files::PairsCard,
    /// Request id -> the largest probability with which an annotation queue that got it
    /// labelled selected it.
    pub from_queues: BTreeMap<String, f64>,
}

/// Chooses the evaluator, reads the labelled requests of `window`, weights, subsamples and
/// splits them as [`build_in`] does (same config and store, same groups in each split).
pub fn plan(store: &dyn Store, window: &Filter, policy: &HumanPolicy, cfg: &DatasetConfig) -> Result<Plan> {
    cfg.validate().map_err(|e| Error::Input(format!("[dataset]: {e}")))?;
    let evaluators = store.evaluators()?;
    let evaluator = match &cfg.evaluator {
        Some(e) if evaluators.contains(e) => e.clone(),
        Some(e) => {
            return Err(Error::Input(format!(
                "[dataset] evaluator {e:?} has no scores in the store (it has: {})",
                evaluators.join(", ")
            )));
        }
        None if evaluators.len() == 1 => evaluators[0].clone(),
        None if evaluators.is_empty() => {
            return Err(Error::Input(format!("store {} has no scored requests", store.location())));
        }
        None => {
            return Err(Error::Input(format!(
                "the store has several evaluators ({}); set [dataset] evaluator",
                evaluators.join(", ")
            )));
        }
    };
    let filter = Filter { evaluator: Some(evaluator.clone()), ..window.clone() };
    let rows = store.scored_requests(&ScoredQuery {
        filter: filter.clone(),
        policy: policy.clone(),
        group_key: cfg.group_key.clone(),
        with_text: true,
        limit: None,
    })?;
    let stats = store.cohort_stats(&filter, policy)?;
    let rates = cohort_rates(&stats, cfg.rate);
    let mut dimension_means: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for d in store.dimension_scores(&cfg.dimensions)? {
        dimension_means.entry(d.request_id).or_default().insert(d.dimension, d.mean);
    }

    let candidates = rows.len();
    let (mut dropped_neutral, mut dropped_agreeing) = (0usize, 0usize);
    let mut examples = Vec::new();
    for r in rows {
        let Some(text) = r.text else { continue };
        let verdict = policy.verdict(r.human_score);
        let class = match verdict {
            Verdict::Good => "good",
            Verdict::Neutral => "neutral",
            Verdict::Bad => "bad",
        };
        let label = match (cfg.label, verdict) {
            (LabelKind::Binary, Verdict::Neutral) => {
                dropped_neutral += 1;
                continue;
            }
            (LabelKind::Binary, Verdict::Good) => 1.0,
            (LabelKind::Binary, Verdict::Bad) => 0.0,
            (LabelKind::Graded, _) => ((r.human_score - 1.0) / 4.0).clamp(0.0, 1.0),
        };
        let is_disagreement = is_disagreement(r.eval_score, cfg.eval_threshold, verdict);
        if cfg.source == SourceKind::Disagreements && !is_disagreement {
            dropped_agreeing += 1;
            continue;
        }
        let group = r.group.unwrap_or_else(|| prompt_group(&text.prompt));
        let means = dimension_means.get(&r.request_id);
        let labels = cfg
            .dimensions
            .iter()
            .map(|d| {
                let h = means.and_then(|m| m.get(d));
                (d.clone(), h.map(|h| ((h - 1.0) / 4.0).clamp(0.0, 1.0)))
            })
            .collect();
        examples.push(LabelledRequest {
            request_id: r.request_id,
            prompt: text.prompt,
            output: text.output,
            label,
            class,
            human_score: r.human_score,
            eval_score: r.eval_score,
            cohort: r.cohort.unwrap_or_else(|| NO_COHORT.to_string()),
            group,
            is_disagreement,
            weight: 1.0,
            labels,
        });
    }
    let (pairs, pairs_card) = pairs::collect(store, &filter, cfg.group_key.as_deref())?;
    if examples.is_empty() && pairs.is_empty() {
        return Err(Error::Input(format!(
            "no examples: {candidates} requests with a human score, {dropped_neutral} neutral dropped, \
             {dropped_agreeing} agreeing dropped (source = disagreements)"
        )));
    }
    let factors = apply_weights(&mut examples, &rates, cfg);
    let from_queues = crate::queue::labelled_probabilities(&store.queue_items(None)?, &store.queue_labels(None)?);
    if cfg.weighting.contains(&Scheme::Queue) {
        for e in &mut examples {
            if let Some(p) = from_queues.get(&e.request_id) {
                e.weight *= (1.0 / p).min(cfg.max_weight);
            }
        }
    }
    let available = examples.len();
    let (examples, strata) = match cfg.max_examples {
        Some(m) => subsample(examples, m, cfg.min_per_stratum, cfg.seed),
        None => (examples, Vec::new()),
    };
    let splits = if pairs.is_empty() {
        assign_splits(&examples, cfg.train_fraction, cfg.validation_fraction, cfg.seed)
    } else {
        let mut all = examples.clone();
        all.extend(pairs::split_stand_ins(&pairs, &examples));
        assign_splits(&all, cfg.train_fraction, cfg.validation_fraction, cfg.seed)
    };
    Ok(Plan {
        evaluator,
        examples,
        splits,
        rates,
        factors,
        stats,
        strata,
        candidates,
        dropped_neutral,
        dropped_agreeing,
        available,
        pairs,
        pairs_card,
        from_queues,
    })
}

/// Builds the dataset from the requests in `window` (time range, cohort, metadata; its
/// evaluator is ignored: `cfg.evaluator` picks it) into `out`.
pub fn build_in(
    store: &dyn Store,
    window: &Filter,
    policy: &HumanPolicy,
    cfg: &DatasetConfig,
    out: &Path,
) -> Result<Built> {
    let Plan {
        evaluator,
        mut examples,
        splits,
        rates,
        factors,
        stats,
        strata,
        candidates,
        dropped_neutral,
        dropped_agreeing,
        available,
        pairs,
        mut pairs_card,
        from_queues,
    } = plan(store, window, policy, cfg)?;
    let split_of = |e: &LabelledRequest| splits.get(&e.group).copied().unwrap_or(Split::Train);
    let mut divisor = 1.0;
    if cfg.weighting.contains(&Scheme::Normalize) {
        let on: Vec<bool> = examples.iter().map(|e| split_of(e) == Split::Train).collect();
        let mut w: Vec<f64> = examples.iter().map(|e| e.weight).collect();
        divisor = normalize_on(&mut w, &on);
        for (e, w) in examples.iter_mut().zip(w) {
            e.weight = w;
        }
    }
    examples.sort_by(|a, b| a.request_id.cmp(&b.request_id));

    // Statistics and warnings.
    let mut warnings = Vec::new();
    let mut split_cards = BTreeMap::new();
    let mut text = format!(
        "dataset: {} examples ({} label, source {}, weighting {}) from evaluator {evaluator}\n",
        examples.len(),
        name_of(&cfg.label),
        name_of(&cfg.source),
        cfg.weighting.iter().map(name_of).collect::<Vec<_>>().join("+"),
    );
    let _ = writeln!(
        text,
        "  {:<10} {:<14} {:>8} {:>6} {:>6} {:>10} {:>10} {:>10}",
        "split", "cohort", "examples", "good", "bad", "label", "weight", "ess"
    );
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for split in Split::ALL {
        let in_split: Vec<&LabelledRequest> = examples.iter().filter(|e| split_of(e) == split).collect();
        let all = CellStats::of(in_split.iter().copied());
        let cohorts: BTreeSet<&str> = in_split.iter().map(|e| e.cohort.as_str()).collect();
        let mut by_cohort = BTreeMap::new();
        for c in cohorts {
            let cell = CellStats::of(in_split.iter().copied().filter(|e| e.cohort == c));
            let _ = writeln!(
                text,
                "  {:<10} {:<14} {:>8} {:>6} {:>6} {:>10.4} {:>10.3} {:>10.1}",
                split.name(),
                c,
                cell.examples,
                cell.good,
                cell.bad,
                cell.weighted_label_mean,
                cell.weight_sum,
                cell.effective_size
            );
            if cell.effective_size < cfg.min_effective_size {
                warnings.push(format!(
                    "{} split, cohort {c}: effective sample size {:.1} is below {} ({} examples)",
                    split.name(),
                    cell.effective_size,
                    cfg.min_effective_size,
                    cell.examples
                ));
            }
            by_cohort.insert(c.to_string(), cell);
        }
        let _ = writeln!(
            text,
            "  {:<10} {:<14} {:>8} {:>6} {:>6} {:>10.4} {:>10.3} {:>10.1}",
            split.name(),
            "(all)",
            all.examples,
            all.good,
            all.bad,
            all.weighted_label_mean,
            all.weight_sum,
            all.effective_size
        );
        if all.examples == 0 {
            warnings.push(format!("{} split is empty", split.name()));
        }
        split_cards.insert(split.name().to_string(), SplitCard { all, by_cohort });

        let mut w = AtomicWriter::create(&out.join(format!("{}.jsonl", split.name())))?;
        for e in in_split {
            let row = DatasetRow {
                cohort: Some(e.cohort.clone()),
                group: Some(e.group.clone()),
                evaluator_score: e.eval_score.is_finite().then(|| r6(e.eval_score)),
                is_disagreement: e.is_disagreement,
                label: match cfg.label {
                    LabelKind::Binary => Label::Binary(u8::from(e.label == 1.0)),
                    LabelKind::Graded => Label::Graded(r6(e.label)),
                },
                labels: (!cfg.dimensions.is_empty())
                    .then(|| e.labels.iter().map(|(d, v)| (d.clone(), v.map(r6))).collect()),
                output: e.output.clone(),
                prompt: e.prompt.clone(),
                request_id: e.request_id.clone(),
                weight: r6(e.weight),
            };
            w.write_json_line(&row)?;
        }
        w.commit()?;
    }
    if pairs_card.events > 0 {
        let split_of_group = |g: &str| splits.get(g).copied().unwrap_or(Split::Train);
        let cohort_factor =
            |cohort: &str, scheme: &str| factors.get(cohort).and_then(|f| f.get(scheme)).copied().unwrap_or(1.0);
        let mut weights: Vec<f64> = pairs
            .iter()
            .map(|p| {
                cfg.weighting
                    .iter()
                    .map(|s| match s {
                        Scheme::InverseRate => cohort_factor(&p.cohort, "inverse_rate"),
                        Scheme::Ipw => cohort_factor(&p.cohort, "ipw"),
                        _ => 1.0,
                    })
                    .product()
            })
            .collect();
        if cfg.weighting.contains(&Scheme::Normalize) {
            let on: Vec<bool> = pairs.iter().map(|p| split_of_group(&p.group) == Split::Train).collect();
            normalize_on(&mut weights, &on);
        }
        let mut rows: Vec<PairRow> = pairs
            .iter()
            .zip(weights)
            .map(|(p, w)| PairRow {
                chosen: p.chosen.1.clone(),
                cohort: p.cohort.clone(),
                group: p.group.clone(),
                prompt: p.prompt.clone(),
                rejected: p.rejected.1.clone(),
                request_id_chosen: p.chosen.0.clone(),
                request_id_rejected: p.rejected.0.clone(),
                split: split_of_group(&p.group).name().to_string(),
                margin: p.margin,
                weight: r6(w),
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.request_id_chosen, &a.request_id_rejected).cmp(&(&b.request_id_chosen, &b.request_id_rejected))
        });
        let mut w = AtomicWriter::create(&out.join(PAIRS_FILE))?;
        for r in &rows {
            w.write_json_line(r)?;
        }
        w.commit()?;
        for split in Split::ALL {
            pairs_card.pairs.insert(split.name().to_string(), rows.iter().filter(|r| r.split == split.name()).count());
        }
        let _ = writeln!(
            text,
            "  preference pairs: {} in {PAIRS_FILE} (train {}, validation {}, test {}); left out: {} tied, {} not \
             logged or scored, {} across groups",
            rows.len(),
            pairs_card.pairs["train"],
            pairs_card.pairs["validation"],
            pairs_card.pairs["test"],
            pairs_card.ties,
            pairs_card.unlogged,
            pairs_card.cross_group
        );
    }
    let unlabelled = if cfg.unlabelled > 0 {
        let n = write_unlabelled(
            store,
            &evaluator,
            window,
            policy,
            cfg,
            &|g| splits.get(g).is_some_and(|s| *s != Split::Train),
            out,
        )?;
        let _ = writeln!(text, "  unlabelled outputs: {n} (of at most {}), in unlabelled.jsonl", cfg.unlabelled);
        Some(n)
    } else {
        None
    };
    let queue_examples = examples.iter().filter(|e| from_queues.contains_key(&e.request_id)).count();
    if queue_examples > 0 {
        let _ = writeln!(
            text,
            "  labels from annotation queues: {queue_examples} of {} examples ({})",
            examples.len(),
            if cfg.weighting.contains(&Scheme::Queue) {
                "weighted by 1 / selection probability"
            } else {
                "not weighted by their selection probability: add \"queue\" to weighting"
            }
        );
    }
    for wmsg in &warnings {
        tracing::warn!("{wmsg}");
    }
    if !warnings.is_empty() {
        let _ = writeln!(text, "{} warning(s), listed in dataset_card.md", warnings.len());
    }

    let cohort_card = cohort_cards(&rates, &factors, &stats);
    let dimension_card = dimension_cards(&cfg.dimensions, &examples, &split_of);
    if !cfg.dimensions.is_empty() {
        let _ = writeln!(
            text,
            "  dimension labels: {}",
            dimension_card
                .iter()
                .map(|(d, v)| format!("{d} {}/{}", v.labelled, examples.len()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let card = DatasetCard {
        config: cfg.clone(),
        human_policy: policy.clone(),
        evaluator,
        candidates,
        dropped_neutral,
        dropped_agreeing,
        examples_before_subsampling: available,
        examples: examples.len(),
        normalize_divisor: r6(divisor),
        cohorts: cohort_card,
        subsampling: strata.iter().map(|s| StratumSample { inflation: r6(s.inflation), ..s.clone() }).collect(),
        splits: split_cards,
        groups: splits.len(),
        warnings: warnings.clone(),
        generator: format!("evalloop {}", env!("CARGO_PKG_VERSION")),
        dimensions: (!cfg.dimensions.is_empty()).then_some(dimension_card),
        unlabelled,
        preference_pairs: (pairs_card.events > 0).then_some(pairs_card),
        queue_examples: (queue_examples > 0).then_some(queue_examples),
    };
    let card_value = sorted_value(&card, CARD_FILE)?;
    atomic::write_json_pretty(&out.join(CARD_FILE), &card_value)?;
    atomic::write_atomic(&out.join("dataset_card.md"), format!("{}\n", card_markdown(&card_value, &text)).as_bytes())?;
    Ok(Built { text: text.trim_end().to_string(), card, warnings })
}

fn name_of(v: &impl Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

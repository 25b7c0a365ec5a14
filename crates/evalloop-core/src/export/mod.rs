//! Turns feedback into datasets for fine-tuning the LLM itself: SFT, KTO, DPO and reward pairs.
//!
//! `evalloop export KIND --out DIR` writes, beside a dataset card (`card.json`, `README.md`):
//!
//! - `sft`: `sft.{jsonl,parquet}` (`prompt`, `completion`) and `sft_messages.*` (`messages`:
//!   a `user` and an `assistant` turn), from outputs people approved (human score `>=
//!   good_min` under the `[human]` policy) and from edited outputs (`implicit_edit` events with
//!   `edited_output`: the text the user turned the output into);
//! - `kto`: `kto.*` (`prompt`, `completion`, `label`): `true` for good, `false` for bad
//!   (`<= bad_max`), neutral requests left out; edited outputs are `true`;
//! - `dpo` and `reward`: `dpo.*` / `reward.*` (`prompt`, `chosen`, `rejected`), from (a) two
//!   outputs of the same prompt (same group and same prompt text) whose human scores differ by
//!   at least `margin` (default 1 point on the 1-5 scale: a thumbs-up over a thumbs-down, a 4
//!   over a 3; every such pair of a prompt, so a prompt with n outputs gives at most
//!   n (n - 1) / 2), (b) an edited output over the output it replaced, and (c) preference
//!   events ([`pairs::preference_pairs`]).
//!
//! Every row keeps `request_id`, `cohort`, `group`, `source` (see [`Source`]), `label_source`
//! (`human`, or `evaluator` for rows `--expand-with` adds) and `weight`: the product of the
//! `[dataset] weighting` schemes' factors, computed as `dataset build` computes them (cohort
//! rates of the window, `ipw`, `inverse_rate`, `class_balance` over the exported rows' classes
//! (good/bad for KTO, one class otherwise), `disagreement_boost` where the evaluator disagreed
//! with people on the row's request, `normalize` to a mean of 1 over the exported rows).
//!
//! # Held-out groups
//! The groups `dataset build` puts in the test split, with the same config and store (same
//! `[dataset]` evaluator, group key, fractions, seed and window), are left out of every kind
//! unless `include_test_split`: the evaluator is judged on them, so the LLM does not train on
//! them. Groups the build never sees (no human score) are not held out.
//!
//! # Evaluator-labelled rows (`--expand-with MODEL --min-confidence P`)
//! The retrained evaluator scores the window's logged requests that have no human score (the
//! caller scores [`unlabelled_candidates`]); a score `s` is read as P(good). `s >= P` makes an
//! approved output (SFT), a `true` KTO row and a chosen side; `s <= 1 - P` a `false` KTO row and
//! a rejected side; DPO and reward pairs pair the two within one prompt, as the score-margin
//! pairs do. Every such row has `label_source = "evaluator"`.
//!
//! # Files
//! Rows are sorted by `request_id`, then `source`, then text; a JSON line's keys are sorted. The
//! directory is written whole or not at all: every file goes into a temporary sibling folder,
//! which then replaces `DIR` (an existing `DIR` must be empty or an earlier export).

mod card;
pub mod pairs;
mod parquet;
pub mod rows;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use card::{CARD_FILE, CohortCount, ExpandCard, ExportCard};
pub use rows::{Column, Columns, KtoRow, LabelSource, Message, PairRow, SftMessagesRow, SftRow, Source};

use crate::dataset::{
    DatasetConfig, LabelledRequest, NO_COHORT, Plan, Scheme, Split, apply_weights, is_disagreement, metadata_group,
    normalize_on, prompt_group, r6,
};
use crate::feedback::{HumanPolicy, Verdict};
use crate::store::{Filter, ScoredQuery, Store};
use crate::{Error, Result};

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// Prompt-completion and conversational rows of approved and edited outputs.
    Sft,
    /// Unpaired completions labelled desirable or not.
    Kto,
    /// Preference pairs for DPO.
    Dpo,
    /// The same pairs, for a reward model.
    Reward,
}

impl ExportKind {
    /// `sft`, `kto`, `dpo`, `reward`.
    pub fn name(self) -> &'static str {
        match self {
            ExportKind::Sft => "sft",
            ExportKind::Kto => "kto",
            ExportKind::Dpo => "dpo",
            ExportKind::Reward => "reward",
        }
    }
}

/// The files' format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// JSON Lines (default).
    #[default]
    Jsonl,
    /// Apache Parquet (Snappy-compressed).
    Parquet,
}

impl ExportFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Parquet => "parquet",
        }
    }
}

/// The default `margin`: one point of human score (1-5).
pub const DEFAULT_MARGIN: f64 = 1.0;

/// Settings of one export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    pub kind: ExportKind,
    pub format: ExportFormat,
    /// Keep the groups of the evaluator's test split; default false.
    pub include_test_split: bool,
    /// Least human-score difference of a score-margin pair, in (0, 4]; default 1.
    pub margin: f64,
    /// With evaluator-labelled rows: the model directory (for the card) and the least
    /// confidence, in [0.5, 1].
    pub expand: Option<(String, f64)>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            kind: ExportKind::Sft,
            format: ExportFormat::Jsonl,
            include_test_split: false,
            margin: DEFAULT_MARGIN,
            expand: None,
        }
    }
}

impl ExportOptions {
    /// Checks the ranges; errors name the flag.
    pub fn validate(&self) -> Result<()> {
        if !(self.margin.is_finite() && self.margin > 0.0 && self.margin <= 4.0) {
            return Err(Error::Input(format!("--margin {}: expected a number in (0, 4]", self.margin)));
        }
        if let Some((_, p)) = &self.expand
            && !(p.is_finite() && (0.5..=1.0).contains(p))
        {
            return Err(Error::Input(format!("--min-confidence {p}: expected a number in [0.5, 1]")));
        }
        Ok(())
    }
}

/// A logged request: its text, cohort and group (the split's group name).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub request_id: String,
    pub prompt: String,
    pub output: String,
    pub cohort: String,
    pub group: String,
}

/// A candidate with the retrained evaluator's score, read as P(good), in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub candidate: Candidate,
    pub p_good: f64,
}

/// The result of [`export`]: the summary for people and the card.
#[derive(Debug, Clone)]
pub struct Exported {
    pub text: String,
    pub card: ExportCard,
}

/// The same plan `dataset build` makes for the `[dataset]` config in `window` (evaluator,
/// groups and their splits, cohort rates).
pub fn plan(store: &dyn Store, window: &Filter, policy: &HumanPolicy, cfg: &DatasetConfig) -> Result<Plan> {
    crate::dataset::plan(store, window, policy, cfg)
}

/// The group and cohort of a request from its metadata (JSON text) and prompt, as the store
/// names them for `group_key`.
fn group_and_cohort(metadata: &str, prompt: &str, group_key: Option<&str>) -> (String, String) {
    let metadata: Value = serde_json::from_str(metadata).unwrap_or(Value::Null);
    let group = metadata_group(group_key.and_then(|k| metadata.get(k))).unwrap_or_else(|| prompt_group(prompt));
    let cohort = metadata.get("user_cohort").and_then(Value::as_str).unwrap_or(NO_COHORT).to_string();
    (group, cohort)
}

fn held_out(plan: &Plan, include_test: bool, group: &str) -> bool {
    !include_test && plan.splits.get(group) == Some(&Split::Test)
}

/// Texts of the given requests, read in chunks, as candidates.
fn candidates_of(store: &dyn Store, ids: &[String], group_key: Option<&str>) -> Result<Vec<Candidate>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(4096) {
        for (id, t) in store.request_texts(chunk)? {
            let (group, cohort) = group_and_cohort(&t.metadata, &t.prompt, group_key);
            out.push(Candidate { request_id: id, prompt: t.prompt, output: t.output, cohort, group });
        }
    }
    Ok(out)
}

/// The window's logged requests without a human score under `policy` (for any evaluator),
/// outside the held-out groups unless `include_test`, ordered by request id: what
/// `--expand-with` scores.
pub fn unlabelled_candidates(
    store: &dyn Store,
    window: &Filter,
    policy: &HumanPolicy,
    cfg: &DatasetConfig,
    plan: &Plan,
    include_test: bool,
) -> Result<Vec<Candidate>> {
    let window = Filter { evaluator: None, ..window.clone() };
    let rated: HashSet<String> = store
        .scored_requests(&ScoredQuery { filter: window.clone(), policy: policy.clone(), ..Default::default() })?
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    let ids: Vec<String> = store.request_ids(&window)?.into_iter().filter(|id| !rated.contains(id)).collect();
    let all = candidates_of(store, &ids, cfg.group_key.as_deref())?;
    Ok(all.into_iter().filter(|c| !held_out(plan, include_test, &c.group)).collect())
}

/// A human-labelled request of the window.
struct Labelled {
    candidate: Candidate,
    human_score: f64,
    eval_score: f64,
}

/// What a row is, for weighting: its cohort, class and whether the evaluator disagreed.
struct Meta {
    cohort: String,
    class: &'static str,
    is_disagreement: bool,
}

/// What was left out, by reason.
#[derive(Default)]
struct LeftOut(BTreeMap<String, usize>);

impl LeftOut {
    fn add(&mut self, why: &str) {
        *self.0.entry(why.to_string()).or_insert(0) += 1;
    }
}

/// Where an export reads from: the store, the window of requests (its evaluator is ignored:
/// `plan.evaluator` is the one), the human-score policy, the `[dataset]` config and the plan
/// [`plan`] made from them.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub store: &'a dyn Store,
    pub window: &'a Filter,
    pub policy: &'a HumanPolicy,
    pub cfg: &'a DatasetConfig,
    pub plan: &'a Plan,
}

/// Writes the export `opts` describes into `out`, with `expanded` the evaluator-labelled
/// candidates (empty without `--expand-with`).
pub fn export(inputs: Inputs<'_>, opts: &ExportOptions, expanded: &[Scored], out: &Path) -> Result<Exported> {
    let Inputs { store, window, policy, cfg, plan } = inputs;
    opts.validate()?;
    let include_test = opts.include_test_split;
    let mut left_out = LeftOut::default();
    let filter = Filter { evaluator: Some(plan.evaluator.clone()), ..window.clone() };
    let mut labelled = Vec::new();
    for r in store.scored_requests(&ScoredQuery {
        filter,
        policy: policy.clone(),
        group_key: cfg.group_key.clone(),
        with_text: true,
        limit: None,
    })? {
        let Some(text) = r.text else { continue };
        let group = r.group.unwrap_or_else(|| prompt_group(&text.prompt));
        if held_out(plan, include_test, &group) {
            left_out.add("test_split");
            continue;
        }
        labelled.push(Labelled {
            candidate: Candidate {
                request_id: r.request_id,
                prompt: text.prompt,
                output: text.output,
                cohort: r.cohort.unwrap_or_else(|| NO_COHORT.to_string()),
                group,
            },
            human_score: r.human_score,
            eval_score: r.eval_score,
        });
    }
    let edits = edits(store, window, cfg, plan, include_test, &labelled, &mut left_out)?;
    let p_min = opts.expand.as_ref().map_or(1.0, |(_, p)| *p);
    let evaluator_rows: Vec<(&Candidate, bool)> = expanded
        .iter()
        .filter_map(|s| {
            if s.p_good >= p_min {
                Some((&s.candidate, true))
            } else if s.p_good <= 1.0 - p_min {
                Some((&s.candidate, false))
            } else {
                None
            }
        })
        .collect();
    if opts.expand.is_some() {
        left_out.0.insert("evaluator_unsure".into(), expanded.len() - evaluator_rows.len());
    }

    let verdict = |h: f64| policy.verdict(h);
    let disagrees = |l: &Labelled| is_disagreement(l.eval_score, cfg.eval_threshold, verdict(l.human_score));
    let stem = opts.kind.name();
    let ext = opts.format.extension();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut summary = Summary::default();
    match opts.kind {
        ExportKind::Sft => {
            let mut rows = Vec::new();
            let mut meta = Vec::new();
            for l in &labelled {
                if verdict(l.human_score) != Verdict::Good {
                    left_out.add("not_approved");
                    continue;
                }
                rows.push(sft_row(&l.candidate, &l.candidate.output, Source::Feedback, LabelSource::Human));
                meta.push(Meta { cohort: l.candidate.cohort.clone(), class: "good", is_disagreement: disagrees(l) });
            }
            for (c, text) in &edits {
                rows.push(sft_row(c, text, Source::Edit, LabelSource::Human));
                meta.push(Meta { cohort: c.cohort.clone(), class: "good", is_disagreement: false });
            }
            for (c, good) in &evaluator_rows {
                if *good {
                    rows.push(sft_row(c, &c.output, Source::Evaluator, LabelSource::Evaluator));
                    meta.push(Meta { cohort: c.cohort.clone(), class: "good", is_disagreement: false });
                }
            }
            let weights = weigh(&meta, plan, cfg);
            for (r, w) in rows.iter_mut().zip(weights) {
                r.weight = w;
            }
            rows.sort_by(|a, b| {
                (&a.request_id, a.source, &a.completion).cmp(&(&b.request_id, b.source, &b.completion))
            });
            summary.count(rows.iter().map(|r| (r.label_source, r.source, r.cohort.as_str(), r.weight)));
            let messages: Vec<SftMessagesRow> = rows.iter().map(SftMessagesRow::of).collect();
            files.push((format!("{stem}.{ext}"), encode(&rows, opts.format)?));
            files.push((format!("{stem}_messages.{ext}"), encode(&messages, opts.format)?));
        }
        ExportKind::Kto => {
            let mut rows = Vec::new();
            let mut meta = Vec::new();
            for l in &labelled {
                let label = match verdict(l.human_score) {
                    Verdict::Good => true,
                    Verdict::Bad => false,
                    Verdict::Neutral => {
                        left_out.add("neutral");
                        continue;
                    }
                };
                rows.push(kto_row(&l.candidate, &l.candidate.output, label, Source::Feedback, LabelSource::Human));
                meta.push(Meta {
                    cohort: l.candidate.cohort.clone(),
                    class: if label { "good" } else { "bad" },
                    is_disagreement: disagrees(l),
                });
            }
            for (c, text) in &edits {
                rows.push(kto_row(c, text, true, Source::Edit, LabelSource::Human));
                meta.push(Meta { cohort: c.cohort.clone(), class: "good", is_disagreement: false });
            }
            for (c, good) in &evaluator_rows {
                rows.push(kto_row(c, &c.output, *good, Source::Evaluator, LabelSource::Evaluator));
                meta.push(Meta {
                    cohort: c.cohort.clone(),
                    class: if *good { "good" } else { "bad" },
                    is_disagreement: false,
                });
            }
            let weights = weigh(&meta, plan, cfg);
            for (r, w) in rows.iter_mut().zip(weights) {
                r.weight = w;
            }
            rows.sort_by(|a, b| {
                (&a.request_id, a.source, &a.completion).cmp(&(&b.request_id, b.source, &b.completion))
            });
            summary.count(rows.iter().map(|r| (r.label_source, r.source, r.cohort.as_str(), r.weight)));
            let mut labels = BTreeMap::new();
            for r in &rows {
                *labels.entry(r.label.to_string()).or_insert(0) += 1;
            }
            summary.labels = Some(labels);
            files.push((format!("{stem}.{ext}"), encode(&rows, opts.format)?));
        }
        ExportKind::Dpo | ExportKind::Reward => {
            let scored: Vec<pairs::Side<'_>> =
                labelled.iter().map(|l| pairs::Side { candidate: &l.candidate, score: l.human_score }).collect();
            let mut rows = pairs::score_margin_pairs(&scored, opts.margin, Source::ScoreMargin, LabelSource::Human);
            rows.extend(pairs::edit_pairs(&edits));
            rows.extend(pairs::preference_pairs(plan, include_test));
            // Evaluator pairs: a confident good over a confident bad of the same prompt (the
            // scores 1 and 0 differ by 1, so a margin of 1 pairs exactly those).
            let sides: Vec<pairs::Side<'_>> = evaluator_rows
                .iter()
                .map(|(c, good)| pairs::Side { candidate: c, score: if *good { 1.0 } else { 0.0 } })
                .collect();
            rows.extend(pairs::score_margin_pairs(&sides, 1.0, Source::Evaluator, LabelSource::Evaluator));
            let meta: Vec<Meta> =
                rows.iter().map(|r| Meta { cohort: r.cohort.clone(), class: "pair", is_disagreement: false }).collect();
            let weights = weigh(&meta, plan, cfg);
            for (r, w) in rows.iter_mut().zip(weights) {
                r.weight = w;
            }
            rows.sort_by(|a, b| {
                (&a.request_id, a.source, &a.rejected_request_id, &a.chosen, &a.rejected).cmp(&(
                    &b.request_id,
                    b.source,
                    &b.rejected_request_id,
                    &b.chosen,
                    &b.rejected,
                ))
            });
            summary.count(rows.iter().map(|r| (r.label_source, r.source, r.cohort.as_str(), r.weight)));
            files.push((format!("{stem}.{ext}"), encode(&rows, opts.format)?));
        }
    }
    if summary.rows == 0 {
        return Err(Error::Input(format!(
            "export {stem}: no rows ({} labelled requests of evaluator {} in the window; left out: {})",
            labelled.len(),
            plan.evaluator,
            describe_left_out(&left_out.0)
        )));
    }
    let card = ExportCard {
        version: card::CARD_VERSION,
        generator: format!("evalloop {}", env!("CARGO_PKG_VERSION")),
        kind: opts.kind,
        format: opts.format,
        files: files.iter().map(|(n, _)| n.clone()).collect(),
        evaluator: plan.evaluator.clone(),
        human_policy: policy.clone(),
        weighting: cfg.weighting.clone(),
        group_key: cfg.group_key.clone(),
        seed: cfg.seed,
        margin: matches!(opts.kind, ExportKind::Dpo | ExportKind::Reward).then_some(opts.margin),
        expand: opts.expand.as_ref().map(|(model, p)| ExpandCard {
            model: model.clone(),
            min_confidence: *p,
            scored: expanded.len(),
            labelled: evaluator_rows.len(),
        }),
        include_test_split: include_test,
        held_out_groups: if include_test { 0 } else { plan.splits.values().filter(|s| **s == Split::Test).count() },
        since: window.since.map(|t| crate::record::format_timestamp(&t)),
        until: window.until.map(|t| crate::record::format_timestamp(&t)),
        cohort: window.cohort.clone(),
        rows: summary.rows,
        by_label_source: summary.by_label_source,
        by_source: summary.by_source,
        by_cohort: summary
            .by_cohort
            .into_iter()
            .map(|(c, w)| {
                let sum: f64 = w.iter().sum();
                (c, CohortCount { rows: w.len(), weight_sum: r6(sum), effective_size: r6(crate::dataset::kish_ess(w)) })
            })
            .collect(),
        labels: summary.labels,
        left_out: left_out.0,
    };
    let card_json = crate::files::sorted_value(&card, CARD_FILE)?;
    let text = card::summary_text(&card, out);
    let mut pretty = serde_json::to_string_pretty(&card_json).map_err(|e| Error::Input(format!("{CARD_FILE}: {e}")))?;
    pretty.push('\n');
    files.push((CARD_FILE.to_string(), pretty.into_bytes()));
    files.push(("README.md".to_string(), card::markdown(&card).into_bytes()));
    write_dir(out, &files)?;
    Ok(Exported { text, card })
}

fn describe_left_out(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "nothing".into();
    }
    m.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
}

/// Counts of the rows written, for the card.
#[derive(Default)]
struct Summary {
    rows: usize,
    by_label_source: BTreeMap<String, usize>,
    by_source: BTreeMap<String, usize>,
    by_cohort: BTreeMap<String, Vec<f64>>,
    labels: Option<BTreeMap<String, usize>>,
}

impl Summary {
    fn count<'a>(&mut self, rows: impl Iterator<Item = (LabelSource, Source, &'a str, f64)>) {
        for (ls, s, c, w) in rows {
            self.rows += 1;
            *self.by_label_source.entry(ls.name().to_string()).or_insert(0) += 1;
            *self.by_source.entry(s.name().to_string()).or_insert(0) += 1;
            self.by_cohort.entry(c.to_string()).or_default().push(w);
        }
    }
}

fn sft_row(c: &Candidate, completion: &str, source: Source, label_source: LabelSource) -> SftRow {
    SftRow {
        cohort: c.cohort.clone(),
        completion: completion.to_string(),
        group: c.group.clone(),
        label_source,
        prompt: c.prompt.clone(),
        request_id: c.request_id.clone(),
        source,
        weight: 1.0,
    }
}

fn kto_row(c: &Candidate, completion: &str, label: bool, source: Source, label_source: LabelSource) -> KtoRow {
    KtoRow {
        cohort: c.cohort.clone(),
        completion: completion.to_string(),
        group: c.group.clone(),
        label,
        label_source,
        prompt: c.prompt.clone(),
        request_id: c.request_id.clone(),
        source,
        weight: 1.0,
    }
}

/// The latest edited output of each request of the window (outside the held-out groups), with
/// the request it edits; an empty edit, or one equal to the output, is left out.
fn edits(
    store: &dyn Store,
    window: &Filter,
    cfg: &DatasetConfig,
    plan: &Plan,
    include_test: bool,
    labelled: &[Labelled],
    left_out: &mut LeftOut,
) -> Result<Vec<(Candidate, String)>> {
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for e in store.edited_outputs(&Filter { evaluator: None, ..window.clone() })? {
        // Ordered by request, then time: the last one of a request wins.
        latest.insert(e.request_id, e.edited_output);
    }
    let known: BTreeMap<&str, &Candidate> =
        labelled.iter().map(|l| (l.candidate.request_id.as_str(), &l.candidate)).collect();
    let missing: Vec<String> = latest.keys().filter(|id| !known.contains_key(id.as_str())).cloned().collect();
    let fetched = candidates_of(store, &missing, cfg.group_key.as_deref())?;
    let fetched: BTreeMap<&str, &Candidate> = fetched.iter().map(|c| (c.request_id.as_str(), c)).collect();
    let mut out = Vec::new();
    for (id, text) in latest {
        let Some(c) = known.get(id.as_str()).or_else(|| fetched.get(id.as_str())) else { continue };
        if held_out(plan, include_test, &c.group) {
            // A labelled request's edit was counted with the request.
            if !known.contains_key(id.as_str()) {
                left_out.add("test_split");
            }
            continue;
        }
        if text.trim().is_empty() {
            left_out.add("empty_edit");
        } else if text == c.output {
            left_out.add("unchanged_edit");
        } else {
            out.push(((*c).clone(), text));
        }
    }
    Ok(out)
}

/// Each row's weight: the `[dataset] weighting` factors of its cohort and class (all but
/// `normalize`), then `normalize` over the exported rows; 6 decimals.
fn weigh(meta: &[Meta], plan: &Plan, cfg: &DatasetConfig) -> Vec<f64> {
    let mut examples: Vec<LabelledRequest> = meta
        .iter()
        .map(|m| LabelledRequest {
            request_id: String::new(),
            prompt: String::new(),
            output: String::new(),
            label: 0.0,
            class: m.class,
            human_score: f64::NAN,
            eval_score: f64::NAN,
            cohort: m.cohort.clone(),
            group: String::new(),
            is_disagreement: m.is_disagreement,
            weight: 1.0,
            labels: BTreeMap::new(),
        })
        .collect();
    apply_weights(&mut examples, &plan.rates, cfg);
    let mut w: Vec<f64> = examples.iter().map(|e| e.weight).collect();
    if cfg.weighting.contains(&Scheme::Normalize) {
        let on = vec![true; w.len()];
        normalize_on(&mut w, &on);
    }
    w.into_iter().map(r6).collect()
}

/// The rows as JSON Lines or Parquet bytes.
fn encode<T: Columns>(rows: &[T], format: ExportFormat) -> Result<Vec<u8>> {
    match format {
        ExportFormat::Jsonl => {
            let mut out = Vec::new();
            for r in rows {
                serde_json::to_writer(&mut out, r).map_err(|e| Error::Internal(format!("encoding a row: {e}")))?;
                out.push(b'\n');
            }
            Ok(out)
        }
        ExportFormat::Parquet => parquet::encode(T::columns(rows)),
    }
}

/// Writes `files` into a temporary sibling of `out`, then puts it in `out`'s place. An
/// existing `out` must be an empty folder or an earlier export (it has `card.json`).
fn write_dir(out: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    if out.exists() {
        let entries: Vec<PathBuf> =
            std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        if !entries.is_empty() && !out.join(CARD_FILE).is_file() {
            return Err(Error::Input(format!(
                "--out {}: the folder exists and is not an evalloop export (no {CARD_FILE}); give a new or empty folder",
                out.display()
            )));
        }
    }
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = parent.join(format!(".{name}.tmp{}", std::process::id()));
    let old = parent.join(format!(".{name}.old{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let written = files.iter().try_for_each(|(n, bytes)| crate::atomic::write_atomic(&tmp.join(n), bytes));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::io(out, e));
    }
    if had_old {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(ExportOptions::default().validate().is_ok());
        let bad_margin = ExportOptions { margin: 0.0, ..Default::default() };
        assert!(bad_margin.validate().unwrap_err().to_string().contains("--margin 0"));
        let bad_p = ExportOptions { expand: Some(("m".into(), 0.4)), ..Default::default() };
        assert!(bad_p.validate().unwrap_err().to_string().contains("--min-confidence 0.4"));
    }

    #[test]
    fn weights_follow_the_dataset_schemes() {
        use crate::dataset::CohortRate;
        let plan = Plan {
            evaluator: "e".into(),
            examples: Vec::new(),
            splits: BTreeMap::new(),
            rates: BTreeMap::from([
                ("a".to_string(), CohortRate { requests: 10, counted: 5 }),
                ("b".to_string(), CohortRate { requests: 10, counted: 1 }),
            ]),
            factors: BTreeMap::new(),
            stats: Vec::new(),
            strata: Vec::new(),
            candidates: 0,
            dropped_neutral: 0,
            dropped_agreeing: 0,
            available: 0,
            pairs: Vec::new(),
            pairs_card: Default::default(),
            from_queues: BTreeMap::new(),
        };
        let meta = |c: &str, class: &'static str| Meta { cohort: c.into(), class, is_disagreement: false };
        let rows = [meta("a", "good"), meta("b", "good"), meta("b", "bad")];
        let cfg = DatasetConfig { weighting: vec![Scheme::InverseRate], ..Default::default() };
        let w = weigh(&rows, &plan, &cfg);
        assert_eq!(w, vec![r6(1.0 / 0.51), r6(1.0 / 0.11), r6(1.0 / 0.11)]);
        // Normalized: mean 1 over the rows, ratios kept.
        let cfg = DatasetConfig { weighting: vec![Scheme::InverseRate, Scheme::Normalize], ..Default::default() };
        let n = weigh(&rows, &plan, &cfg);
        assert!((n.iter().sum::<f64>() / 3.0 - 1.0).abs() < 1e-5, "{n:?}");
        assert!((n[1] / n[0] - 0.51 / 0.11).abs() < 1e-4);
        // Class balance over the exported rows: one good, one bad in cohort b.
        let cfg = DatasetConfig { weighting: vec![Scheme::ClassBalance], ..Default::default() };
        assert_eq!(weigh(&rows, &plan, &cfg), vec![0.75, 0.75, 1.5]);
    }
}

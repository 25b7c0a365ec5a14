//! Builds realistic logs and biased feedback from human-judgement files, with known ground truth.
//!
//! `evalloop simulate --judgements FILE.jsonl --dimension NAME --out DIR` reads one judged output
//! per line (`dataset`, `item_id`, `group_id`, `system`, `source`, `reference`, `output`,
//! `human{dimension: score}`) and writes, in `DIR`:
//!
//! - `logs.jsonl`: one eval log per judged output (ingest format of [`crate::record`]). The
//!   request id is the `item_id`; the prompt is `prompt_prefix` + `source`; `metadata` carries
//!   `user_cohort`, `user_id`, `group_id`, `system`, `dataset`, `use_case` and `item_id`.
//! - `feedback.jsonl`: the feedback events the simulated users left (ingest format).
//! - `truth.jsonl`: every request's true human score, its cohort, group and held-out flag.
//! - `heldout.jsonl`: the outputs of the held-out groups (`--holdout-groups N`), which appear in
//!   neither logs nor feedback: request id, prompt, output, group, system, true human score.
//! - `simulate.json`: the resolved settings and per-cohort counts.
//!
//! # Baseline evaluator
//! `eval_scores.overall` is the unigram F1 of the output against the reference: tokens are the
//! whitespace-separated words, lower-cased, keeping those with a letter or digit; with `c` the
//! size of the multiset intersection, `P = c / |output|`, `R = c / |reference|`,
//! `F1 = 2PR / (P + R)` (0 when either side is empty). With `evaluator_scale = "minmax"` (the
//! default) F1 is rescaled to [0, 1] by the minimum and maximum F1 over the whole file, so that
//! the dataset stage's "evaluator says good" threshold (0.7) has something above it; `"raw"`
//! keeps F1 as is.
//!
//! With `production = "judge"` the logs carry a simulated LLM judge instead, decent but
//! miscalibrated as production judges are: with `z` the human score standardised over the file
//! and `e` a standard normal draw of its own stream per request, the judge's latent score is
//! `judge_correlation z + sqrt(1 - judge_correlation^2) e + judge_bias` (the cohort's
//! `judge_bias`, in human-score sds: the judge over- or under-rates that cohort's requests), and
//! `overall = 1 / (1 + exp(-1.702 latent))` (the logistic approximation of the normal CDF). The
//! judge's Pearson correlation with the human score is `judge_correlation` within a cohort.
//!
//! # Human scores on the 1-5 scale
//! A judgement `h` on the scale `[lo, hi]` maps linearly to `h5 = 1 + 4 (h - lo) / (hi - lo)`:
//! for 0-1 data (REALSumm, QAGS) `h5 = 1 + 4h`; for 1-6 data (BAGEL, SF) `h5 = 1 + 0.8 (h - 1)`;
//! 1-5 data (Newsroom) is unchanged. The scale is `scale = [lo, hi]`, or inferred from the file:
//! all scores in [0, 1] -> 0-1, else in [1, 5] -> 1-5, else in [1, 6] -> 1-6.
//!
//! # Cohorts
//! Each cohort has a `share`, a base `feedback_rate`, a `shift` and optionally its own
//! `outcome_slope`. With `cohort_by = "system"` every output of a system belongs to one cohort:
//! the distinct systems are ordered by `sha256(seed, system)` and the i-th of n goes to the cohort
//! whose cumulative share interval holds `(i + 0.5) / n`. Cohort and output quality are then
//! correlated, so cohort-dependent feedback biases the labelled sample. With `cohort_by = "user"`
//! each request gets one of `users` synthetic users uniformly at random, and a user's cohort is
//! the one whose cumulative share interval holds `hash(seed, user) / 2^64`. `"auto"` (default)
//! means `system` when the file has at least as many distinct systems as there are cohorts,
//! else `user`.
//!
//! # Feedback model
//! A user of cohort `c` perceives the output as `x = clamp(h5 + shift_c + noise, 1, 5)` with
//! `noise ~ N(0, rating_noise)`. With `d = (x - 3) / 2` in [-1, 1], the chance that the request
//! gets explicit feedback is
//!
//! `p = sigmoid(logit(feedback_rate_c) - outcome_slope_c * d + extremity * (|d| - 0.5))`.
//!
//! `outcome_slope > 0` means bad outputs are reported more, `< 0` good ones; `extremity > 0`
//! means clear verdicts either way are reported more. With both 0 (the defaults) the chance is
//! exactly `feedback_rate_c`, i.e. the feedback is missing at random within a cohort. Explicit
//! feedback is a rating `round(x)` (1-5), except that with probability `thumbs_share` a user whose
//! rating is >= 4 gives a thumbs-up and one whose rating is <= 2 a thumbs-down instead. Independently,
//! with probability `implicit_rate` a request gets one implicit event: `implicit_usage` when
//! `x >= 3.5`, `implicit_edit` when `2.5 <= x < 3.5`, `implicit_discard` below. The truth file
//! records `human_score_5` (`h5`), `perceived_score` (`h5 + shift_c`, clamped, without noise) and
//! `true_rating` (its rounding) for every request, given feedback or not.
//!
//! # Several human dimensions (`dimensions`, `--dimensions a,b`)
//! Each extra dimension k (besides `--dimension`, the primary one) is rated alongside the
//! primary rating: when a request's explicit feedback is a rating (not a thumb), the same user
//! also leaves one `explicit_rating` event with `"dimension": k` per extra dimension, with the
//! value `round(clamp(h5_k + shift_c + noise_k, 1, 5))`, where `h5_k` is the request's judgement
//! on k mapped to 1-5 (the scale of k is inferred from k's own scores unless `scale` is set),
//! `shift_c` the cohort's shift and `noise_k ~ N(0, rating_noise)` a draw of its own per
//! dimension (after the request's other draws, so the primary feedback is the same with or
//! without extra dimensions). Whether a request gets feedback still follows the primary
//! dimension alone. `truth.jsonl` and `heldout.jsonl` then gain `human_scores` (every listed
//! dimension, primary first, on the judgement's own scale).
//!
//! # Rater noise (`[simulate.raters]`)
//! Each product user can carry a bias of their own (`user_bias_sd`), and a panel of reviewers
//! can rate a share of the requests (`multi_rated`) several times over, each reviewer with a
//! bias and a noise level of their own, so that agreement between people and the human ceiling
//! can be measured; see [`panel`]. The defaults add nothing.
//!
//! # Preferences (`[simulate.preferences]`)
//! A share of the users who would rate their output compare it with another output of the
//! same group instead (`explicit_preference`); see [`preference`]. The default adds nothing.
//!
//! # Determinism
//! Every random draw comes from a ChaCha8 generator seeded by `seed` and the request id, in a
//! fixed order, and timestamps are spread uniformly over the `window_days` ending at `end_time`
//! (default `2026-05-18T00:00:00Z`), so the same file, dimension and settings give byte-identical
//! output.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::atomic::AtomicWriter;
pub use crate::hash::hash64;
use crate::record::{EvalLog, FeedbackEvent, FeedbackType, FeedbackValue};
use crate::{Error, Result};

pub mod panel;
pub mod preference;
pub use panel::RaterNoise;
pub use preference::PreferenceSim;

/// One line of a human-judgement file.
#[derive(Debug, Clone, Deserialize)]
pub struct Judgement {
    pub dataset: String,
    pub item_id: String,
    pub group_id: String,
    pub system: String,
    pub source: String,
    pub reference: String,
    pub output: String,
    /// Dimension -> mean human score, on the dataset's own scale.
    pub human: BTreeMap<String, f64>,
}

/// How requests are put into cohorts; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CohortBy {
    /// `system` when there are at least as many systems as cohorts, else `user`.
    Auto,
    /// All outputs of one system share a cohort.
    System,
    /// Synthetic users, hashed into cohorts.
    User,
}

/// How the unigram F1 becomes `eval_scores.overall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalScale {
    /// Min-max over the file, to [0, 1].
    Minmax,
    /// F1 as is.
    Raw,
}

/// One simulated user cohort (`[[simulate.cohorts]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortSpec {
    /// The `metadata.user_cohort` value.
    pub name: String,
    /// Relative share of systems (or users); any positive number, normalised over cohorts.
    pub share: f64,
    /// Base chance, in [0, 1], that a request gets explicit feedback.
    pub feedback_rate: f64,
    /// Added to the 1-5 human score before this cohort rates (what it considers good); default 0.
    #[serde(default)]
    pub shift: f64,
    /// Overrides the section's `outcome_slope` for this cohort.
    #[serde(default)]
    pub outcome_slope: Option<f64>,
    /// `production = "judge"`: added to the judge's latent score of this cohort's requests, in
    /// human-score sds (the judge's bias for the cohort); default 0.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub judge_bias: f64,
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

/// Which production evaluator scores the simulated logs (`production`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Production {
    /// Unigram F1 against the reference (the default).
    #[default]
    UnigramF1,
    /// A noisy judge: correlated with the human score by `judge_correlation`, biased per
    /// cohort by `judge_bias` (see the module docs).
    Judge,
}

fn is_unigram(p: &Production) -> bool {
    *p == Production::UnigramF1
}

/// `[simulate]`: every key optional, defaults as documented on each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulateConfig {
    /// Seed of every random draw; default 7 (`--seed` overrides).
    pub seed: u64,
    /// Whole groups kept out of logs and feedback; default 0 (`--holdout-groups` overrides).
    pub holdout_groups: usize,
    /// `auto` (default), `system` or `user`.
    pub cohort_by: CohortBy,
    /// Number of synthetic users; default 500.
    pub users: u32,
    /// The judgement scale `[lo, hi]`; default inferred from the file (0-1, 1-5 or 1-6).
    pub scale: Option<[f64; 2]>,
    /// Put before the source to make the prompt; default empty.
    pub prompt_prefix: String,
    /// The logs' `evaluator` name; default `baseline-unigram-f1`.
    pub evaluator: String,
    /// `minmax` (default) or `raw`.
    pub evaluator_scale: EvalScale,
    /// The production evaluator: `unigram_f1` (default) or `judge` (see the module docs).
    #[serde(skip_serializing_if = "is_unigram")]
    pub production: Production,
    /// `production = "judge"`: the judge's correlation with the human score, in [-1, 1];
    /// default 0.6.
    pub judge_correlation: f64,
    /// End of the simulated week (RFC 3339); default `2026-05-18T00:00:00Z`.
    pub end_time: String,
    /// Length of the simulated period in days; default 7.
    pub window_days: f64,
    /// Chance that a clear verdict (rating >= 4 or <= 2) comes as a thumb instead; default 0.3.
    pub thumbs_share: f64,
    /// Chance of one implicit event per request; default 0.3.
    pub implicit_rate: f64,
    /// Outcome dependence of feedback (> 0: bad outputs reported more); default 0.
    pub outcome_slope: f64,
    /// Extra feedback on clear verdicts either way; default 0.
    pub extremity: f64,
    /// Standard deviation of the per-request rating noise, in 1-5 points; default 0.
    pub rating_noise: f64,
    /// Default: `free` (share 3, rate 0.3), `pro` (share 2, rate 0.5), `enterprise` (share 2, rate 0.8).
    pub cohorts: Vec<CohortSpec>,
    /// Extra human dimensions rated alongside the primary one (see the module docs); default
    /// none (`--dimensions` overrides).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<String>,
    /// `[simulate.raters]`: each user's own bias and a review panel that rates a share of the
    /// requests several times (see [`panel`]); default off.
    #[serde(skip_serializing_if = "RaterNoise::is_off")]
    pub raters: RaterNoise,
    /// `[simulate.preferences]`: a share of the ratings come as a preference between two
    /// outputs of the group instead (see [`preference`]); default off.
    #[serde(skip_serializing_if = "PreferenceSim::is_off")]
    pub preferences: PreferenceSim,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        let c = |name: &str, share, feedback_rate| CohortSpec {
            name: name.into(),
            share,
            feedback_rate,
            shift: 0.0,
            outcome_slope: None,
            judge_bias: 0.0,
        };
        SimulateConfig {
            seed: 7,
            holdout_groups: 0,
            cohort_by: CohortBy::Auto,
            users: 500,
            scale: None,
            prompt_prefix: String::new(),
            evaluator: "baseline-unigram-f1".into(),
            evaluator_scale: EvalScale::Minmax,
            production: Production::UnigramF1,
            judge_correlation: 0.6,
            end_time: "2026-05-18T00:00:00Z".into(),
            window_days: 7.0,
            thumbs_share: 0.3,
            implicit_rate: 0.3,
            outcome_slope: 0.0,
            extremity: 0.0,
            rating_noise: 0.0,
            cohorts: vec![c("free", 3.0, 0.3), c("pro", 2.0, 0.5), c("enterprise", 2.0, 0.8)],
            dimensions: Vec::new(),
            raters: RaterNoise::default(),
            preferences: PreferenceSim::default(),
        }
    }
}

impl SimulateConfig {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let prob = |name: &str, x: f64| {
            if (0.0..=1.0).contains(&x) { Ok(()) } else { Err(format!("{name} = {x} is outside [0, 1]")) }
        };
        prob("thumbs_share", self.thumbs_share)?;
        prob("implicit_rate", self.implicit_rate)?;
        if self.cohorts.is_empty() {
            return Err("cohorts: at least one cohort is needed".into());
        }
        let mut names = BTreeSet::new();
        for (i, c) in self.cohorts.iter().enumerate() {
            prob(&format!("cohorts[{i}].feedback_rate"), c.feedback_rate)?;
            if !(c.share > 0.0 && c.share.is_finite()) {
                return Err(format!("cohorts[{i}].share = {} must be positive", c.share));
            }
            if c.name.trim().is_empty() || !names.insert(c.name.clone()) {
                return Err(format!("cohorts[{i}].name {:?} is empty or repeated", c.name));
            }
        }
        if !(self.window_days > 0.0 && self.window_days.is_finite()) {
            return Err(format!("window_days = {} must be positive", self.window_days));
        }
        if !(self.rating_noise >= 0.0 && self.rating_noise.is_finite()) {
            return Err(format!("rating_noise = {} must be >= 0", self.rating_noise));
        }
        if !(-1.0..=1.0).contains(&self.judge_correlation) {
            return Err(format!("judge_correlation = {} is outside [-1, 1]", self.judge_correlation));
        }
        for (i, c) in self.cohorts.iter().enumerate() {
            if !c.judge_bias.is_finite() {
                return Err(format!("cohorts[{i}].judge_bias = {} is not a number", c.judge_bias));
            }
        }
        if self.users == 0 {
            return Err("users must be at least 1".into());
        }
        self.raters.validate()?;
        self.preferences.validate()?;
        crate::record::check_dimension_list(&self.dimensions).map_err(|e| format!("dimensions{e}"))?;
        if let Some([lo, hi]) = self.scale
            && (lo.is_nan() || hi.is_nan() || lo >= hi)
        {
            return Err(format!("scale = [{lo}, {hi}] must be increasing"));
        }
        self.end()?;
        Ok(())
    }

    fn end(&self) -> std::result::Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(&self.end_time)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| format!("end_time {:?} is not RFC 3339 ({e})", self.end_time))
    }
}

/// Per-cohort counts of what was simulated.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CohortCounts {
    /// Requests in the logs (held-out ones excluded).
    pub requests: u64,
    /// Requests with explicit feedback (one event each).
    pub explicit: u64,
    pub ratings: u64,
    pub thumbs: u64,
    /// Requests with an implicit event.
    pub implicit: u64,
    /// Mean true 1-5 human score over the cohort's logged requests.
    pub mean_human_score_5: f64,
}

/// What one simulation wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SimulateSummary {
    pub judgements: String,
    pub dimension: String,
    pub out: String,
    pub scale: [f64; 2],
    pub cohort_by: CohortBy,
    pub logs: u64,
    pub feedback_events: u64,
    pub heldout_requests: u64,
    pub heldout_groups: Vec<String>,
    pub cohorts: BTreeMap<String, CohortCounts>,
    /// The extra dimensions rated (empty without `--dimensions`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<String>,
    /// Dimension rating events written (counted in `feedback_events` too).
    #[serde(skip_serializing_if = "is_zero")]
    pub dimension_ratings: u64,
    /// Requests the review panel rated (`[simulate.raters] multi_rated`).
    #[serde(skip_serializing_if = "is_zero")]
    pub panel_requests: u64,
    /// Rating events the panel left, dimension ratings included (counted in `feedback_events`
    /// too).
    #[serde(skip_serializing_if = "is_zero")]
    pub panel_ratings: u64,
    /// Preference events written instead of ratings (`[simulate.preferences]`; counted in
    /// `feedback_events` too).
    #[serde(skip_serializing_if = "is_zero")]
    pub preferences: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl std::fmt::Display for SimulateSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulate {} ({}, scale {}-{}): {} logs, {} feedback events, {} held-out requests in {} groups -> {}",
            self.judgements,
            self.dimension,
            self.scale[0],
            self.scale[1],
            self.logs,
            self.feedback_events,
            self.heldout_requests,
            self.heldout_groups.len(),
            self.out
        )?;
        if !self.dimensions.is_empty() {
            writeln!(
                f,
                "  dimension ratings: {} ({} per rated request: {})",
                self.dimension_ratings,
                self.dimensions.len(),
                self.dimensions.join(", ")
            )?;
        }
        if self.preferences > 0 {
            writeln!(f, "  preferences: {} (instead of ratings)", self.preferences)?;
        }
        if self.panel_requests > 0 {
            writeln!(
                f,
                "  review panel: {} requests rated by several reviewers, {} rating events",
                self.panel_requests, self.panel_ratings
            )?;
        }
        writeln!(
            f,
            "  {:<14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "cohort", "requests", "explicit", "ratings", "thumbs", "implicit", "mean h5"
        )?;
        for (name, c) in &self.cohorts {
            writeln!(
                f,
                "  {name:<14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10.3}",
                c.requests, c.explicit, c.ratings, c.thumbs, c.implicit, c.mean_human_score_5
            )?;
        }
        Ok(())
    }
}

/// Reads a judgement file, checking that every line has `dimension`; errors name file:line.
pub fn read_judgements(path: &Path, dimension: &str) -> Result<Vec<Judgement>> {
    read_judgements_with(path, &[dimension])
}

/// Reads a judgement file, checking that every line has a finite score on each of
/// `dimensions`; errors name file:line and the field.
pub fn read_judgements_with(path: &Path, dimensions: &[&str]) -> Result<Vec<Judgement>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let j: Judgement = serde_json::from_str(&line).map_err(|e| Error::Input(format!("{at}: {e}")))?;
        for dimension in dimensions {
            match j.human.get(*dimension) {
                Some(x) if x.is_finite() => {}
                Some(x) => return Err(Error::Input(format!("{at}: field `human.{dimension}`: {x} is not finite"))),
                None => {
                    let have: Vec<&str> = j.human.keys().map(String::as_str).collect();
                    return Err(Error::Input(format!(
                        "{at}: field `human.{dimension}`: missing (this file has {})",
                        have.join(", ")
                    )));
                }
            }
        }
        if !seen.insert(j.item_id.clone()) {
            return Err(Error::Input(format!("{at}: field `item_id`: {:?} repeats an earlier line", j.item_id)));
        }
        out.push(j);
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no judgements", path.display())));
    }
    Ok(out)
}

/// The scale a set of scores is on: 0-1, 1-5 or 1-6 (see the module docs).
pub fn infer_scale(scores: &[f64]) -> Option<[f64; 2]> {
    let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo >= 0.0 && hi <= 1.0 {
        Some([0.0, 1.0])
    } else if lo >= 1.0 && hi <= 5.0 {
        Some([1.0, 5.0])
    } else if lo >= 1.0 && hi <= 6.0 {
        Some([1.0, 6.0])
    } else {
        None
    }
}

/// Maps a score on `[lo, hi]` linearly onto 1-5 (clamped).
pub fn to_five(h: f64, [lo, hi]: [f64; 2]) -> f64 {
    (1.0 + 4.0 * (h - lo) / (hi - lo)).clamp(1.0, 5.0)
}

fn tokens(text: &str) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for t in text.split_whitespace() {
        if t.chars().any(char::is_alphanumeric) {
            *m.entry(t.to_lowercase()).or_insert(0) += 1;
        }
    }
    m
}

/// Unigram F1 of `output` against `reference` (see the module docs); 0 when either is empty.
pub fn unigram_f1(output: &str, reference: &str) -> f64 {
    let (o, r) = (tokens(output), tokens(reference));
    let (no, nr): (u32, u32) = (o.values().sum(), r.values().sum());
    if no == 0 || nr == 0 {
        return 0.0;
    }
    let common: u32 = o.iter().map(|(t, n)| (*n).min(r.get(t).copied().unwrap_or(0))).sum();
    if common == 0 {
        return 0.0;
    }
    let (p, rc) = (f64::from(common) / f64::from(no), f64::from(common) / f64::from(nr));
    2.0 * p * rc / (p + rc)
}

/// The index of the cohort whose cumulative (normalised) share interval holds `u` in [0, 1).
fn cohort_at(shares: &[f64], u: f64) -> usize {
    let total: f64 = shares.iter().sum();
    let mut acc = 0.0;
    for (i, s) in shares.iter().enumerate() {
        acc += s / total;
        if u < acc {
            return i;
        }
    }
    shares.len() - 1
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The chance of explicit feedback for a cohort's base rate and a perceived 1-5 score.
pub fn feedback_probability(rate: f64, slope: f64, extremity: f64, perceived: f64) -> f64 {
    if rate <= 0.0 {
        return 0.0;
    }
    if rate >= 1.0 {
        return 1.0;
    }
    let d = ((perceived - 3.0) / 2.0).clamp(-1.0, 1.0);
    sigmoid((rate / (1.0 - rate)).ln() - slope * d + extremity * (d.abs() - 0.5))
}

fn use_case(dataset: &str) -> &'static str {
    match dataset {
        "bagel" | "sfres" | "sfhot" => "data-to-text",
        _ => "summarization",
    }
}

fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; both uniforms are always drawn so the stream stays aligned.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Runs a simulation and writes its files into `out` (created if needed).
pub fn simulate(judgements: &Path, dimension: &str, out: &Path, cfg: &SimulateConfig) -> Result<SimulateSummary> {
    cfg.validate().map_err(|e| Error::Input(format!("[simulate]: {e}")))?;
    if let Some(i) = cfg.dimensions.iter().position(|d| d == dimension) {
        return Err(Error::Input(format!(
            "[simulate] dimensions[{i}] {dimension:?} is the primary dimension (--dimension); list only the others"
        )));
    }
    let mut wanted = vec![dimension];
    wanted.extend(cfg.dimensions.iter().map(String::as_str));
    let rows = read_judgements_with(judgements, &wanted)?;
    let scale_of = |dim: &str| -> Result<[f64; 2]> {
        match cfg.scale {
            Some(s) => Ok(s),
            None => {
                let scores: Vec<f64> = rows.iter().map(|j| j.human[dim]).collect();
                infer_scale(&scores).ok_or_else(|| {
                    Error::Input(format!(
                        "{}: human.{dim} scores are not on a 0-1, 1-5 or 1-6 scale; set [simulate] scale = [lo, hi]",
                        judgements.display()
                    ))
                })
            }
        }
    };
    let scale = scale_of(dimension)?;
    let extra_scales: Vec<[f64; 2]> = cfg.dimensions.iter().map(|d| scale_of(d)).collect::<Result<_>>()?;
    let end = cfg.end().map_err(|e| Error::Input(format!("[simulate]: {e}")))?;
    let seed = cfg.seed.to_string();

    // Held-out groups: a seeded shuffle of the sorted distinct groups.
    let groups: BTreeSet<&str> = rows.iter().map(|j| j.group_id.as_str()).collect();
    if cfg.holdout_groups >= groups.len() && cfg.holdout_groups > 0 {
        return Err(Error::Input(format!(
            "--holdout-groups {} leaves nothing to log: {} has {} groups",
            cfg.holdout_groups,
            judgements.display(),
            groups.len()
        )));
    }
    let mut order: Vec<&str> = groups.iter().copied().collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(hash64(&[&seed, "holdout"])));
    let heldout: BTreeSet<&str> = order.into_iter().take(cfg.holdout_groups).collect();

    // Cohorts.
    let shares: Vec<f64> = cfg.cohorts.iter().map(|c| c.share).collect();
    let systems: BTreeSet<&str> = rows.iter().map(|j| j.system.as_str()).collect();
    let by = match cfg.cohort_by {
        CohortBy::Auto if systems.len() >= cfg.cohorts.len() => CohortBy::System,
        CohortBy::Auto => CohortBy::User,
        b => b,
    };
    let mut sys_order: Vec<&str> = systems.iter().copied().collect();
    sys_order.sort_by_key(|s| (hash64(&[&seed, "system", s]), *s));
    let n_sys = sys_order.len() as f64;
    let system_cohort: BTreeMap<&str, usize> =
        sys_order.iter().enumerate().map(|(i, s)| (*s, cohort_at(&shares, (i as f64 + 0.5) / n_sys))).collect();

    // Baseline evaluator.
    let f1: Vec<f64> = rows.iter().map(|j| unigram_f1(&j.output, &j.reference)).collect();
    let (fmin, fmax) = f1.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
    let overall = |x: f64| match cfg.evaluator_scale {
        EvalScale::Raw => x,
        EvalScale::Minmax if fmax > fmin => (x - fmin) / (fmax - fmin),
        EvalScale::Minmax => 0.5,
    };
    // The noisy judge's standardisation of the human score.
    let hs: Vec<f64> = rows.iter().map(|j| j.human[dimension]).collect();
    let h_mean = hs.iter().sum::<f64>() / hs.len().max(1) as f64;
    let h_sd = (hs.iter().map(|h| (h - h_mean).powi(2)).sum::<f64>() / hs.len().max(1) as f64).sqrt();
    let judge = |j: &Judgement, bias: f64| {
        let mut rng = ChaCha8Rng::seed_from_u64(hash64(&[&seed, "judge", &j.item_id]));
        let z = if h_sd > 0.0 { (j.human[dimension] - h_mean) / h_sd } else { 0.0 };
        let r = cfg.judge_correlation;
        let latent = r * z + (1.0 - r * r).max(0.0).sqrt() * standard_normal(&mut rng) + bias;
        sigmoid(1.702 * latent)
    };

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut w_logs = AtomicWriter::create(&out.join("logs.jsonl"))?;
    let mut w_fb = AtomicWriter::create(&out.join("feedback.jsonl"))?;
    let mut w_truth = AtomicWriter::create(&out.join("truth.jsonl"))?;
    let mut w_held = AtomicWriter::create(&out.join("heldout.jsonl"))?;

    let window_us = (cfg.window_days * 86_400e6) as i64;
    let mut summary = SimulateSummary {
        judgements: judgements.display().to_string(),
        dimension: dimension.to_string(),
        out: out.display().to_string(),
        scale,
        cohort_by: by,
        logs: 0,
        feedback_events: 0,
        heldout_requests: 0,
        heldout_groups: heldout.iter().map(|s| s.to_string()).collect(),
        cohorts: cfg.cohorts.iter().map(|c| (c.name.clone(), CohortCounts::default())).collect(),
        dimensions: cfg.dimensions.clone(),
        dimension_ratings: 0,
        panel_requests: 0,
        panel_ratings: 0,
        preferences: 0,
    };
    // Per group, the logged outputs (index into `rows`), for preferences.
    let mut group_rows: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, j) in rows.iter().enumerate() {
        if !heldout.contains(j.group_id.as_str()) {
            group_rows.entry(j.group_id.as_str()).or_default().push(i);
        }
    }
    for (j, f1) in rows.iter().zip(&f1) {
        let mut rng = ChaCha8Rng::seed_from_u64(hash64(&[&seed, "request", &j.item_id]));
        // Fixed draw order: user, time, feedback?, thumbs?, noise, implicit?, two delays.
        let user_n: u32 = rng.random_range(0..cfg.users);
        let offset_us: i64 = rng.random_range(0..window_us.max(1));
        let u_feedback: f64 = rng.random();
        let u_thumbs: f64 = rng.random();
        let noise = standard_normal(&mut rng) * cfg.rating_noise;
        let u_implicit: f64 = rng.random();
        let delay_explicit: f64 = -rng.random::<f64>().max(f64::MIN_POSITIVE).ln() * 600.0;
        let delay_implicit: f64 = -rng.random::<f64>().max(f64::MIN_POSITIVE).ln() * 120.0;
        // Extra dimensions draw after everything above, so the primary feedback does not move.
        let extra_noise: Vec<f64> =
            cfg.dimensions.iter().map(|_| standard_normal(&mut rng) * cfg.rating_noise).collect();

        let user_id = format!("user-{user_n:04}");
        let ci = match by {
            CohortBy::User => cohort_at(&shares, hash64(&[&seed, "user", &user_id]) as f64 / 2f64.powi(64)),
            _ => system_cohort[j.system.as_str()],
        };
        let cohort = &cfg.cohorts[ci];
        let h = j.human[dimension];
        let h5 = to_five(h, scale);
        let perceived = (h5 + cohort.shift).clamp(1.0, 5.0);
        let user_bias = cfg.raters.user_bias(&seed, &user_id);
        let x = (h5 + cohort.shift + user_bias + noise).clamp(1.0, 5.0);
        let rating = x.round() as u8;
        let slope = cohort.outcome_slope.unwrap_or(cfg.outcome_slope);
        let p = feedback_probability(cohort.feedback_rate, slope, cfg.extremity, x);
        let is_held = heldout.contains(j.group_id.as_str());
        let prompt = format!("{}{}", cfg.prompt_prefix, j.source);
        let eval = match cfg.production {
            Production::UnigramF1 => overall(*f1),
            Production::Judge => judge(j, cohort.judge_bias),
        };
        let ts = end - Duration::microseconds(window_us - offset_us);

        let mut truth = json!({
            "request_id": j.item_id,
            "cohort": cohort.name,
            "group": j.group_id,
            "system": j.system,
            "heldout": is_held,
            "human_score": h,
            "human_score_5": h5,
            "perceived_score": perceived,
            "true_rating": perceived.round() as u8,
            "feedback_probability": if is_held { 0.0 } else { p },
            "eval_score": eval,
        });
        let human_scores: Option<Map<String, Value>> =
            (!cfg.dimensions.is_empty()).then(|| wanted.iter().map(|d| (d.to_string(), json!(j.human[*d]))).collect());
        if let Some(hs) = &human_scores {
            truth["human_scores"] = Value::Object(hs.clone());
        }
        w_truth.write_json_line(&truth)?;
        if is_held {
            summary.heldout_requests += 1;
            let mut held = json!({
                "request_id": j.item_id,
                "prompt": prompt,
                "output": j.output,
                "group": j.group_id,
                "system": j.system,
                "human_score": h,
                "human_score_5": h5,
                "eval_score": eval,
            });
            if let Some(hs) = human_scores {
                held["human_scores"] = Value::Object(hs);
            }
            w_held.write_json_line(&held)?;
            continue;
        }

        let mut metadata = Map::new();
        metadata.insert("user_cohort".into(), Value::from(cohort.name.clone()));
        metadata.insert("user_id".into(), Value::from(user_id.clone()));
        metadata.insert("group_id".into(), Value::from(j.group_id.clone()));
        metadata.insert("system".into(), Value::from(j.system.clone()));
        metadata.insert("dataset".into(), Value::from(j.dataset.clone()));
        metadata.insert("use_case".into(), Value::from(use_case(&j.dataset)));
        metadata.insert("item_id".into(), Value::from(j.item_id.clone()));
        let log = EvalLog {
            request_id: j.item_id.clone(),
            timestamp: ts,
            prompt,
            output: j.output.clone(),
            eval_scores: BTreeMap::from([("overall".to_string(), eval)]),
            feedback_collected: Some(u_feedback < p || u_implicit < cfg.implicit_rate),
            evaluator: cfg.evaluator.clone(),
            metadata,
        };
        w_logs.write_json_line(&log.to_json())?;
        summary.logs += 1;
        let counts = summary.cohorts.entry(cohort.name.clone()).or_default();
        counts.requests += 1;
        counts.mean_human_score_5 += h5;

        let event_by = |user: &str, t: FeedbackType, value: FeedbackValue, delay_s: f64, dimension: Option<&str>| {
            let at = ts + Duration::microseconds((delay_s * 1e6) as i64);
            let at = at - Duration::microseconds(i64::from(at.timestamp_subsec_micros()));
            let id = FeedbackEvent::derive_id(&j.item_id, t, &value, Some(user), Some(&at), dimension, None);
            FeedbackEvent {
                event_id: id,
                request_id: j.item_id.clone(),
                feedback_type: t,
                value,
                user_id: Some(user.to_string()),
                timestamp: at,
                dimension: dimension.map(str::to_string),
                other_request_id: None,
            }
        };
        let event = |t: FeedbackType, value: FeedbackValue, delay_s: f64, dimension: Option<&str>| {
            event_by(&user_id, t, value, delay_s, dimension)
        };
        let preference_of = |j: &Judgement, x: f64, offset: f64| {
            let others: Vec<usize> =
                group_rows[j.group_id.as_str()].iter().copied().filter(|&k| rows[k].item_id != j.item_id).collect();
            let h5s: Vec<f64> = others.iter().map(|&k| to_five(rows[k].human[dimension], scale)).collect();
            cfg.preferences
                .draw(&seed, &j.item_id, x, &h5s, offset, cfg.rating_noise)
                .map(|d| (rows[others[d.other]].item_id.as_str(), d.choice))
        };
        let mut events = Vec::new();
        if u_feedback < p {
            counts.explicit += 1;
            let thumb = u_thumbs < cfg.thumbs_share && (rating >= 4 || rating <= 2);
            if thumb {
                counts.thumbs += 1;
                let t = if rating >= 4 { FeedbackType::ThumbsUp } else { FeedbackType::ThumbsDown };
                events.push(event(t, FeedbackValue::Bool(true), delay_explicit, None));
            } else if let Some((other, choice)) = preference_of(j, x, cohort.shift + user_bias) {
                summary.preferences += 1;
                let mut e = event(FeedbackType::Preference, FeedbackValue::Choice(choice), delay_explicit, None);
                e.other_request_id = Some(other.to_string());
                e.event_id = FeedbackEvent::derive_id(
                    &e.request_id,
                    e.feedback_type,
                    &e.value,
                    e.user_id.as_deref(),
                    Some(&e.timestamp),
                    None,
                    Some(other),
                );
                events.push(e);
            } else {
                counts.ratings += 1;
                events.push(event(FeedbackType::Rating, FeedbackValue::Rating(rating), delay_explicit, None));
                for ((d, sc), noise) in cfg.dimensions.iter().zip(&extra_scales).zip(&extra_noise) {
                    let xk = (to_five(j.human[d.as_str()], *sc) + cohort.shift + noise).clamp(1.0, 5.0);
                    let value = FeedbackValue::Rating(xk.round() as u8);
                    events.push(event(FeedbackType::Rating, value, delay_explicit, Some(d)));
                    summary.dimension_ratings += 1;
                }
            }
        }
        if u_implicit < cfg.implicit_rate {
            counts.implicit += 1;
            let t = if x >= 3.5 {
                FeedbackType::Usage
            } else if x >= 2.5 {
                FeedbackType::Edit
            } else {
                FeedbackType::Discard
            };
            events.push(event(t, FeedbackValue::Bool(true), delay_implicit, None));
        }
        let mut true_5 = vec![h5];
        true_5.extend(cfg.dimensions.iter().zip(&extra_scales).map(|(d, sc)| to_five(j.human[d.as_str()], *sc)));
        let reviews = cfg.raters.reviews(&seed, &j.item_id, &true_5);
        summary.panel_requests += u64::from(!reviews.is_empty());
        for r in reviews {
            let dims = std::iter::once(None).chain(cfg.dimensions.iter().map(|d| Some(d.as_str())));
            for (value, dimension) in r.ratings.iter().zip(dims) {
                events.push(event_by(
                    &r.rater,
                    FeedbackType::Rating,
                    FeedbackValue::Rating(*value),
                    r.delay_s,
                    dimension,
                ));
                summary.panel_ratings += 1;
                summary.dimension_ratings += u64::from(dimension.is_some());
            }
        }
        for e in &events {
            w_fb.write_json_line(&e.to_json())?;
            summary.feedback_events += 1;
        }
    }
    for c in summary.cohorts.values_mut() {
        if c.requests > 0 {
            c.mean_human_score_5 /= c.requests as f64;
        }
    }
    w_logs.commit()?;
    w_fb.commit()?;
    w_truth.commit()?;
    w_held.commit()?;
    let mut meta = AtomicWriter::create(&out.join("simulate.json"))?;
    let text = serde_json::to_string_pretty(&json!({
        "judgements": judgements.file_name().map(|n| n.to_string_lossy().to_string()),
        "dimension": dimension,
        "scale": scale,
        "cohort_by": by,
        "config": cfg,
        "logs": summary.logs,
        "feedback_events": summary.feedback_events,
        "heldout_groups": summary.heldout_groups,
        "cohorts": summary.cohorts,
    }))
    .map_err(|e| Error::Input(format!("simulate.json: {e}")))?;
    meta.write_all(text.as_bytes())?;
    meta.write_all(b"\n")?;
    meta.commit()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unigram_f1_counts_multiset_overlap() {
        assert_eq!(unigram_f1("a b c", "a b c"), 1.0);
        assert_eq!(unigram_f1("", "a"), 0.0);
        assert_eq!(unigram_f1("x y", "a b"), 0.0);
        // output a a b (3), reference a b b d (4): overlap a:1, b:1 = 2; P 2/3, R 1/2, F1 4/7.
        assert!((unigram_f1("A a b .", "a b b d") - 4.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn scales_map_onto_one_to_five() {
        assert_eq!(infer_scale(&[0.0, 0.3, 1.0]), Some([0.0, 1.0]));
        assert_eq!(infer_scale(&[1.0, 4.5]), Some([1.0, 5.0]));
        assert_eq!(infer_scale(&[1.0, 6.0]), Some([1.0, 6.0]));
        assert_eq!(infer_scale(&[0.5, 7.0]), None);
        assert_eq!(to_five(0.5, [0.0, 1.0]), 3.0);
        assert_eq!(to_five(6.0, [1.0, 6.0]), 5.0);
        assert_eq!(to_five(3.5, [1.0, 6.0]), 3.0);
        assert_eq!(to_five(2.0, [1.0, 5.0]), 2.0);
    }

    #[test]
    fn feedback_probability_is_the_rate_without_outcome_dependence() {
        assert!((feedback_probability(0.3, 0.0, 0.0, 1.0) - 0.3).abs() < 1e-12);
        assert!((feedback_probability(0.3, 0.0, 0.0, 5.0) - 0.3).abs() < 1e-12);
        // Positive slope: bad outputs more likely to get feedback.
        assert!(feedback_probability(0.3, 2.0, 0.0, 1.0) > feedback_probability(0.3, 2.0, 0.0, 5.0));
        assert_eq!(feedback_probability(0.0, 2.0, 0.0, 1.0), 0.0);
        assert_eq!(feedback_probability(1.0, 2.0, 0.0, 1.0), 1.0);
    }

    #[test]
    fn cohort_intervals_follow_shares() {
        let s = [3.0, 2.0, 2.0];
        let got: Vec<usize> = (0..7).map(|i| cohort_at(&s, (i as f64 + 0.5) / 7.0)).collect();
        assert_eq!(got, vec![0, 0, 0, 1, 1, 2, 2]);
    }
    /// The noisy-judge production evaluator: as correlated with the human score as configured,
    /// biased for a cohort by its `judge_bias`, repeatable, and drawn from its own stream (the
    /// feedback does not move).
    #[test]
    fn the_noisy_judge_follows_its_correlation_and_cohort_bias() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/example/newsroom-sample.jsonl");
        let tmp = tempfile::tempdir().unwrap();
        let run = |name: &str, r: f64, bias: f64| {
            let mut cfg = SimulateConfig { production: Production::Judge, judge_correlation: r, ..Default::default() };
            cfg.cohorts[0].judge_bias = bias;
            let out = tmp.path().join(name);
            simulate(&file, "coherence", &out, &cfg).unwrap();
            let truth: Vec<serde_json::Value> = std::fs::read_to_string(out.join("truth.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let fb = std::fs::read_to_string(out.join("feedback.jsonl")).unwrap();
            (truth, fb)
        };
        let col = |t: &[serde_json::Value], k: &str| -> Vec<f64> { t.iter().map(|r| r[k].as_f64().unwrap()).collect() };
        let pearson = |a: &[f64], b: &[f64]| crate::stats::corr::pearson(a, b).unwrap().estimate;
        let logit = |t: &[serde_json::Value]| -> Vec<f64> {
            col(t, "eval_score").iter().map(|p| (p / (1.0 - p)).ln() / 1.702).collect()
        };
        let (strong, fb_strong) = run("strong", 0.9, 0.0);
        let (weak, fb_weak) = run("weak", 0.2, 0.0);
        let h = col(&strong, "human_score");
        let (rs, rw) = (pearson(&logit(&strong), &h), pearson(&logit(&weak), &h));
        assert!((rs - 0.9).abs() < 0.05 && (rw - 0.2).abs() < 0.15, "{rs} {rw}");
        assert_eq!(fb_strong, fb_weak, "the judge draws from its own stream");
        assert_eq!(run("again", 0.9, 0.0).0, strong);
        // A +1 sd bias for the first cohort lifts its latent scores by 1 and nothing else.
        let (biased, _) = run("biased", 0.9, 1.0);
        let cohort = &SimulateConfig::default().cohorts[0].name;
        let (ls, lb) = (logit(&strong), logit(&biased));
        for ((a, b), r) in ls.iter().zip(&lb).zip(&biased) {
            let want = if r["cohort"].as_str() == Some(cohort.as_str()) { 1.0 } else { 0.0 };
            assert!((b - a - want).abs() < 1e-6, "{a} {b} {want}");
        }
        let bad = SimulateConfig { judge_correlation: 1.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("judge_correlation"));
    }
}

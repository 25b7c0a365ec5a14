//! Annotation queues: requests chosen for people to label, each with the probability it was
//! chosen with, so that the labels stay unbiased estimates of the whole traffic.
//!
//! A queue ([`QueueSpec`]) is made by `evalloop queue create`: a strategy ([`Strategy`], in
//! `select.rs`) gives every request of the population a priority, the sampling design
//! (`design.rs`) turns priorities into inclusion probabilities and draws exactly `size`
//! requests ([`QueueItem`], with its `probability`). Reviewers label them through `evalloop
//! serve`'s review page: each answer is a feedback event (the reviewer as `user_id`) plus a
//! [`QueueLabel`] linking it to the queue and item, or a skip. An item is done when
//! `reviewers_per_item` people have labelled it; [`next_item`] hands each reviewer the first
//! item that is not done and that they have not answered.
//!
//! A preference queue's item is a pair of two outputs of one prompt group (`request_id` and
//! `other_request_id`, drawn by `pairs.rs`); its answers are `explicit_preference` events.
//!
//! The store keeps three tables (`review_queues`, `queue_items`, `queue_labels`), created on
//! open for new and existing stores alike; see [`crate::store::Store::create_queue`].

pub mod design;
pub mod pairs;
pub mod select;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::record::{Choice, FeedbackEvent, FeedbackType, FeedbackValue};

pub use design::{
    IpwCorrelation, IpwMean, floored_weights, inclusion_probabilities, ipw_correlation, ipw_mean, ipw_mean_clustered,
    systematic_sample,
};
pub use select::{CreateOptions, create};

/// What reviewers answer on a queue's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// A 1-5 `explicit_rating` (on `dimension` when the queue has one).
    Rating,
    /// `explicit_thumbs_up` or `explicit_thumbs_down`.
    Thumbs,
    /// A choice between two outputs of one prompt group (A, B or tie), answered as an
    /// `explicit_preference` event; each item is a pair.
    Preference,
}

impl QueueKind {
    /// `rating`, `thumbs` or `preference`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Rating => "rating",
            QueueKind::Thumbs => "thumbs",
            QueueKind::Preference => "preference",
        }
    }
}

/// How a queue picks its requests; each is a priority per request (see `select.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Equal priorities: every request with probability `size / N`.
    Random,
    /// `|score_evaluator - score_against|`: where the base and the retrained evaluator differ.
    Disagreement,
    /// The spread (standard deviation) of the scores of an ensemble's members.
    Uncertainty,
    /// `1 / (N_c * (1 + h_c))`: cohorts with few human scores first.
    CohortBalanced,
    /// The mean of the normalised priorities of the strategies whose inputs are given.
    Mix,
}

impl Strategy {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Disagreement => "disagreement",
            Strategy::Uncertainty => "uncertainty",
            Strategy::CohortBalanced => "cohort-balanced",
            Strategy::Mix => "mix",
        }
    }
}

/// A queue as stored (`review_queues.spec`, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// Unique; letters, digits, `-`, `_`, `.`.
    pub name: String,
    pub kind: QueueKind,
    pub strategy: Strategy,
    /// Items drawn.
    pub size: usize,
    /// People who label each item before it is done; default 1.
    pub reviewers_per_item: usize,
    /// The human dimension ratings are on (rating queues); `None` for the overall rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    /// The evaluator whose scored requests are the population.
    pub evaluator: String,
    /// The evaluator compared with (`disagreement`, `mix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
    /// The ensemble members whose spread is the uncertainty (`uncertainty`, `mix`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The metadata key naming a request's prompt group (`None`: a hash of the prompt, as
    /// `dataset build` groups): preference queues and `whole_groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    /// Rating and thumbs queues drawn by whole prompt groups (cluster sampling): every request
    /// of a drawn group is an item with its group's probability, and the estimates treat the
    /// groups as the sampling units.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole_groups: bool,
    /// The uniform share of the selection weights (see `design.rs`).
    pub floor: f64,
    /// Requests the items were drawn from (preference queues: pairs; whole groups: the
    /// requests of every group of the population).
    pub population: usize,
    /// Seed of the draw.
    pub seed: u64,
    /// The window drawn from (RFC 3339), when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// One request of a queue, or one pair of requests (preference queues).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    pub queue: String,
    /// 0-based; reviewers are served items in this order (the draw's order).
    pub position: u32,
    /// The request (preference queues: output A, the smaller id of the pair).
    pub request_id: String,
    /// Preference queues: output B of the pair (same prompt group, larger id); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_request_id: Option<String>,
    /// The probability with which the design selected the request (or pair), in (0, 1].
    pub probability: f64,
    /// The strategy's priority for the request (or pair).
    pub priority: f64,
}

impl QueueItem {
    /// What identifies the item among its queue's items and links its labels to it: the request,
    /// and output B for a pair.
    pub fn key(&self) -> (&str, Option<&str>) {
        (&self.request_id, self.other_request_id.as_deref())
    }
}

/// What a reviewer did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelOutcome {
    Labelled,
    Skipped,
}

impl LabelOutcome {
    /// `labelled` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelOutcome::Labelled => "labelled",
            LabelOutcome::Skipped => "skipped",
        }
    }

    /// Parses [`LabelOutcome::as_str`]'s names.
    pub fn parse(s: &str) -> Option<LabelOutcome> {
        match s {
            "labelled" => Some(LabelOutcome::Labelled),
            "skipped" => Some(LabelOutcome::Skipped),
            _ => None,
        }
    }
}

/// A reviewer's answer on a queue item: a label (its feedback event's id) or a skip.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueLabel {
    pub queue: String,
    pub request_id: String,
    /// Output B of the item's pair (preference queues); `None` otherwise.
    pub other_request_id: Option<String>,
    pub reviewer: String,
    pub outcome: LabelOutcome,
    /// The feedback event that carries the label; `None` for a skip.
    pub event_id: Option<String>,
    pub timestamp: DateTime<Utc>,
}

impl QueueLabel {
    /// The key of the item it answers (see [`QueueItem::key`]).
    pub fn key(&self) -> (&str, Option<&str>) {
        (&self.request_id, self.other_request_id.as_deref())
    }
}

/// A reviewer's answer as the review page sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A 1-5 rating (rating queues).
    Rating(u8),
    /// Up or down (thumbs queues).
    Thumb(bool),
    /// Output A, B or a tie, in the item's orientation (preference queues).
    Prefer(Choice),
    Skip,
}

/// A stored answer as the stores read it: queue, request, output B of a pair (`""` for none:
/// the column is part of the key), reviewer, outcome, event id, time (microseconds since the
/// epoch).
pub type LabelRow = (String, String, String, String, String, Option<String>, i64);

/// A stored answer row as a [`QueueLabel`]; an unknown outcome is an error naming the row.
pub fn label_from_row(
    (queue, request_id, other, reviewer, outcome, event_id, ts): LabelRow,
) -> Result<QueueLabel, String> {
    let outcome = LabelOutcome::parse(&outcome)
        .ok_or_else(|| format!("queue {queue:?}, request {request_id:?}: unknown outcome {outcome:?}"))?;
    Ok(QueueLabel {
        queue,
        request_id,
        other_request_id: (!other.is_empty()).then_some(other),
        reviewer,
        outcome,
        event_id,
        timestamp: crate::record::from_micros(ts),
    })
}

/// Whether the review page shows a pair item to `reviewer` with B on the left: a fixed coin per
/// queue, item and reviewer, so that the side an output is shown on does not favour A (the
/// smaller request id) and the page and the answer agree on which side is which.
pub fn shown_swapped(queue: &str, position: u32, reviewer: &str) -> bool {
    crate::hash::hash64(&[queue, &position.to_string(), reviewer]) & 1 == 1
}

/// Checks a queue name: 1-100 letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("queue name {name:?}: use 1-100 characters among letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// The event id of a reviewer's label on an item: stable, so a repeated answer is a duplicate.
pub fn label_event_id(queue: &str, position: u32, reviewer: &str) -> String {
    format!("queue:{queue}:{position}:{reviewer}")
}

/// The feedback events and the queue label that record `answer` by `reviewer` on `item` of
/// `spec` at `now`: the rating or thumb (with the queue's dimension), an
/// `explicit_text_comment` when `comment` is not blank, and the link. A skip is a link alone.
/// Refuses an answer that does not fit the queue's kind.
pub fn answer_events(
    spec: &QueueSpec,
    item: &QueueItem,
    reviewer: &str,
    answer: &Answer,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(Vec<FeedbackEvent>, QueueLabel), String> {
    let id = label_event_id(&spec.name, item.position, reviewer);
    let event = |feedback_type, value, event_id: String, dimension: Option<String>| FeedbackEvent {
        event_id,
        request_id: item.request_id.clone(),
        feedback_type,
        value,
        user_id: Some(reviewer.to_string()),
        timestamp: now,
        dimension,
        other_request_id: None,
        edited_output: None,
    };
    let main = match (spec.kind, answer) {
        (_, Answer::Skip) => None,
        (QueueKind::Rating, Answer::Rating(r)) if (1..=5).contains(r) => {
            Some(event(FeedbackType::Rating, FeedbackValue::Rating(*r), id.clone(), spec.dimension.clone()))
        }
        (QueueKind::Rating, Answer::Rating(r)) => return Err(format!("rating {r} is not within 1-5")),
        (QueueKind::Thumbs, Answer::Thumb(up)) => Some(event(
            if *up { FeedbackType::ThumbsUp } else { FeedbackType::ThumbsDown },
            FeedbackValue::Bool(true),
            id.clone(),
            None,
        )),
        (QueueKind::Preference, Answer::Prefer(c)) => {
            let other = item.other_request_id.clone().ok_or_else(|| {
                format!("item {} of preference queue {:?} has no second output", item.position, spec.name)
            })?;
            Some(FeedbackEvent {
                other_request_id: Some(other),
                ..event(FeedbackType::Preference, FeedbackValue::Choice(*c), id.clone(), spec.dimension.clone())
            })
        }
        (kind, a) => return Err(format!("answer {a:?} does not fit a {} queue", kind.as_str())),
    };
    let mut events = Vec::new();
    let outcome = if let Some(m) = main {
        events.push(m);
        if let Some(c) = comment.map(str::trim).filter(|c| !c.is_empty()) {
            events.push(event(
                FeedbackType::TextComment,
                FeedbackValue::Text(c.to_string()),
                format!("{id}:comment"),
                None,
            ));
        }
        LabelOutcome::Labelled
    } else {
        LabelOutcome::Skipped
    };
    let label = QueueLabel {
        queue: spec.name.clone(),
        request_id: item.request_id.clone(),
        other_request_id: item.other_request_id.clone(),
        reviewer: reviewer.to_string(),
        outcome,
        event_id: (outcome == LabelOutcome::Labelled).then_some(id),
        timestamp: now,
    };
    Ok((events, label))
}

/// What [`record_answer`] did with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Recorded {
    /// Stored: the label (or skip) and its feedback events.
    Stored,
    /// The reviewer had answered this item already; nothing changed.
    Duplicate,
    /// The item had its `reviewers_per_item` labels already (others answered it meanwhile);
    /// nothing was stored, so an item never carries more labels than the queue asks for.
    Full,
}

/// Records `reviewer`'s answer on `item` in one transaction: the feedback events (see
/// [`answer_events`]) and the queue label. The queue is locked for the transaction
/// ([`crate::store::Store::lock_queue`]) and its labels read inside it, so that of two answers
/// racing for an item's last label exactly one is stored; the other, and any label on an item
/// that is done, is [`Recorded::Full`]. A skip is stored on any item the reviewer has not
/// answered.
pub fn record_answer(
    store: &mut dyn crate::store::Store,
    spec: &QueueSpec,
    item: &QueueItem,
    reviewer: &str,
    answer: &Answer,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> crate::Result<Recorded> {
    let (events, label) = answer_events(spec, item, reviewer, answer, comment, now).map_err(crate::Error::Input)?;
    store.begin()?;
    let done = (|| -> crate::store::StoreResult<Recorded> {
        store.lock_queue(&spec.name)?;
        let labels = store.queue_labels(Some(&spec.name))?;
        let mine = labels.iter().filter(|l| l.key() == item.key());
        if mine.clone().any(|l| l.reviewer == reviewer) {
            return Ok(Recorded::Duplicate);
        }
        let labelled = mine.filter(|l| l.outcome == LabelOutcome::Labelled).count();
        if label.outcome == LabelOutcome::Labelled && labelled >= spec.reviewers_per_item {
            return Ok(Recorded::Full);
        }
        let linked = store.insert_queue_labels(std::slice::from_ref(&label))?;
        if linked.stored != 1 {
            return Ok(Recorded::Duplicate);
        }
        store.insert_feedback(&events)?;
        Ok(Recorded::Stored)
    })();
    match done {
        Ok(r) => {
            store.commit()?;
            Ok(r)
        }
        Err(e) => {
            let _ = store.rollback();
            Err(e.into())
        }
    }
}

/// One row of `evalloop queue import`: an answer given outside the review page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRow {
    pub request_id: String,
    /// Preference queues: the pair's other output (either order; the answer is read in the
    /// row's order, `"a"` meaning `request_id`).
    #[serde(default)]
    pub other_request_id: Option<String>,
    pub reviewer: String,
    /// 1-5 (rating queues), `"up"` / `"down"` (thumbs queues), `"a"` / `"b"` / `"tie"`
    /// (preference queues) or `"skip"`.
    pub answer: serde_json::Value,
    #[serde(default)]
    pub comment: Option<String>,
}

impl ImportRow {
    /// The answer in the row's own orientation, or why it is not one (naming the field).
    pub fn parse_answer(&self) -> Result<Answer, String> {
        match &self.answer {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(r @ 1..=5) => Ok(Answer::Rating(r as u8)),
                _ => Err(format!("answer: rating {n} is not an integer from 1 to 5")),
            },
            serde_json::Value::String(s) => match (s.as_str(), Choice::parse(s)) {
                ("up", _) => Ok(Answer::Thumb(true)),
                ("down", _) => Ok(Answer::Thumb(false)),
                ("skip", _) => Ok(Answer::Skip),
                (_, Some(c)) => Ok(Answer::Prefer(c)),
                (s, None) => {
                    Err(format!("answer: expected 1-5, \"up\", \"down\", \"a\", \"b\", \"tie\" or \"skip\", got {s:?}"))
                }
            },
            other => {
                Err(format!("answer: expected 1-5, \"up\", \"down\", \"a\", \"b\", \"tie\" or \"skip\", got {other}"))
            }
        }
    }
}

/// What [`import_answers`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Imported {
    pub stored: usize,
    /// Answers the reviewer had given already (nothing changed).
    pub duplicate: usize,
    /// Labels on items that had their `reviewers_per_item` labels already (not stored).
    pub full: usize,
}

/// The item a row names and the row's answer in the item's orientation: a pair may be named in
/// either order (a reversed pair's `a` and `b` swap).
fn import_target<'a>(
    spec: &QueueSpec,
    items: &'a [QueueItem],
    row: &ImportRow,
    answer: Answer,
) -> Result<(&'a QueueItem, Answer), String> {
    if spec.kind != QueueKind::Preference {
        if row.other_request_id.is_some() {
            return Err(format!(
                "other_request_id: queue {:?} is a {} queue, not a preference queue",
                spec.name,
                spec.kind.as_str()
            ));
        }
        let item = items
            .iter()
            .find(|i| i.request_id == row.request_id)
            .ok_or_else(|| format!("request_id: {:?} is not an item of queue {:?}", row.request_id, spec.name))?;
        return Ok((item, answer));
    }
    let other = row
        .other_request_id
        .as_deref()
        .ok_or_else(|| format!("other_request_id: missing; queue {:?} holds pairs", spec.name))?;
    let (a, b) = (row.request_id.as_str(), other);
    for i in items {
        if i.key() == (a, Some(b)) {
            return Ok((i, answer));
        }
        if i.key() == (b, Some(a)) {
            let flipped = match answer {
                Answer::Prefer(c) => Answer::Prefer(c.flipped()),
                other => other,
            };
            return Ok((i, flipped));
        }
    }
    Err(format!("request_id, other_request_id: the pair ({a:?}, {b:?}) is not an item of queue {:?}", spec.name))
}

/// Records answers read from JSON Lines `path` (rows [`ImportRow`]) on queue `spec`; every row is
/// checked first, and a bad one (naming `path:line` and the field) stores nothing.
pub fn import_answers(
    store: &mut dyn crate::store::Store,
    spec: &QueueSpec,
    path: &std::path::Path,
    now: DateTime<Utc>,
) -> crate::Result<Imported> {
    let rows: Vec<(usize, ImportRow)> = crate::jsonl::read_numbered(path)?;
    let items = store.queue_items(Some(&spec.name))?;
    let mut checked = Vec::with_capacity(rows.len());
    for (line, row) in &rows {
        let at = |m: String| crate::Error::Input(format!("{}:{line}: {m}", path.display()));
        if row.reviewer.trim().is_empty() {
            return Err(at("reviewer: empty".into()));
        }
        let answer = row.parse_answer().map_err(at)?;
        let (item, answer) = import_target(spec, &items, row, answer).map_err(at)?;
        answer_events(spec, item, &row.reviewer, &answer, row.comment.as_deref(), now)
            .map_err(|e| at(format!("answer: {e}")))?;
        checked.push((item, row, answer));
    }
    let mut out = Imported::default();
    for (item, row, answer) in checked {
        match record_answer(store, spec, item, &row.reviewer, &answer, row.comment.as_deref(), now)? {
            Recorded::Stored => out.stored += 1,
            Recorded::Duplicate => out.duplicate += 1,
            Recorded::Full => out.full += 1,
        }
    }
    Ok(out)
}

/// The item `reviewer` should see next: the first (by position) with fewer than
/// `reviewers_per_item` labels that the reviewer has neither labelled nor skipped.
pub fn next_item<'a>(
    spec: &QueueSpec,
    items: &'a [QueueItem],
    labels: &[QueueLabel],
    reviewer: &str,
) -> Option<&'a QueueItem> {
    let mut labelled: HashMap<(&str, Option<&str>), usize> = HashMap::new();
    let mut answered: HashSet<(&str, Option<&str>)> = HashSet::new();
    for l in labels {
        if l.outcome == LabelOutcome::Labelled {
            *labelled.entry(l.key()).or_default() += 1;
        }
        if l.reviewer == reviewer {
            answered.insert(l.key());
        }
    }
    items.iter().find(|i| {
        !answered.contains(&i.key()) && labelled.get(&i.key()).copied().unwrap_or(0) < spec.reviewers_per_item
    })
}

/// One reviewer's progress on a queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewerProgress {
    pub reviewer: String,
    pub labelled: usize,
    pub skipped: usize,
}

/// A queue's progress: items done, labels given, per reviewer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub items: usize,
    /// Items with `reviewers_per_item` labels.
    pub done: usize,
    /// Labels needed in all (`items * reviewers_per_item`).
    pub labels_needed: usize,
    pub labels: usize,
    pub skips: usize,
    /// By reviewer name.
    pub reviewers: Vec<ReviewerProgress>,
}

/// The progress of `spec` given its items and labels.
pub fn progress(spec: &QueueSpec, items: &[QueueItem], labels: &[QueueLabel]) -> Progress {
    let mut per_item: HashMap<(&str, Option<&str>), usize> = HashMap::new();
    let mut per_reviewer: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for l in labels {
        let r = per_reviewer.entry(l.reviewer.as_str()).or_default();
        match l.outcome {
            LabelOutcome::Labelled => {
                r.0 += 1;
                *per_item.entry(l.key()).or_default() += 1;
            }
            LabelOutcome::Skipped => r.1 += 1,
        }
    }
    let k = spec.reviewers_per_item;
    Progress {
        items: items.len(),
        done: items.iter().filter(|i| per_item.get(&i.key()).copied().unwrap_or(0) >= k).count(),
        labels_needed: items.len() * k,
        labels: per_reviewer.values().map(|r| r.0).sum(),
        skips: per_reviewer.values().map(|r| r.1).sum(),
        reviewers: per_reviewer
            .into_iter()
            .map(|(r, (labelled, skipped))| ReviewerProgress { reviewer: r.to_string(), labelled, skipped })
            .collect(),
    }
}

/// How `reviewer` stands on a queue, for the review page: answered (labelled or skipped) items
/// and the items they may still answer.
pub fn reviewer_standing(
    spec: &QueueSpec,
    items: &[QueueItem],
    labels: &[QueueLabel],
    reviewer: &str,
) -> (usize, usize) {
    let answered = labels.iter().filter(|l| l.reviewer == reviewer).count();
    let mut labelled: HashMap<(&str, Option<&str>), usize> = HashMap::new();
    for l in labels.iter().filter(|l| l.outcome == LabelOutcome::Labelled) {
        *labelled.entry(l.key()).or_default() += 1;
    }
    let mine: HashSet<(&str, Option<&str>)> =
        labels.iter().filter(|l| l.reviewer == reviewer).map(QueueLabel::key).collect();
    let open = items
        .iter()
        .filter(|i| !mine.contains(&i.key()) && labelled.get(&i.key()).copied().unwrap_or(0) < spec.reviewers_per_item)
        .count();
    (answered, open)
}

/// The largest selection probability of each request over the queue items whose labels are in
/// `labels` (labelled ones only): what `dataset build`'s `queue` factor and `bias` read. A
/// request in several queues keeps its largest probability (the smallest weight). Pairs
/// (preference queues) are left out: a preference is not a label of either request.
pub fn labelled_probabilities(items: &[QueueItem], labels: &[QueueLabel]) -> BTreeMap<String, f64> {
    let labelled: HashSet<(&str, &str)> = labels
        .iter()
        .filter(|l| l.outcome == LabelOutcome::Labelled && l.other_request_id.is_none())
        .map(|l| (l.queue.as_str(), l.request_id.as_str()))
        .collect();
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for i in items
        .iter()
        .filter(|i| i.other_request_id.is_none() && labelled.contains(&(i.queue.as_str(), i.request_id.as_str())))
    {
        let p = out.entry(i.request_id.clone()).or_insert(0.0);
        *p = p.max(i.probability);
    }
    out
}

/// The sampling unit of each of `requests` (items of the queue `spec`), as indices: its prompt
/// group in a whole-group queue (requests drawn together share a unit), else the request
/// itself. What [`ipw_mean_clustered`] and [`ipw_correlation`] take.
pub fn sampling_units(
    store: &dyn crate::store::Store,
    spec: &QueueSpec,
    requests: &[String],
) -> crate::Result<Vec<usize>> {
    if !spec.whole_groups {
        return Ok((0..requests.len()).collect());
    }
    let groups = select::groups_of(store, requests, spec.group_key.as_deref())?;
    let unit: HashMap<&str, usize> =
        groups.values().enumerate().flat_map(|(u, members)| members.iter().map(move |r| (r.as_str(), u))).collect();
    // A request no longer in the store (never, as logs are kept) is a unit of its own.
    Ok(requests.iter().enumerate().map(|(i, r)| unit.get(r.as_str()).copied().unwrap_or(groups.len() + i)).collect())
}

/// How much of the store's human feedback came from annotation queues, per queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Provenance {
    /// Labels (feedback events) given through queues.
    pub labels: usize,
    /// Distinct requests labelled through queues.
    pub requests: usize,
    /// Per queue, by name.
    pub queues: Vec<QueueShare>,
}

/// One queue's share of [`Provenance`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueShare {
    pub queue: String,
    pub strategy: Strategy,
    pub labels: usize,
    pub requests: usize,
}

/// Counts the labels given through every queue of the store.
pub fn provenance(store: &dyn crate::store::Store) -> crate::Result<Provenance> {
    let specs = store.queues()?;
    let labels = store.queue_labels(None)?;
    let mut out = Provenance::default();
    let mut all: HashSet<&str> = HashSet::new();
    for s in &specs {
        let mine: Vec<&QueueLabel> =
            labels.iter().filter(|l| l.queue == s.name && l.outcome == LabelOutcome::Labelled).collect();
        // Both outputs of a judged pair count as labelled requests.
        let requests: HashSet<&str> = mine
            .iter()
            .flat_map(|l| std::iter::once(l.request_id.as_str()).chain(l.other_request_id.as_deref()))
            .collect();
        all.extend(&requests);
        out.labels += mine.len();
        out.queues.push(QueueShare {
            queue: s.name.clone(),
            strategy: s.strategy,
            labels: mine.len(),
            requests: requests.len(),
        });
    }
    out.requests = all.len();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(k: usize, kind: QueueKind) -> QueueSpec {
        QueueSpec {
            name: "q".into(),
            kind,
            strategy: Strategy::Random,
            size: 3,
            reviewers_per_item: k,
            dimension: None,
            evaluator: "e".into(),
            against: None,
            members: vec![],
            group_key: None,
            whole_groups: false,
            floor: 0.2,
            population: 10,
            seed: 1,
            since: None,
            until: None,
            created_at: "2026-12-07T00:00:00Z".into(),
        }
    }

    fn items() -> Vec<QueueItem> {
        (0..3)
            .map(|i| QueueItem {
                queue: "q".into(),
                position: i,
                request_id: format!("r{i}"),
                other_request_id: None,
                probability: 0.3,
                priority: 1.0,
            })
            .collect()
    }

    fn label(r: &str, who: &str, outcome: LabelOutcome) -> QueueLabel {
        QueueLabel {
            queue: "q".into(),
            request_id: r.into(),
            other_request_id: None,
            reviewer: who.into(),
            outcome,
            event_id: None,
            timestamp: Utc::now(),
        }
    }

    #[test]
    fn reviewers_get_items_until_each_has_k_labels() {
        let s = spec(2, QueueKind::Rating);
        let items = items();
        let mut labels = vec![label("r0", "ann", LabelOutcome::Labelled)];
        assert_eq!(next_item(&s, &items, &labels, "ann").unwrap().request_id, "r1");
        assert_eq!(next_item(&s, &items, &labels, "bob").unwrap().request_id, "r0");
        labels.push(label("r0", "bob", LabelOutcome::Labelled));
        labels.push(label("r1", "cid", LabelOutcome::Skipped));
        // r0 is done; a skip does not count towards k.
        assert_eq!(next_item(&s, &items, &labels, "cid").unwrap().request_id, "r2");
        assert_eq!(next_item(&s, &items, &labels, "dan").unwrap().request_id, "r1");
        let p = progress(&s, &items, &labels);
        assert_eq!((p.done, p.labels, p.skips, p.labels_needed), (1, 2, 1, 6));
        assert_eq!(p.reviewers[2], ReviewerProgress { reviewer: "cid".into(), labelled: 0, skipped: 1 });
        assert_eq!(reviewer_standing(&s, &items, &labels, "cid"), (1, 1));
    }

    #[test]
    fn answers_must_fit_the_queue_kind() {
        let items = items();
        let now = Utc::now();
        let r = spec(1, QueueKind::Rating);
        let (ev, l) = answer_events(&r, &items[1], "ann", &Answer::Rating(4), Some(" fine "), now).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event_id, "queue:q:1:ann");
        assert_eq!(ev[1].value, FeedbackValue::Text("fine".into()));
        assert_eq!(l.event_id.as_deref(), Some("queue:q:1:ann"));
        assert!(answer_events(&r, &items[1], "ann", &Answer::Rating(6), None, now).is_err());
        assert!(answer_events(&r, &items[1], "ann", &Answer::Thumb(true), None, now).is_err());
        let t = spec(1, QueueKind::Thumbs);
        let (ev, _) = answer_events(&t, &items[0], "ann", &Answer::Thumb(false), Some("  "), now).unwrap();
        assert_eq!((ev.len(), ev[0].feedback_type), (1, FeedbackType::ThumbsDown));
        let (ev, l) = answer_events(&t, &items[0], "ann", &Answer::Skip, None, now).unwrap();
        assert!(ev.is_empty());
        assert_eq!((l.outcome, l.event_id), (LabelOutcome::Skipped, None));
    }

    #[test]
    fn preference_answers_are_events_on_the_pair() {
        let p = spec(1, QueueKind::Preference);
        let mut it = items().remove(1);
        let now = Utc::now();
        // An item without its second output cannot take a preference.
        assert!(answer_events(&p, &it, "ann", &Answer::Prefer(Choice::A), None, now).is_err());
        it.other_request_id = Some("r9".into());
        let (ev, l) = answer_events(&p, &it, "ann", &Answer::Prefer(Choice::B), Some("close"), now).unwrap();
        assert_eq!((ev[0].feedback_type, &ev[0].value), (FeedbackType::Preference, &FeedbackValue::Choice(Choice::B)));
        assert_eq!((ev[0].request_id.as_str(), ev[0].other_request_id.as_deref()), ("r1", Some("r9")));
        assert_eq!(ev[1].feedback_type, FeedbackType::TextComment);
        assert_eq!(l.key(), ("r1", Some("r9")));
        assert!(answer_events(&p, &it, "ann", &Answer::Rating(3), None, now).is_err());
        // The sides: fixed per queue, item and reviewer, and both occur.
        let sides: Vec<bool> = (0..32).map(|i| shown_swapped("q", i, "ann")).collect();
        assert!(sides.contains(&true) && sides.contains(&false));
        assert_eq!(sides, (0..32).map(|i| shown_swapped("q", i, "ann")).collect::<Vec<_>>());
    }

    #[test]
    fn labelled_probabilities_keep_the_largest_per_request() {
        let mut it = items();
        it.push(QueueItem {
            queue: "p".into(),
            position: 0,
            request_id: "r0".into(),
            other_request_id: None,
            probability: 0.9,
            priority: 0.0,
        });
        let mut labels = vec![label("r0", "a", LabelOutcome::Labelled), label("r1", "a", LabelOutcome::Skipped)];
        labels.push(QueueLabel { queue: "p".into(), ..label("r0", "b", LabelOutcome::Labelled) });
        let p = labelled_probabilities(&it, &labels);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![("r0".to_string(), 0.9)]);
    }
}

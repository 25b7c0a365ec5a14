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
//! The store keeps three tables (`review_queues`, `queue_items`, `queue_labels`), created on
//! open for new and existing stores alike; see [`crate::store::Store::create_queue`].

pub mod design;
pub mod select;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::record::{FeedbackEvent, FeedbackType, FeedbackValue};

pub use design::{IpwMean, floored_weights, inclusion_probabilities, ipw_mean, systematic_sample};
pub use select::{CreateOptions, create};

/// What reviewers answer on a queue's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// A 1-5 `explicit_rating` (on `dimension` when the queue has one).
    Rating,
    /// `explicit_thumbs_up` or `explicit_thumbs_down`.
    Thumbs,
    /// A choice between two outputs of one group (A/B), answered as an `explicit_preference`
    /// event; not yet supported by queues (refused by `queue create`).
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
    /// The uniform share of the selection weights (see `design.rs`).
    pub floor: f64,
    /// Requests the items were drawn from.
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

/// One request of a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    pub queue: String,
    /// 0-based; reviewers are served items in this order (the draw's order).
    pub position: u32,
    pub request_id: String,
    /// The probability with which the design selected the request, in (0, 1].
    pub probability: f64,
    /// The strategy's priority for the request.
    pub priority: f64,
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
    pub reviewer: String,
    pub outcome: LabelOutcome,
    /// The feedback event that carries the label; `None` for a skip.
    pub event_id: Option<String>,
    pub timestamp: DateTime<Utc>,
}

/// A reviewer's answer as the review page sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A 1-5 rating (rating queues).
    Rating(u8),
    /// Up or down (thumbs queues).
    Thumb(bool),
    Skip,
}

/// A stored answer as the stores read it: queue, request, reviewer, outcome, event id, time
/// (microseconds since the epoch).
pub type LabelRow = (String, String, String, String, Option<String>, i64);

/// A stored answer row as a [`QueueLabel`]; an unknown outcome is an error naming the row.
pub fn label_from_row((queue, request_id, reviewer, outcome, event_id, ts): LabelRow) -> Result<QueueLabel, String> {
    let outcome = LabelOutcome::parse(&outcome)
        .ok_or_else(|| format!("queue {queue:?}, request {request_id:?}: unknown outcome {outcome:?}"))?;
    Ok(QueueLabel { queue, request_id, reviewer, outcome, event_id, timestamp: crate::record::from_micros(ts) })
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
        reviewer: reviewer.to_string(),
        outcome,
        event_id: (outcome == LabelOutcome::Labelled).then_some(id),
        timestamp: now,
    };
    Ok((events, label))
}

/// Records `reviewer`'s answer on `item` in one transaction: the feedback events (see
/// [`answer_events`]) and the queue label. Returns whether it was new (`false`: the reviewer had
/// answered this item already, and nothing changed).
pub fn record_answer(
    store: &mut dyn crate::store::Store,
    spec: &QueueSpec,
    item: &QueueItem,
    reviewer: &str,
    answer: &Answer,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> crate::Result<bool> {
    let (events, label) = answer_events(spec, item, reviewer, answer, comment, now).map_err(crate::Error::Input)?;
    store.begin()?;
    let done = (|| -> crate::store::StoreResult<bool> {
        let linked = store.insert_queue_labels(std::slice::from_ref(&label))?;
        if linked.stored == 1 {
            store.insert_feedback(&events)?;
        }
        Ok(linked.stored == 1)
    })();
    match done {
        Ok(new) => {
            store.commit()?;
            Ok(new)
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
    pub reviewer: String,
    /// 1-5 (rating queues), `"up"` / `"down"` (thumbs queues) or `"skip"`.
    pub answer: serde_json::Value,
    #[serde(default)]
    pub comment: Option<String>,
}

impl ImportRow {
    /// The answer, or why it is not one (naming the field).
    pub fn parse_answer(&self) -> Result<Answer, String> {
        match &self.answer {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(r @ 1..=5) => Ok(Answer::Rating(r as u8)),
                _ => Err(format!("answer: rating {n} is not an integer from 1 to 5")),
            },
            serde_json::Value::String(s) if s == "up" => Ok(Answer::Thumb(true)),
            serde_json::Value::String(s) if s == "down" => Ok(Answer::Thumb(false)),
            serde_json::Value::String(s) if s == "skip" => Ok(Answer::Skip),
            other => Err(format!("answer: expected 1-5, \"up\", \"down\" or \"skip\", got {other}")),
        }
    }
}

/// What [`import_answers`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Imported {
    pub stored: usize,
    /// Answers the reviewer had given already (nothing changed).
    pub duplicate: usize,
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
    let by_request: HashMap<&str, &QueueItem> = items.iter().map(|i| (i.request_id.as_str(), i)).collect();
    let mut checked = Vec::with_capacity(rows.len());
    for (line, row) in &rows {
        let at = |m: String| crate::Error::Input(format!("{}:{line}: {m}", path.display()));
        let item = by_request
            .get(row.request_id.as_str())
            .ok_or_else(|| at(format!("request_id: {:?} is not an item of queue {:?}", row.request_id, spec.name)))?;
        if row.reviewer.trim().is_empty() {
            return Err(at("reviewer: empty".into()));
        }
        let answer = row.parse_answer().map_err(at)?;
        answer_events(spec, item, &row.reviewer, &answer, row.comment.as_deref(), now)
            .map_err(|e| at(format!("answer: {e}")))?;
        checked.push((*item, row, answer));
    }
    let mut out = Imported::default();
    for (item, row, answer) in checked {
        if record_answer(store, spec, item, &row.reviewer, &answer, row.comment.as_deref(), now)? {
            out.stored += 1;
        } else {
            out.duplicate += 1;
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
    let mut labelled: HashMap<&str, usize> = HashMap::new();
    let mut answered: HashSet<&str> = HashSet::new();
    for l in labels {
        if l.outcome == LabelOutcome::Labelled {
            *labelled.entry(l.request_id.as_str()).or_default() += 1;
        }
        if l.reviewer == reviewer {
            answered.insert(l.request_id.as_str());
        }
    }
    items.iter().find(|i| {
        !answered.contains(i.request_id.as_str())
            && labelled.get(i.request_id.as_str()).copied().unwrap_or(0) < spec.reviewers_per_item
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
    let mut per_item: HashMap<&str, usize> = HashMap::new();
    let mut per_reviewer: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for l in labels {
        let r = per_reviewer.entry(l.reviewer.as_str()).or_default();
        match l.outcome {
            LabelOutcome::Labelled => {
                r.0 += 1;
                *per_item.entry(l.request_id.as_str()).or_default() += 1;
            }
            LabelOutcome::Skipped => r.1 += 1,
        }
    }
    let k = spec.reviewers_per_item;
    Progress {
        items: items.len(),
        done: items.iter().filter(|i| per_item.get(i.request_id.as_str()).copied().unwrap_or(0) >= k).count(),
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
    let mut labelled: HashMap<&str, usize> = HashMap::new();
    for l in labels.iter().filter(|l| l.outcome == LabelOutcome::Labelled) {
        *labelled.entry(l.request_id.as_str()).or_default() += 1;
    }
    let mine: HashSet<&str> = labels.iter().filter(|l| l.reviewer == reviewer).map(|l| l.request_id.as_str()).collect();
    let open = items
        .iter()
        .filter(|i| {
            !mine.contains(i.request_id.as_str())
                && labelled.get(i.request_id.as_str()).copied().unwrap_or(0) < spec.reviewers_per_item
        })
        .count();
    (answered, open)
}

/// The largest selection probability of each request over the queue items whose labels are in
/// `labels` (labelled ones only): what `dataset build`'s `queue` factor and `bias` read. A
/// request in several queues keeps its largest probability (the smallest weight).
pub fn labelled_probabilities(items: &[QueueItem], labels: &[QueueLabel]) -> BTreeMap<String, f64> {
    let labelled: HashSet<(&str, &str)> = labels
        .iter()
        .filter(|l| l.outcome == LabelOutcome::Labelled)
        .map(|l| (l.queue.as_str(), l.request_id.as_str()))
        .collect();
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for i in items.iter().filter(|i| labelled.contains(&(i.queue.as_str(), i.request_id.as_str()))) {
        let p = out.entry(i.request_id.clone()).or_insert(0.0);
        *p = p.max(i.probability);
    }
    out
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
        let requests: HashSet<&str> = mine.iter().map(|l| l.request_id.as_str()).collect();
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
                probability: 0.3,
                priority: 1.0,
            })
            .collect()
    }

    fn label(r: &str, who: &str, outcome: LabelOutcome) -> QueueLabel {
        QueueLabel {
            queue: "q".into(),
            request_id: r.into(),
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
    fn labelled_probabilities_keep_the_largest_per_request() {
        let mut it = items();
        it.push(QueueItem { queue: "p".into(), position: 0, request_id: "r0".into(), probability: 0.9, priority: 0.0 });
        let mut labels = vec![label("r0", "a", LabelOutcome::Labelled), label("r1", "a", LabelOutcome::Skipped)];
        labels.push(QueueLabel { queue: "p".into(), ..label("r0", "b", LabelOutcome::Labelled) });
        let p = labelled_probabilities(&it, &labels);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![("r0".to_string(), 0.9)]);
    }
}

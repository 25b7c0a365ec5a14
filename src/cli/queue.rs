//! `evalloop queue`: annotation queues: create one with a selection strategy, list them, show a
//! queue's progress, agreement and inverse-probability estimate, export its items and labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use super::{FilterArgs, Outcome, render, to_json};
use crate::analysis::{RaterAgreementOptions, rater_agreement_of};
use crate::config::Settings;
use crate::queue::{self, CreateOptions, LabelOutcome, QueueItem, QueueKind, QueueLabel, QueueSpec, Strategy};
use crate::record::{Choice, FeedbackEvent, FeedbackType, FeedbackValue};
use crate::stats::agreement::{MeasurementLevel, rater_agreement};
use crate::stats::preference::choice_units;
use crate::stats::{self, BootstrapConfig, Undefined};
use crate::store::{self, RaterEvent, Store};
use crate::text::escape;
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum QueueWhat {
    /// Draw a queue of requests for people to label (each with its selection probability).
    Create(Box<CreateArgs>),
    /// Every queue with its progress.
    List,
    /// A queue's progress per reviewer, agreement so far and the IPW mean of its labels.
    Show(ShowArgs),
    /// A queue's items, selection probabilities and labels as JSON Lines.
    Export(ExportArgs),
    /// Answers given elsewhere (JSON Lines: request_id, other_request_id, reviewer, answer, comment).
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    pub name: String,
    /// JSON Lines of {"request_id", "other_request_id" (preference queues), "reviewer",
    /// "answer": 1-5 | "up" | "down" | "a" | "b" | "tie" | "skip", "comment"}.
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The queue's name (letters, digits, '-', '_', '.').
    #[arg(long)]
    pub name: String,
    /// How requests are chosen; see docs/guide/queues.md.
    #[arg(long, value_enum)]
    pub strategy: Strategy,
    /// Items in the queue.
    #[arg(long)]
    pub size: usize,
    /// People who label each item.
    #[arg(long, default_value_t = 1)]
    pub reviewers_per_item: usize,
    /// Rate this human dimension (rating queues), e.g. coherence.
    #[arg(long)]
    pub dimension: Option<String>,
    /// What reviewers answer: a 1-5 rating, thumbs, or a preference between two outputs of one
    /// prompt group (each item a pair).
    #[arg(long, value_enum, default_value_t = QueueKind::Rating)]
    pub kind: QueueKind,
    /// The metadata key naming a request's prompt group (default: a hash of the prompt), for
    /// preference queues and --whole-groups.
    #[arg(long)]
    pub group_key: Option<String>,
    /// Rating and thumbs queues: draw whole prompt groups (--size counts groups); every output
    /// of a drawn group is an item. Labels then rank outputs of one prompt against each other.
    #[arg(long)]
    pub whole_groups: bool,
    /// The evaluator compared with --evaluator (disagreement, mix): the retrained one.
    #[arg(long)]
    pub against: Option<String>,
    /// Evaluators holding an ensemble's members' scores, comma-separated (uncertainty, mix).
    #[arg(long, value_delimiter = ',')]
    pub members: Vec<String>,
    /// The uniform share of the selection weights, in [0, 1] (every request keeps a chance).
    #[arg(long, default_value_t = 0.2)]
    pub floor: f64,
    /// Seed of the draw.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Leave out requests that already have a human score (rounds of active learning).
    #[arg(long)]
    pub exclude_labelled: bool,
    /// The window and the population's evaluator.
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    pub name: String,
    /// Bootstrap resamples for the interval of the agreement (0: none).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    pub name: String,
    /// Write the JSON Lines here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs a `queue` subcommand.
pub fn run(settings: &Settings, what: QueueWhat) -> Result<Outcome> {
    let mut store = store::open(&settings.db)?;
    match what {
        QueueWhat::Create(a) => create(settings, store.as_mut(), *a),
        QueueWhat::List => list(store.as_ref()),
        QueueWhat::Show(a) => show(store.as_ref(), a),
        QueueWhat::Export(a) => export(store.as_ref(), a),
        QueueWhat::Import(a) => {
            let spec = find(store.as_ref(), &a.name)?;
            let n = queue::import_answers(store.as_mut(), &spec, &a.file, chrono::Utc::now())?;
            let mut text =
                format!("queue {}: {} answer(s) stored, {} given already", escape(&spec.name), n.stored, n.duplicate);
            if n.full > 0 {
                let _ = write!(
                    text,
                    ", {} not stored: their items had their {} label(s) already",
                    n.full, spec.reviewers_per_item
                );
            }
            Ok(Outcome::ok(text, to_json(&n)))
        }
    }
}

fn create(settings: &Settings, store: &mut dyn Store, a: CreateArgs) -> Result<Outcome> {
    if a.filter.cohort.is_some() {
        return Err(Error::Input("--cohort: a queue draws from every cohort; use --strategy cohort-balanced".into()));
    }
    let window = a.filter.resolve()?;
    let o = CreateOptions {
        name: a.name,
        kind: a.kind,
        strategy: a.strategy,
        size: a.size,
        reviewers_per_item: a.reviewers_per_item,
        dimension: a.dimension,
        evaluator: window.evaluator.clone(),
        against: a.against,
        members: a.members,
        group_key: a.group_key,
        whole_groups: a.whole_groups,
        floor: a.floor,
        seed: a.seed,
        window,
        exclude_labelled: a.exclude_labelled,
    };
    let o_size = o.size;
    let (spec, items) = queue::create(store, &settings.policy, &o)?;
    let (lo, hi) =
        items.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), i| (lo.min(i.probability), hi.max(i.probability)));
    let by = if spec.whole_groups {
        format!("{} by whole prompt groups ({} groups)", spec.strategy.as_str(), o_size)
    } else {
        spec.strategy.as_str().to_string()
    };
    let text = format!(
        "queue {}: {} {} items drawn by {} from {} {} scored by {} (selection probabilities {:.4} to {:.4}); \
         {} reviewer(s) per item\nlabel them on `evalloop serve`'s review page: /review/queues/{}",
        escape(&spec.name),
        spec.size,
        spec.kind.as_str(),
        by,
        spec.population,
        if spec.kind == QueueKind::Preference { "pairs of outputs of one group" } else { "requests" },
        escape(&spec.evaluator),
        lo,
        hi,
        spec.reviewers_per_item,
        escape(&spec.name),
    );
    Ok(Outcome::ok(text, serde_json::json!({ "queue": spec, "items": items })))
}

fn list(store: &dyn Store) -> Result<Outcome> {
    let specs = store.queues()?;
    let items = store.queue_items(None)?;
    let labels = store.queue_labels(None)?;
    let mut text = format!(
        "{:<24} {:<10} {:<16} {:>6} {:>6} {:>8} {:>9}\n",
        "queue", "kind", "strategy", "items", "done", "labels", "reviewers"
    );
    let mut rows = Vec::new();
    for s in &specs {
        let it: Vec<QueueItem> = items.iter().filter(|i| i.queue == s.name).cloned().collect();
        let la: Vec<QueueLabel> = labels.iter().filter(|l| l.queue == s.name).cloned().collect();
        let p = queue::progress(s, &it, &la);
        let _ = writeln!(
            text,
            "{:<24} {:<10} {:<16} {:>6} {:>6} {:>8} {:>9}",
            escape(&s.name),
            s.kind.as_str(),
            s.strategy.as_str(),
            p.items,
            p.done,
            p.labels,
            p.reviewers.len()
        );
        rows.push(serde_json::json!({ "queue": s, "progress": p }));
    }
    if specs.is_empty() {
        text = "no queues; make one with `evalloop queue create`".into();
    }
    Ok(Outcome::ok(text.trim_end().to_string(), serde_json::json!({ "queues": rows })))
}

/// The queue named `name`, or an input error listing the others.
fn find(store: &dyn Store, name: &str) -> Result<QueueSpec> {
    store.queue(name)?.ok_or_else(|| {
        let names: Vec<String> = store.queues().map(|q| q.into_iter().map(|s| s.name).collect()).unwrap_or_default();
        Error::Input(format!(
            "no queue named {name:?} (queues: {})",
            if names.is_empty() { "none".into() } else { names.join(", ") }
        ))
    })
}

/// The label events of a queue's answers, by event id.
fn label_events(store: &dyn Store, labels: &[QueueLabel]) -> Result<BTreeMap<String, FeedbackEvent>> {
    let ids: Vec<&str> = labels.iter().filter_map(|l| l.event_id.as_deref()).collect();
    let mut comment_ids: Vec<String> = ids.iter().map(|i| format!("{i}:comment")).collect();
    comment_ids.extend(ids.iter().map(|i| i.to_string()));
    let refs: Vec<&str> = comment_ids.iter().map(String::as_str).collect();
    Ok(store.stored_events(&refs)?.into_iter().flatten().map(|e| (e.event_id.clone(), e)).collect())
}

/// A label's value on the queue's scale: a rating 1-5, a thumb 1 (up) or 0 (down).
fn value_of(e: &FeedbackEvent) -> Option<f64> {
    match (e.feedback_type, &e.value) {
        (FeedbackType::Rating, FeedbackValue::Rating(r)) => Some(f64::from(*r)),
        (FeedbackType::ThumbsUp, _) => Some(1.0),
        (FeedbackType::ThumbsDown, _) => Some(0.0),
        _ => None,
    }
}

fn show(store: &dyn Store, a: ShowArgs) -> Result<Outcome> {
    super::check_bootstrap(a.bootstrap)?;
    let spec = find(store, &a.name)?;
    let items = store.queue_items(Some(&spec.name))?;
    let labels = store.queue_labels(Some(&spec.name))?;
    let events = label_events(store, &labels)?;
    let p = queue::progress(&spec, &items, &labels);
    if spec.kind == QueueKind::Preference {
        return show_preference(store, &spec, &items, &labels, &events, p, a.bootstrap);
    }

    // Agreement so far: the existing agreement code over the queue's labels alone.
    let rater_events: Vec<RaterEvent> = labels
        .iter()
        .filter_map(|l| events.get(l.event_id.as_deref()?))
        .map(|e| RaterEvent { cohort: None, use_case: None, eval_score: None, event: e.clone() })
        .collect();
    let hidden = Undefined::new("reviewers do not see the evaluator's score; `evalloop agreement` gives the ceiling");
    let opts =
        RaterAgreementOptions { bootstrap: a.bootstrap, dimension: spec.dimension.clone(), ..Default::default() };
    let mut agreement = rater_agreement_of(items.len(), &rater_events, Err(&hidden), &opts);
    if spec.kind == QueueKind::Rating {
        // A rating queue holds no thumbs: leave out their (empty) matrix.
        agreement.thumbs = None;
    }

    // The mean label, each item its reviewers' mean, weighted by 1 / selection probability.
    let mut per_item: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for l in labels.iter().filter(|l| l.outcome == LabelOutcome::Labelled) {
        if let Some(v) = l.event_id.as_deref().and_then(|id| events.get(id)).and_then(value_of) {
            per_item.entry(l.request_id.as_str()).or_default().push(v);
        }
    }
    // Each labelled item: its request, mean label and probability; the sampling units.
    let labelled: Vec<(&QueueItem, f64)> = items
        .iter()
        .filter_map(|i| {
            let v = per_item.get(i.request_id.as_str())?;
            Some((i, v.iter().sum::<f64>() / v.len() as f64))
        })
        .collect();
    let requests: Vec<String> = labelled.iter().map(|(i, _)| i.request_id.clone()).collect();
    let units = queue::sampling_units(store, &spec, &requests)?;
    let pairs: Vec<(f64, f64)> = labelled.iter().map(|(i, y)| (*y, i.probability)).collect();
    let ipw = queue::ipw_mean_clustered(&pairs, &units);
    // The population evaluator's correlation with the labels, over the items it scored.
    let scores: BTreeMap<String, f64> = store
        .evaluated_requests(&store::Filter { evaluator: Some(spec.evaluator.clone()), ..Default::default() })?
        .into_iter()
        .map(|r| (r.request_id, r.eval_score))
        .collect();
    let (mut xyp, mut xy_units) = (Vec::new(), Vec::new());
    for ((i, y), u) in labelled.iter().zip(&units) {
        if let Some(x) = scores.get(&i.request_id) {
            xyp.push((*x, *y, i.probability));
            xy_units.push(*u);
        }
    }
    let correlation = queue::ipw_correlation(&xyp, &xy_units);

    let mut text = show_head(&spec, &p);
    let scale = if spec.kind == QueueKind::Thumbs { "share of thumbs up" } else { "mean rating" };
    match &ipw {
        Ok(m) => {
            let _ = writeln!(
                text,
                "{scale} over the whole population (weighted by 1 / selection probability): {:.4} (95% CI {:.4} to {:.4}, {} items)",
                m.mean, m.low, m.high, m.n
            );
        }
        Err(u) => {
            let _ = writeln!(text, "{scale} over the whole population: undefined: {}", u.reason);
        }
    }
    match &correlation {
        Ok(c) => {
            let _ = writeln!(
                text,
                "evaluator {}'s Pearson correlation with the labels over the whole population (weighted): {:.4} \
                 (95% CI {:.4} to {:.4}, {} items)",
                escape(&spec.evaluator),
                c.r,
                c.low,
                c.high,
                c.n
            );
        }
        Err(u) => {
            let _ = writeln!(text, "the evaluator's correlation with the labels: undefined: {}", u.reason);
        }
    }
    if spec.whole_groups {
        let units = ipw.as_ref().map_or(0, |m| m.units);
        let _ = writeln!(text, "drawn by whole prompt groups: the intervals treat the {units} group(s) as the units");
    }
    text.push_str(&render::agreement(&agreement));
    let json = serde_json::json!({
        "queue": spec,
        "progress": p,
        "ipw_mean": match &ipw { Ok(m) => to_json(m), Err(u) => to_json(u) },
        "ipw_correlation": match &correlation { Ok(c) => to_json(c), Err(u) => to_json(u) },
        "agreement": agreement,
    });
    Ok(Outcome::ok(text, json))
}

/// The header and progress lines of `queue show`.
fn show_head(spec: &QueueSpec, p: &queue::Progress) -> String {
    let mut text = format!(
        "queue {}: {} items ({}, strategy {}, {} reviewer(s) per item{}), drawn from {} {} scored by {}\n",
        escape(&spec.name),
        p.items,
        spec.kind.as_str(),
        spec.strategy.as_str(),
        spec.reviewers_per_item,
        spec.dimension.as_deref().map(|d| format!(", dimension {}", escape(d))).unwrap_or_default(),
        spec.population,
        if spec.kind == QueueKind::Preference { "pairs" } else { "requests" },
        escape(&spec.evaluator),
    );
    let _ = writeln!(
        text,
        "progress: {} of {} items done, {} of {} labels, {} skips",
        p.done, p.items, p.labels, p.labels_needed, p.skips
    );
    for r in &p.reviewers {
        let _ = writeln!(text, "  {:<24} {:>6} labelled {:>6} skipped", escape(&r.reviewer), r.labelled, r.skipped);
    }
    text
}

/// `queue show` of a preference queue: progress; the reviewers' agreement on the same pair
/// (nominal over a, b and tie, as `evalloop preferences` measures it); and the evaluator's
/// pairwise accuracy against the pairs' majority verdicts over the whole population of pairs,
/// each decisive pair weighted by `1 / selection probability`.
fn show_preference(
    store: &dyn Store,
    spec: &QueueSpec,
    items: &[QueueItem],
    labels: &[QueueLabel],
    events: &BTreeMap<String, FeedbackEvent>,
    p: queue::Progress,
    bootstrap: usize,
) -> Result<Outcome> {
    let judged: Vec<(&QueueLabel, Choice)> = labels
        .iter()
        .filter_map(|l| {
            let e = events.get(l.event_id.as_deref()?)?;
            let (_, c) = crate::analysis::oriented(e)?;
            Some((l, c))
        })
        .collect();
    let choices: Vec<(String, String, Choice)> = judged
        .iter()
        .map(|(l, c)| {
            let (a, b) = l.key();
            (format!("{a}\u{1f}{}", b.unwrap_or_default()), l.reviewer.clone(), *c)
        })
        .collect();
    let cfg = BootstrapConfig { n_resamples: bootstrap, ..Default::default() };
    let agreement = rater_agreement(&choice_units(&choices), MeasurementLevel::Nominal, &cfg);

    let mut votes: BTreeMap<(&str, Option<&str>), [usize; 3]> = BTreeMap::new();
    for (l, c) in &judged {
        crate::analysis::add_vote(votes.entry(l.key()).or_default(), *c);
    }
    let scores: BTreeMap<String, f64> = store
        .evaluated_requests(&store::Filter { evaluator: Some(spec.evaluator.clone()), ..Default::default() })?
        .into_iter()
        .map(|r| (r.request_id, r.eval_score))
        .collect();
    let (mut ties, mut unscored) = (0usize, 0usize);
    let mut values: Vec<(f64, f64)> = Vec::new();
    for i in items {
        let Some(v) = votes.get(&i.key()) else { continue };
        let verdict = crate::analysis::majority(*v);
        if verdict == Choice::Tie {
            ties += 1;
            continue;
        }
        let (Some(sa), Some(sb)) = (scores.get(&i.request_id), i.other_request_id.as_ref().and_then(|b| scores.get(b)))
        else {
            unscored += 1;
            continue;
        };
        let agrees = match (verdict, sa.total_cmp(sb)) {
            (_, std::cmp::Ordering::Equal) => 0.5,
            (Choice::A, std::cmp::Ordering::Greater) | (Choice::B, std::cmp::Ordering::Less) => 1.0,
            _ => 0.0,
        };
        values.push((agrees, i.probability));
    }
    let accuracy = if values.len() < 2 {
        Err(Undefined::new(format!("{} decisive pair(s) with both scores; an interval needs at least 2", values.len())))
    } else {
        queue::ipw_mean(&values)
    };

    let mut text = show_head(spec, &p);
    match &accuracy {
        Ok(m) => {
            let _ = writeln!(
                text,
                "evaluator {} prefers the output people preferred in {:.4} of all pairs (weighted by 1 / selection \
                 probability; 95% CI {:.4} to {:.4}; {} decisive pairs, {} tied, {} without both scores)",
                escape(&spec.evaluator),
                m.mean,
                m.low,
                m.high,
                m.n,
                ties,
                unscored
            );
        }
        Err(u) => {
            let _ = writeln!(text, "the evaluator's pairwise accuracy over all pairs: undefined: {}", u.reason);
        }
    }
    match (&agreement.alpha, &agreement.percent_agreement) {
        (stats::Outcome::Defined(alpha), pa) => {
            let ci = match &agreement.alpha_ci {
                stats::Outcome::Defined(c) => format!(" [{:.3}, {:.3}]", c.lower, c.upper),
                stats::Outcome::Undefined(_) => String::new(),
            };
            let pa = pa.as_ref().map_or("undefined".to_string(), |p| format!("{p:.3}"));
            let _ = writeln!(
                text,
                "reviewers on the same pair: Krippendorff's alpha (nominal) {alpha:.3}{ci}, percent agreement {pa}, \
                 {} pairs judged by 2+ reviewers",
                agreement.items_used
            );
        }
        (stats::Outcome::Undefined(u), _) => {
            let _ = writeln!(text, "reviewers on the same pair: agreement undefined ({})", u.reason);
        }
    }
    let json = serde_json::json!({
        "queue": spec,
        "progress": p,
        "pairwise_accuracy": match &accuracy { Ok(m) => to_json(m), Err(u) => to_json(u) },
        "tied_pairs": ties,
        "unscored_pairs": unscored,
        "agreement": agreement,
    });
    Ok(Outcome::ok(text, json))
}

/// One line of `queue export`: an item, its selection probability and its answers.
#[derive(Debug, Serialize)]
struct ExportRow<'a> {
    queue: &'a str,
    position: u32,
    request_id: &'a str,
    /// Output B of a pair (preference queues).
    #[serde(skip_serializing_if = "Option::is_none")]
    other_request_id: Option<&'a str>,
    /// The probability the design selected the request (or pair) with.
    probability: f64,
    /// `1 / probability`: its weight in unbiased estimates over the population.
    ipw_weight: f64,
    priority: f64,
    strategy: Strategy,
    answers: Vec<ExportAnswer>,
}

#[derive(Debug, Serialize)]
struct ExportAnswer {
    reviewer: String,
    outcome: LabelOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    /// The rating (1-5) or thumb (1 up, 0 down).
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    /// A preference: `a` (the item's `request_id`), `b` (its `other_request_id`) or `tie`.
    #[serde(skip_serializing_if = "Option::is_none")]
    choice: Option<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    /// RFC 3339.
    timestamp: String,
}

fn export(store: &dyn Store, a: ExportArgs) -> Result<Outcome> {
    let spec = find(store, &a.name)?;
    let items = store.queue_items(Some(&spec.name))?;
    let labels = store.queue_labels(Some(&spec.name))?;
    let events = label_events(store, &labels)?;
    let mut lines = String::new();
    let mut rows = Vec::new();
    for i in &items {
        let answers = labels
            .iter()
            .filter(|l| l.key() == i.key())
            .map(|l| {
                let ev = l.event_id.as_deref().and_then(|id| events.get(id));
                let comment = l.event_id.as_deref().and_then(|id| events.get(&format!("{id}:comment"))).and_then(|c| {
                    match &c.value {
                        FeedbackValue::Text(t) => Some(t.clone()),
                        _ => None,
                    }
                });
                ExportAnswer {
                    reviewer: l.reviewer.clone(),
                    outcome: l.outcome,
                    event_id: l.event_id.clone(),
                    value: ev.and_then(value_of),
                    choice: ev.and_then(|e| match e.value {
                        FeedbackValue::Choice(c) => Some(c),
                        _ => None,
                    }),
                    comment,
                    timestamp: l.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                }
            })
            .collect();
        let row = ExportRow {
            queue: &spec.name,
            position: i.position,
            request_id: &i.request_id,
            other_request_id: i.other_request_id.as_deref(),
            probability: i.probability,
            ipw_weight: 1.0 / i.probability,
            priority: i.priority,
            strategy: spec.strategy,
            answers,
        };
        let v = to_json(&row);
        lines.push_str(&serde_json::to_string(&v).unwrap_or_default());
        lines.push('\n');
        rows.push(v);
    }
    let text = match &a.out {
        Some(path) => {
            crate::atomic::write_atomic(path, lines.as_bytes())?;
            format!("queue {}: {} items written to {}", escape(&spec.name), items.len(), path.display())
        }
        None => lines.trim_end().to_string(),
    };
    Ok(Outcome::ok(text, serde_json::json!({ "queue": spec, "items": rows })))
}

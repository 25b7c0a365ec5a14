//! The files a dataset directory holds, as `dataset build` writes them and `train` reads them:
//! one typed definition of each, used by every writer and reader.
//!
//! - `train.jsonl`, `validation.jsonl`, `test.jsonl`: one [`DatasetRow`] per line, sorted by
//!   `request_id`;
//! - `unlabelled.jsonl`: one [`UnlabelledRow`] per line (logged outputs without a human score,
//!   for the self-supervised ranking pairs), sorted by `request_id`;
//! - `dataset_card.json`: the [`DatasetCard`] (and `dataset_card.md`, its rendering for people).
//!
//! Every JSON object is written with its keys in sorted order (the rows' fields are declared in
//! that order; the card goes through [`sorted_json`]), so the same build gives the same bytes.
//! The model directory's files are defined in `evalloop-model` (`evalloop_model::files`), the
//! report's `report.json` in [`crate::report`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::{CellStats, DatasetConfig, StratumSample};
use crate::feedback::HumanPolicy;
use crate::{Error, Result};

/// The dataset card's file name in a dataset directory.
pub const CARD_FILE: &str = "dataset_card.json";
/// The unlabelled outputs' file name in a dataset directory.
pub const UNLABELLED_FILE: &str = "unlabelled.jsonl";

/// What a dataset's `label` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelKind {
    /// Good 1, bad 0, neutral dropped (default).
    #[default]
    Binary,
    /// `(human_score - 1) / 4`, in [0, 1].
    Graded,
}

/// A row's primary label as written: an integer 0 or 1 for a binary dataset, a number in
/// [0, 1] (rounded to 6 decimals) for a graded one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Label {
    /// 0 or 1.
    Binary(u8),
    /// In [0, 1].
    Graded(f64),
}

impl Label {
    /// The label as a number.
    pub fn value(self) -> f64 {
        match self {
            Label::Binary(b) => f64::from(b),
            Label::Graded(g) => g,
        }
    }
}

/// One example of `train.jsonl`, `validation.jsonl` or `test.jsonl`. Fields in sorted order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRow {
    /// The request's `metadata.user_cohort` (`(none)` without one); `None` in a hand-made row
    /// without one.
    #[serde(default)]
    pub cohort: Option<String>,
    /// The prompt group: the `group_key` metadata value, else a hash of the prompt; `None` in a
    /// hand-made row without one.
    #[serde(default)]
    pub group: Option<String>,
    /// The production evaluator's `overall` for the request, in [0, 1] (what a blended
    /// evaluator, `[train] blend_evaluator`, builds on); absent in datasets built before it was
    /// written and in hand-made rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluator_score: Option<f64>,
    /// Whether the evaluator and people disagreed on it.
    #[serde(default)]
    pub is_disagreement: bool,
    /// The primary label.
    pub label: Label,
    /// Multi-task datasets (`[dataset] dimensions`): the label on each dimension, in [0, 1], or
    /// `null` without a rating on it; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Option<f64>>>,
    /// The logged output (second text of the pair).
    pub output: String,
    /// The logged prompt (first text of the pair).
    pub prompt: String,
    /// The log's request id.
    pub request_id: String,
    /// The loss weight, >= 0 (default 1).
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// One row of `unlabelled.jsonl`. Fields in sorted order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnlabelledRow {
    /// The request's cohort (`(none)` without one); `None` in a hand-made row without one.
    #[serde(default)]
    pub cohort: Option<String>,
    /// The prompt group, as in [`DatasetRow::group`].
    #[serde(default)]
    pub group: Option<String>,
    /// The dataset's evaluator's `overall` for the request, as in
    /// [`DatasetRow::evaluator_score`] (what `[train] distill` learns from); absent when that
    /// evaluator did not score it, in datasets built before it was written and in hand-made rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluator_score: Option<f64>,
    /// The logged output.
    pub output: String,
    /// The logged prompt.
    pub prompt: String,
    /// The log's request id.
    pub request_id: String,
}

/// The file of preference pairs beside the splits (`dataset build`, when the store holds
/// preferences).
pub const PAIRS_FILE: &str = "pairs.jsonl";

/// One row of `pairs.jsonl`: a prompt group's two outputs that people compared, the preferred
/// one first. Fields in sorted order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairRow {
    /// The preferred output.
    pub chosen: String,
    /// The cohort of the request the preference was left on (`(none)` without one).
    pub cohort: String,
    /// The prompt group of both outputs, as in [`DatasetRow::group`].
    pub group: String,
    /// The prompt of output `chosen` (both outputs answer the same prompt group).
    pub prompt: String,
    /// The other output.
    pub rejected: String,
    /// Request id of `chosen`.
    pub request_id_chosen: String,
    /// Request id of `rejected`.
    pub request_id_rejected: String,
    /// `train`, `validation` or `test`: the split of the group.
    pub split: String,
    /// People's votes for `chosen` less those for `rejected` (ties count for neither), >= 1.
    pub margin: u32,
    /// The cohort weighting factors of `cohort` (the cohort-level schemes), normalised like the
    /// rows' when `normalize` is on (over the train split's pairs).
    pub weight: f64,
}

/// The card's line on `pairs.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsCard {
    /// Preference events read (overall preferences, no dimension).
    pub events: usize,
    /// Distinct pairs with a decisive majority, per split (`train`, `validation`, `test`).
    pub pairs: BTreeMap<String, usize>,
    /// Pairs whose votes tie (left out).
    pub ties: usize,
    /// Pairs left out because an output is not logged in the window or not scored by the
    /// dataset's evaluator.
    pub unlogged: usize,
    /// Pairs left out because the two outputs are in different prompt groups.
    pub cross_group: usize,
}

/// `dataset_card.json`: how a dataset was built and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetCard {
    /// The `[dataset]` config the dataset was built with (defaults filled in).
    pub config: DatasetConfig,
    /// The human-score policy labels came from.
    pub human_policy: HumanPolicy,
    /// The evaluator whose scores the rows carry.
    pub evaluator: String,
    /// Requests with an evaluator score and a human score.
    pub candidates: usize,
    /// Neutral requests dropped (binary labels).
    pub dropped_neutral: usize,
    /// Agreeing requests dropped (`source = "disagreements"`).
    pub dropped_agreeing: usize,
    /// Examples before `max_examples` subsampling.
    pub examples_before_subsampling: usize,
    /// Examples written, over all splits.
    pub examples: usize,
    /// The `normalize` divisor (the train split's mean weight before it; 1 without `normalize`).
    pub normalize_divisor: f64,
    /// Per cohort: its requests, feedback counts, rate and weighting factors.
    pub cohorts: BTreeMap<String, CohortCard>,
    /// Per stratum (cohort x class) kept by subsampling; empty without it.
    pub subsampling: Vec<StratumSample>,
    /// Per split (`train`, `validation`, `test`): its statistics, overall and per cohort.
    pub splits: BTreeMap<String, SplitCard>,
    /// Prompt groups over all splits.
    pub groups: usize,
    /// The build's warnings (small effective sizes, empty splits).
    pub warnings: Vec<String>,
    /// `evalloop <version>` that wrote the card.
    pub generator: String,
    /// Multi-task datasets: per dimension, the examples with a label on it (`labelled`, and per
    /// split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<BTreeMap<String, DimensionCard>>,
    /// Rows of `unlabelled.jsonl` (`[dataset] unlabelled`); absent when none was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlabelled: Option<usize>,
    /// `pairs.jsonl`: absent when the store holds no preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference_pairs: Option<PairsCard>,
    /// Examples whose request was labelled through an annotation queue; absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_examples: Option<usize>,
}

/// A cohort's line of the card.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortCard {
    /// Logged requests.
    pub requests: u64,
    /// Requests with any feedback event.
    pub with_feedback: u64,
    /// Requests with explicit feedback.
    pub with_explicit: u64,
    /// Requests with a human score under the policy.
    pub with_human_score: u64,
    /// The cohort's rate under `[dataset] rate`.
    pub rate: f64,
    /// The `inverse_rate` factor (1 when that scheme is off).
    pub inverse_rate_factor: f64,
    /// The `ipw` factor (1 when that scheme is off).
    pub ipw_factor: f64,
}

/// A split's statistics, overall (flattened) and per cohort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitCard {
    /// Over the split's examples.
    #[serde(flatten)]
    pub all: CellStats,
    /// Per cohort.
    pub by_cohort: BTreeMap<String, CellStats>,
}

/// A dimension's label counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionCard {
    /// Examples with a label on it, over all splits.
    pub labelled: usize,
    /// In the train split.
    pub train: usize,
    /// In the validation split.
    pub validation: usize,
    /// In the test split.
    pub test: usize,
}

impl DatasetCard {
    /// The card of a dataset written by hand or by another tool: `config` as given (its
    /// `label` and `dimensions` are what `train` reads), no store statistics.
    pub fn hand_made(config: DatasetConfig) -> DatasetCard {
        DatasetCard {
            config,
            human_policy: HumanPolicy::default(),
            evaluator: String::new(),
            candidates: 0,
            dropped_neutral: 0,
            dropped_agreeing: 0,
            examples_before_subsampling: 0,
            examples: 0,
            normalize_divisor: 1.0,
            cohorts: BTreeMap::new(),
            subsampling: Vec::new(),
            splits: BTreeMap::new(),
            groups: 0,
            warnings: Vec::new(),
            generator: format!("evalloop {} (hand-made)", env!("CARGO_PKG_VERSION")),
            dimensions: None,
            unlabelled: None,
            preference_pairs: None,
            queue_examples: None,
        }
    }

    /// Reads `dataset_dir/dataset_card.json`. A card this version cannot read (written by an
    /// older evalloop) is refused with a message that says how to rebuild it.
    pub fn read(dataset_dir: &Path) -> Result<DatasetCard> {
        let path = dataset_dir.join(CARD_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Input(format!(
                "{}: {e}; a card from another evalloop version: rebuild the dataset with `evalloop dataset build`",
                path.display()
            ))
        })
    }

    /// The card as written: pretty JSON, keys sorted.
    pub fn to_json(&self) -> Result<String> {
        sorted_json(self, CARD_FILE)
    }
}

/// `value` as pretty JSON with every object's keys in sorted order; `what` names it in an error.
pub fn sorted_json<T: Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string_pretty(&sorted_value(value, what)?).map_err(|e| Error::Input(format!("{what}: {e}")))
}

/// `value` as a `serde_json::Value`, whose objects keep their keys in sorted order (written
/// with [`crate::atomic::write_json_pretty`], that is the files' sorted form); `what` names it in
/// an error.
pub fn sorted_value<T: Serialize>(value: &T, what: &str) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::Input(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: Label, labels: Option<BTreeMap<String, Option<f64>>>) -> DatasetRow {
        DatasetRow {
            evaluator_score: None,
            cohort: Some("pro".into()),
            group: Some("g1".into()),
            is_disagreement: true,
            label,
            labels,
            output: "an output".into(),
            prompt: "a prompt".into(),
            request_id: "r1".into(),
            weight: 1.25,
        }
    }

    /// Rows round-trip, binary labels are written as integers, graded ones as numbers, and
    /// the keys come out sorted (as the dataset build has always written them).
    #[test]
    fn dataset_rows_round_trip_with_sorted_keys() {
        let dims: BTreeMap<String, Option<f64>> =
            [("coherence".to_string(), Some(0.75)), ("fluency".into(), None)].into();
        for r in [row(Label::Binary(1), None), row(Label::Graded(0.5), Some(dims))] {
            let text = serde_json::to_string(&r).unwrap();
            let sorted = serde_json::to_string(&serde_json::to_value(&r).unwrap()).unwrap();
            assert_eq!(text, sorted, "keys in sorted order");
            assert_eq!(serde_json::from_str::<DatasetRow>(&text).unwrap(), r);
        }
        let text = serde_json::to_string(&row(Label::Binary(0), None)).unwrap();
        assert!(text.contains(r#""label":0,"#), "{text}");
        let text = serde_json::to_string(&row(Label::Graded(1.0), None)).unwrap();
        assert!(text.contains(r#""label":1.0,"#), "{text}");
        assert_eq!(serde_json::from_str::<DatasetRow>(&text).unwrap().label.value(), 1.0);
        // A hand-made row: no cohort, group or weight.
        let r: DatasetRow = serde_json::from_str(r#"{"request_id":"a","prompt":"p","output":"o","label":1}"#).unwrap();
        assert_eq!((r.weight, r.group, r.label.value()), (1.0, None, 1.0));
    }

    #[test]
    fn unlabelled_rows_round_trip_with_sorted_keys() {
        let r = UnlabelledRow {
            cohort: Some("free".into()),
            group: Some("g".into()),
            evaluator_score: None,
            output: "o".into(),
            prompt: "p".into(),
            request_id: "r".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"cohort":"free","group":"g","output":"o","prompt":"p","request_id":"r"}"#);
        assert_eq!(serde_json::from_str::<UnlabelledRow>(&text).unwrap(), r);
        let r = UnlabelledRow { evaluator_score: Some(0.25), ..r };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""evaluator_score":0.25,"output""#), "{text}");
        assert_eq!(serde_json::from_str::<UnlabelledRow>(&text).unwrap(), r);
    }

    fn card() -> DatasetCard {
        let cell =
            CellStats { examples: 3, good: 2, bad: 1, weight_sum: 3.0, effective_size: 3.0, ..Default::default() };
        DatasetCard {
            config: DatasetConfig::default(),
            human_policy: HumanPolicy::default(),
            evaluator: "baseline".into(),
            candidates: 4,
            dropped_neutral: 1,
            dropped_agreeing: 0,
            examples_before_subsampling: 3,
            examples: 3,
            normalize_divisor: 1.0,
            cohorts: [(
                "pro".to_string(),
                CohortCard {
                    requests: 10,
                    with_feedback: 4,
                    with_explicit: 3,
                    with_human_score: 4,
                    rate: 0.4,
                    inverse_rate_factor: 1.0,
                    ipw_factor: 1.0,
                },
            )]
            .into(),
            subsampling: Vec::new(),
            splits: [(
                "train".to_string(),
                SplitCard { all: cell.clone(), by_cohort: [("pro".to_string(), cell)].into() },
            )]
            .into(),
            groups: 2,
            warnings: vec!["a warning".into()],
            generator: "evalloop 0.1.0".into(),
            dimensions: Some(
                [("coherence".to_string(), DimensionCard { labelled: 2, train: 2, validation: 0, test: 0 })].into(),
            ),
            unlabelled: Some(5),
            preference_pairs: None,
            queue_examples: Some(2),
        }
    }

    #[test]
    fn the_card_round_trips_through_its_file() {
        let d = tempfile::tempdir().unwrap();
        let c = card();
        std::fs::write(d.path().join(CARD_FILE), c.to_json().unwrap()).unwrap();
        assert_eq!(DatasetCard::read(d.path()).unwrap(), c);
        let v: serde_json::Value = serde_json::from_str(&c.to_json().unwrap()).unwrap();
        assert_eq!(v["splits"]["train"]["examples"], 3, "split statistics are flattened");
        assert_eq!(v["splits"]["train"]["by_cohort"]["pro"]["good"], 2);
    }

    /// A card without a field this version writes (an older card) is refused with the way out.
    #[test]
    fn an_older_card_is_refused_with_how_to_rebuild_it() {
        let d = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(card()).unwrap();
        v.as_object_mut().unwrap().remove("normalize_divisor");
        std::fs::write(d.path().join(CARD_FILE), v.to_string()).unwrap();
        let err = DatasetCard::read(d.path()).unwrap_err().to_string();
        assert!(err.contains("dataset_card.json") && err.contains("normalize_divisor"), "{err}");
        assert!(err.contains("evalloop dataset build"), "{err}");
    }
}

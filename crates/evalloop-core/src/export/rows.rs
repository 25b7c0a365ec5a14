//! The rows of the export files, one typed definition per kind, and their columns for Parquet.
//!
//! Every row carries `request_id`, `weight` (the dataset weighting schemes' product),
//! `label_source` (`human` or `evaluator`), `source` (where the example came from), `cohort`
//! and `group`; the fields are declared in sorted order, so a JSON line's keys are sorted and
//! the same export gives the same bytes. The column names are the ones TRL's trainers read:
//! `prompt`/`completion` and `messages` (SFT), `prompt`/`completion`/`label` (KTO),
//! `prompt`/`chosen`/`rejected` (DPO and reward modelling).

use serde::{Deserialize, Serialize};

/// Who labelled an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    /// People: feedback under the human-score policy, or an edit.
    Human,
    /// The retrained evaluator (`--expand-with`), on a request without a human score.
    Evaluator,
}

impl LabelSource {
    /// `human` or `evaluator`.
    pub fn name(self) -> &'static str {
        match self {
            LabelSource::Human => "human",
            LabelSource::Evaluator => "evaluator",
        }
    }
}

/// Where an example came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A logged output people approved (human score `>= good_min`) or, for KTO, rated.
    Feedback,
    /// The text a user turned the output into (`implicit_edit` with `edited_output`).
    Edit,
    /// Two outputs of one prompt whose human scores differ by at least the margin.
    ScoreMargin,
    /// An A/B preference between two outputs of one prompt (`explicit_preference`).
    Preference,
    /// A logged output the retrained evaluator labelled (`--expand-with`).
    Evaluator,
}

impl Source {
    /// The serialized name (`feedback`, `edit`, `score_margin`, `preference`, `evaluator`).
    pub fn name(self) -> &'static str {
        match self {
            Source::Feedback => "feedback",
            Source::Edit => "edit",
            Source::ScoreMargin => "score_margin",
            Source::Preference => "preference",
            Source::Evaluator => "evaluator",
        }
    }
}

/// One chat message of the conversational form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// `sft.jsonl`: a prompt and a completion to imitate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftRow {
    pub cohort: String,
    pub completion: String,
    pub group: String,
    pub label_source: LabelSource,
    pub prompt: String,
    pub request_id: String,
    pub source: Source,
    pub weight: f64,
}

/// `sft_messages.jsonl`: the same example as a conversation (`user` prompt, `assistant` reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftMessagesRow {
    pub cohort: String,
    pub group: String,
    pub label_source: LabelSource,
    pub messages: Vec<Message>,
    pub request_id: String,
    pub source: Source,
    pub weight: f64,
}

impl SftMessagesRow {
    /// The conversational form of a prompt-completion row.
    pub fn of(r: &SftRow) -> SftMessagesRow {
        SftMessagesRow {
            cohort: r.cohort.clone(),
            group: r.group.clone(),
            label_source: r.label_source,
            messages: vec![
                Message { role: "user".into(), content: r.prompt.clone() },
                Message { role: "assistant".into(), content: r.completion.clone() },
            ],
            request_id: r.request_id.clone(),
            source: r.source,
            weight: r.weight,
        }
    }
}

/// `kto.jsonl`: a completion with a desirable (`true`) or undesirable (`false`) label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KtoRow {
    pub cohort: String,
    pub completion: String,
    pub group: String,
    pub label: bool,
    pub label_source: LabelSource,
    pub prompt: String,
    pub request_id: String,
    pub source: Source,
    pub weight: f64,
}

/// `dpo.jsonl` and `reward.jsonl`: a preferred and a dispreferred completion of one prompt.
/// `request_id` is the chosen output's request, `rejected_request_id` the rejected one's (the
/// same request for an edit pair).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRow {
    pub chosen: String,
    pub cohort: String,
    pub group: String,
    pub label_source: LabelSource,
    pub prompt: String,
    pub rejected: String,
    pub rejected_request_id: String,
    pub request_id: String,
    pub source: Source,
    pub weight: f64,
}

/// A column of a table, for the Parquet writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Text(Vec<String>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    /// A list of `{role, content}` structs per row.
    Messages(Vec<Vec<Message>>),
}

/// A row type's columns, in its field (sorted) order.
pub trait Columns: Serialize {
    fn columns(rows: &[Self]) -> Vec<(&'static str, Column)>
    where
        Self: Sized;
}

fn text<T>(rows: &[T], f: impl Fn(&T) -> &str) -> Column {
    Column::Text(rows.iter().map(|r| f(r).to_string()).collect())
}

impl Columns for SftRow {
    fn columns(rows: &[Self]) -> Vec<(&'static str, Column)> {
        vec![
            ("cohort", text(rows, |r| &r.cohort)),
            ("completion", text(rows, |r| &r.completion)),
            ("group", text(rows, |r| &r.group)),
            ("label_source", text(rows, |r| r.label_source.name())),
            ("prompt", text(rows, |r| &r.prompt)),
            ("request_id", text(rows, |r| &r.request_id)),
            ("source", text(rows, |r| r.source.name())),
            ("weight", Column::Float(rows.iter().map(|r| r.weight).collect())),
        ]
    }
}

impl Columns for SftMessagesRow {
    fn columns(rows: &[Self]) -> Vec<(&'static str, Column)> {
        vec![
            ("cohort", text(rows, |r| &r.cohort)),
            ("group", text(rows, |r| &r.group)),
            ("label_source", text(rows, |r| r.label_source.name())),
            ("messages", Column::Messages(rows.iter().map(|r| r.messages.clone()).collect())),
            ("request_id", text(rows, |r| &r.request_id)),
            ("source", text(rows, |r| r.source.name())),
            ("weight", Column::Float(rows.iter().map(|r| r.weight).collect())),
        ]
    }
}

impl Columns for KtoRow {
    fn columns(rows: &[Self]) -> Vec<(&'static str, Column)> {
        vec![
            ("cohort", text(rows, |r| &r.cohort)),
            ("completion", text(rows, |r| &r.completion)),
            ("group", text(rows, |r| &r.group)),
            ("label", Column::Bool(rows.iter().map(|r| r.label).collect())),
            ("label_source", text(rows, |r| r.label_source.name())),
            ("prompt", text(rows, |r| &r.prompt)),
            ("request_id", text(rows, |r| &r.request_id)),
            ("source", text(rows, |r| r.source.name())),
            ("weight", Column::Float(rows.iter().map(|r| r.weight).collect())),
        ]
    }
}

impl Columns for PairRow {
    fn columns(rows: &[Self]) -> Vec<(&'static str, Column)> {
        vec![
            ("chosen", text(rows, |r| &r.chosen)),
            ("cohort", text(rows, |r| &r.cohort)),
            ("group", text(rows, |r| &r.group)),
            ("label_source", text(rows, |r| r.label_source.name())),
            ("prompt", text(rows, |r| &r.prompt)),
            ("rejected", text(rows, |r| &r.rejected)),
            ("rejected_request_id", text(rows, |r| &r.rejected_request_id)),
            ("request_id", text(rows, |r| &r.request_id)),
            ("source", text(rows, |r| r.source.name())),
            ("weight", Column::Float(rows.iter().map(|r| r.weight).collect())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sft() -> SftRow {
        SftRow {
            cohort: "pro".into(),
            completion: "Paris.".into(),
            group: "g1".into(),
            label_source: LabelSource::Human,
            prompt: "Capital of France?".into(),
            request_id: "r1".into(),
            source: Source::Edit,
            weight: 1.25,
        }
    }

    #[test]
    fn rows_round_trip_with_sorted_keys() {
        let line = serde_json::to_string(&sft()).unwrap();
        assert_eq!(
            line,
            r#"{"cohort":"pro","completion":"Paris.","group":"g1","label_source":"human","prompt":"Capital of France?","request_id":"r1","source":"edit","weight":1.25}"#
        );
        assert_eq!(serde_json::from_str::<SftRow>(&line).unwrap(), sft());
        let m = SftMessagesRow::of(&sft());
        let back: SftMessagesRow = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.messages[0].role, "user");
        assert_eq!(m.messages[1].content, "Paris.");
    }

    /// The Parquet columns are the JSON fields, in the same order.
    #[test]
    fn columns_follow_the_serialized_fields() {
        let keys = |v: serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        let names = |c: Vec<(&'static str, Column)>| c.into_iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        let s = sft();
        assert_eq!(keys(serde_json::to_value(&s).unwrap()), names(SftRow::columns(std::slice::from_ref(&s))));
        let m = SftMessagesRow::of(&s);
        assert_eq!(keys(serde_json::to_value(&m).unwrap()), names(SftMessagesRow::columns(&[m])));
        let k = KtoRow {
            cohort: s.cohort.clone(),
            completion: s.completion.clone(),
            group: s.group.clone(),
            label: false,
            label_source: LabelSource::Evaluator,
            prompt: s.prompt.clone(),
            request_id: s.request_id.clone(),
            source: Source::Evaluator,
            weight: 1.0,
        };
        assert_eq!(keys(serde_json::to_value(&k).unwrap()), names(KtoRow::columns(&[k])));
        let p = PairRow {
            chosen: "a".into(),
            cohort: "c".into(),
            group: "g".into(),
            label_source: LabelSource::Human,
            prompt: "p".into(),
            rejected: "b".into(),
            rejected_request_id: "r2".into(),
            request_id: "r1".into(),
            source: Source::ScoreMargin,
            weight: 1.0,
        };
        assert_eq!(keys(serde_json::to_value(&p).unwrap()), names(PairRow::columns(&[p])));
    }
}

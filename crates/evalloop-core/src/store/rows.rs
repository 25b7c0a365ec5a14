//! The mapping between records and stored rows that both backends share: the columns a read
//! returns turned into a record (and the few values a write turns into text), written once so
//! that SQLite and PostgreSQL convert alike.
//!
//! A mapper reads its columns by position through [`Row`], which rusqlite's and postgres'
//! rows implement; each backend maps the driver's error into its own [`StoreError`].

use super::{
    DimensionScore, EvaluatedRequest, RequestText, RunRecord, ScoredRequest, StoreError, StoreResult, StoredLog,
};
use crate::record::{EvalLog, FeedbackEvent, FeedbackType, FeedbackValue};

/// A column value both drivers can read (text, integers, reals, and their `Option`s).
pub(super) trait Value: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a> {}

impl<T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>> Value for T {}

/// A result row of either driver, read by column position.
pub(super) trait Row {
    /// The driver's error (a NULL or a value of the wrong type in a column).
    type Error;
    /// Column `i` (0-based) as a `T`, with the driver's conversion.
    fn col<T: Value>(&self, i: usize) -> Result<T, Self::Error>;
}

impl Row for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn col<T: Value>(&self, i: usize) -> Result<T, rusqlite::Error> {
        self.get(i)
    }
}

impl Row for postgres::Row {
    type Error = postgres::Error;
    fn col<T: Value>(&self, i: usize) -> Result<T, postgres::Error> {
        self.try_get(i)
    }
}

/// One stored feedback row (event_id, feedback_type, value_num, value_text, user_id, ts) as
/// both backends keep it.
pub(super) type StoredFeedback = (String, String, Option<f64>, Option<String>, Option<String>, i64);

/// Columns 0-5 of a feedback query: event_id, feedback_type, value_num, value_text, user_id, ts
/// (microseconds).
pub(super) fn feedback_row<R: Row>(r: &R) -> Result<StoredFeedback, R::Error> {
    Ok((r.col(0)?, r.col(1)?, r.col(2)?, r.col(3)?, r.col(4)?, r.col(5)?))
}

/// A row of the rater-events query: request_id, cohort, use case, evaluator score, then the
/// six feedback columns of [`feedback_row`].
pub(super) type StoredRaterEvent = (String, Option<String>, Option<String>, Option<f64>, StoredFeedback);

/// Columns 0-9 of the rater-events query (see [`StoredRaterEvent`]).
pub(super) fn rater_row<R: Row>(r: &R) -> Result<StoredRaterEvent, R::Error> {
    let fb = (r.col(4)?, r.col(5)?, r.col(6)?, r.col(7)?, r.col(8)?, r.col(9)?);
    Ok((r.col(0)?, r.col(1)?, r.col(2)?, r.col(3)?, fb))
}

/// Rebuilds a rater event from its stored columns; `dimension` is the one the query read.
pub(super) fn stored_rater_event(row: StoredRaterEvent, dimension: Option<&str>) -> StoreResult<super::RaterEvent> {
    let (request_id, cohort, use_case, eval_score, fb) = row;
    let mut event = stored_event(&request_id, fb)?;
    event.dimension = dimension.map(str::to_string);
    Ok(super::RaterEvent { cohort, use_case, eval_score, event })
}

/// The explicit feedback types whose values people can agree on, as stored (SQL list).
pub(super) const RATER_TYPES_SQL: &str = "('explicit_rating', 'explicit_thumbs_up', 'explicit_thumbs_down')";

/// The `value_text` column of a feedback event: its text for a comment, else NULL (the other
/// values are in `value_num`, [`FeedbackValue::as_number`]).
pub(super) fn stored_text(v: &FeedbackValue) -> Option<&str> {
    match v {
        FeedbackValue::Text(t) => Some(t.as_str()),
        _ => None,
    }
}

/// Rebuilds a feedback event from its stored columns.
pub(super) fn stored_event(request_id: &str, row: StoredFeedback) -> StoreResult<FeedbackEvent> {
    let (event_id, t, num, text, user_id, ts) = row;
    let feedback_type = FeedbackType::parse(&t)
        .ok_or_else(|| StoreError::Invalid(format!("stored feedback {event_id} has unknown type {t:?}")))?;
    let value = match feedback_type {
        FeedbackType::Rating => FeedbackValue::Rating(num.unwrap_or(0.0) as u8),
        FeedbackType::TextComment => FeedbackValue::Text(text.unwrap_or_default()),
        FeedbackType::Preference => {
            let stored = text.unwrap_or_default();
            FeedbackValue::Choice(crate::record::Choice::parse(&stored).ok_or_else(|| {
                StoreError::Invalid(format!("stored preference {event_id} has unknown choice {stored:?}"))
            })?)
        }
        _ => FeedbackValue::Bool(num.unwrap_or(1.0) != 0.0),
    };
    Ok(FeedbackEvent {
        event_id,
        request_id: request_id.to_string(),
        feedback_type,
        value,
        user_id,
        timestamp: crate::record::from_micros(ts),
        dimension: None,
        other_request_id: None,
    })
}

/// A feedback row by event id: request_id, feedback_type, value_num, value_text, user_id, ts,
/// dimension, other_request_id (columns 0-7), with the id it was asked by.
pub(super) type StoredEventRow = (String, StoredFeedback, Option<String>, Option<String>);

/// Columns 0-7 of a feedback-by-id query (see [`StoredEventRow`]).
pub(super) fn stored_event_row<R: Row>(event_id: &str, r: &R) -> Result<StoredEventRow, R::Error> {
    Ok((r.col(0)?, (event_id.to_string(), r.col(1)?, r.col(2)?, r.col(3)?, r.col(4)?, r.col(5)?), r.col(6)?, r.col(7)?))
}

/// The event a [`StoredEventRow`] holds.
pub(super) fn stored_event_with_dimension(row: StoredEventRow) -> StoreResult<FeedbackEvent> {
    let (request_id, stored, dimension, other_request_id) = row;
    let mut e = stored_event(&request_id, stored)?;
    e.dimension = dimension;
    e.other_request_id = other_request_id;
    Ok(e)
}

/// A stored preference: event_id, request_id, other_request_id, dimension, choice, user_id, ts
/// (microseconds).
pub(super) type StoredPreference = (String, String, String, Option<String>, String, Option<String>, i64);

/// Columns 0-6 of a preference query (see [`StoredPreference`]).
pub(super) fn preference_row<R: Row>(r: &R) -> Result<StoredPreference, R::Error> {
    Ok((r.col(0)?, r.col(1)?, r.col(2)?, r.col(3)?, r.col(4)?, r.col(5)?, r.col(6)?))
}

/// The `explicit_preference` event a [`StoredPreference`] holds.
pub(super) fn stored_preference(row: StoredPreference) -> StoreResult<FeedbackEvent> {
    let (event_id, request_id, other, dimension, choice, user_id, ts) = row;
    let mut e = stored_event(&request_id, (event_id, "explicit_preference".into(), None, Some(choice), user_id, ts))?;
    e.dimension = dimension;
    e.other_request_id = Some(other);
    Ok(e)
}

/// A [`StoredLog`] from its columns: the metadata and the other scores as JSON text, and the
/// asked evaluator's `(overall, other scores)` when it scored the request.
pub(super) fn stored_log(
    timestamp_us: i64,
    prompt: String,
    output: String,
    metadata: &str,
    feedback_collected: Option<bool>,
    scored: Option<(f64, Option<String>)>,
) -> StoreResult<StoredLog> {
    let metadata = match serde_json::from_str::<serde_json::Value>(metadata) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(StoreError::Invalid(format!("stored metadata is not a JSON object: {metadata:?}"))),
    };
    let (overall, others) = match scored {
        Some((o, others)) => (Some(o), others),
        None => (None, None),
    };
    let other_scores = match others.as_deref() {
        None | Some("") => Default::default(),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| StoreError::Invalid(format!("stored scores are not a JSON object of numbers: {e}")))?,
    };
    Ok(StoredLog { timestamp_us, prompt, output, metadata, feedback_collected, overall, other_scores })
}

/// A row of the scored-requests query: request_id, ts, evaluator, overall, human score, count
/// of scored events, cohort, use case, group, then prompt, output and metadata (all NULL when
/// the query asked no text). `metadata` puts the stored metadata text in the form
/// [`RequestText::metadata`] has.
pub(super) fn scored_request<R: Row>(r: &R, metadata: fn(String) -> String) -> Result<ScoredRequest, R::Error> {
    let prompt: Option<String> = r.col(9)?;
    let text = match prompt {
        Some(prompt) => Some(Box::new(RequestText { prompt, output: r.col(10)?, metadata: metadata(r.col(11)?) })),
        None => None,
    };
    Ok(ScoredRequest {
        request_id: r.col(0)?,
        timestamp_us: r.col(1)?,
        evaluator: r.col(2)?,
        eval_score: r.col(3)?,
        human_score: r.col(4)?,
        n_scored_events: r.col::<i64>(5)? as u64,
        cohort: r.col(6)?,
        use_case: r.col(7)?,
        group: r.col(8)?,
        text,
    })
}

/// Columns 0-2: prompt, output and metadata (through `metadata`, as in [`scored_request`]).
pub(super) fn request_text<R: Row>(r: &R, metadata: fn(String) -> String) -> Result<RequestText, R::Error> {
    Ok(RequestText { prompt: r.col(0)?, output: r.col(1)?, metadata: metadata(r.col(2)?) })
}

/// Columns 0-3: request_id, dimension, mean rating, number of ratings.
pub(super) fn dimension_score<R: Row>(r: &R) -> Result<DimensionScore, R::Error> {
    Ok(DimensionScore {
        request_id: r.col(0)?,
        dimension: r.col(1)?,
        mean: r.col(2)?,
        ratings: r.col::<i64>(3)? as u64,
    })
}

/// Columns 0-1 of a count query: a key and its count.
pub(super) fn counted<R: Row, K: Value>(r: &R) -> Result<(K, u64), R::Error> {
    Ok((r.col(0)?, r.col::<i64>(1)? as u64))
}

/// Columns 0-5 of an evaluated-requests query: request id, timestamp (us), the evaluator's
/// `overall`, cohort, use case, prompt version.
pub(super) fn evaluated_request<R: Row>(r: &R) -> Result<EvaluatedRequest, R::Error> {
    Ok(EvaluatedRequest {
        request_id: r.col(0)?,
        timestamp_us: r.col(1)?,
        eval_score: r.col(2)?,
        cohort: r.col(3)?,
        use_case: r.col(4)?,
        prompt_version: r.col(5)?,
    })
}

/// Columns 0-9 of the `runs` table in its column order; `dataset_card` and `metrics` are JSON
/// text (text that does not parse reads as `None`).
pub(super) fn run_record<R: Row>(r: &R) -> Result<RunRecord, R::Error> {
    let parse = |t: Option<String>| t.and_then(|t| serde_json::from_str(&t).ok());
    Ok(RunRecord {
        id: r.col(0)?,
        started_at: r.col(1)?,
        finished_at: r.col(2)?,
        config_hash: r.col(3)?,
        status: r.col(4)?,
        decision: r.col(5)?,
        run_dir: r.col(6)?,
        model_path: r.col(7)?,
        dataset_card: parse(r.col(8)?),
        metrics: parse(r.col(9)?),
    })
}

/// A run's JSON column (`dataset_card`, `metrics`) as stored text.
pub(super) fn run_json(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

/// A log's scores other than `overall`, as a JSON object with sorted keys; `None` when it has
/// none.
pub(super) fn other_scores(l: &EvalLog) -> Option<String> {
    let others: std::collections::BTreeMap<&str, f64> =
        l.eval_scores.iter().filter(|(k, _)| k.as_str() != "overall").map(|(k, v)| (k.as_str(), *v)).collect();
    if others.is_empty() {
        return None;
    }
    Some(serde_json::to_string(&others).unwrap_or_else(|_| "{}".into()))
}

//! The two record kinds evalloop reads, eval logs and feedback events, and their validation.
//!
//! Field names follow the feedback-loop article: an eval log has `request_id`, `timestamp`, `prompt`,
//! `output`, `eval_scores` (with `overall` in [0, 1]), `feedback_collected`, `evaluator` and
//! `metadata`; a feedback event has `request_id`, `feedback_type`, `value`, `user_id`,
//! `timestamp`, `event_id` and, for a rating of one human dimension, `dimension`
//! (docs/guide/multi-dimension.md). Validation works on a parsed JSON object so that every problem is
//! named by its field; [`FieldError`] carries that name and the reason.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use crate::stats::preference::Choice;

/// The evaluator name a log gets when it does not name one.
pub const DEFAULT_EVALUATOR: &str = "baseline";

/// A validation failure: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name, dotted for nested fields (`eval_scores.overall`); empty for the row.
    pub field: String,
    /// What is wrong, naming the bad value.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "field `{}`: {}", self.field, self.reason)
        }
    }
}

/// One production request: what was asked, what the product answered, how the evaluator scored it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalLog {
    /// Unique id of the request.
    pub request_id: String,
    /// When the request was served (UTC).
    pub timestamp: DateTime<Utc>,
    pub prompt: String,
    pub output: String,
    /// `overall` (in [0, 1]) first, then any other named dimensions; all finite.
    pub eval_scores: BTreeMap<String, f64>,
    pub feedback_collected: Option<bool>,
    /// Name/version of the evaluator that produced `eval_scores`; default `baseline`.
    pub evaluator: String,
    /// Free-form metadata, kept as given (`user_cohort`, `user_id`, `use_case`, `prompt_version`, ...).
    pub metadata: Map<String, Value>,
}

impl EvalLog {
    /// The evaluator's overall score, in [0, 1].
    pub fn overall(&self) -> f64 {
        self.eval_scores.get("overall").copied().unwrap_or(f64::NAN)
    }

    /// A string-valued metadata key (`user_cohort`, `use_case`, ...), if present.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// The fields an eval log row may have; ingest warns about any other top-level key.
    pub const FIELDS: [&'static str; 8] =
        ["request_id", "timestamp", "prompt", "output", "eval_scores", "feedback_collected", "evaluator", "metadata"];

    /// Validates a parsed JSON object as an eval log. `from_text` relaxes types for CSV input,
    /// where every cell arrives as a string.
    pub fn from_json(value: Value, from_text: bool) -> Result<EvalLog, FieldError> {
        reject_nul(&value, "")?;
        let mut obj = match value {
            Value::Object(m) => m,
            other => return Err(FieldError::new("", format!("expected a JSON object, got {}", kind(&other)))),
        };
        let request_id = required_string(&mut obj, "request_id")?;
        let timestamp = match obj.get("timestamp") {
            None | Some(Value::Null) => return Err(FieldError::new("timestamp", "missing (RFC 3339 required)")),
            Some(v) => parse_timestamp(v, "timestamp")?,
        };
        // An empty prompt is refused in every format (a CSV cell cannot tell "" from absent);
        // an empty output is a real answer and is kept.
        let prompt = required_string(&mut obj, "prompt")?;
        let output = required_text(&mut obj, "output")?;
        let eval_scores = parse_scores(obj.get("eval_scores"), from_text)?;
        let feedback_collected = match obj.get("feedback_collected") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_bool(v, "feedback_collected", from_text)?),
        };
        let evaluator = match obj.remove("evaluator") {
            None | Some(Value::Null) => DEFAULT_EVALUATOR.to_string(),
            Some(Value::String(s)) if s.trim().is_empty() => DEFAULT_EVALUATOR.to_string(),
            Some(Value::String(s)) => s,
            Some(v) => return Err(FieldError::new("evaluator", format!("expected a string, got {}", kind(&v)))),
        };
        let metadata = match obj.remove("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(Value::String(s)) if from_text && s.trim().is_empty() => Map::new(),
            Some(Value::String(s)) if from_text => match serde_json::from_str::<Value>(&s) {
                Ok(Value::Object(m)) => m,
                _ => return Err(FieldError::new("metadata", "expected a JSON object")),
            },
            Some(v) => return Err(FieldError::new("metadata", format!("expected an object, got {}", kind(&v)))),
        };
        for key in ["user_cohort", "user_id", "use_case", "prompt_version"] {
            match metadata.get(key) {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(v) => {
                    return Err(FieldError::new(
                        format!("metadata.{key}"),
                        format!("expected a string, got {}", kind(v)),
                    ));
                }
            }
        }
        Ok(EvalLog { request_id, timestamp, prompt, output, eval_scores, feedback_collected, evaluator, metadata })
    }

    /// The log as the JSON object it was read from (canonical field order).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "request_id": self.request_id,
            "timestamp": format_timestamp(&self.timestamp),
            "prompt": self.prompt,
            "output": self.output,
            "eval_scores": self.eval_scores,
            "feedback_collected": self.feedback_collected,
            "evaluator": self.evaluator,
            "metadata": self.metadata,
        })
    }
}

/// The kinds of feedback, explicit and implicit, with the feedback-loop article's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeedbackType {
    ThumbsUp,
    ThumbsDown,
    Rating,
    TextComment,
    Usage,
    Edit,
    Discard,
    /// A choice between two outputs of the same prompt group (`explicit_preference`).
    Preference,
}

impl FeedbackType {
    /// Every type, in the order used by reports.
    pub const ALL: [FeedbackType; 8] = [
        FeedbackType::ThumbsUp,
        FeedbackType::ThumbsDown,
        FeedbackType::Rating,
        FeedbackType::TextComment,
        FeedbackType::Usage,
        FeedbackType::Edit,
        FeedbackType::Discard,
        FeedbackType::Preference,
    ];

    /// The stored name (`explicit_thumbs_up`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackType::ThumbsUp => "explicit_thumbs_up",
            FeedbackType::ThumbsDown => "explicit_thumbs_down",
            FeedbackType::Rating => "explicit_rating",
            FeedbackType::TextComment => "explicit_text_comment",
            FeedbackType::Usage => "implicit_usage",
            FeedbackType::Edit => "implicit_edit",
            FeedbackType::Discard => "implicit_discard",
            FeedbackType::Preference => "explicit_preference",
        }
    }

    /// Parses a stored name (`explicit_rating`).
    pub fn parse(s: &str) -> Option<FeedbackType> {
        FeedbackType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The short name used on the command line (`thumbs-up`, `rating`, `comment`, `usage`, ...).
    pub fn cli_name(self) -> &'static str {
        match self {
            FeedbackType::ThumbsUp => "thumbs-up",
            FeedbackType::ThumbsDown => "thumbs-down",
            FeedbackType::Rating => "rating",
            FeedbackType::TextComment => "comment",
            FeedbackType::Usage => "usage",
            FeedbackType::Edit => "edit",
            FeedbackType::Discard => "discard",
            FeedbackType::Preference => "preference",
        }
    }

    /// Parses a short command-line name, or a stored name.
    pub fn from_cli(s: &str) -> Option<FeedbackType> {
        FeedbackType::ALL.into_iter().find(|t| t.cli_name() == s).or_else(|| FeedbackType::parse(s))
    }

    /// Explicit feedback needs a user action (thumbs, rating, comment, preference); implicit is
    /// inferred.
    pub fn is_explicit(self) -> bool {
        matches!(
            self,
            FeedbackType::ThumbsUp
                | FeedbackType::ThumbsDown
                | FeedbackType::Rating
                | FeedbackType::TextComment
                | FeedbackType::Preference
        )
    }
}

impl fmt::Display for FeedbackType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A feedback event's value, typed by its feedback type.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedbackValue {
    /// Thumbs and implicit signals.
    Bool(bool),
    /// An explicit rating, 1-5.
    Rating(u8),
    /// A non-empty comment.
    Text(String),
    /// A preference: output A (`request_id`), output B (`other_request_id`), or a tie.
    Choice(Choice),
}

impl FeedbackValue {
    /// The value as a number (`true` = 1, a rating as itself); `None` for text.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            FeedbackValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            FeedbackValue::Rating(r) => Some(f64::from(*r)),
            FeedbackValue::Text(_) | FeedbackValue::Choice(_) => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            FeedbackValue::Bool(b) => Value::Bool(*b),
            FeedbackValue::Rating(r) => Value::from(*r),
            FeedbackValue::Text(s) => Value::String(s.clone()),
            FeedbackValue::Choice(c) => Value::String(c.as_str().to_string()),
        }
    }
}

/// One piece of human feedback on a request.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackEvent {
    /// Given, or derived from the event's content (see [`FeedbackEvent::derive_id`]).
    pub event_id: String,
    pub request_id: String,
    pub feedback_type: FeedbackType,
    pub value: FeedbackValue,
    pub user_id: Option<String>,
    /// Given, or the time of ingest.
    pub timestamp: DateTime<Utc>,
    /// The human dimension an `explicit_rating` rates (`[a-z0-9_]+`, e.g. `coherence`); `None`
    /// for the overall rating and every other feedback type. Stored apart from the feedback
    /// events (the store's `dimension_ratings`), so no human score or analysis counts it.
    pub dimension: Option<String>,
    /// An `explicit_preference`'s output B (`request_id` is output A); `None` for every other
    /// feedback type. Preferences are stored apart (the store's `preferences`), so no human score
    /// or pointwise analysis counts them.
    pub other_request_id: Option<String>,
    /// The text the user turned the output into, on an `implicit_edit` only; `None` when the
    /// edit's text is not known. Kept as given (it may be empty: the user deleted everything).
    pub edited_output: Option<String>,
}

impl FeedbackEvent {
    /// The fields a feedback row may have; ingest warns about any other top-level key.
    pub const FIELDS: [&'static str; 9] = [
        "request_id",
        "feedback_type",
        "value",
        "user_id",
        "timestamp",
        "event_id",
        "dimension",
        "other_request_id",
        "edited_output",
    ];

    /// Validates a parsed JSON object as a feedback event; `now` stands in for a missing timestamp.
    pub fn from_json(value: Value, from_text: bool, now: DateTime<Utc>) -> Result<FeedbackEvent, FieldError> {
        reject_nul(&value, "")?;
        let mut obj = match value {
            Value::Object(m) => m,
            other => return Err(FieldError::new("", format!("expected a JSON object, got {}", kind(&other)))),
        };
        let request_id = required_string(&mut obj, "request_id")?;
        let type_name = match obj.get("feedback_type") {
            None | Some(Value::Null) => return Err(FieldError::new("feedback_type", "missing")),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(FieldError::new("feedback_type", format!("expected a string, got {}", kind(v)))),
        };
        let feedback_type = match FeedbackType::parse(&type_name) {
            Some(t) => t,
            None => {
                return Err(FieldError::new(
                    "feedback_type",
                    format!(
                        "unknown feedback_type {type_name:?}; expected one of {}",
                        FeedbackType::ALL.map(FeedbackType::as_str).join(", ")
                    ),
                ));
            }
        };
        let raw_value = obj.get("value").unwrap_or(&Value::Null);
        let value = parse_value(feedback_type, raw_value, from_text)?;
        let dimension = parse_dimension(obj.remove("dimension"), feedback_type, from_text)?;
        let other_request_id = optional_string(&mut obj, "other_request_id")?;
        match (&other_request_id, feedback_type) {
            (None, FeedbackType::Preference) => {
                return Err(FieldError::new(
                    "other_request_id",
                    "missing: explicit_preference needs the request id of output B",
                ));
            }
            (Some(b), FeedbackType::Preference) if *b == request_id => {
                return Err(FieldError::new(
                    "other_request_id",
                    format!("is the same request as request_id ({b:?}); a preference compares two outputs"),
                ));
            }
            (Some(_), t) if t != FeedbackType::Preference => {
                return Err(FieldError::new(
                    "other_request_id",
                    format!("{t} cannot carry other_request_id; only explicit_preference compares two outputs"),
                ));
            }
            _ => {}
        }
        let edited_output = parse_edited_output(obj.remove("edited_output"), feedback_type, from_text)?;
        let user_id = optional_string(&mut obj, "user_id")?;
        let given_ts = match obj.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if from_text && s.is_empty() => None,
            Some(v) => Some(parse_timestamp(v, "timestamp")?),
        };
        let event_id = match optional_string(&mut obj, "event_id")? {
            Some(id) => id,
            None => Self::derive_id(
                &request_id,
                feedback_type,
                &value,
                user_id.as_deref(),
                given_ts.as_ref(),
                dimension.as_deref(),
                other_request_id.as_deref(),
                edited_output.as_deref(),
            ),
        };
        Ok(FeedbackEvent {
            event_id,
            request_id,
            feedback_type,
            value,
            user_id,
            timestamp: given_ts.unwrap_or(now),
            dimension,
            other_request_id,
            edited_output,
        })
    }

    /// A stable id from the event's content as given (timestamp only when given), so that
    /// re-ingesting the same file adds nothing: `sha256(request_id, type, value, user, ts)`, hex,
    /// 32 chars; a dimension rating also hashes its `dimension`, a preference its
    /// `other_request_id`, and an edit with its text its `edited_output` (each after the rest, so
    /// that the ids of events without them are what they were before those fields existed).
    #[allow(clippy::too_many_arguments)] // one argument per hashed field, in hashing order
    pub fn derive_id(
        request_id: &str,
        feedback_type: FeedbackType,
        value: &FeedbackValue,
        user_id: Option<&str>,
        timestamp: Option<&DateTime<Utc>>,
        dimension: Option<&str>,
        other_request_id: Option<&str>,
        edited_output: Option<&str>,
    ) -> String {
        let mut h = Sha256::new();
        for part in [
            request_id,
            feedback_type.as_str(),
            &value.to_json().to_string(),
            user_id.unwrap_or("\u{0}"),
            &timestamp.map(format_timestamp).unwrap_or_default(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        if let Some(d) = dimension {
            h.update(b"dimension");
            h.update((d.len() as u64).to_le_bytes());
            h.update(d.as_bytes());
        }
        if let Some(b) = other_request_id {
            h.update(b"other_request_id");
            h.update((b.len() as u64).to_le_bytes());
            h.update(b.as_bytes());
        }
        if let Some(t) = edited_output {
            h.update(b"edited_output");
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The event as the JSON object it was read from; `dimension` and `edited_output` only when
    /// it has them.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "event_id": self.event_id,
            "request_id": self.request_id,
            "feedback_type": self.feedback_type.as_str(),
            "value": self.value.to_json(),
            "user_id": self.user_id,
            "timestamp": format_timestamp(&self.timestamp),
        });
        if let Some(d) = &self.dimension {
            v["dimension"] = Value::String(d.clone());
        }
        if let Some(b) = &self.other_request_id {
            v["other_request_id"] = Value::String(b.clone());
        }
        if let Some(t) = &self.edited_output {
            v["edited_output"] = Value::String(t.clone());
        }
        v
    }
}

/// Refuses a NUL character (U+0000) in any string or key of a row: PostgreSQL cannot store
/// it in text, so both backends refuse it alike. The error names the path of the value.
pub fn reject_nul(v: &Value, path: &str) -> Result<(), FieldError> {
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match v {
        Value::String(s) if s.contains('\0') => {
            Err(FieldError::new(path, "contains a NUL character (U+0000), which the store cannot keep"))
        }
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, x)| reject_nul(x, &join(&i.to_string()))),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            if k.contains('\0') {
                return Err(FieldError::new(path, "a key contains a NUL character (U+0000)"));
            }
            reject_nul(x, &join(k))
        }),
        _ => Ok(()),
    }
}

/// Whether `name` is a valid dimension name: non-empty, `[a-z0-9_]+`.
pub fn is_dimension_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a configured list of dimensions (`[dataset]`, `[simulate]`, `[train] dimensions`):
/// every name a dimension name, none twice. The error is `[i] "name" ...`, to follow the key.
pub fn check_dimension_list<S: AsRef<str>>(dimensions: &[S]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in dimensions.iter().map(AsRef::as_ref).enumerate() {
        if !is_dimension_name(d) {
            return Err(format!("[{i}] {d:?} is not a dimension name ([a-z0-9_]+)"));
        }
        if !seen.insert(d) {
            return Err(format!("[{i}] {d:?} is listed twice"));
        }
    }
    Ok(())
}

/// Checks the optional `edited_output` of a feedback event: absent or null (or an empty CSV
/// cell, which cannot tell "" from absent) is none; otherwise a string on an `implicit_edit`.
/// Its size is bounded by the row's (ingest's `--max-line-bytes`, the service's body limit);
/// NUL is refused for the whole row by [`reject_nul`].
fn parse_edited_output(v: Option<Value>, t: FeedbackType, from_text: bool) -> Result<Option<String>, FieldError> {
    let text = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if from_text && s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(FieldError::new("edited_output", format!("expected a string, got {}", kind(&other))));
        }
    };
    if t != FeedbackType::Edit {
        return Err(FieldError::new(
            "edited_output",
            format!("only an implicit_edit carries an edited output, not {}", t.as_str()),
        ));
    }
    Ok(Some(text))
}

/// Checks the optional `dimension` of a feedback event: absent, null (or an empty CSV cell) is
/// none; otherwise a `[a-z0-9_]+` string on an `explicit_rating`.
fn parse_dimension(v: Option<Value>, t: FeedbackType, from_text: bool) -> Result<Option<String>, FieldError> {
    let name = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if from_text && s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(FieldError::new("dimension", format!("expected a string, got {}", kind(&other))));
        }
    };
    if !matches!(t, FeedbackType::Rating | FeedbackType::Preference) {
        return Err(FieldError::new(
            "dimension",
            format!(
                "{t} cannot carry a dimension ({name:?}); only explicit_rating and explicit_preference judge one \
                 dimension"
            ),
        ));
    }
    if !is_dimension_name(&name) {
        return Err(FieldError::new(
            "dimension",
            format!("{:?} is not a dimension name (lower-case letters, digits and _ only)", name),
        ));
    }
    Ok(Some(name))
}

/// Checks a value for a feedback type: rating an integer 1-5, comment a non-empty string, thumbs
/// and implicit signals a bool (default `true`).
pub fn parse_value(t: FeedbackType, v: &Value, from_text: bool) -> Result<FeedbackValue, FieldError> {
    match t {
        FeedbackType::Rating => {
            let n = match v {
                Value::Null => return Err(FieldError::new("value", "missing: explicit_rating needs an integer 1-5")),
                Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                Value::String(s) if from_text => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| FieldError::new("value", format!("rating {s:?} is not a number")))?,
                other => {
                    return Err(FieldError::new(
                        "value",
                        format!("expected an integer rating 1-5, got {}", kind(other)),
                    ));
                }
            };
            if !n.is_finite() || n.fract() != 0.0 || !(1.0..=5.0).contains(&n) {
                return Err(FieldError::new("value", format!("rating {n} is not an integer from 1 to 5")));
            }
            Ok(FeedbackValue::Rating(n as u8))
        }
        FeedbackType::TextComment => match v {
            Value::String(s) if !s.trim().is_empty() => Ok(FeedbackValue::Text(s.clone())),
            Value::String(_) => Err(FieldError::new("value", "comment is empty")),
            Value::Null => Err(FieldError::new("value", "missing: explicit_text_comment needs a non-empty string")),
            other => Err(FieldError::new("value", format!("expected a comment string, got {}", kind(other)))),
        },
        FeedbackType::ThumbsUp | FeedbackType::ThumbsDown => {
            let b = match v {
                Value::Null => true,
                Value::String(s) if from_text && s.is_empty() => true,
                other => parse_bool(other, "value", from_text)?,
            };
            if !b {
                return Err(FieldError::new(
                    "value",
                    format!("{t} with value false is contradictory; send the opposite thumb instead"),
                ));
            }
            Ok(FeedbackValue::Bool(true))
        }
        FeedbackType::Preference => match v {
            Value::String(s) => Choice::parse(s.trim())
                .map(FeedbackValue::Choice)
                .ok_or_else(|| FieldError::new("value", format!("preference {s:?} is not \"a\", \"b\" or \"tie\""))),
            Value::Null => Err(FieldError::new("value", "missing: explicit_preference needs \"a\", \"b\" or \"tie\"")),
            other => Err(FieldError::new("value", format!("expected \"a\", \"b\" or \"tie\", got {}", kind(other)))),
        },
        FeedbackType::Usage | FeedbackType::Edit | FeedbackType::Discard => match v {
            Value::Null => Ok(FeedbackValue::Bool(true)),
            Value::String(s) if from_text && s.is_empty() => Ok(FeedbackValue::Bool(true)),
            other => Ok(FeedbackValue::Bool(parse_bool(other, "value", from_text)?)),
        },
    }
}

/// Parses RFC 3339 (`2026-05-15T10:00:00Z`, offsets allowed) into UTC.
pub fn parse_timestamp(v: &Value, field: &str) -> Result<DateTime<Utc>, FieldError> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| FieldError::new(field, format!("{s:?} is not an RFC 3339 timestamp ({e})")))
            .and_then(|d| in_rfc3339_range(d, s).map_err(|e| FieldError::new(field, e))),
        other => Err(FieldError::new(field, format!("expected an RFC 3339 string, got {}", kind(other)))),
    }
}

/// RFC 3339 years run from 0001 to 9999; a time whose UTC form falls outside them (year 0000,
/// or `9999-12-31T23:59:59-23:59`, which is in year 10000 in UTC) could not be written back in
/// a form that reads again.
fn in_rfc3339_range(d: DateTime<Utc>, given: &str) -> Result<DateTime<Utc>, String> {
    use chrono::Datelike;
    if (1..=9999).contains(&d.year()) {
        Ok(d)
    } else {
        Err(format!("{given:?} is outside the RFC 3339 range 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z (in UTC)"))
    }
}

/// Parses a date for command-line filters: RFC 3339, or a plain `YYYY-MM-DD` (midnight UTC).
pub fn parse_date_arg(s: &str) -> Result<DateTime<Utc>, FieldError> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return in_rfc3339_range(d.with_timezone(&Utc), s).map_err(|e| FieldError::new("date", e));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| Utc.from_utc_datetime(&d))
        .ok_or_else(|| FieldError::new("date", format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD")))
}

/// Formats a timestamp as RFC 3339 in UTC with microseconds (`2026-05-15T10:00:00.000000Z`).
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Microseconds since the Unix epoch, as stored.
pub fn to_micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`to_micros`].
pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

pub fn parse_scores(v: Option<&Value>, from_text: bool) -> Result<BTreeMap<String, f64>, FieldError> {
    let parsed;
    let obj = match v {
        None | Some(Value::Null) => return Err(FieldError::new("eval_scores", "missing (needs at least `overall`)")),
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) if from_text => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|_| FieldError::new("eval_scores", "expected a JSON object"))?;
            parsed.as_object().ok_or_else(|| FieldError::new("eval_scores", "expected a JSON object"))?
        }
        Some(other) => {
            return Err(FieldError::new("eval_scores", format!("expected an object, got {}", kind(other))));
        }
    };
    let mut scores = BTreeMap::new();
    for (name, value) in obj {
        let field = format!("eval_scores.{name}");
        let x = match value {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::String(s) if from_text => {
                s.trim().parse::<f64>().map_err(|_| FieldError::new(&field, format!("{s:?} is not a number")))?
            }
            other => return Err(FieldError::new(&field, format!("expected a number, got {}", kind(other)))),
        };
        if !x.is_finite() {
            return Err(FieldError::new(&field, format!("{x} is not a finite number")));
        }
        scores.insert(name.clone(), x);
    }
    match scores.get("overall") {
        None => Err(FieldError::new("eval_scores.overall", "missing (a score in [0, 1] is required)")),
        Some(x) if !(0.0..=1.0).contains(x) => {
            Err(FieldError::new("eval_scores.overall", format!("{x} is outside [0, 1]")))
        }
        Some(_) => Ok(scores),
    }
}

fn parse_bool(v: &Value, field: &str, from_text: bool) -> Result<bool, FieldError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if from_text => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(FieldError::new(field, format!("{s:?} is not a boolean"))),
        },
        other => Err(FieldError::new(field, format!("expected a boolean, got {}", kind(other)))),
    }
}

fn required_string(obj: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(FieldError::new(field, "missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(FieldError::new(field, "empty")),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(FieldError::new(field, format!("expected a string, got {}", kind(&v)))),
    }
}

fn required_text(obj: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(FieldError::new(field, "missing")),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(FieldError::new(field, format!("expected a string, got {}", kind(&v)))),
    }
}

fn optional_string(obj: &mut Map<String, Value>, field: &str) -> Result<Option<String>, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(FieldError::new(field, format!("expected a string, got {}", kind(&v)))),
    }
}

/// A short name of a JSON value's type, with the value when it is small, for error messages.
pub fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() <= 40 => format!("string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log() -> Value {
        json!({"request_id": "r1", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o",
               "eval_scores": {"overall": 0.8, "coherence": 3.5}, "metadata": {"user_cohort": "free", "x": [1]}})
    }

    #[test]
    fn valid_log_keeps_metadata_and_defaults_evaluator() {
        let l = EvalLog::from_json(log(), false).unwrap();
        assert_eq!(l.evaluator, "baseline");
        assert_eq!(l.overall(), 0.8);
        assert_eq!(l.meta_str("user_cohort"), Some("free"));
        assert_eq!(l.metadata["x"], json!([1]));
    }

    #[test]
    fn log_errors_name_the_field() {
        let cases = [
            ("request_id", Value::Null, "request_id"),
            ("timestamp", json!("yesterday"), "timestamp"),
            ("eval_scores", json!({"overall": 1.5}), "eval_scores.overall"),
            ("eval_scores", json!({"coherence": 1}), "eval_scores.overall"),
            ("eval_scores", json!({"overall": "high"}), "eval_scores.overall"),
            ("prompt", json!(3), "prompt"),
            ("metadata", json!({"user_cohort": 3}), "metadata.user_cohort"),
        ];
        for (key, value, field) in cases {
            let mut v = log();
            v[key] = value;
            let e = EvalLog::from_json(v, false).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn nan_score_from_csv_is_rejected() {
        let mut v = log();
        v["eval_scores"] = json!({"overall": "NaN"});
        let e = EvalLog::from_json(v, true).unwrap_err();
        assert_eq!(e.field, "eval_scores.overall");
        assert!(e.reason.contains("finite"), "{e}");
    }

    #[test]
    fn feedback_validation() {
        let now = Utc::now();
        let ok = |v: Value| FeedbackEvent::from_json(v, false, now);
        let e = ok(json!({"request_id": "r", "feedback_type": "explicit_rating", "value": 7})).unwrap_err();
        assert_eq!(e.field, "value");
        assert!(e.reason.contains('7'));
        let e = ok(json!({"request_id": "r", "feedback_type": "explicit_rating", "value": 3.5})).unwrap_err();
        assert_eq!(e.field, "value");
        let e = ok(json!({"request_id": "r", "feedback_type": "thumbs-up"})).unwrap_err();
        assert_eq!(e.field, "feedback_type");
        let e = ok(json!({"request_id": "r", "feedback_type": "explicit_text_comment", "value": " "})).unwrap_err();
        assert_eq!(e.field, "value");
        let f = ok(json!({"request_id": "r", "feedback_type": "implicit_discard"})).unwrap();
        assert_eq!(f.value, FeedbackValue::Bool(true));
        let f = ok(json!({"request_id": "r", "feedback_type": "explicit_rating", "value": 4.0})).unwrap();
        assert_eq!(f.value, FeedbackValue::Rating(4));
        // An empty CSV cell is no dimension: an overall rating, as before.
        let csv = json!({"request_id": "r", "feedback_type": "explicit_rating", "value": "4", "dimension": ""});
        let f = FeedbackEvent::from_json(csv, true, now).unwrap();
        assert_eq!((f.value, f.dimension), (FeedbackValue::Rating(4), None));
    }

    #[test]
    fn dimension_ratings_validate_name_type_and_value() {
        let now = Utc::now();
        let ev = |v: Value| FeedbackEvent::from_json(v, false, now);
        let f = ev(json!({"request_id": "r", "feedback_type": "explicit_rating", "value": 4,
                          "dimension": "coherence_2"}))
        .unwrap();
        assert_eq!((f.value.clone(), f.dimension.as_deref()), (FeedbackValue::Rating(4), Some("coherence_2")));
        assert_eq!(f.to_json()["dimension"], "coherence_2");
        let csv = json!({"request_id": "r", "feedback_type": "explicit_rating", "value": "2", "dimension": "fluency"});
        assert_eq!(FeedbackEvent::from_json(csv, true, now).unwrap().dimension.as_deref(), Some("fluency"));
        for (v, field, needle) in [
            (
                json!({"feedback_type": "explicit_rating", "value": 4, "dimension": "Coherence"}),
                "dimension",
                "Coherence",
            ),
            (json!({"feedback_type": "explicit_rating", "value": 4, "dimension": "a-b"}), "dimension", "a-b"),
            (json!({"feedback_type": "explicit_rating", "value": 4, "dimension": 3}), "dimension", "number 3"),
            (
                json!({"feedback_type": "explicit_thumbs_up", "dimension": "coherence"}),
                "dimension",
                "explicit_thumbs_up",
            ),
            (json!({"feedback_type": "implicit_edit", "dimension": "coherence"}), "dimension", "implicit_edit"),
            (json!({"feedback_type": "explicit_rating", "value": 6, "dimension": "coherence"}), "value", "6"),
        ] {
            let mut v = v;
            v["request_id"] = json!("r");
            let e = ev(v).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains(needle), "{e}");
        }
    }

    /// One user's ratings of one request on two dimensions, same value and time, are two events.
    #[test]
    fn dimension_ratings_get_their_own_derived_ids() {
        let now = Utc::now();
        let base = json!({"request_id": "r", "feedback_type": "explicit_rating", "value": 4, "user_id": "u",
                          "timestamp": "2026-05-15T10:00:00Z"});
        let id = |dim: Option<&str>| {
            let mut v = base.clone();
            if let Some(d) = dim {
                v["dimension"] = json!(d);
            }
            FeedbackEvent::from_json(v, false, now).unwrap().event_id
        };
        let (overall, a, b) = (id(None), id(Some("coherence")), id(Some("relevance")));
        assert!(overall != a && a != b && overall != b);
        // The overall rating's id is the one derived before dimensions existed (pinned).
        let ts = parse_timestamp(&json!("2026-05-15T10:00:00Z"), "t").unwrap();
        let mut h = Sha256::new();
        for part in ["r", "explicit_rating", "4", "u", &format_timestamp(&ts)] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        assert_eq!(overall, hex::encode(&h.finalize()[..16]));
    }

    #[test]
    fn edited_output_is_an_edits_optional_text() {
        let now = Utc::now();
        let ev = |v: Value, from_text: bool| FeedbackEvent::from_json(v, from_text, now);
        let f = ev(json!({"request_id": "r", "feedback_type": "implicit_edit", "edited_output": "Fixed text."}), false)
            .unwrap();
        assert_eq!(f.edited_output.as_deref(), Some("Fixed text."));
        assert_eq!(f.to_json()["edited_output"], "Fixed text.");
        // The user deleted everything: an empty text is kept from JSON, absent from a CSV cell.
        let f = ev(json!({"request_id": "r", "feedback_type": "implicit_edit", "edited_output": ""}), false).unwrap();
        assert_eq!(f.edited_output.as_deref(), Some(""));
        let f = ev(json!({"request_id": "r", "feedback_type": "implicit_edit", "edited_output": ""}), true).unwrap();
        assert_eq!(f.edited_output, None);
        assert!(f.to_json().get("edited_output").is_none());
        for (v, needle) in [
            (json!({"feedback_type": "implicit_edit", "edited_output": 3}), "number 3"),
            (json!({"feedback_type": "implicit_edit", "edited_output": ["a"]}), "an array"),
            (json!({"feedback_type": "explicit_thumbs_up", "edited_output": "x"}), "explicit_thumbs_up"),
            (json!({"feedback_type": "implicit_discard", "edited_output": "x"}), "implicit_discard"),
            (json!({"feedback_type": "implicit_edit", "edited_output": "a\u{0}b"}), "NUL"),
        ] {
            let mut v = v;
            v["request_id"] = json!("r");
            let e = ev(v, false).unwrap_err();
            assert_eq!(e.field, "edited_output", "{e}");
            assert!(e.reason.contains(needle), "{e}");
        }
    }

    /// An edit's derived id is the one it had before edits carried their text, unless it has one.
    #[test]
    fn edits_without_text_keep_their_derived_ids() {
        let now = Utc::now();
        let base = json!({"request_id": "r", "feedback_type": "implicit_edit", "user_id": "u",
                          "timestamp": "2026-05-15T10:00:00Z"});
        let plain = FeedbackEvent::from_json(base.clone(), false, now).unwrap().event_id;
        let ts = parse_timestamp(&json!("2026-05-15T10:00:00Z"), "t").unwrap();
        let mut h = Sha256::new();
        for part in ["r", "implicit_edit", "true", "u", &format_timestamp(&ts)] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        assert_eq!(plain, hex::encode(&h.finalize()[..16]));
        let with = |t: &str| {
            let mut v = base.clone();
            v["edited_output"] = json!(t);
            FeedbackEvent::from_json(v, false, now).unwrap().event_id
        };
        assert!(with("a") != plain && with("a") != with("b"));
    }

    #[test]
    fn derived_event_id_is_stable_and_content_based() {
        let now = Utc::now();
        let v = json!({"request_id": "r", "feedback_type": "explicit_rating", "value": 4, "user_id": "u"});
        let a = FeedbackEvent::from_json(v.clone(), false, now).unwrap();
        let b = FeedbackEvent::from_json(v.clone(), false, now + chrono::Duration::seconds(5)).unwrap();
        assert_eq!(a.event_id, b.event_id);
        let mut w = v.clone();
        w["value"] = json!(5);
        assert_ne!(a.event_id, FeedbackEvent::from_json(w, false, now).unwrap().event_id);
    }
}

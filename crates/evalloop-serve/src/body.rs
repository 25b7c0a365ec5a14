//! Request bodies of `POST /v1/logs` and `/v1/feedback`: one JSON object, a JSON array of
//! objects, or NDJSON (`application/x-ndjson`), validated row by row with ingest's own checks
//! and wording; a bad row is named by its JSON path (`$[3].feedback_type`).

use chrono::{DateTime, Utc};
use evalloop_core::ingest::{Kind, parse_json_row};
use evalloop_core::record::{EvalLog, FeedbackEvent, FieldError};
use serde_json::Value;

use crate::writer::Rows;

/// One row of the body: valid (its place in [`Parsed::rows`]) or rejected with the reason.
#[derive(Debug, Clone)]
pub enum Slot {
    Valid(usize),
    Rejected {
        /// JSON path of the bad field (`$[2].value`), or of the row (`$[2]`).
        path: String,
        reason: String,
    },
}

/// A parsed body.
#[derive(Debug)]
pub struct Parsed {
    /// One slot per row, in order.
    pub slots: Vec<Slot>,
    /// 1-based NDJSON line of each slot (`None` for JSON bodies).
    pub lines: Vec<Option<u64>>,
    /// The valid rows.
    pub rows: Rows,
}

/// Why a body cannot be read at all (answered 400), with the JSON path when one is known.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyError {
    pub path: Option<String>,
    pub reason: String,
}

fn field_path(prefix: &str, field: &str) -> String {
    if field.is_empty() { prefix.to_string() } else { format!("{prefix}.{field}") }
}

/// Whether a `Content-Type` announces NDJSON (`application/x-ndjson`, `application/jsonl`...).
pub fn is_ndjson(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        let c = c.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        matches!(
            c.as_str(),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines"
        )
    })
}

/// Parses and validates a body. Rows beyond `max_rows` make the whole body an error (`Err` with
/// `too_many`), so the caller answers 413 rather than storing part of it.
pub fn parse(kind: Kind, ndjson: bool, body: &[u8], now: DateTime<Utc>, max_rows: usize) -> Result<Parsed, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ParseError::Body(BodyError {
            path: None,
            reason: format!("the body is not valid UTF-8 (byte {})", e.valid_up_to()),
        })
    })?;
    let mut p = Parsed {
        slots: Vec::new(),
        lines: Vec::new(),
        rows: match kind {
            Kind::Logs => Rows::Logs(Vec::new()),
            Kind::Feedback => Rows::Feedback(Vec::new()),
            // No route takes scores of a second evaluator yet: `evalloop ingest scores` does.
            Kind::Scores => {
                return Err(ParseError::Body(BodyError {
                    path: None,
                    reason: "scores of another evaluator are ingested with `evalloop ingest scores`".into(),
                }));
            }
        },
    };
    if ndjson {
        for (i, line) in text.split('\n').enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            if p.slots.len() == max_rows {
                return Err(ParseError::TooManyRows(max_rows));
            }
            let row = parse_json_row(line);
            p.lines.push(Some(i as u64 + 1));
            push(&mut p, "$", row, now);
        }
        if p.slots.is_empty() {
            return Err(ParseError::Body(BodyError { path: None, reason: "the body holds no rows".into() }));
        }
        return Ok(p);
    }
    if text.trim().is_empty() {
        return Err(ParseError::Body(BodyError { path: None, reason: "the body is empty".into() }));
    }
    let value = parse_json_row(text.trim()).map_err(|e| {
        ParseError::Body(BodyError {
            path: if e.field.is_empty() { None } else { Some(field_path("$", &e.field)) },
            reason: e.reason,
        })
    })?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::Body(BodyError { path: None, reason: "the array holds no rows".into() }));
            }
            if items.len() > max_rows {
                return Err(ParseError::TooManyRows(max_rows));
            }
            for (i, v) in items.into_iter().enumerate() {
                p.lines.push(None);
                push(&mut p, &format!("$[{i}]"), Ok(v), now);
            }
        }
        v @ Value::Object(_) => {
            p.lines.push(None);
            push(&mut p, "$", Ok(v), now);
        }
        other => {
            let what = match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "a string",
            };
            return Err(ParseError::Body(BodyError {
                path: Some("$".into()),
                reason: format!("expected a JSON object, an array of objects or NDJSON, got {what}"),
            }));
        }
    }
    Ok(p)
}

fn push(p: &mut Parsed, prefix: &str, row: Result<Value, FieldError>, now: DateTime<Utc>) {
    let checked = row.and_then(|v| match &mut p.rows {
        Rows::Logs(rows) => EvalLog::from_json(v, false).map(|l| {
            rows.push(l);
            rows.len() - 1
        }),
        Rows::Feedback(rows) => FeedbackEvent::from_json(v, false, now).map(|e| {
            rows.push(e);
            rows.len() - 1
        }),
    });
    p.slots.push(match checked {
        Ok(i) => Slot::Valid(i),
        Err(e) => Slot::Rejected { path: field_path(prefix, &e.field), reason: e.reason },
    });
}

/// Why a body was refused as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Not parseable at all: 400.
    Body(BodyError),
    /// More rows than allowed: 413.
    TooManyRows(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feedback(body: &str, ndjson: bool) -> Result<Parsed, ParseError> {
        parse(Kind::Feedback, ndjson, body.as_bytes(), Utc::now(), 10)
    }

    #[test]
    fn object_array_and_ndjson_give_paths() {
        let ok = r#"{"request_id":"r1","feedback_type":"explicit_thumbs_up"}"#;
        let p = feedback(ok, false).unwrap();
        assert!(matches!(p.slots[..], [Slot::Valid(0)]));
        let arr = format!(r#"[{ok}, {{"request_id":"r1","feedback_type":"nope"}}]"#);
        let p = feedback(&arr, false).unwrap();
        match &p.slots[1] {
            Slot::Rejected { path, reason } => {
                assert_eq!(path, "$[1].feedback_type");
                assert!(reason.contains("unknown feedback_type"), "{reason}");
            }
            s => panic!("{s:?}"),
        }
        let nd = format!("{ok}\n\n{{\"request_id\": 3}}\n");
        let p = feedback(&nd, true).unwrap();
        assert_eq!(p.lines, vec![Some(1), Some(3)]);
        assert!(matches!(&p.slots[1], Slot::Rejected { path, .. } if path == "$.request_id"));
    }

    #[test]
    fn unparseable_bodies_and_row_limits() {
        let e = feedback(r#"{"request_id": "r", "value": NaN}"#, false).unwrap_err();
        match e {
            ParseError::Body(b) => {
                assert_eq!(b.path.as_deref(), Some("$.value"));
                assert!(b.reason.contains("NaN"), "{}", b.reason);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(feedback("", false), Err(ParseError::Body(_))));
        assert!(matches!(feedback("42", false), Err(ParseError::Body(_))));
        let many = format!("[{}]", ["{}"; 11].join(","));
        assert_eq!(feedback(&many, false).unwrap_err(), ParseError::TooManyRows(10));
    }
}

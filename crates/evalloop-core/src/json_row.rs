//! Parsing one JSON row of an ingest file: repeated keys refused, syntax errors named by the
//! JSON path they sit in.
//!
//! serde_json keeps the last of two equal keys (`{"request_id": "d1", "request_id": "d2"}`
//! stores `d2`) and names a syntax error by its column only. A small scanner walks the row's
//! structure to find both: the first repeated key, and the path (`eval_scores.overall`,
//! `metadata.tags.2`) of the value an error sits in.

use serde_json::Value;

use crate::record::FieldError;

/// Parses one row; a syntax error or a repeated key is a [`FieldError`] naming its path.
pub fn parse_row(text: &str) -> Result<Value, FieldError> {
    let value = serde_json::from_str::<Value>(text).map_err(|e| syntax_error(text, &e))?;
    if let Some(path) = scan(text, text.len()).duplicate {
        return Err(FieldError::new(
            path.clone(),
            format!("the key `{path}` appears more than once in the object (which one was meant is ambiguous)"),
        ));
    }
    Ok(value)
}

/// Names the path a JSON syntax error sits in, when it can: `"overall": NaN` inside
/// `eval_scores` is reported as field `eval_scores.overall`, not just a column number.
pub fn syntax_error(text: &str, e: &serde_json::Error) -> FieldError {
    // serde_json's column counts bytes from the start of the (single-line) row, from 1.
    let at = e.column().saturating_sub(1).min(text.len());
    let field = scan(text, at).path;
    let hint = if text.get(at..).is_some_and(|t| t.starts_with("NaN") || t.contains("Infinity")) {
        " (NaN and Infinity are not numbers in JSON)"
    } else {
        ""
    };
    FieldError::new(field, format!("invalid JSON at column {}: {e}{hint}", e.column()))
}

/// One open object or array while scanning.
struct Frame {
    /// An object (keys) or an array (indices).
    object: bool,
    /// The current key (objects) or index (arrays), as a path segment.
    segment: Option<String>,
    /// Between a key's `:` and the end of its value (objects); inside an element (arrays).
    in_value: bool,
    /// Keys seen so far (objects).
    keys: Vec<String>,
    /// Elements started so far (arrays).
    index: usize,
}

/// What a scan found.
struct Scan {
    /// The path of the value the byte at the stop offset sits in ("" for the row itself).
    path: String,
    /// The path of the first key that repeats one before it in the same object.
    duplicate: Option<String>,
}

fn path_of(frames: &[Frame]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for f in frames {
        match (&f.segment, f.in_value, f.object) {
            (Some(s), true, _) => parts.push(s.clone()),
            // Between an array's elements: the element about to start.
            (_, false, false) => {
                parts.push(f.index.to_string());
                break;
            }
            _ => break,
        }
    }
    parts.join(".")
}

/// Walks `text` up to byte `stop`, tracking where it is.
fn scan(text: &str, stop: usize) -> Scan {
    let b = text.as_bytes();
    let mut frames: Vec<Frame> = Vec::new();
    let mut duplicate = None;
    let mut i = 0;
    let stop = stop.min(b.len());
    // A value ended: the enclosing object's key is done with.
    fn value_done(frames: &mut [Frame]) {
        if let Some(f) = frames.last_mut() {
            f.in_value = false;
        }
    }
    fn value_starts(frames: &mut [Frame]) {
        if let Some(f) = frames.last_mut()
            && !f.object
        {
            f.segment = Some(f.index.to_string());
            f.index += 1;
            f.in_value = true;
        }
    }
    while i < stop {
        match b[i] {
            b'"' => {
                // Find the closing quote, skipping escapes.
                let start = i;
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let key_position = frames.last().is_some_and(|f| f.object && !f.in_value);
                if j >= stop {
                    // The stop is inside this string.
                    if !key_position {
                        value_starts(&mut frames);
                    }
                    break;
                }
                if key_position {
                    // Only keys are decoded (escapes are rare in them); values are skipped.
                    let raw = &text[start + 1..j];
                    let s = if raw.contains('\\') {
                        serde_json::from_str::<String>(&text[start..=j]).unwrap_or_else(|_| raw.into())
                    } else {
                        raw.to_string()
                    };
                    let f = frames.last_mut().expect("an object");
                    if duplicate.is_none() && f.keys.contains(&s) {
                        let mut p = path_of(&frames);
                        if !p.is_empty() {
                            p.push('.');
                        }
                        p.push_str(&s);
                        duplicate = Some(p);
                    }
                    let f = frames.last_mut().expect("an object");
                    f.keys.push(s.clone());
                    f.segment = Some(s);
                } else {
                    value_starts(&mut frames);
                    value_done(&mut frames);
                }
                i = j + 1;
            }
            b':' => {
                if let Some(f) = frames.last_mut() {
                    f.in_value = true;
                }
                i += 1;
            }
            b',' => {
                if let Some(f) = frames.last_mut() {
                    f.in_value = false;
                }
                i += 1;
            }
            b'{' | b'[' => {
                value_starts(&mut frames);
                frames.push(Frame { object: b[i] == b'{', segment: None, in_value: false, keys: Vec::new(), index: 0 });
                i += 1;
            }
            b'}' | b']' => {
                frames.pop();
                value_done(&mut frames);
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                // A number or a literal: up to the next delimiter.
                value_starts(&mut frames);
                while i < stop && !matches!(b[i], b',' | b'}' | b']' | b':' | b'"') && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i >= stop {
                    break;
                }
                value_done(&mut frames);
            }
        }
    }
    Scan { path: path_of(&frames), duplicate }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(text: &str) -> String {
        match parse_row(text) {
            Err(e) => e.field,
            Ok(v) => panic!("{text} parsed as {v}"),
        }
    }

    #[test]
    fn json_error_names_the_nan_field() {
        let f = parse_row(r#"{"request_id": "a", "eval_scores": {"overall": NaN}}"#).unwrap_err();
        assert_eq!(f.field, "eval_scores.overall");
        assert!(f.reason.contains("NaN"), "{}", f.reason);
    }

    /// Regression: the field was guessed from the last `":` before the error, which may sit
    /// in a string, in a closed object, or belong to a finished value.
    #[test]
    fn json_syntax_error_names_the_right_field() {
        assert_eq!(field_of(r#"{"metadata": {"a": 1}, 5: 2}"#), "");
        assert_eq!(field_of(r#"{"prompt": "say \"hi\": now", "output": tru}"#), "output");
        assert_eq!(field_of(r#"{"prompt": "abc"#), "prompt");
        assert_eq!(field_of(r#"{"metadata": {"tags": [1, 2, x]}}"#), "metadata.tags.2");
        assert_eq!(field_of(r#"{"a": "x" "b": 1}"#), "");
        assert_eq!(field_of(r#"{"eval_scores": {"overall": 0.5}, "output": 'x'}"#), "output");
    }

    #[test]
    fn repeated_keys_are_refused_with_their_path() {
        assert_eq!(field_of(r#"{"request_id": "d1", "request_id": "d2"}"#), "request_id");
        assert_eq!(field_of(r#"{"metadata": {"c": 1, "c": 2}}"#), "metadata.c");
        assert!(parse_row(r#"{"a": {"c": 1}, "b": {"c": 2}, "s": "{\"a\": 1, \"a\": 2}"}"#).is_ok());
        assert!(parse_row(r#"[{"a": 1}, {"a": 2}]"#).is_ok());
    }
}

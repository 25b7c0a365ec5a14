//! Property: arbitrary bytes as input never panic and never store a row that fails validation.

use evalloop::ingest::{IngestOptions, Kind, ingest};
use evalloop::record::{EvalLog, FeedbackEvent};
use evalloop::store::sqlite::SqliteStore;
use proptest::prelude::*;

/// Lines that validate on their own, counted the way ingest reads them.
fn valid_lines(bytes: &[u8], kind: Kind) -> u64 {
    let now = chrono::Utc::now();
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| match kind {
            Kind::Logs => EvalLog::from_json(v.clone(), false).is_ok(),
            Kind::Feedback => FeedbackEvent::from_json(v.clone(), false, now).is_ok(),
            Kind::Scores => evalloop::ingest::ScoreRow::from_json(v.clone(), false).is_ok(),
        })
        .count() as u64
}

fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
    let valid_log = (0u32..50, 0.0f64..=1.0).prop_map(|(i, s)| {
        format!(r#"{{"request_id":"r{i}","timestamp":"2026-05-15T10:00:00Z","prompt":"p","output":"o","eval_scores":{{"overall":{s}}}}}"#)
            .into_bytes()
    });
    let valid_fb = (0u32..50, 0i64..8).prop_map(|(i, v)| {
        format!(r#"{{"request_id":"r{i}","feedback_type":"explicit_rating","value":{v}}}"#).into_bytes()
    });
    let mutated = (valid_log.clone(), any::<usize>(), any::<u8>()).prop_map(|(mut l, at, b)| {
        let n = l.len();
        l[at % n] = b;
        l
    });
    prop_oneof![valid_log, valid_fb, mutated, proptest::collection::vec(any::<u8>(), 0..80)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics_or_stores_invalid_rows(lines in proptest::collection::vec(line_strategy(), 0..30)) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for l in &lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        let file = dir.path().join("in.jsonl");
        std::fs::write(&file, &bytes).unwrap();
        for kind in [Kind::Logs, Kind::Feedback] {
            let mut store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
            let opts = IngestOptions { batch_size: 7, rejects: Some(dir.path().join("rej.jsonl")), ..Default::default() };
            let s = ingest(&mut store, kind, file.to_str().unwrap(), &opts).unwrap();
            // A valid row that repeats a stored key with other content is a conflict.
            prop_assert_eq!(s.stored + s.duplicate + s.conflict, valid_lines(&bytes, kind));
            prop_assert_eq!(s.read, s.stored + s.duplicate + s.rejected);
            let c = store.connection();
            let bad_logs: i64 = c.query_row(
                "SELECT COUNT(*) FROM eval_scores WHERE overall < 0 OR overall > 1 OR overall != overall", [], |r| r.get(0)).unwrap();
            let bad_ratings: i64 = c.query_row(
                "SELECT COUNT(*) FROM feedback_events WHERE feedback_type = 'explicit_rating'
                 AND (value_num < 1 OR value_num > 5 OR value_num != CAST(value_num AS INTEGER))", [], |r| r.get(0)).unwrap();
            prop_assert_eq!((bad_logs, bad_ratings), (0, 0));
        }
    }
}

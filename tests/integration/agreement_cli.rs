//! `evalloop agreement` on a small store where three people rate the same requests: the figures
//! match `stats::agreement` computed here on the same reliability matrices, undefined cases print
//! their reason, and `--json` carries the same report.

use std::fmt::Write as _;

use evalloop::stats::BootstrapConfig;
use evalloop::stats::agreement::{MeasurementLevel, krippendorff_alpha, krippendorff_alpha_ci, rater_agreement};
use serde_json::Value;

use crate::cli_support::{bin, json, text};

/// Ratings by u1, u2, u3 on r0..r5 (`None`: not rated); the latest per user and request.
const RATINGS: [[Option<u8>; 3]; 6] = [
    [Some(5), Some(4), Some(5)],
    [Some(2), Some(2), Some(1)],
    [Some(3), Some(4), None],
    [Some(1), Some(1), Some(2)],
    [Some(4), None, Some(4)],
    [Some(5), None, None],
];

/// Thumbs (up = 1) by u1, u2, u3 on r0..r3.
const THUMBS: [[Option<u8>; 3]; 4] =
    [[Some(1), Some(1), Some(0)], [Some(0), Some(0), None], [Some(1), None, Some(1)], [None, Some(0), Some(1)]];

fn as_matrix<const N: usize>(rows: &[[Option<u8>; 3]; N]) -> Vec<Vec<Option<f64>>> {
    rows.iter().map(|r| r.iter().map(|v| v.map(f64::from)).collect()).collect()
}

/// A store with six requests and the feedback above, plus an earlier rating that is replaced,
/// a rating without a user and an implicit signal (all three left out).
fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut logs = String::new();
    for i in 0..6 {
        let _ = writeln!(
            logs,
            r#"{{"request_id": "r{i}", "timestamp": "2026-05-10T12:00:00Z", "prompt": "p{i}", "output": "o{i}", "eval_scores": {{"overall": 0.5}}}}"#
        );
    }
    let mut fb = String::new();
    let mut event = |req: usize, kind: &str, value: String, user: Option<&str>, ts: &str| {
        let user = user.map_or(String::new(), |u| format!(r#", "user_id": "{u}""#));
        let _ = writeln!(
            fb,
            r#"{{"request_id": "r{req}", "feedback_type": "{kind}", "value": {value}{user}, "timestamp": "2026-05-11T{ts}Z"}}"#
        );
    };
    for (i, row) in RATINGS.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            if let Some(v) = v {
                event(i, "explicit_rating", v.to_string(), Some(&format!("u{}", j + 1)), "12:00:00");
            }
        }
    }
    for (i, row) in THUMBS.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            if let Some(v) = v {
                let kind = if *v == 1 { "explicit_thumbs_up" } else { "explicit_thumbs_down" };
                event(i, kind, "true".into(), Some(&format!("u{}", j + 1)), "12:00:00");
            }
        }
    }
    event(1, "explicit_rating", "5".into(), Some("u2"), "08:00:00");
    event(0, "explicit_rating", "1".into(), None, "12:00:00");
    event(2, "implicit_discard", "true".into(), Some("u3"), "12:00:00");
    std::fs::write(d.path().join("logs.jsonl"), logs).unwrap();
    std::fs::write(d.path().join("feedback.jsonl"), fb).unwrap();
    bin(d.path()).args(["ingest", "logs", "logs.jsonl"]).assert().success();
    bin(d.path()).args(["ingest", "feedback", "feedback.jsonl"]).assert().success();
    d
}

/// Every number in `got` within 1e-12 of `want`, everything else equal.
fn same(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-12, "{at}: got {g}, want {w}");
        }
        (Value::Object(g), Value::Object(w)) => {
            assert_eq!(g.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>(), "{at}");
            for (k, v) in w {
                same(&g[k], v, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

#[test]
fn agreement_matches_stats_on_the_same_matrices() {
    let d = store();
    let r = json(bin(d.path()).args(["agreement", "--bootstrap", "200", "--seed", "3"]));
    let cfg = BootstrapConfig { n_resamples: 200, seed: 3, level: 0.95 };
    assert_eq!(r["requests"], 6);
    assert_eq!(r["events_without_user"], 1);
    assert_eq!(r["events_superseded"], 1);

    let ratings = as_matrix(&RATINGS);
    assert_eq!(r["ratings"]["requests_rated"], 6);
    assert_eq!(r["ratings"]["raters"], 3);
    let want = serde_json::to_value(rater_agreement(&ratings, MeasurementLevel::Ordinal, &cfg)).unwrap();
    same(&r["ratings"]["agreement"], &want, "ratings");
    assert_eq!(r["ratings"]["agreement"]["items_used"], 5);
    assert_eq!(r["ratings"]["agreement"]["level"], "ordinal");
    let interval = &r["ratings"]["other_levels"][0];
    assert_eq!(interval["level"], "interval");
    let alpha = krippendorff_alpha(&ratings, MeasurementLevel::Interval).unwrap();
    same(&interval["alpha"], &serde_json::json!(alpha), "interval alpha");
    let ci = krippendorff_alpha_ci(&ratings, MeasurementLevel::Interval, &cfg).unwrap();
    same(&interval["alpha_ci"], &serde_json::to_value(ci).unwrap(), "interval ci");

    let thumbs = as_matrix(&THUMBS);
    let want = serde_json::to_value(rater_agreement(&thumbs, MeasurementLevel::Nominal, &cfg)).unwrap();
    same(&r["thumbs"]["agreement"], &want, "thumbs");
    assert!(r["thumbs"]["other_levels"].as_array().unwrap().is_empty());

    // The text shows the same figures.
    let t = text(bin(d.path()).args(["agreement", "--bootstrap", "200", "--seed", "3"]));
    let ordinal = krippendorff_alpha(&ratings, MeasurementLevel::Ordinal).unwrap();
    assert!(t.contains(&format!("alpha (ordinal)      {ordinal:.4}")), "{t}");
    assert!(t.contains(&format!("alpha (interval)     {alpha:.4}")), "{t}");
    assert!(t.contains("kappa (quadratic)"), "{t}");

    // An explicit level applies to both matrices.
    let r = json(bin(d.path()).args(["agreement", "--level", "interval", "--bootstrap", "0"]));
    assert_eq!(r["thumbs"]["agreement"]["level"], "interval");
    assert_eq!(r["ratings"]["agreement"]["alpha_ci"]["reason"], "n_resamples = 0");
}

#[test]
fn one_rater_per_request_says_why_agreement_is_undefined() {
    let only_one = tempfile::tempdir().unwrap();
    std::fs::write(
        only_one.path().join("logs.jsonl"),
        r#"{"request_id": "a", "timestamp": "2026-05-10T12:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": 0.5}}
{"request_id": "b", "timestamp": "2026-05-10T12:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": 0.5}}
"#,
    )
    .unwrap();
    std::fs::write(
        only_one.path().join("feedback.jsonl"),
        r#"{"request_id": "a", "feedback_type": "explicit_rating", "value": 4, "user_id": "u1"}
{"request_id": "b", "feedback_type": "explicit_rating", "value": 2, "user_id": "u2"}
"#,
    )
    .unwrap();
    bin(only_one.path()).args(["ingest", "logs", "logs.jsonl"]).assert().success();
    bin(only_one.path()).args(["ingest", "feedback", "feedback.jsonl"]).assert().success();
    let t = text(bin(only_one.path()).args(["agreement"]));
    assert!(t.contains("ratings (1-5): 2 requests rated by 2 people; 0 rated by two or more"), "{t}");
    assert!(t.contains("no request was rated by two or more people"), "{t}");
    assert!(t.contains("alpha (ordinal)      undefined: no unit has values from two or more raters"), "{t}");
    assert!(t.contains("Cohen's kappa        undefined: no two raters share 2 or more units"), "{t}");
    let r = json(bin(only_one.path()).args(["agreement"]));
    assert_eq!(r["ratings"]["agreement"]["alpha"]["undefined"], true);
    assert_eq!(r["thumbs"]["requests_rated"], 0);
}

/// Eight requests in two cohorts, rated overall and on coherence by three people; the logged
/// evaluator's scores rise with the requests' number.
fn dimension_store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let (mut logs, mut fb) = (String::new(), String::new());
    // Overall and coherence ratings of u1, u2, u3 on r0..r7.
    let overall = [[1, 1, 2], [2, 1, 2], [2, 3, 2], [3, 3, 4], [3, 4, 3], [4, 4, 5], [5, 4, 5], [5, 5, 5]];
    let coherence = [[1, 5, 2], [4, 1, 2], [2, 2, 5], [5, 3, 1], [1, 4, 3], [3, 2, 2], [2, 5, 4], [4, 1, 3]];
    for i in 0..8 {
        let cohort = if i % 2 == 0 { "free" } else { "pro" };
        let _ = writeln!(
            logs,
            r#"{{"request_id": "r{i}", "timestamp": "2026-05-10T12:00:00Z", "prompt": "p", "output": "o", "eval_scores": {{"overall": {}}}, "metadata": {{"user_cohort": "{cohort}"}}}}"#,
            f64::from(i) / 8.0
        );
        for u in 0..3 {
            let _ = writeln!(
                fb,
                r#"{{"request_id": "r{i}", "feedback_type": "explicit_rating", "value": {}, "user_id": "u{u}"}}"#,
                overall[i as usize][u]
            );
            let _ = writeln!(
                fb,
                r#"{{"request_id": "r{i}", "feedback_type": "explicit_rating", "value": {}, "user_id": "u{u}", "dimension": "coherence"}}"#,
                coherence[i as usize][u]
            );
        }
    }
    std::fs::write(d.path().join("logs.jsonl"), logs).unwrap();
    std::fs::write(d.path().join("feedback.jsonl"), fb).unwrap();
    bin(d.path()).args(["ingest", "logs", "logs.jsonl"]).assert().success();
    bin(d.path()).args(["ingest", "feedback", "feedback.jsonl"]).assert().success();
    d
}

#[test]
fn dimension_by_cohort_and_the_human_ceiling() {
    let d = dimension_store();
    let overall = json(bin(d.path()).args(["agreement", "--bootstrap", "0"]));
    let coherence = json(bin(d.path()).args(["agreement", "--bootstrap", "0", "--dimension", "coherence"]));
    assert_eq!(coherence["dimension"], "coherence");
    assert!(coherence.get("thumbs").is_none());
    assert_eq!(coherence["ratings"]["agreement"]["items_used"], 8);
    // People agree on the overall ratings and not on coherence.
    let alpha = |r: &Value| r["ratings"]["agreement"]["alpha"].as_f64().unwrap();
    assert!(alpha(&overall) > 0.8 && alpha(&coherence) < 0.2, "{} {}", alpha(&overall), alpha(&coherence));
    // The ceiling: the evaluator tracks the overall ratings.
    let c = &overall["ratings"]["ceiling"];
    assert_eq!(c["evaluator"], "baseline");
    assert_eq!(c["raters_used"], 3);
    assert!(c["person_vs_others"].as_f64().unwrap() > 0.8, "{c}");
    assert!(c["share_of_ceiling"].as_f64().unwrap() > 0.9, "{c}");
    assert!(coherence["ratings"]["ceiling"]["person_vs_others"].as_f64().unwrap() < 0.3);
    let t = text(bin(d.path()).args(["agreement", "--bootstrap", "0", "--dimension", "coherence"]));
    assert!(t.contains("ratings of coherence (1-5): 8 requests rated by 3 people"), "{t}");
    assert!(t.contains("human ceiling        person vs the others"), "{t}");
    assert!(!t.contains("thumbs"), "{t}");

    let by = json(bin(d.path()).args(["agreement", "--bootstrap", "0", "--by", "cohort"]));
    assert_eq!(by["by"], "cohort");
    let groups = by["groups"].as_array().unwrap();
    assert_eq!(groups.iter().map(|g| g["group"].as_str().unwrap()).collect::<Vec<_>>(), ["free", "pro"]);
    assert_eq!(groups[0]["requests_with_feedback"], 4);
    assert_eq!(groups[1]["ratings"]["agreement"]["items_used"], 4);
    // Four requests per cohort: fewer than the ceiling's five per rater.
    assert_eq!(groups[0]["ratings"]["ceiling"]["undefined"], true);
    let t = text(bin(d.path()).args(["agreement", "--bootstrap", "0", "--by", "use_case"]));
    assert!(t.contains("use case (none): 8 requests with feedback"), "{t}");

    let bad = bin(d.path()).args(["agreement", "--dimension", "Bad Name"]).assert().code(2);
    let err = String::from_utf8(bad.get_output().stderr.clone()).unwrap();
    assert!(err.contains("--dimension \"Bad Name\" is not a dimension name"), "{err}");
}

//! `evalloop trend` and the `check` thresholds on the latest week, on a generated store whose
//! third week brings a prompt change that lowers quality and makes the evaluator blind to it:
//! the changes into that week are flagged and the stable ones before are not, the p-values and
//! q-values match a computation here, a window's human score is `estimate`'s on that week, and
//! `check` fails on the drop.

use std::fmt::Write as _;

use evalloop::stats::fdr::benjamini_hochberg;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::cli_support::{bin, json, text};

/// Three ISO weeks (2026-W46..W48, Mondays 2026-11-09, -16, -23), 300 requests each in two
/// cohorts, 30% labelled at random. Weeks 1 and 2: quality ~3.6 and an evaluator that tracks
/// it; week 3 (prompt v2): quality ~2.6 and an evaluator that does not see the change.
fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut logs, mut fb) = (String::new(), String::new());
    for week in 0..3u32 {
        for i in 0..300u32 {
            let id = format!("w{week}-{i:03}");
            let day = 9 + 7 * week + i % 7;
            let cohort = if i % 3 == 0 { "pro" } else { "free" };
            let quality = if week < 2 { 3.6 } else { 2.6 };
            let rating = (quality + rng.random_range(-1.5..1.5f64)).round().clamp(1.0, 5.0);
            let overall = if week < 2 {
                ((rating - 1.0) / 4.0 + rng.random_range(-0.1..0.1f64)).clamp(0.0, 1.0)
            } else {
                rng.random_range(0.4..0.9f64)
            };
            let version = if week < 2 { "v1" } else { "v2" };
            let _ = writeln!(
                logs,
                r#"{{"request_id": "{id}", "timestamp": "2026-11-{day:02}T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {{"overall": {overall:.4}}}, "metadata": {{"user_cohort": "{cohort}", "prompt_version": "{version}"}}}}"#
            );
            if rng.random::<f64>() < 0.3 {
                let _ = writeln!(
                    fb,
                    r#"{{"event_id": "e-{id}", "request_id": "{id}", "feedback_type": "explicit_rating", "value": {rating}, "timestamp": "2026-11-{day:02}T11:00:00Z"}}"#
                );
            }
        }
    }
    std::fs::write(d.path().join("logs.jsonl"), logs).unwrap();
    std::fs::write(d.path().join("feedback.jsonl"), fb).unwrap();
    bin(d.path()).args(["ingest", "logs", "logs.jsonl"]).assert().success();
    bin(d.path()).args(["ingest", "feedback", "feedback.jsonl"]).assert().success();
    d
}

fn change<'a>(r: &'a Value, figure: &str, to: &str) -> &'a Value {
    r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["figure"] == figure && c["to"] == to)
        .unwrap_or_else(|| panic!("no {figure} change into {to}"))
}

#[test]
fn the_prompt_change_is_flagged_and_the_stable_weeks_are_not() {
    let d = store();
    let r = json(bin(d.path()).arg("trend"));
    let windows = r["series"][0]["windows"].as_array().unwrap();
    let names: Vec<&str> = windows.iter().map(|w| w["window"].as_str().unwrap()).collect();
    assert_eq!(names, ["2026-W46", "2026-W47", "2026-W48"]);
    assert!(windows.iter().all(|w| w["requests"] == 300));

    let human = change(&r, "human_score", "2026-W48");
    assert_eq!(human["flagged"], true);
    assert!(human["size"].as_f64().unwrap() < -0.6, "{human}");
    let agreement = change(&r, "agreement", "2026-W48");
    assert_eq!(agreement["flagged"], true);
    assert!(agreement["size"].as_f64().unwrap() < -0.5, "{agreement}");
    for figure in ["human_score", "agreement"] {
        assert_eq!(change(&r, figure, "2026-W47")["flagged"], false, "{figure} W46 -> W47");
    }

    // The feedback-rate test and Benjamini-Hochberg, computed here.
    let rate = change(&r, "feedback_rate", "2026-W47");
    let (w1, w2) = (&windows[0], &windows[1]);
    let (l1, l2) = (w1["labelled"].as_f64().unwrap(), w2["labelled"].as_f64().unwrap());
    let pooled = (l1 + l2) / 600.0;
    let z = (l2 / 300.0 - l1 / 300.0) / (pooled * (1.0 - pooled) * (2.0 / 300.0)).sqrt();
    assert!((rate["statistic"].as_f64().unwrap() - z).abs() < 1e-9);
    let changes = r["changes"].as_array().unwrap();
    let p: Vec<f64> = changes.iter().map(|c| c["p_value"].as_f64().unwrap()).collect();
    for (c, q) in changes.iter().zip(benjamini_hochberg(&p)) {
        assert!((c["q_value"].as_f64().unwrap() - q).abs() < 1e-12);
        assert_eq!(c["flagged"], q <= 0.05);
    }

    // A window's human score is estimate's PPI++ on that week.
    let e = json(bin(d.path()).args(["estimate", "--since", "2026-11-23", "--until", "2026-11-30"]));
    let got = windows[2]["human_score"]["estimate"].as_f64().unwrap();
    assert!((got - e["overall"]["ppi"]["estimate"].as_f64().unwrap()).abs() < 1e-12);

    let text = text(bin(d.path()).arg("trend"));
    assert!(text.contains("human score 2026-W47 -> 2026-W48"), "{text}");
}

#[test]
fn by_cohort_and_by_day_split_the_series() {
    let d = store();
    let r = json(bin(d.path()).args(["trend", "--by", "cohort"]));
    let groups: Vec<&str> = r["series"].as_array().unwrap().iter().map(|s| s["group"].as_str().unwrap()).collect();
    assert_eq!(groups, ["free", "pro"]);
    let days = json(bin(d.path()).args(["trend", "--every", "day", "--since", "2026-11-09", "--until", "2026-11-16"]));
    assert_eq!(days["series"][0]["windows"].as_array().unwrap().len(), 7);
    bin(d.path()).args(["trend", "--fdr", "0"]).assert().code(2);
}

#[test]
fn check_fails_on_a_drop_in_the_latest_week() {
    let d = store();
    let config = |name: &str, body: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, format!("[thresholds]\n{body}\n")).unwrap();
        p
    };
    let strict = config("strict.toml", "max_human_score_drop = 0.3\nmax_agreement_drop = 0.2");
    let out = bin(d.path()).arg("--config").arg(&strict).arg("check").arg("--json").assert().code(1);
    let r: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let names: Vec<&str> = r["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["agreement_drop (2026-W47 -> 2026-W48)", "human_score_drop (2026-W47 -> 2026-W48)"]);
    let lenient = config("lenient.toml", "max_human_score_drop = 3.0");
    bin(d.path()).arg("--config").arg(&lenient).arg("check").assert().code(0);
    // One week only: the drop is undefined, and that fails with the reason.
    let out =
        bin(d.path()).arg("--config").arg(&lenient).args(["check", "--json", "--until", "2026-11-16"]).assert().code(1);
    let r: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(r["checks"][0]["reason"], "1 week(s) of requests, 2 needed");
}

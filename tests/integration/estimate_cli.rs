//! `evalloop estimate` on a generated store whose cohorts differ in quality and in how often
//! people label them: the figures match `stats::ppi` computed here from the generating data,
//! the plain mean of the labels is biased where the stratified estimates are not, `--by`
//! splits, undefined cells say why, and bad input is refused with exit code 2.

use std::fmt::Write as _;
use std::path::Path;

use evalloop::stats::ppi::{IntervalKind, PpiMean, ppi_mean, stratified};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::cli_support::{bin, json, text};

/// One generated request: cohort, prompt version, week day, evaluator overall, and its 1-5
/// rating when labelled.
struct Req {
    cohort: &'static str,
    version: &'static str,
    day: u32,
    overall: f64,
    rating: Option<u8>,
}

const COHORTS: [(&str, usize, f64, f64); 3] =
    [("free", 400, 0.05, 2.2), ("pro", 200, 0.2, 3.4), ("enterprise", 100, 0.5, 4.2)];

fn generate() -> Vec<Req> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut out = Vec::new();
    for (cohort, n, p_label, quality) in COHORTS {
        for i in 0..n {
            let rating = (quality + rng.random_range(-1.5..1.5f64)).round().clamp(1.0, 5.0);
            let overall = ((rating - 1.0) / 4.0 + rng.random_range(-0.15..0.15f64)).clamp(0.0, 1.0);
            out.push(Req {
                cohort,
                version: if i % 2 == 0 { "v1" } else { "v2" },
                day: 1 + (i % 14) as u32,
                overall: (overall * 1e4).round() / 1e4,
                rating: (rng.random::<f64>() < p_label).then_some(rating as u8),
            });
        }
    }
    out
}

fn store(reqs: &[Req]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let (mut logs, mut fb) = (String::new(), String::new());
    for (i, r) in reqs.iter().enumerate() {
        let _ = writeln!(
            logs,
            r#"{{"request_id": "r{i:04}", "timestamp": "2026-11-{:02}T12:00:00Z", "prompt": "p", "output": "o", "eval_scores": {{"overall": {}}}, "metadata": {{"user_cohort": "{}", "prompt_version": "{}"}}}}"#,
            r.day, r.overall, r.cohort, r.version
        );
        if let Some(v) = r.rating {
            let _ = writeln!(
                fb,
                r#"{{"event_id": "e{i:04}", "request_id": "r{i:04}", "feedback_type": "explicit_rating", "value": {v}, "timestamp": "2026-11-20T12:00:00Z"}}"#
            );
        }
    }
    std::fs::write(d.path().join("logs.jsonl"), logs).unwrap();
    std::fs::write(d.path().join("feedback.jsonl"), fb).unwrap();
    bin(d.path()).args(["ingest", "logs", "logs.jsonl"]).assert().success();
    bin(d.path()).args(["ingest", "feedback", "feedback.jsonl"]).assert().success();
    d
}

/// The stratified estimate computed here from the generating data.
fn expected(reqs: &[Req], keep: impl Fn(&Req) -> bool, pass: bool) -> (f64, f64, f64, f64) {
    let mut strata: Vec<(PpiMean, f64)> = Vec::new();
    let total = reqs.iter().filter(|r| keep(r)).count() as f64;
    for (cohort, ..) in COHORTS {
        let rs: Vec<&Req> = reqs.iter().filter(|r| r.cohort == cohort && keep(r)).collect();
        let pred = |r: &Req| if pass { r.overall } else { 1.0 + 4.0 * r.overall };
        let value = |v: u8| if pass { f64::from(u8::from(v >= 4)) } else { f64::from(v) };
        let y: Vec<f64> = rs.iter().filter_map(|r| r.rating.map(value)).collect();
        let yhat: Vec<f64> = rs.iter().filter(|r| r.rating.is_some()).map(|r| pred(r)).collect();
        let u: Vec<f64> = rs.iter().filter(|r| r.rating.is_none()).map(|r| pred(r)).collect();
        let m = ppi_mean(&y, &yhat, &u, None, IntervalKind::SmallSample, 0.95).unwrap();
        strata.push((m, rs.len() as f64 / total));
    }
    let s = stratified(&strata, 0.95).unwrap();
    (s.classical.estimate, s.ppi.estimate, s.ppi.lower, s.ppi.upper)
}

fn close(got: &Value, want: f64, what: &str) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!((g - want).abs() < 1e-9, "{what}: got {g}, want {want}");
}

#[test]
fn estimates_match_the_statistics_and_correct_the_labelling_bias() {
    let reqs = generate();
    let d = store(&reqs);
    let r = json(bin(d.path()).arg("estimate"));
    let o = &r["overall"];
    assert_eq!(o["requests"], 700);
    let labelled = reqs.iter().filter(|r| r.rating.is_some()).count();
    assert_eq!(o["labelled"], labelled);
    let (classical, ppi, lo, hi) = expected(&reqs, |_| true, false);
    close(&o["classical"]["estimate"], classical, "classical");
    close(&o["ppi"]["estimate"], ppi, "ppi");
    close(&o["ppi"]["lower"], lo, "ppi lower");
    close(&o["ppi"]["upper"], hi, "ppi upper");
    // The truth of the generated product (every request's rating) lies in the interval; the
    // plain mean of the labels, dominated by the enterprise cohort, is far above it.
    let truth = {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut sum = 0.0;
        for (_, n, _, quality) in COHORTS {
            for _ in 0..n {
                sum += (quality + rng.random_range(-1.5..1.5f64)).round().clamp(1.0, 5.0);
                let _ = rng.random_range(-0.15..0.15f64);
                let _ = rng.random::<f64>();
            }
        }
        sum / 700.0
    };
    assert!(lo <= truth && truth <= hi, "truth {truth} outside [{lo}, {hi}]");
    assert!(o["labelled_mean"].as_f64().unwrap() > truth + 0.3);
    // A good evaluator: a narrower interval, more effective labels than labels.
    let width = |e: &Value| e["upper"].as_f64().unwrap() - e["lower"].as_f64().unwrap();
    assert!(width(&o["ppi"]) < 0.8 * width(&o["classical"]));
    assert!(o["labels_gained"].as_f64().unwrap() > 0.0);
    let strata = o["strata"].as_array().unwrap();
    assert_eq!(strata.len(), 3);
    for s in strata {
        let (n, l) = (s["requests"].as_f64().unwrap(), s["labelled"].as_f64().unwrap());
        close(&s["labelling_probability"], l / n, "labelling probability");
        close(&s["weight"], n / l, "weight");
    }
}

#[test]
fn by_prompt_version_and_pass_rate_match_the_statistics() {
    let reqs = generate();
    let d = store(&reqs);
    let r = json(bin(d.path()).args(["estimate", "--metric", "pass_rate", "--by", "prompt_version"]));
    assert_eq!(r["metric"], "pass_rate");
    let groups = r["groups"].as_array().unwrap();
    assert_eq!(groups.iter().map(|g| g["group"].as_str().unwrap()).collect::<Vec<_>>(), ["v1", "v2"]);
    for g in groups {
        let v = g["group"].as_str().unwrap();
        let (classical, ppi, lo, hi) = expected(&reqs, |r| r.version == v, true);
        close(&g["classical"]["estimate"], classical, v);
        close(&g["ppi"]["estimate"], ppi, v);
        close(&g["ppi"]["lower"], lo, v);
        close(&g["ppi"]["upper"], hi, v);
    }
    let weeks = json(bin(d.path()).args(["estimate", "--by", "week"]));
    let names: Vec<&str> = weeks["groups"].as_array().unwrap().iter().map(|g| g["group"].as_str().unwrap()).collect();
    assert_eq!(names, ["2026-W44", "2026-W45", "2026-W46"]);
}

#[test]
fn text_output_names_the_cohorts_and_undefined_cells_say_why() {
    let reqs = generate();
    let d = store(&reqs);
    let text = text(bin(d.path()).args(["estimate", "--cohort", "enterprise"]));
    assert!(text.contains("PPI++     95%"), "{text}");
    assert!(text.contains("enterprise"), "{text}");
    assert!(!text.contains("free"), "{text}");
    // A window with no request: every estimate undefined, with the reason.
    let r = json(bin(d.path()).args(["estimate", "--since", "2027-01-01"]));
    assert_eq!(r["overall"]["requests"], 0);
    assert_eq!(r["overall"]["undefined"]["ppi"], "no request in scope");
    assert!(r["overall"]["ppi"].is_null());
}

#[test]
fn bad_level_and_unknown_metric_are_usage_errors() {
    let reqs = generate();
    let d = store(&reqs);
    let out = bin(d.path()).args(["estimate", "--level", "1.5"]).assert().code(2).get_output().stderr.clone();
    assert!(String::from_utf8_lossy(&out).contains("interval level 1.5"));
    bin(d.path()).args(["estimate", "--metric", "median"]).assert().code(2);
}

#[test]
fn impact_compares_the_ppi_estimates_of_two_prompt_versions() {
    let reqs = generate();
    let d = store(&reqs);
    let by = json(bin(d.path()).args(["estimate", "--by", "prompt_version"]));
    let r = json(bin(d.path()).args(["impact", "--metadata", "prompt_version=v1:v2", "--bootstrap", "10"]));
    let ppi = &r["ppi"];
    let (v1, v2) = (&by["groups"][0]["ppi"], &by["groups"][1]["ppi"]);
    close(&ppi["before"]["estimate"], v1["estimate"].as_f64().unwrap(), "before");
    close(&ppi["after"]["estimate"], v2["estimate"].as_f64().unwrap(), "after");
    let se = (v1["std_error"].as_f64().unwrap().powi(2) + v2["std_error"].as_f64().unwrap().powi(2)).sqrt();
    let diff = v2["estimate"].as_f64().unwrap() - v1["estimate"].as_f64().unwrap();
    close(&ppi["difference"], diff, "difference");
    close(&ppi["z"], diff / se, "z");
    // The two versions come from the same generator: no significant difference.
    assert!(ppi["p_value"].as_f64().unwrap() > 0.01, "{ppi}");
    let text = text(bin(d.path()).args(["impact", "--metadata", "prompt_version=v1:v2", "--bootstrap", "10"]));
    assert!(text.contains("human score, PPI++ by cohort:"), "{text}");
    // A side without labels: undefined, with the side named.
    let none = json(bin(d.path()).args(["impact", "--metadata", "prompt_version=v1:v9", "--bootstrap", "10"]));
    assert!(none["ppi"]["reason"].as_str().unwrap().starts_with("after: "), "{}", none["ppi"]);
}

/// Labels from an annotation queue leave the cohort-stratified estimate unchanged (they are not
/// random within a cohort) and get an estimate of their own, weighted by the queue's selection
/// probabilities: its classical figure is `queue show`'s inverse-probability mean.
#[test]
fn queue_labels_are_estimated_apart_with_their_selection_probabilities() {
    let d = tempfile::tempdir().unwrap();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/example");
    bin(d.path()).args(["ingest", "logs"]).arg(ex.join("logs.jsonl")).assert().success();
    bin(d.path()).args(["ingest", "feedback"]).arg(ex.join("feedback.jsonl")).assert().success();
    let before = json(bin(d.path()).arg("estimate"));
    json(bin(d.path()).args([
        "queue",
        "create",
        "--name",
        "q1",
        "--strategy",
        "random",
        "--size",
        "40",
        "--reviewers-per-item",
        "2",
    ]));
    // Two reviewers answer every item with the request's true coherence (rounded).
    let truth: std::collections::BTreeMap<String, f64> = std::fs::read_to_string(ex.join("truth.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|t| (t["request_id"].as_str().unwrap().to_string(), t["human_score_5"].as_f64().unwrap()))
        .collect();
    let items = bin(d.path()).args(["queue", "export", "q1"]).assert().success().get_output().stdout.clone();
    let mut answers = String::new();
    for line in String::from_utf8(items).unwrap().lines() {
        let id = serde_json::from_str::<Value>(line).unwrap()["request_id"].as_str().unwrap().to_string();
        for reviewer in ["rev-a", "rev-b"] {
            let a = serde_json::json!({"request_id": id, "reviewer": reviewer, "answer": truth[&id].round() as u8});
            answers.push_str(&format!("{a}\n"));
        }
    }
    std::fs::write(d.path().join("answers.jsonl"), answers).unwrap();
    bin(d.path()).args(["queue", "import", "q1", "answers.jsonl"]).assert().success();

    let after = json(bin(d.path()).arg("estimate"));
    assert_eq!(after["overall"], before["overall"], "queue labels changed the stratified estimate");
    assert_eq!(after["queue_labels_left_out"].as_u64(), Some(80));
    let q = &after["queues"][0];
    assert_eq!((q["queue"].as_str(), q["labelled"].as_u64(), q["pool"].as_u64()), (Some("q1"), Some(40), Some(392)));
    let show = json(bin(d.path()).args(["queue", "show", "q1"]));
    let ipw = show["ipw_mean"]["mean"].as_f64().unwrap_or_else(|| panic!("{show}"));
    assert!((q["classical"]["estimate"].as_f64().unwrap() - ipw).abs() < 1e-9, "{q} vs {show}");
    let ppi = &q["ppi"];
    assert!(ppi["lower"].as_f64().unwrap() < ppi["estimate"].as_f64().unwrap(), "{q}");
    let text = text(bin(d.path()).arg("estimate"));
    assert!(text.contains("queue q1 (random): pool 392, labelled 40"), "{text}");
}

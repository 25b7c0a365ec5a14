//! The report's test fixture, a synthetic report with every section filled, and the tests of
//! report.json and of the three files together.

use std::collections::BTreeMap;
use std::path::Path;

use rand::SeedableRng;

use super::*;
use crate::Error;

/// A cohort name that would run script if it reached the page unescaped.
pub(super) const HOSTILE: &str = "<script>document.title='pwned'</script>";
/// A cohort name that would break a markdown table unescaped.
const PIPES: &str = "mobile|app *beta*";
pub(super) const COHORTS: [&str; 5] = ["enterprise", "free-tier", PIPES, HOSTILE, "日本語 ja"];

fn normal(rng: &mut impl rand::Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn round(x: f64, d: i32) -> f64 {
    let k = 10f64.powi(d);
    (x * k).round() / k
}

fn corr(n: u64, r: f64, p: f64) -> Correlations {
    Correlations {
        n_samples: n,
        pearson_r: Some(round(r - 0.02, 3)),
        pearson_p: Some(p),
        pearson_ci: Some([round(r - 0.09, 3), round(r + 0.07, 3)]),
        spearman_r: Some(r),
        spearman_p: Some(p),
        spearman_ci: Some([round(r - 0.08, 3), round(r + 0.07, 3)]),
        kendall_tau: Some(round(r * 0.72, 3)),
        kendall_p: Some(p),
        kendall_ci: Some([round(r * 0.72 - 0.06, 3), round(r * 0.72 + 0.05, 3)]),
        group_mean_spearman: None,
        group_mean_kendall: None,
        groups_used: None,
    }
}

fn split(name: &str, count: u64, w: f64) -> SplitSummary {
    SplitSummary {
        split: name.into(),
        count,
        weight_sum: Some(round(count as f64 * w, 2)),
        weight_min: Some(0.25),
        weight_mean: Some(w),
        weight_max: Some(4.0),
        effective_size: Some(round(count as f64 * 0.71, 1)),
    }
}

/// A realistic report with every section filled, a cohort with undefined statistics
/// ("tiny"), hostile cohort names and a non-finite training loss.
pub(super) fn synthetic() -> ReportData {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut pre_pts, mut post_pts) = (Vec::new(), Vec::new());
    for i in 0..500 {
        let cohort = COHORTS[[0, 0, 1, 1, 1, 2, 3, 4][i % 8]];
        let z = normal(&mut rng);
        let human = round((0.55 + 0.22 * z).clamp(0.0, 1.0), 3);
        let judge = (5.5 + 2.0 * (0.45 * z + 0.89 * normal(&mut rng))).round().clamp(1.0, 10.0);
        let p = 1.0 / (1.0 + (-1.6 * (0.7 * z + 0.71 * normal(&mut rng))).exp());
        pre_pts.push(ScatterPoint { eval_score: judge, human_score: human, cohort: cohort.into() });
        post_pts.push(ScatterPoint { eval_score: round(p, 4), human_score: human, cohort: cohort.into() });
    }
    let bins = |post: bool| -> Vec<ReliabilityBin> {
        (0..10)
            .map(|b| {
                let c = (b as f64 + 0.5) / 10.0;
                let count = if post && b == 0 { 0 } else { [6, 14, 30, 55, 80, 92, 70, 48, 25, 10][b] };
                let observed = if post { c + 0.04 * (b as f64 - 4.5) / 4.5 } else { 0.5 + 0.45 * (c - 0.5) };
                ReliabilityBin {
                    lower: b as f64 / 10.0,
                    upper: (b + 1) as f64 / 10.0,
                    count,
                    mean_predicted: (count > 0).then(|| round(c + 0.01, 3)),
                    observed: (count > 0).then(|| round(observed, 3)),
                }
            })
            .collect()
    };
    let cohort_stats = |post: bool| -> Vec<CohortCorrelations> {
        let base = [(0.44, 310), (0.39, 240), (0.28, 80), (0.51, 75), (0.47, 70)];
        let mut v: Vec<CohortCorrelations> = COHORTS
            .iter()
            .zip(base)
            .map(|(c, (r, n))| {
                let r = if post { round(r + 0.17, 3) } else { r };
                CohortCorrelations { cohort: c.to_string(), stats: corr(n, r, 1e-6) }
            })
            .collect();
        v.push(CohortCorrelations {
            cohort: "tiny".into(),
            stats: Correlations { n_samples: 2, ..Default::default() },
        });
        v
    };
    let mut pre = corr(775, 0.431, 3.2e-36);
    pre.group_mean_spearman = Some(0.402);
    pre.group_mean_kendall = Some(0.301);
    pre.groups_used = Some(118);
    let mut post = corr(775, 0.612, 1.1e-80);
    post.group_mean_spearman = Some(0.577);
    post.group_mean_kendall = None;
    post.groups_used = Some(118);
    let curves = (1..=18)
        .map(|k| {
            let step = k * 10;
            let s = step as f64;
            let val = step % 60 == 0;
            CurvePoint {
                step,
                epoch: round(s / 60.0, 3),
                train_loss: if step == 70 {
                    None
                } else {
                    Some(round(0.25 + 0.45 * (-s / 70.0).exp() + 0.02 * (s / 7.0).sin(), 4))
                },
                val_loss: val.then(|| [0.47, 0.41, 0.43][(step / 60 - 1) as usize]),
                val_spearman: val.then(|| [0.52, 0.61, 0.6][(step / 60 - 1) as usize]),
            }
        })
        .collect();
    let mut disagreements = BTreeMap::new();
    for (c, (n, a, b)) in COHORTS.iter().zip([(310, 71, 52), (240, 66, 49), (80, 30, 31), (75, 12, 9), (70, 20, 11)]) {
        disagreements.insert(c.to_string(), Disagreements { n_samples: n, pre: a, post: b });
    }
    disagreements.insert("tiny".into(), Disagreements { n_samples: 2, pre: 1, post: 0 });
    ReportData {
        meta: ReportMeta {
            run_id: "2026-11-23-weekly".into(),
            created: "2026-11-23T06:00:00Z".into(),
            config_hash: Some("9f2c1e4ab3d0".into()),
            base_evaluator: Some("gpt-judge-v3".into()),
            new_evaluator: Some("runs/2026-11-23-weekly/model".into()),
            evalloop_version: "0.1.0".into(),
            ..ReportMeta::default()
        },
        pre: Agreement {
            overall: pre,
            ci_level: Some(0.95),
            ci_method: Some("fisher-z".into()),
            per_cohort: cohort_stats(false),
        },
        post: Agreement {
            overall: post,
            ci_level: Some(0.95),
            ci_method: Some("fisher-z".into()),
            per_cohort: cohort_stats(true),
        },
        calibration: PrePost {
            pre: Calibration {
                n_samples: 775,
                ece: Some(0.118),
                brier: Some(0.231),
                auc: Some(0.702),
                reliability: bins(false),
            },
            post: Calibration {
                n_samples: 775,
                ece: Some(0.031),
                brier: Some(0.174),
                auc: None,
                reliability: bins(true),
            },
        },
        dataset: DatasetSummary {
            window_start: Some("2026-11-16T00:00:00Z".into()),
            window_end: Some("2026-11-22T23:59:59Z".into()),
            splits: vec![split("train", 3100, 1.0), split("val", 390, 1.0), split("test", 775, 1.0)],
            per_cohort: COHORTS
                .iter()
                .chain(&["tiny"])
                .enumerate()
                .map(|(i, c)| CohortSplits {
                    cohort: c.to_string(),
                    splits: vec![
                        split("train", 1240 / (i as u64 + 1), 0.8),
                        split("val", 160 / (i as u64 + 1), 0.8),
                        split("test", 310 / (i as u64 + 1), 0.8),
                    ],
                })
                .collect(),
        },
        training: Some(TrainingSummary {
            base_model: Some("google-bert/bert-base-uncased".into()),
            epochs: 3,
            best_step: Some(120),
            best_val_spearman: Some(0.61),
            examples_per_sec: Some(41.7),
            wall_secs: Some(223.0),
            // A candidate name from the config file: escaped like the cohort names.
            selection: Some(format!("base kept by spearman: base 0.412 (validation, 3 groups), {HOSTILE} 0.2")),
            curves,
        }),
        gate: Some(GateDecision {
            metric: "spearman".into(),
            promoted: true,
            reason: "new Spearman 0.612 beats base 0.431 by 0.181 (margin 0.02); Williams' t = 5.1, p < 0.05".into(),
            base_spearman: Some(0.431),
            new_spearman: Some(0.612),
            margin: 0.02,
            test: "williams".into(),
            statistic: Some(5.1),
            p_value: Some(2.0e-7),
            alpha: Some(0.05),
        }),
        disagreements_by_cohort: disagreements,
        scatter: PrePost { pre: Scatter::sample(pre_pts, 400), post: Scatter::sample(post_pts, 400) },
        history: None,
        human_ceiling: None,
        preferences: None,
    }
}

#[test]
fn json_round_trips() {
    let d = synthetic();
    let text = to_json(&d).unwrap();
    let back: ReportData = serde_json::from_str(&text).unwrap();
    assert_eq!(back, d);
    // The documented top-level keys.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for k in ["meta", "pre", "post", "calibration", "dataset", "training", "gate", "disagreements_by_cohort", "scatter"]
    {
        assert!(v.get(k).is_some(), "report.json lacks {k}");
    }
    assert_eq!(v["pre"]["spearman_r"], serde_json::json!(0.431));
    assert_eq!(v["pre"]["per_cohort"][0]["cohort"], "enterprise");
    assert_eq!(v["pre"]["per_cohort"][5]["spearman_r"], serde_json::Value::Null);
}

#[test]
fn non_finite_statistics_are_written_as_null_and_read_back_as_none() {
    let mut d = synthetic();
    d.pre.overall.pearson_r = Some(f64::NAN);
    d.calibration.post.ece = Some(f64::INFINITY);
    d.training.as_mut().unwrap().curves[0].train_loss = Some(f64::NEG_INFINITY);
    let text = to_json(&d).unwrap();
    assert!(!text.contains("NaN") && !text.to_lowercase().contains("inf"), "non-finite number in report.json");
    let back: ReportData = serde_json::from_str(&text).unwrap();
    assert_eq!(back.pre.overall.pearson_r, None);
    assert_eq!(back.calibration.post.ece, None);
    assert_eq!(back.training.unwrap().curves[0].train_loss, None);
    // And the renderers show them as undefined rather than "NaN".
    let md = render_markdown(&d);
    let html = render_html(&d).unwrap();
    assert!(!md.contains("NaN") && !md.contains("inf"));
    assert!(!html.contains("NaN"));
}

#[test]
fn a_non_finite_required_number_is_an_error_not_an_unreadable_file() {
    let mut d = synthetic();
    d.gate.as_mut().unwrap().margin = f64::NAN;
    let e = to_json(&d).unwrap_err();
    assert!(matches!(e, Error::Input(_)), "{e}");
    let dir = tempfile::tempdir().unwrap();
    assert!(write_report(dir.path(), &d).is_err());
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written on error");
}

#[test]
fn hostile_cohort_names_are_escaped_everywhere() {
    let d = synthetic();
    let html = render_html(&d).unwrap();
    assert!(!html.to_lowercase().contains("<script"), "raw <script> in report.html");
    assert!(html.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"), "escaped in tables");
    let md = render_markdown(&d);
    assert!(!md.to_lowercase().contains("<script"), "raw <script> in report.md");
    assert!(md.contains("&lt;script&gt;"));
    assert!(md.contains("| mobile\\|app \\*beta\\* |"), "pipes and emphasis escaped in markdown");
    for text in [&html, &md] {
        assert!(text.contains("Model selection") && text.contains("base kept by spearman"), "selection row");
    }
}

#[test]
fn an_empty_report_still_renders_every_chart() {
    let d = ReportData::default();
    let html = render_html(&d).unwrap();
    assert_eq!(html.matches("<svg").count(), CHART_IDS.len());
    assert!(html.contains("NO GATE DECISION"));
    assert!(html.contains("no scored held-out requests") && html.contains("no training curves"));
    let md = render_markdown(&d);
    assert!(md.contains("| n | 0 | 0 |   |"));
    assert_eq!(serde_json::from_str::<ReportData>(&to_json(&d).unwrap()).unwrap(), d);
}

#[test]
fn write_report_writes_three_files_and_render_rereads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = synthetic();
    write_report(&dir.path().join("run"), &d).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [HTML_FILE, JSON_FILE, MD_FILE], "no temporary files left");
    let out = dir.path().join("again");
    let back = render(&dir.path().join("run").join(JSON_FILE), &out).unwrap();
    assert_eq!(back, d);
    for f in [JSON_FILE, MD_FILE, HTML_FILE] {
        assert_eq!(
            std::fs::read(dir.path().join("run").join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{f} re-renders identically"
        );
    }
}

#[test]
fn a_newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(JSON_FILE);
    std::fs::write(&p, r#"{"meta": {"schema_version": 99}}"#).unwrap();
    let e = read_report(&p).unwrap_err();
    assert!(e.to_string().contains("schema version 99"), "{e}");
    std::fs::write(&p, r#"{"pre": {"spearman_r": "high"}}"#).unwrap();
    let e = read_report(&p).unwrap_err();
    assert!(matches!(e, Error::Input(_)) && e.to_string().contains("line 1"), "{e}");
}

/// tests/data/report-synthetic.json is this module's synthetic report, used by the browser
/// test and scripts/screenshot-report.sh. Regenerate with `EVALLOOP_BLESS=1 cargo test`.
#[test]
fn synthetic_fixture_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/report-synthetic.json");
    let text = to_json(&synthetic()).unwrap();
    if std::env::var_os("EVALLOOP_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(on_disk == text, "{} is stale; rerun with EVALLOOP_BLESS=1", path.display());
}

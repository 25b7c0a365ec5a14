//! Compares `evalloop::stats` with the scipy / scikit-learn figures that
//! `scripts/reference/reference_stats.py` wrote into `tests/fixtures/stats/`.
//!
//! Tolerances: coefficients and other statistics to 1e-9 absolute; p-values to 1e-6 relative
//! or 1e-12 absolute (for tiny p). Python is not needed to run these tests.

use std::path::Path;
use std::time::Instant;

use evalloop::stats::bootstrap::BootstrapConfig;
use evalloop::stats::calibration::{CalibrationConfig, calibration};
use evalloop::stats::compare::{cohens_d, compare_samples, mann_whitney_u, welch_t_test};
use evalloop::stats::corr::{
    CorrKind, PMethod, bootstrap_corr_ci, kendall, pearson, pearson_fisher_ci, spearman, spearman_fisher_ci,
};
use evalloop::stats::dependent::williams_test;
use evalloop::stats::group::group_correlation;
use evalloop::stats::{Outcome, Undefined};
use serde_json::Value;

const ABS: f64 = 1e-9;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cases(v: &Value) -> &Vec<Value> {
    v["cases"].as_array().expect("fixture has a cases array")
}

fn is_undefined(v: &Value) -> bool {
    v.get("undefined").and_then(Value::as_bool) == Some(true)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn floats(v: &Value) -> Vec<f64> {
    // NaN is written by Python's json as the bare token NaN, which serde_json rejects; the
    // fixtures therefore never contain NaN inside data arrays except via this null mapping.
    v.as_array().expect("array").iter().map(|a| a.as_f64().unwrap_or(f64::NAN)).collect()
}

fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol, "{what}: got {got:e}, want {want:e} (diff {:e} > {tol:e})", (got - want).abs());
}

fn assert_p(got: f64, want: f64, what: &str) {
    let diff = (got - want).abs();
    assert!(
        diff <= 1e-12 || diff <= 1e-6 * want.abs(),
        "{what}: p got {got:e}, want {want:e} (rel diff {:e})",
        diff / want.abs()
    );
}

/// Like [`assert_p`], but where scipy's coefficient is within 1e-12 of +/-1 the p-value is
/// ill-conditioned (for n = 3, p ~ (4 / pi) sqrt((1 - |r|) / 2), so scipy's 2-ulp error in r
/// = 0.9999999999999998 gives p = 1.3e-8 where the exact r = 1 gives p = 0): there both
/// p-values only have to be tiny.
fn assert_p_near_unit(got: f64, want: f64, coef_want: f64, what: &str) {
    if 1.0 - coef_want.abs() < 1e-12 {
        assert!(got < 1e-6 && want < 1e-6, "{what}: p got {got:e}, want {want:e} at |r| ~ 1");
    } else {
        assert_p(got, want, what);
    }
}

fn assert_undefined<T: std::fmt::Debug>(got: &Result<T, Undefined>, what: &str) {
    assert!(got.is_err(), "{what}: expected undefined, got {got:?}");
}

fn check_corr_case(case: &Value, x: &[f64], y: &[f64]) {
    let name = case["name"].as_str().unwrap_or("?");
    let n = x.len();

    let want = &case["pearson"];
    let got = pearson(x, y);
    if is_undefined(want) {
        assert_undefined(&got, &format!("{name} pearson"));
    } else {
        let got = got.unwrap_or_else(|e| panic!("{name} pearson: {e}"));
        assert_close(got.estimate, num(&want["r"]), ABS, &format!("{name} pearson r"));
        assert_p_near_unit(got.p_value, num(&want["p"]), num(&want["r"]), &format!("{name} pearson"));
        for (key, level) in [("ci95", 0.95), ("ci90", 0.90)] {
            let ci = pearson_fisher_ci(got.estimate, n, level).unwrap();
            let w = floats(&want[key]);
            assert_close(ci.lower, w[0], ABS, &format!("{name} pearson {key} lower"));
            assert_close(ci.upper, w[1], ABS, &format!("{name} pearson {key} upper"));
        }
    }

    let want = &case["spearman"];
    let got = spearman(x, y);
    if is_undefined(want) {
        assert_undefined(&got, &format!("{name} spearman"));
    } else {
        let got = got.unwrap_or_else(|e| panic!("{name} spearman: {e}"));
        assert_close(got.estimate, num(&want["rho"]), ABS, &format!("{name} spearman rho"));
        assert_p_near_unit(got.p_value, num(&want["p"]), num(&want["rho"]), &format!("{name} spearman"));
        let ci = spearman_fisher_ci(got.estimate, n, 0.95).unwrap();
        let w = floats(&want["ci95"]);
        assert_close(ci.lower, w[0], ABS, &format!("{name} spearman ci lower"));
        assert_close(ci.upper, w[1], ABS, &format!("{name} spearman ci upper"));
    }

    let want = &case["kendall"];
    let got = kendall(x, y);
    if is_undefined(want) {
        assert_undefined(&got, &format!("{name} kendall"));
    } else {
        let got = got.unwrap_or_else(|e| panic!("{name} kendall: {e}"));
        assert_close(got.estimate, num(&want["tau"]), ABS, &format!("{name} kendall tau"));
        assert_p(got.p_value, num(&want["p"]), &format!("{name} kendall"));
        let method = match want["p_method"].as_str() {
            Some("exact") => PMethod::Exact,
            _ => PMethod::Normal,
        };
        assert_eq!(got.p_method, method, "{name} kendall p method");
    }
}

#[test]
fn correlations_match_scipy() {
    let f = fixture("correlation.json");
    assert!(cases(&f).len() >= 20);
    for case in cases(&f) {
        check_corr_case(case, &floats(&case["x"]), &floats(&case["y"]));
    }
}

/// splitmix64, identical to `splitmix64` in scripts/reference/reference_stats.py.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The large-case columns, identical to `generated` in scripts/reference/reference_stats.py.
fn generated(kind: &str, seed: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut s = seed;
    let scale = 2f64.powi(-53);
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let u1 = (splitmix64(&mut s) >> 11) as f64 * scale;
        let u2 = (splitmix64(&mut s) >> 11) as f64 * scale;
        let (a, b) = match kind {
            "ties_correlated" => ((u1 * 50.0).floor(), ((0.7 * u1 + 0.3 * u2) * 20.0).floor()),
            "ties_independent" => ((u1 * 100.0).floor(), (u2 * 7.0).floor()),
            "continuous_weak" => (u1, 0.003 * u1 + u2),
            other => panic!("unknown generator {other}"),
        };
        x.push(a);
        y.push(b);
    }
    (x, y)
}

#[test]
fn million_row_correlations_match_scipy_in_n_log_n() {
    let f = fixture("large.json");
    assert_eq!(cases(&f).len(), 3);
    for case in cases(&f) {
        let g = &case["generator"];
        let n = g["n"].as_u64().unwrap() as usize;
        assert_eq!(n, 1_000_000);
        let (x, y) = generated(g["kind"].as_str().unwrap(), g["seed"].as_u64().unwrap(), n);
        let start = Instant::now();
        let k = kendall(&x, &y).unwrap();
        let secs = start.elapsed().as_secs_f64();
        // Not a speed target (scripts/bench/ has those): a guard against a quadratic algorithm.
        // O(n log n) takes well under a second in release; O(n^2) on 1e6 rows would take hours.
        eprintln!("{}: kendall on {n} rows took {secs:.3} s", case["name"]);
        assert!(secs < 60.0, "kendall on 1e6 rows took {secs:.2} s: quadratic?");
        assert!(k.estimate.is_finite());
        check_corr_case(case, &x, &y);
    }
}

#[test]
fn bootstrap_correlation_intervals_are_deterministic_and_sane() {
    let f = fixture("correlation.json");
    let case = cases(&f).iter().find(|c| c["name"] == "likert_ties_n80").unwrap();
    let (x, y) = (floats(&case["x"]), floats(&case["y"]));
    let cfg = BootstrapConfig { n_resamples: 1000, seed: 7, level: 0.95 };
    for kind in [CorrKind::Pearson, CorrKind::Spearman, CorrKind::Kendall] {
        let a = bootstrap_corr_ci(&x, &y, kind, &cfg).unwrap();
        let b = bootstrap_corr_ci(&x, &y, kind, &cfg).unwrap();
        assert_eq!(a, b, "{kind:?}: same seed, same interval");
        let other = bootstrap_corr_ci(&x, &y, kind, &BootstrapConfig { seed: 8, ..cfg.clone() }).unwrap();
        assert_ne!((a.lower, a.upper), (other.lower, other.upper), "{kind:?}: seed matters");
        assert!(a.lower < a.estimate && a.estimate < a.upper, "{kind:?}: {a:?}");
        assert!(-1.0 <= a.lower && a.upper <= 1.0);
        assert_eq!(a.n_valid, 1000);
        // a 95% bootstrap interval should be roughly as wide as the Fisher one (0.5x..2x)
        let fisher = pearson_fisher_ci(a.estimate, x.len(), 0.95).unwrap();
        let ratio = (a.upper - a.lower) / (fisher.upper - fisher.lower);
        assert!((0.5..2.0).contains(&ratio), "{kind:?}: width ratio {ratio}");
    }
}

#[test]
fn two_sample_tests_match_scipy() {
    let f = fixture("two_sample.json");
    assert!(cases(&f).len() >= 8);
    for case in cases(&f) {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));

        let want = &case["welch"];
        let got = welch_t_test(&a, &b);
        if is_undefined(want) {
            assert_undefined(&got, &format!("{name} welch"));
        } else {
            let got = got.unwrap_or_else(|e| panic!("{name} welch: {e}"));
            assert_close(got.statistic, num(&want["t"]), ABS, &format!("{name} welch t"));
            assert_close(got.df, num(&want["df"]), 1e-8, &format!("{name} welch df"));
            assert_p(got.p_value, num(&want["p"]), &format!("{name} welch"));
        }

        let want = &case["mann_whitney"];
        let got = mann_whitney_u(&a, &b).unwrap_or_else(|e| panic!("{name} mwu: {e}"));
        assert_close(got.u, num(&want["u"]), ABS, &format!("{name} mwu U"));
        assert_p(got.p_value, num(&want["p"]), &format!("{name} mwu"));
        let method = if want["p_method"] == "exact" { PMethod::Exact } else { PMethod::Normal };
        assert_eq!(got.p_method, method, "{name} mwu method");

        let want = &case["cohens_d"];
        let got = cohens_d(&a, &b);
        if is_undefined(want) {
            assert_undefined(&got, &format!("{name} cohen d"));
        } else {
            assert_close(got.unwrap().d, num(want), ABS, &format!("{name} cohen d"));
        }

        let cfg = BootstrapConfig { n_resamples: 500, seed: 3, level: 0.95 };
        let cmp = compare_samples(&a, &b, &cfg);
        assert_close(cmp.diff_means, num(&case["diff_means"]), ABS, &format!("{name} diff"));
        match case["improvement_pct"].as_f64() {
            Some(w) => assert_close(cmp.improvement_pct.unwrap(), w, ABS, name),
            None => assert_eq!(cmp.improvement_pct, None, "{name} improvement_pct"),
        }
        let ci = cmp.diff_ci.clone().ok().unwrap();
        assert!(ci.lower <= ci.estimate && ci.estimate <= ci.upper, "{name}: {ci:?}");
        assert_eq!(compare_samples(&a, &b, &cfg), cmp, "{name}: deterministic");
    }
}

fn check_metric(got: &Outcome<f64>, want: &Value, what: &str) {
    if is_undefined(want) {
        assert!(!got.is_defined(), "{what}: expected undefined, got {got:?}");
    } else {
        let g = got.as_ref().unwrap_or_else(|| panic!("{what}: undefined, want {want}"));
        assert_close(*g, num(want), ABS, what);
    }
}

#[test]
fn calibration_matches_sklearn() {
    let f = fixture("calibration.json");
    assert!(cases(&f).len() >= 6);
    for case in cases(&f) {
        let name = case["name"].as_str().unwrap();
        let scores = floats(&case["scores"]);
        let labels: Vec<bool> = case["labels"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
        let weights = case["weights"].as_array().map(|_| floats(&case["weights"]));
        let cfg =
            CalibrationConfig { n_bins: case["n_bins"].as_u64().unwrap() as usize, threshold: num(&case["threshold"]) };
        let r = calibration(&scores, &labels, weights.as_deref(), &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(r.brier, num(&case["brier"]), ABS, &format!("{name} brier"));
        check_metric(&r.roc_auc, &case["roc_auc"], &format!("{name} auc"));
        let t = &r.at_threshold;
        check_metric(&t.accuracy, &case["accuracy"], &format!("{name} accuracy"));
        check_metric(&t.precision, &case["precision"], &format!("{name} precision"));
        check_metric(&t.recall, &case["recall"], &format!("{name} recall"));
        check_metric(&t.f1, &case["f1"], &format!("{name} f1"));
        check_metric(&t.cohen_kappa, &case["cohen_kappa"], &format!("{name} kappa"));

        for (key, table) in [("uniform", &r.uniform), ("quantile", &r.quantile)] {
            let Some(want) = case.get(key) else { continue };
            let what = format!("{name} {key}");
            let edges = floats(&want["edges"]);
            let counts: Vec<usize> =
                want["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
            assert_eq!(table.bins.len(), cfg.n_bins, "{what}");
            for (b, bin) in table.bins.iter().enumerate() {
                assert_close(bin.lower, edges[b], 1e-12, &format!("{what} edge {b}"));
                assert_close(bin.upper, edges[b + 1], 1e-12, &format!("{what} edge {}", b + 1));
                assert_eq!(bin.count, counts[b], "{what} count of bin {b}");
            }
            // sklearn lists only the non-empty bins
            let nonempty: Vec<_> = table.bins.iter().filter(|b| b.count > 0).collect();
            let (pt, pp) = (floats(&want["prob_true"]), floats(&want["prob_pred"]));
            assert_eq!(nonempty.len(), pt.len(), "{what} non-empty bins");
            for (i, bin) in nonempty.iter().enumerate() {
                assert_close(bin.observed_frequency.unwrap(), pt[i], ABS, &what);
                assert_close(bin.mean_predicted.unwrap(), pp[i], ABS, &what);
            }
            assert_close(table.ece, num(&want["ece"]), ABS, &format!("{what} ece"));
        }
    }
}

#[test]
fn williams_test_matches_the_reference_formula() {
    let f = fixture("williams.json");
    for case in cases(&f) {
        let n = case["n"].as_u64().unwrap() as usize;
        let got = williams_test(num(&case["r_xz"]), num(&case["r_yz"]), num(&case["r_xy"]), n).unwrap();
        assert_close(got.statistic, num(&case["t"]), ABS, "williams t");
        assert_close(got.df, num(&case["df"]), 0.0, "williams df");
        assert_p(got.p_value, num(&case["p"]), "williams");
    }
}

#[test]
fn group_correlation_matches_scipy_per_group() {
    let f = fixture("groups.json");
    for case in cases(&f) {
        let name = case["name"].as_str().unwrap();
        let rows: Vec<(String, f64, f64)> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_owned(), num(&r[1]), num(&r[2])))
            .collect();
        let min = case["min_group_size"].as_u64().unwrap() as usize;
        let g = group_correlation(&rows, min);
        assert_eq!(g.groups_total as u64, case["groups_total"].as_u64().unwrap(), "{name}");
        assert_eq!(g.groups_used as u64, case["groups_used"].as_u64().unwrap(), "{name}");
        check_metric(&g.mean_spearman, &case["mean_spearman"], &format!("{name} spearman"));
        check_metric(&g.mean_kendall, &case["mean_kendall"], &format!("{name} kendall"));
    }
}

//! Compares `evalloop::stats::agreement` with the `krippendorff` package and scikit-learn
//! figures that `scripts/reference/reference_agreement.py` wrote into
//! `tests/fixtures/agreement/`.
//!
//! Tolerance: every figure to 1e-9 absolute; counts exactly. Python is not needed to run these
//! tests.

use std::path::Path;

use evalloop::stats::Undefined;
use evalloop::stats::agreement::{
    KappaWeights, MeasurementLevel, cohen_kappa, krippendorff_alpha, pair_kappas, pairwise_kappa, percent_agreement,
    rater_agreement,
};
use evalloop::stats::bootstrap::BootstrapConfig;
use serde_json::Value;

const ABS: f64 = 1e-9;

const LEVELS: [(&str, MeasurementLevel); 4] = [
    ("nominal", MeasurementLevel::Nominal),
    ("ordinal", MeasurementLevel::Ordinal),
    ("interval", MeasurementLevel::Interval),
    ("ratio", MeasurementLevel::Ratio),
];

const WEIGHTS: [(&str, KappaWeights); 3] = [
    ("unweighted", KappaWeights::Unweighted),
    ("linear", KappaWeights::Linear),
    ("quadratic", KappaWeights::Quadratic),
];

fn cases() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agreement/agreement.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v["cases"].as_array().expect("fixture has a cases array").clone()
}

fn units(case: &Value) -> Vec<Vec<Option<f64>>> {
    serde_json::from_value(case["units"].clone()).expect("units is a matrix of numbers and nulls")
}

fn is_undefined(v: &Value) -> bool {
    v.get("undefined").and_then(Value::as_bool) == Some(true)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn count(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}")) as usize
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= ABS, "{what}: got {got:e}, want {want:e} (diff {:e})", (got - want).abs());
}

fn check<T: std::fmt::Debug>(got: Result<T, Undefined>, want: &Value, what: &str, value: impl Fn(&T) -> f64) {
    if is_undefined(want) {
        assert!(got.is_err(), "{what}: expected undefined, got {got:?}");
    } else {
        let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_close(value(&got), num(want), what);
    }
}

#[test]
fn krippendorff_alpha_matches_the_krippendorff_package() {
    for case in cases() {
        let name = case["name"].as_str().unwrap_or("?");
        let m = units(&case);
        for (key, level) in LEVELS {
            check(krippendorff_alpha(&m, level), &case["alpha"][key], &format!("{name} alpha {key}"), |a| *a);
        }
    }
}

#[test]
fn pair_kappas_match_sklearn() {
    for case in cases() {
        let name = case["name"].as_str().unwrap_or("?");
        let m = units(&case);
        let want = case["pairs"].as_array().expect("pairs array");
        for (key, weights) in WEIGHTS {
            let got = pair_kappas(&m, weights);
            assert_eq!(got.len(), want.len(), "{name} {key}: number of pairs");
            for (g, w) in got.iter().zip(want) {
                let what = format!("{name} kappa {key} raters {}-{}", g.rater_a, g.rater_b);
                assert_eq!((g.rater_a, g.rater_b, g.n_shared), (count(&w["a"]), count(&w["b"]), count(&w["n_shared"])));
                check(g.kappa.clone().into_result(), &w[key], &what, |k| *k);
            }
        }
    }
}

#[test]
fn cohen_kappa_on_a_pair_matches_sklearn() {
    // The same figures through the two-slice entry point, on the first pair of each case.
    for case in cases() {
        let name = case["name"].as_str().unwrap_or("?");
        let m = units(&case);
        let Some(w) = case["pairs"].as_array().and_then(|p| p.first()) else { continue };
        let (a, b) = (count(&w["a"]), count(&w["b"]));
        let (xs, ys): (Vec<f64>, Vec<f64>) = m.iter().filter_map(|row| Some((row[a]?, row[b]?))).unzip();
        for (key, weights) in WEIGHTS {
            check(cohen_kappa(&xs, &ys, weights), &w[key], &format!("{name} cohen_kappa {key}"), |k| *k);
        }
    }
}

#[test]
fn mean_kappa_and_percent_agreement_match_the_reference() {
    for case in cases() {
        let name = case["name"].as_str().unwrap_or("?");
        let m = units(&case);
        for (key, weights) in WEIGHTS {
            let want = &case["mean_kappa"][key];
            let what = format!("{name} mean kappa {key}");
            match pairwise_kappa(&m, weights) {
                Err(e) => assert!(is_undefined(want), "{what}: got undefined ({e}), want {want}"),
                Ok(k) => {
                    assert!(!is_undefined(want), "{what}: expected undefined, got {k:?}");
                    assert_close(k.mean, num(&want["mean"]), &what);
                    assert_eq!(k.pairs_used, count(&want["pairs_used"]), "{what}: pairs used");
                    assert_eq!(k.pairs_undefined, count(&want["pairs_undefined"]), "{what}: pairs undefined");
                }
            }
        }
        check(percent_agreement(&m), &case["percent_agreement"], &format!("{name} percent agreement"), |p| *p);
    }
}

#[test]
fn summary_counts_match_the_reference() {
    let cfg = BootstrapConfig { n_resamples: 200, seed: 3, level: 0.95 };
    for case in cases() {
        let name = case["name"].as_str().unwrap_or("?");
        let m = units(&case);
        let s = rater_agreement(&m, MeasurementLevel::Interval, &cfg);
        assert_eq!(s.items_used, count(&case["items_used"]), "{name} items used");
        assert_eq!(s.raters_used, count(&case["raters_used"]), "{name} raters used");
        assert_eq!(s.pairs_used, count(&case["pairs_used"]), "{name} pairs used");
        check(s.alpha.clone().into_result(), &case["alpha"]["interval"], &format!("{name} summary alpha"), |a| *a);
        let want = &case["mean_kappa"]["quadratic"];
        match s.kappa_quadratic.as_ref() {
            None => assert!(is_undefined(want), "{name}: summary kappa undefined, want {want}"),
            Some(k) => assert_close(k.mean, num(&want["mean"]), &format!("{name} summary kappa")),
        }
        match (s.alpha.as_ref(), s.alpha_ci.as_ref()) {
            (None, ci) => assert!(ci.is_none(), "{name}: interval without an estimate"),
            (Some(a), Some(ci)) => {
                assert_eq!(ci.estimate, *a, "{name}: interval around the estimate");
                assert!(ci.lower <= ci.upper, "{name}: {ci:?}");
            }
            // A tiny matrix where most resamples have one value only.
            (Some(_), None) => {}
        }
    }
}

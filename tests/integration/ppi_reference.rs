//! Compares `evalloop::stats::ppi` with the `ppi-python` package's PPI++ and classical mean
//! estimates that `scripts/reference/reference_ppi.py` wrote into `tests/fixtures/ppi/`.
//!
//! Tolerance: 1e-9 absolute on lambda, the point estimates and the interval ends. Where
//! ppi_py's figures are null (a constant evaluator, 0 / 0 in its lambda) evalloop takes lambda
//! 0 and gives the classical estimate. Python is not needed to run these tests.

use std::path::Path;

use evalloop::stats::ppi::{IntervalKind, classical_mean, ppi_mean};
use serde::Deserialize;

const ABS: f64 = 1e-9;

#[derive(Debug, Deserialize)]
struct Fixture {
    generator: String,
    alpha: f64,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    y: Vec<f64>,
    yhat: Vec<f64>,
    yhat_unlabelled: Vec<f64>,
    /// The lambda asked for; `None`: tuned.
    lam: Option<f64>,
    lambda: Option<f64>,
    estimate: Option<f64>,
    ci: [Option<f64>; 2],
    classical_estimate: f64,
    classical_ci: [f64; 2],
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ppi/ppi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= ABS, "{what}: got {got:e}, want {want:e} (diff {:e})", (got - want).abs());
}

#[test]
fn ppi_mean_matches_ppi_python() {
    let f = fixture();
    assert!(f.generator.starts_with("ppi-python"), "{}", f.generator);
    assert!(f.cases.len() >= 20);
    let level = 1.0 - f.alpha;
    let mut undefined_in_reference = 0;
    for c in &f.cases {
        let m = ppi_mean(&c.y, &c.yhat, &c.yhat_unlabelled, c.lam, IntervalKind::Normal, level)
            .unwrap_or_else(|u| panic!("{}: {}", c.name, u.reason));
        assert_eq!((m.n_labelled, m.n_unlabelled), (c.y.len(), c.yhat_unlabelled.len()), "{}", c.name);
        assert_close(m.classical.estimate, c.classical_estimate, &format!("{} classical estimate", c.name));
        assert_close(m.classical.lower, c.classical_ci[0], &format!("{} classical lower", c.name));
        assert_close(m.classical.upper, c.classical_ci[1], &format!("{} classical upper", c.name));
        match (c.lambda, c.estimate, c.ci) {
            (Some(lambda), Some(est), [Some(lo), Some(hi)]) => {
                assert_close(m.lambda, lambda, &format!("{} lambda", c.name));
                assert_close(m.ppi.estimate, est, &format!("{} estimate", c.name));
                assert_close(m.ppi.lower, lo, &format!("{} lower", c.name));
                assert_close(m.ppi.upper, hi, &format!("{} upper", c.name));
            }
            _ => {
                undefined_in_reference += 1;
                assert_eq!(m.lambda, 0.0, "{}", c.name);
                assert_eq!(m.ppi, m.classical, "{}", c.name);
            }
        }
    }
    assert_eq!(undefined_in_reference, 1, "one constant-evaluator case");
}

#[test]
fn classical_mean_matches_ppi_python() {
    let f = fixture();
    for c in &f.cases {
        let m = classical_mean(&c.y, IntervalKind::Normal, 1.0 - f.alpha).expect("at least 2 labels");
        assert_close(m.lower, c.classical_ci[0], &c.name);
        assert_close(m.upper, c.classical_ci[1], &c.name);
    }
}

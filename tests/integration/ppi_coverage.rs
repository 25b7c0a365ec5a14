//! Coverage of the 95% intervals of `evalloop::stats::ppi` by simulation: 1,000 draws of a
//! product whose cohorts differ in quality and in how often people label them (labels random
//! within a cohort only), estimated per cohort and combined with the cohorts' shares
//! (`stats::ppi::stratified`), as `evalloop estimate` does.
//!
//! Each draw: 6,000 requests in three cohorts (3,000 / 1,800 / 1,200) with labelling probabilities
//! 0.03 / 0.08 / 0.2; an evaluator that predicts the human score with noise. Checked: the
//! PPI++ and classical intervals each cover the true mean in at least 93% of the draws; with a
//! good evaluator the PPI++ interval is narrower than the classical one on average; with a
//! useless one power tuning keeps it within 10% of the classical width. Figures are printed
//! (`cargo test --release --test integration ppi_coverage:: -- --nocapture`).

use evalloop::stats::ppi::{IntervalKind, PpiMean, ppi_mean, stratified};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DRAWS: usize = 1000;
/// The interval `evalloop estimate` reports.
const KIND: IntervalKind = IntervalKind::SmallSample;
const SIZES: [usize; 3] = [3000, 1800, 1200];
const LABEL_P: [f64; 3] = [0.03, 0.08, 0.2];

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One request: (human score, evaluator prediction) for cohort `c`.
type Draw = fn(&mut ChaCha8Rng, usize) -> (f64, f64);

struct Figures {
    ppi_coverage: f64,
    classical_coverage: f64,
    ppi_width: f64,
    classical_width: f64,
    effective_labels: f64,
    labels: f64,
}

fn simulate(seed: u64, truth: f64, draw: Draw) -> Figures {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let total: usize = SIZES.iter().sum();
    let (mut ppi_hits, mut classical_hits) = (0, 0);
    let (mut ppi_width, mut classical_width, mut effective, mut labels) = (0.0, 0.0, 0.0, 0.0);
    let mut runs = 0;
    while runs < DRAWS {
        let mut strata: Vec<(PpiMean, f64)> = Vec::new();
        for (c, (&size, &p)) in SIZES.iter().zip(&LABEL_P).enumerate() {
            let (mut y, mut yhat, mut u) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..size {
                let (h, e) = draw(&mut rng, c);
                if rng.random::<f64>() < p {
                    y.push(h);
                    yhat.push(e);
                } else {
                    u.push(e);
                }
            }
            if let Ok(m) = ppi_mean(&y, &yhat, &u, None, KIND, 0.95) {
                strata.push((m, size as f64 / total as f64));
            }
        }
        if strata.len() < SIZES.len() {
            continue; // a cohort drew fewer than 2 labels: `estimate` would say so; draw again
        }
        let s = stratified(&strata, 0.95).expect("three strata");
        runs += 1;
        ppi_hits += usize::from(s.ppi.lower <= truth && truth <= s.ppi.upper);
        classical_hits += usize::from(s.classical.lower <= truth && truth <= s.classical.upper);
        ppi_width += s.ppi.width();
        classical_width += s.classical.width();
        effective += s.effective_labels;
        labels += s.n_labelled as f64;
    }
    let n = DRAWS as f64;
    Figures {
        ppi_coverage: ppi_hits as f64 / n,
        classical_coverage: classical_hits as f64 / n,
        ppi_width: ppi_width / n,
        classical_width: classical_width / n,
        effective_labels: effective / n,
        labels: labels / n,
    }
}

fn report(name: &str, f: &Figures) {
    eprintln!(
        "{name}: coverage ppi {:.3} classical {:.3}; mean width ppi {:.4} classical {:.4} (ratio {:.3}); \
         labels {:.1}, effective {:.1}",
        f.ppi_coverage,
        f.classical_coverage,
        f.ppi_width,
        f.classical_width,
        f.ppi_width / f.classical_width,
        f.labels,
        f.effective_labels
    );
}

const MEANS: [f64; 3] = [3.6, 3.0, 2.2];
const PASS: [f64; 3] = [0.7, 0.5, 0.3];

fn share_weighted(v: [f64; 3]) -> f64 {
    let total: usize = SIZES.iter().sum();
    v.iter().zip(SIZES).map(|(m, s)| m * s as f64 / total as f64).sum()
}

#[test]
fn mean_score_intervals_cover_and_a_good_evaluator_narrows_them() {
    let draw: Draw = |rng, c| {
        let h = MEANS[c] + normal(rng);
        (h, h + 0.4 * normal(rng))
    };
    let f = simulate(1, share_weighted(MEANS), draw);
    report("mean score, good evaluator", &f);
    assert!(f.ppi_coverage >= 0.93 && f.classical_coverage >= 0.93);
    assert!(f.ppi_width < 0.8 * f.classical_width);
    assert!(f.effective_labels > 1.5 * f.labels);
}

#[test]
fn pass_rate_intervals_cover_and_a_good_evaluator_narrows_them() {
    let draw: Draw = |rng, c| {
        // The evaluator's probability of a pass: a noisy, informative score in [0, 1].
        let pass = rng.random::<f64>() < PASS[c];
        let p = (if pass { 0.7 } else { 0.3 } + 0.15 * normal(rng)).clamp(0.0, 1.0);
        (f64::from(u8::from(pass)), p)
    };
    let f = simulate(2, share_weighted(PASS), draw);
    report("pass rate, good evaluator", &f);
    assert!(f.ppi_coverage >= 0.93 && f.classical_coverage >= 0.93);
    assert!(f.ppi_width < f.classical_width);
}

#[test]
fn a_useless_evaluator_costs_little_width_and_keeps_coverage() {
    let draw: Draw = |rng, c| (MEANS[c] + normal(rng), 3.0 + normal(rng));
    let f = simulate(3, share_weighted(MEANS), draw);
    report("mean score, useless evaluator", &f);
    assert!(f.ppi_coverage >= 0.93);
    assert!(f.ppi_width < 1.1 * f.classical_width);
}

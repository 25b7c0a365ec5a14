//! The sampling design of a queue: inclusion probabilities proportional to a strategy's
//! priorities with a uniform floor, a fixed-size systematic draw that honours them exactly, and
//! the inverse-probability (Hajek) estimate of a mean that the labels then support.
//!
//! # The design
//! A strategy gives every request `i` of the population (N requests) a priority `s_i >= 0`. Its
//! selection weight mixes the normalised priority with a uniform floor `f` (default 0.2):
//! `w_i = f / N + (1 - f) * s_i / sum(s)` (all-zero priorities make the weights uniform). The
//! inclusion probabilities are `pi_i = min(1, c * w_i)` with `c` chosen so that `sum(pi) = n`
//! (requests whose probability reaches 1 are taken for sure and `c` is solved again for the
//! rest, as in Tillé's algorithm for fixed-size pi-ps designs). Then every request has
//! `pi_i >= f * n / N` (below the cap), so its inverse-probability weight is at most
//! `N / (f * n)`.
//!
//! The draw is randomised systematic sampling (Goodman and Kish 1950; Hartley and Rao 1962): the
//! requests in a seeded random order, their probabilities laid end to end on `[0, n)`, and the
//! requests hit by the points `u, u + 1, ..., u + n - 1` for one uniform `u` in `[0, 1)` are
//! taken. Each request is taken with probability exactly `pi_i` and the sample has exactly `n`
//! requests. `random` (all priorities equal) is then `pi_i = n / N` for everyone.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::stats::Undefined;

/// Inclusion probabilities for a sample of `n` of `weights.len()` requests: `min(1, c * w_i)`
/// summing to `n` (see the module docs). `weights` must be finite and positive; `n` at most
/// their number.
pub fn inclusion_probabilities(weights: &[f64], n: usize) -> Vec<f64> {
    let big_n = weights.len();
    if n >= big_n {
        return vec![1.0; big_n];
    }
    let mut pi = vec![0.0; big_n];
    let mut certain = vec![false; big_n];
    let mut left = n as f64;
    loop {
        let rest: f64 = weights.iter().zip(&certain).filter(|(_, c)| !**c).map(|(w, _)| *w).sum();
        let c = left / rest;
        let mut changed = false;
        for i in 0..big_n {
            if !certain[i] && c * weights[i] >= 1.0 {
                certain[i] = true;
                left -= 1.0;
                changed = true;
            }
        }
        if !changed {
            for i in 0..big_n {
                pi[i] = if certain[i] { 1.0 } else { c * weights[i] };
            }
            return pi;
        }
    }
}

/// The selection weights of priorities `s` with uniform floor `floor` in [0, 1]:
/// `floor / N + (1 - floor) * s_i / sum(s)`; uniform when every priority is 0.
pub fn floored_weights(priorities: &[f64], floor: f64) -> Vec<f64> {
    let big_n = priorities.len() as f64;
    let total: f64 = priorities.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return vec![1.0 / big_n; priorities.len()];
    }
    priorities.iter().map(|s| floor / big_n + (1.0 - floor) * s / total).collect()
}

/// Randomised systematic sampling with inclusion probabilities `pi` (summing to an integer
/// `n`): the indices taken, in the draw's order. Seeded: the same `pi` and `seed` take the same
/// requests.
pub fn systematic_sample(pi: &[f64], seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..pi.len()).collect();
    // Fisher-Yates with the seeded generator.
    for i in (1..order.len()).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    let n = pi.iter().sum::<f64>().round() as usize;
    let u: f64 = rng.random_range(0.0..1.0);
    let mut taken = Vec::with_capacity(n);
    let mut cum = 0.0;
    let mut next = u;
    for &i in &order {
        let end = cum + pi[i];
        // A request is hit when a point falls in (cum, end]; with pi_i <= 1 at most one does.
        while next < end - 1e-12 && taken.len() < n {
            if taken.last() != Some(&i) {
                taken.push(i);
            }
            next += 1.0;
        }
        cum = end;
    }
    taken
}

/// An inverse-probability estimate of a mean with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct IpwMean {
    /// The Hajek estimate `sum(y_i / pi_i) / sum(1 / pi_i)`.
    pub mean: f64,
    /// Its standard error (linearised, with-replacement approximation; conservative for
    /// sampling without replacement).
    pub std_error: f64,
    /// `mean -/+ 1.96 * std_error`.
    pub low: f64,
    pub high: f64,
    /// Labelled requests it rests on.
    pub n: usize,
}

/// The Hajek estimate of the population mean of `y` from a sample with inclusion
/// probabilities `pi` (pairs `(y_i, pi_i)`); undefined below two values.
pub fn ipw_mean(values: &[(f64, f64)]) -> Result<IpwMean, Undefined> {
    let n = values.len();
    if n < 2 {
        return Err(Undefined::new(format!("{n} labelled request(s); an interval needs at least 2")));
    }
    if let Some((_, p)) = values.iter().find(|(_, p)| !(*p > 0.0 && *p <= 1.0)) {
        return Err(Undefined::new(format!("inclusion probability {p} is not in (0, 1]")));
    }
    let wsum: f64 = values.iter().map(|(_, p)| 1.0 / p).sum();
    let mean = values.iter().map(|(y, p)| y / p).sum::<f64>() / wsum;
    // Linearisation: z_i = (y_i - mean) / pi_i; var = n / (n - 1) * sum(z^2) / wsum^2.
    let ss: f64 = values.iter().map(|(y, p)| ((y - mean) / p).powi(2)).sum();
    let var = n as f64 / (n as f64 - 1.0) * ss / (wsum * wsum);
    let se = var.sqrt();
    Ok(IpwMean { mean, std_error: se, low: mean - 1.96 * se, high: mean + 1.96 * se, n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_the_size_and_cap_at_one() {
        let w = [10.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let pi = inclusion_probabilities(&w, 3);
        assert!((pi.iter().sum::<f64>() - 3.0).abs() < 1e-12);
        assert_eq!(pi[0], 1.0);
        for p in &pi[1..] {
            assert!((p - 0.4).abs() < 1e-12, "{pi:?}");
        }
        assert_eq!(inclusion_probabilities(&[1.0, 2.0], 5), vec![1.0, 1.0]);
    }

    #[test]
    fn the_floor_bounds_every_probability_from_below() {
        let s: Vec<f64> = (0..100).map(|i| if i < 5 { 100.0 } else { 0.0 }).collect();
        let pi = inclusion_probabilities(&floored_weights(&s, 0.2), 10);
        let min = pi.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(min >= 0.2 * 10.0 / 100.0 - 1e-12, "{min}");
        assert_eq!(floored_weights(&[0.0, 0.0], 0.2), vec![0.5, 0.5]);
    }

    #[test]
    fn systematic_draws_take_n_distinct_requests_with_their_probabilities() {
        let w: Vec<f64> = (0..20).map(|i| 1.0 + i as f64).collect();
        let pi = inclusion_probabilities(&w, 5);
        let mut hits = [0usize; 20];
        let reps = 20_000;
        for seed in 0..reps {
            let s = systematic_sample(&pi, seed);
            assert_eq!(s.len(), 5);
            let mut d = s.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 5);
            for i in s {
                hits[i] += 1;
            }
        }
        for i in 0..20 {
            let f = hits[i] as f64 / reps as f64;
            // Binomial standard error at most 0.0036; 5 of them.
            assert!((f - pi[i]).abs() < 0.018, "request {i}: drawn {f}, pi {}", pi[i]);
        }
        assert_eq!(systematic_sample(&pi, 7), systematic_sample(&pi, 7));
    }

    #[test]
    fn hajek_mean_matches_a_hand_computation() {
        // y = 1, 2, 4 with pi = 0.5, 0.25, 1: weights 2, 4, 1; mean (2 + 8 + 4) / 7 = 2.
        let m = ipw_mean(&[(1.0, 0.5), (2.0, 0.25), (4.0, 1.0)]).unwrap();
        assert!((m.mean - 2.0).abs() < 1e-12);
        // z = -2, 0, 2; sum z^2 = 8; var = 3/2 * 8 / 49.
        assert!((m.std_error - (12.0f64 / 49.0).sqrt()).abs() < 1e-12);
        assert!(ipw_mean(&[(1.0, 0.5)]).is_err());
        assert!(ipw_mean(&[(1.0, 0.0), (1.0, 0.5)]).is_err());
    }
}

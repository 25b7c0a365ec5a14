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
    /// Its standard error (linearised, with-replacement approximation over the sampling units;
    /// conservative for sampling without replacement).
    pub std_error: f64,
    /// `mean -/+ t * std_error`, `t` the 97.5% quantile of Student's t with `units - 1`
    /// degrees of freedom (the usual small-sample rule for a design with few units).
    pub low: f64,
    pub high: f64,
    /// Labelled requests it rests on.
    pub n: usize,
    /// Sampling units among them: the requests, or the prompt groups of a whole-group queue.
    pub units: usize,
}

/// The Hajek estimate of the population mean of `y` from a sample with inclusion
/// probabilities `pi` (pairs `(y_i, pi_i)`), each request its own sampling unit; undefined below
/// two values.
pub fn ipw_mean(values: &[(f64, f64)]) -> Result<IpwMean, Undefined> {
    let units: Vec<usize> = (0..values.len()).collect();
    ipw_mean_clustered(values, &units)
}

/// Checks the shared preconditions of the weighted estimates: at least two sampling units,
/// probabilities in (0, 1]; returns the number of units.
fn check_sample(probabilities: impl Iterator<Item = f64>, units: &[usize]) -> Result<usize, Undefined> {
    for p in probabilities {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Undefined::new(format!("inclusion probability {p} is not in (0, 1]")));
        }
    }
    let mut distinct = units.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        return Err(Undefined::new(format!(
            "{} labelled sampling unit(s); an interval needs at least 2",
            distinct.len()
        )));
    }
    Ok(distinct.len())
}

/// The with-replacement variance of a Hajek-type estimate from per-request linearised values
/// `z_i` (already divided by `pi_i`): the sum over units of the squared unit totals, times
/// `m / (m - 1)` for `m` units, over `wsum^2`.
fn unit_variance(z: &[f64], units: &[usize], m: usize, wsum: f64) -> f64 {
    let mut totals: std::collections::HashMap<usize, f64> = std::collections::HashMap::new();
    for (zi, u) in z.iter().zip(units) {
        *totals.entry(*u).or_default() += zi;
    }
    let ss: f64 = totals.values().map(|t| t * t).sum();
    m as f64 / (m as f64 - 1.0) * ss / (wsum * wsum)
}

/// [`ipw_mean`] with sampling units: `units[i]` names the unit (prompt group) request `i` was
/// drawn with. The requests of one unit were drawn together, so the variance sums their
/// linearised values per unit before squaring (Horvitz-Thompson for cluster samples); with each
/// request its own unit this is [`ipw_mean`].
pub fn ipw_mean_clustered(values: &[(f64, f64)], units: &[usize]) -> Result<IpwMean, Undefined> {
    assert_eq!(values.len(), units.len(), "one unit per value");
    let m = check_sample(values.iter().map(|v| v.1), units)?;
    let n = values.len();
    let wsum: f64 = values.iter().map(|(_, p)| 1.0 / p).sum();
    let mean = values.iter().map(|(y, p)| y / p).sum::<f64>() / wsum;
    // Linearisation: z_i = (y_i - mean) / pi_i.
    let z: Vec<f64> = values.iter().map(|(y, p)| (y - mean) / p).collect();
    let se = unit_variance(&z, units, m, wsum).sqrt();
    let t = t_975(m);
    Ok(IpwMean { mean, std_error: se, low: mean - t * se, high: mean + t * se, n, units: m })
}

/// The 97.5% quantile of Student's t with `units - 1` degrees of freedom (`units` >= 2).
pub fn t_975(units: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    StudentsT::new(0.0, 1.0, (units - 1) as f64).map_or(1.96, |t| t.inverse_cdf(0.975))
}

/// An inverse-probability estimate of a Pearson correlation with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct IpwCorrelation {
    /// The weighted Pearson correlation, weights `1 / pi_i`: a consistent estimate of the
    /// population's correlation.
    pub r: f64,
    /// Its linearised standard error (over the sampling units, as [`IpwMean`]'s).
    pub std_error: f64,
    /// The 95% interval, formed on Fisher's z scale: `tanh(atanh(r) -/+ t * se / (1 - r^2))`, `t`
    /// as in [`IpwMean`].
    pub low: f64,
    pub high: f64,
    pub n: usize,
    pub units: usize,
}

/// The population Pearson correlation of `x` and `y` from a sample with inclusion probabilities
/// (`(x_i, y_i, pi_i)`), `units` as in [`ipw_mean_clustered`]. The standard error linearises
/// `r` through its influence values `u_i v_i - r (u_i^2 + v_i^2) / 2` (u, v the standardised
/// x, y); undefined below two units or when either variable is constant.
pub fn ipw_correlation(values: &[(f64, f64, f64)], units: &[usize]) -> Result<IpwCorrelation, Undefined> {
    assert_eq!(values.len(), units.len(), "one unit per value");
    let m = check_sample(values.iter().map(|v| v.2), units)?;
    let wsum: f64 = values.iter().map(|v| 1.0 / v.2).sum();
    let wmean = |f: &dyn Fn(&(f64, f64, f64)) -> f64| values.iter().map(|v| f(v) / v.2).sum::<f64>() / wsum;
    let (mx, my) = (wmean(&|v| v.0), wmean(&|v| v.1));
    let sx = wmean(&|v| (v.0 - mx).powi(2)).sqrt();
    let sy = wmean(&|v| (v.1 - my).powi(2)).sqrt();
    if !(sx > 0.0 && sy > 0.0) {
        return Err(Undefined::new("a constant variable among the labelled requests: no correlation"));
    }
    let r = (wmean(&|v| (v.0 - mx) * (v.1 - my)) / (sx * sy)).clamp(-1.0, 1.0);
    let z: Vec<f64> = values
        .iter()
        .map(|v| {
            let (u, w) = ((v.0 - mx) / sx, (v.1 - my) / sy);
            (u * w - r * (u * u + w * w) / 2.0) / v.2
        })
        .collect();
    let se = unit_variance(&z, units, m, wsum).sqrt();
    let (low, high) = if r.abs() < 1.0 {
        let (zr, zse, t) = (r.atanh(), se / (1.0 - r * r), t_975(m));
        ((zr - t * zse).tanh(), (zr + t * zse).tanh())
    } else {
        (r, r)
    };
    Ok(IpwCorrelation { r, std_error: se, low, high, n: values.len(), units: m })
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
        // z = -2, 0, 2; sum z^2 = 8; var = 3/2 * 8 / 49; t with 2 df: 4.302653.
        assert!((m.std_error - (12.0f64 / 49.0).sqrt()).abs() < 1e-12);
        assert!((m.high - m.mean - 4.302653 * m.std_error).abs() < 1e-5, "{m:?}");
        assert!(ipw_mean(&[(1.0, 0.5)]).is_err());
        assert!(ipw_mean(&[(1.0, 0.0), (1.0, 0.5)]).is_err());
    }

    #[test]
    fn clustered_mean_sums_each_unit_before_squaring() {
        // Each request its own unit: the plain estimate.
        let v = [(1.0, 0.5), (2.0, 0.25), (4.0, 1.0)];
        assert_eq!(ipw_mean_clustered(&v, &[0, 1, 2]).unwrap(), ipw_mean(&v).unwrap());
        // Units {0, 1} and {2}: z = -2, 0, 2 -> unit totals -2, 2; var = 2/1 * 8 / 49.
        let m = ipw_mean_clustered(&v, &[5, 5, 9]).unwrap();
        assert!((m.mean - 2.0).abs() < 1e-12);
        assert!((m.std_error - (16.0f64 / 49.0).sqrt()).abs() < 1e-12);
        assert_eq!((m.n, m.units), (3, 2));
        // One unit: no interval.
        assert!(ipw_mean_clustered(&v, &[1, 1, 1]).is_err());
    }

    /// A seeded normal deviate (Box-Muller).
    fn gauss(rng: &mut ChaCha8Rng) -> f64 {
        let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    #[test]
    fn weighted_correlation_is_pearson_under_equal_weights() {
        let x = [0.1, 0.4, 0.35, 0.8, 0.6, 0.2];
        let y = [1.0, 3.0, 2.0, 5.0, 4.0, 2.0];
        let v: Vec<(f64, f64, f64)> = x.iter().zip(&y).map(|(a, b)| (*a, *b, 0.3)).collect();
        let c = ipw_correlation(&v, &[0, 1, 2, 3, 4, 5]).unwrap();
        let pearson = crate::stats::corr::pearson(&x, &y).unwrap().estimate;
        assert!((c.r - pearson).abs() < 1e-12, "{} vs {pearson}", c.r);
        assert!(c.low < c.r && c.r < c.high);
        let constant: Vec<(f64, f64, f64)> = x.iter().map(|a| (*a, 2.0, 0.3)).collect();
        assert!(ipw_correlation(&constant, &[0, 1, 2, 3, 4, 5]).is_err());
    }

    /// The intervals cover the population's values about 95% of the time under an unequal
    /// probability draw of whole groups (simulated population, 400 draws).
    #[test]
    fn intervals_cover_the_population_under_a_cluster_draw() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        // 300 groups of 4 requests; a shared group effect makes requests of a group alike.
        let (groups, size) = (300usize, 4usize);
        let mut pop: Vec<(f64, f64, usize)> = Vec::new();
        for g in 0..groups {
            let effect = gauss(&mut rng);
            for _ in 0..size {
                let x = effect + gauss(&mut rng);
                let y = 0.5 * x + 0.7 * effect + gauss(&mut rng);
                pop.push((x, y, g));
            }
        }
        let n = pop.len() as f64;
        let mean_y = pop.iter().map(|p| p.1).sum::<f64>() / n;
        let (mx, my) = (pop.iter().map(|p| p.0).sum::<f64>() / n, mean_y);
        let cov = pop.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>();
        let r_true = cov
            / (pop.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>().sqrt()
                * pop.iter().map(|p| (p.1 - my).powi(2)).sum::<f64>().sqrt());
        // Groups drawn with probability rising with their mean x.
        let prio: Vec<f64> = (0..groups)
            .map(|g| {
                let gx = pop[g * size..(g + 1) * size].iter().map(|p| p.0).sum::<f64>() / size as f64;
                (gx + 3.0).max(0.1)
            })
            .collect();
        let pi = inclusion_probabilities(&floored_weights(&prio, 0.2), 40);
        let (mut mean_hits, mut r_hits, mut naive_hits) = (0, 0, 0);
        let draws = 400;
        for d in 0..draws {
            let taken = systematic_sample(&pi, 1000 + d);
            let mut ys = Vec::new();
            let mut xys = Vec::new();
            let mut units = Vec::new();
            for &g in &taken {
                for p in &pop[g * size..(g + 1) * size] {
                    ys.push((p.1, pi[g]));
                    xys.push((p.0, p.1, pi[g]));
                    units.push(g);
                }
            }
            let m = ipw_mean_clustered(&ys, &units).unwrap();
            mean_hits += usize::from(m.low <= mean_y && mean_y <= m.high);
            let c = ipw_correlation(&xys, &units).unwrap();
            r_hits += usize::from(c.low <= r_true && r_true <= c.high);
            // Treating the requests as independent understates the variance.
            let naive = ipw_mean(&ys).unwrap();
            naive_hits += usize::from(naive.low <= mean_y && mean_y <= naive.high);
        }
        let rate = |h: usize| h as f64 / draws as f64;
        assert!((0.91..=0.985).contains(&rate(mean_hits)), "mean coverage {}", rate(mean_hits));
        assert!((0.91..=0.985).contains(&rate(r_hits)), "correlation coverage {}", rate(r_hits));
        assert!(rate(naive_hits) < rate(mean_hits) - 0.05, "naive {} vs {}", rate(naive_hits), rate(mean_hits));
    }
}

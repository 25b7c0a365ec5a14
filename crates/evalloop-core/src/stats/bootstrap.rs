//! Seeded percentile bootstrap: the resampling engine behind every bootstrap interval here.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use super::check_level;
use super::{Undefined, quantile_sorted};

/// Bootstrap settings. Defaults: 2000 resamples, seed 0, level 0.95.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootstrapConfig {
    /// Number of resamples drawn (default 2000).
    pub n_resamples: usize,
    /// Seed of the ChaCha20 generator (default 0); the same seed gives the same interval.
    pub seed: u64,
    /// Confidence level in (0, 1) (default 0.95).
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig { n_resamples: 2000, seed: 0, level: 0.95 }
    }
}

/// A percentile-bootstrap confidence interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootstrapCi {
    /// The statistic on the original sample.
    pub estimate: f64,
    /// Confidence level in (0, 1).
    pub level: f64,
    /// The (1 - level)/2 percentile of the resampled statistics (numpy linear interpolation).
    pub lower: f64,
    /// The (1 + level)/2 percentile of the resampled statistics.
    pub upper: f64,
    /// Resamples drawn.
    pub n_resamples: usize,
    /// Resamples where the statistic was defined (the interval uses only these).
    pub n_valid: usize,
    /// The generator seed.
    pub seed: u64,
}

/// Runs `cfg.n_resamples` draws of `resample` (which draws its own indices from the seeded
/// generator and returns the statistic, or `None` when undefined on that resample) and
/// returns the percentile interval around `estimate`. Undefined when fewer than half the
/// resamples give a defined statistic, or for zero resamples or a bad level.
pub fn percentile_bootstrap(
    estimate: f64,
    cfg: &BootstrapConfig,
    mut resample: impl FnMut(&mut ChaCha20Rng) -> Option<f64>,
) -> Result<BootstrapCi, Undefined> {
    check_level(cfg.level)?;
    if cfg.n_resamples == 0 {
        return Err(Undefined::new("n_resamples = 0"));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
    let mut stats: Vec<f64> =
        (0..cfg.n_resamples).filter_map(|_| resample(&mut rng)).filter(|v| v.is_finite()).collect();
    if stats.len() * 2 < cfg.n_resamples {
        return Err(Undefined::new(format!(
            "only {} of {} bootstrap resamples were defined",
            stats.len(),
            cfg.n_resamples
        )));
    }
    stats.sort_unstable_by(f64::total_cmp);
    let alpha = (1.0 - cfg.level) / 2.0;
    Ok(BootstrapCi {
        estimate,
        level: cfg.level,
        lower: quantile_sorted(&stats, alpha),
        upper: quantile_sorted(&stats, 1.0 - alpha),
        n_resamples: cfg.n_resamples,
        n_valid: stats.len(),
        seed: cfg.seed,
    })
}

/// A uniform index in `0..n` (n > 0) from the bootstrap generator.
pub fn draw_index(rng: &mut ChaCha20Rng, n: usize) -> usize {
    rng.random_range(0..n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_interval_other_seed_differs() {
        let data: Vec<f64> = (0..50).map(|i| ((i * 37) % 11) as f64).collect();
        let mean_of = |seed| {
            let cfg = BootstrapConfig { n_resamples: 500, seed, level: 0.9 };
            percentile_bootstrap(5.0, &cfg, |rng| {
                let s: f64 = (0..data.len()).map(|_| data[draw_index(rng, data.len())]).sum();
                Some(s / data.len() as f64)
            })
            .unwrap()
        };
        let (a, b, c) = (mean_of(1), mean_of(1), mean_of(2));
        assert_eq!(a, b);
        assert_ne!((a.lower, a.upper), (c.lower, c.upper));
        assert!(a.lower < a.upper);
    }

    #[test]
    fn mostly_undefined_resamples_make_the_interval_undefined() {
        let cfg = BootstrapConfig { n_resamples: 10, ..Default::default() };
        let mut k = 0;
        let r = percentile_bootstrap(0.0, &cfg, |_| {
            k += 1;
            (k % 3 == 0).then_some(1.0)
        });
        assert!(r.unwrap_err().reason.contains("only 3 of 10"));
    }
}

//! Rater noise for `simulate` (`[simulate.raters]`): each simulated person's own bias, and a
//! panel of reviewers who rate a share of the requests several times over.
//!
//! # The people
//! - A product user (`user-NNNN`) rates what the cohort model says plus a bias of their own,
//!   `b_u ~ N(0, user_bias_sd)`, drawn once per user from `hash(seed, "user-bias", user)`:
//!   `x = clamp(h5 + shift_c + b_u + noise, 1, 5)`. With `user_bias_sd = 0` (the default) `x`
//!   is as before.
//! - A reviewer of the panel (`rater-NN`, `panel` of them) has a bias `b_k ~ N(0, bias_sd)` and a
//!   noise level `s_k = noise_sd * (0.5 + v)`, `v ~ U(0, 1)`, drawn once per reviewer from
//!   `hash(seed, "panel-rater", rater)`. Reviewers rate the true score, not a cohort's view of
//!   it: `round(clamp(h5 + b_k + s_k z, 1, 5))`, `z ~ N(0, 1)`.
//!
//! # Which requests get several raters
//! Each logged request (held-out ones never) is, with probability `multi_rated`, put before
//! `per_request` distinct reviewers drawn uniformly from the panel, from a generator seeded by
//! `hash(seed, "panel", request_id)`: every reviewer leaves one overall `explicit_rating` and
//! one rating per extra dimension (`dimensions`, from that dimension's judgement, with the same
//! bias and a noise draw of its own). These come on top of the product user's feedback, so a
//! multi-rated request has `per_request` raters, or one more when its user also rated it. The
//! reviews arrive 1 to 25 hours after the request. With `multi_rated = 0` (the default) nothing
//! is added and the output is byte-identical to a simulation without the section.

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{hash64, standard_normal};

/// `[simulate.raters]`: every key optional, defaults as documented on each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaterNoise {
    /// Standard deviation of each product user's own bias, in 1-5 points; default 0.
    pub user_bias_sd: f64,
    /// Share of the logged requests that the review panel also rates, in [0, 1]; default 0.
    pub multi_rated: f64,
    /// Reviewers per multi-rated request (at least 2); default 3.
    pub per_request: u32,
    /// Reviewers in the panel (at least `per_request`); default 20.
    pub panel: u32,
    /// Standard deviation of a reviewer's bias, in 1-5 points; default 0.3.
    pub bias_sd: f64,
    /// A reviewer's typical noise, in 1-5 points (each has `noise_sd` times 0.5 to 1.5);
    /// default 0.5.
    pub noise_sd: f64,
}

impl Default for RaterNoise {
    fn default() -> Self {
        RaterNoise { user_bias_sd: 0.0, multi_rated: 0.0, per_request: 3, panel: 20, bias_sd: 0.3, noise_sd: 0.5 }
    }
}

/// One review: the reviewer, the rating per dimension (primary first), the delay in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub rater: String,
    pub ratings: Vec<u8>,
    pub delay_s: f64,
}

impl RaterNoise {
    /// Whether the section changes nothing (its defaults).
    pub fn is_off(&self) -> bool {
        self.user_bias_sd == 0.0 && self.multi_rated == 0.0
    }

    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.multi_rated) {
            return Err(format!("raters.multi_rated = {} is outside [0, 1]", self.multi_rated));
        }
        for (name, x) in [("user_bias_sd", self.user_bias_sd), ("bias_sd", self.bias_sd), ("noise_sd", self.noise_sd)] {
            if !(x >= 0.0 && x.is_finite()) {
                return Err(format!("raters.{name} = {x} must be >= 0"));
            }
        }
        if self.per_request < 2 {
            return Err(format!("raters.per_request = {} must be at least 2", self.per_request));
        }
        if self.panel < self.per_request {
            return Err(format!(
                "raters.panel = {} must be at least raters.per_request = {}",
                self.panel, self.per_request
            ));
        }
        Ok(())
    }

    /// A product user's own bias (0 without `user_bias_sd`).
    pub fn user_bias(&self, seed: &str, user: &str) -> f64 {
        if self.user_bias_sd == 0.0 {
            return 0.0;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(hash64(&[seed, "user-bias", user]));
        standard_normal(&mut rng) * self.user_bias_sd
    }

    /// Reviewer `k`'s name, bias and noise level.
    fn reviewer(&self, seed: &str, k: u32) -> (String, f64, f64) {
        let name = format!("rater-{:0width$}", k + 1, width = self.panel.to_string().len().max(2));
        let mut rng = ChaCha8Rng::seed_from_u64(hash64(&[seed, "panel-rater", &name]));
        let bias = standard_normal(&mut rng) * self.bias_sd;
        let noise = self.noise_sd * (0.5 + rng.random::<f64>());
        (name, bias, noise)
    }

    /// The panel's reviews of one request whose true 1-5 scores are `h5` (primary dimension
    /// first, then the extra ones), in reviewer order; empty unless the request is drawn.
    pub fn reviews(&self, seed: &str, request_id: &str, h5: &[f64]) -> Vec<Review> {
        if self.multi_rated == 0.0 {
            return Vec::new();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(hash64(&[seed, "panel", request_id]));
        if rng.random::<f64>() >= self.multi_rated {
            return Vec::new();
        }
        let mut chosen: Vec<u32> =
            sample(&mut rng, self.panel as usize, self.per_request as usize).into_iter().map(|k| k as u32).collect();
        chosen.sort_unstable();
        chosen
            .into_iter()
            .map(|k| {
                let (rater, bias, noise) = self.reviewer(seed, k);
                let ratings = h5
                    .iter()
                    .map(|h| (h + bias + noise * standard_normal(&mut rng)).clamp(1.0, 5.0).round() as u8)
                    .collect();
                let delay_s = 3600.0 * (1.0 + 24.0 * rng.random::<f64>());
                Review { rater, ratings, delay_s }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_add_nothing_and_validate() {
        let r = RaterNoise::default();
        assert!(r.is_off());
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(r.user_bias("7", "user-0001"), 0.0);
        assert!(r.reviews("7", "a", &[3.0]).is_empty());
    }

    #[test]
    fn reviews_are_deterministic_distinct_and_follow_the_share() {
        let r = RaterNoise { multi_rated: 0.4, per_request: 3, panel: 5, ..Default::default() };
        let all: Vec<Vec<Review>> = (0..500).map(|i| r.reviews("7", &format!("q{i}"), &[3.0, 1.0])).collect();
        let again: Vec<Vec<Review>> = (0..500).map(|i| r.reviews("7", &format!("q{i}"), &[3.0, 1.0])).collect();
        assert_eq!(all, again);
        let multi = all.iter().filter(|v| !v.is_empty()).count();
        assert!((160..=240).contains(&multi), "{multi} of 500 drawn at 0.4");
        for v in all.iter().filter(|v| !v.is_empty()) {
            assert_eq!(v.len(), 3);
            let names: std::collections::BTreeSet<&str> = v.iter().map(|x| x.rater.as_str()).collect();
            assert_eq!(names.len(), 3);
            assert!(v.iter().all(|x| x.ratings.len() == 2 && (1..=5).contains(&x.ratings[0])));
        }
        assert_ne!(all, (0..500).map(|i| r.reviews("8", &format!("q{i}"), &[3.0, 1.0])).collect::<Vec<_>>());
    }

    #[test]
    fn a_reviewers_bias_shows_in_their_ratings() {
        // No noise: every rating is round(h5 + bias), the same reviewer always the same.
        let r = RaterNoise {
            multi_rated: 1.0,
            per_request: 2,
            panel: 2,
            bias_sd: 1.0,
            noise_sd: 0.0,
            ..Default::default()
        };
        let (_, b1, _) = r.reviewer("7", 0);
        let (_, b2, _) = r.reviewer("7", 1);
        let v = r.reviews("7", "x", &[3.0]);
        assert_eq!(v[0].ratings[0], (3.0 + b1).clamp(1.0, 5.0).round() as u8);
        assert_eq!(v[1].ratings[0], (3.0 + b2).clamp(1.0, 5.0).round() as u8);
        assert_ne!(b1, b2);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let bad = |f: fn(&mut RaterNoise)| {
            let mut r = RaterNoise::default();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert!(bad(|r| r.multi_rated = 1.5).contains("raters.multi_rated"));
        assert!(bad(|r| r.per_request = 1).contains("raters.per_request"));
        assert!(bad(|r| r.panel = 2).contains("raters.panel = 2"));
        assert!(bad(|r| r.noise_sd = -1.0).contains("raters.noise_sd"));
    }
}

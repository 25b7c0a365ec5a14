//! Preference feedback for `simulate` (`[simulate.preferences]`): some product users compare
//! their output with another output of the same prompt group instead of rating it.
//!
//! # The model
//! When a request's explicit feedback is a rating (not a thumb), then with probability `share`
//! (drawn from `hash(seed, "preference", request_id)`, a stream of its own, so every other
//! draw is unchanged) the user instead leaves one `explicit_preference` between their output A
//! and an output B drawn uniformly from the other logged outputs of the group (the same
//! stream; a group with one logged output keeps the rating). The user perceives A as the
//! rating model says, `x_A = clamp(h5_A + shift_c + b_u + noise, 1, 5)`, and B the same way
//! with a noise draw of its own, `x_B = clamp(h5_B + shift_c + b_u + noise_B, 1, 5)`,
//! `noise_B ~ N(0, rating_noise)`, and chooses `a` when `x_A - x_B > tie_margin`, `b` when
//! `x_B - x_A > tie_margin`, else `tie`. The preference arrives when the rating would have; it
//! carries no dimension. With `share = 0` (the default) nothing changes and the output is
//! byte-identical to a simulation without the section; with `share = 1` every rating becomes a
//! preference, so "N ratings" and "N preferences" cost the same labelling budget.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{hash64, standard_normal};
use crate::record::Choice;

/// `[simulate.preferences]`: every key optional, defaults as documented on each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreferenceSim {
    /// Share of the would-be ratings that come as a preference instead, in [0, 1]; default 0.
    pub share: f64,
    /// Largest perceived difference, in 1-5 points, that a user calls a tie; default 0.25.
    pub tie_margin: f64,
}

impl Default for PreferenceSim {
    fn default() -> Self {
        PreferenceSim { share: 0.0, tie_margin: 0.25 }
    }
}

/// A drawn preference: output B's index among the candidates, and the choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drawn {
    pub other: usize,
    pub choice: Choice,
}

impl PreferenceSim {
    /// Whether the section adds nothing.
    pub fn is_off(&self) -> bool {
        self.share == 0.0
    }

    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.share) {
            return Err(format!("preferences.share = {} is outside [0, 1]", self.share));
        }
        if !(self.tie_margin >= 0.0 && self.tie_margin.is_finite()) {
            return Err(format!("preferences.tie_margin = {} must be >= 0", self.tie_margin));
        }
        Ok(())
    }

    /// Whether request `request_id`'s rating becomes a preference, and if so against which of
    /// `candidates` (the other logged outputs of its group, as their true 1-5 scores) and with
    /// what choice. `x_a` is the user's perception of A, `offset` the user's view of any output
    /// (`shift_c + b_u`), `rating_noise` the per-output noise sd.
    pub fn draw(
        &self,
        seed: &str,
        request_id: &str,
        x_a: f64,
        candidates: &[f64],
        offset: f64,
        rating_noise: f64,
    ) -> Option<Drawn> {
        if self.share == 0.0 || candidates.is_empty() {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(hash64(&[seed, "preference", request_id]));
        if rng.random::<f64>() >= self.share {
            return None;
        }
        let other = rng.random_range(0..candidates.len());
        let x_b = (candidates[other] + offset + standard_normal(&mut rng) * rating_noise).clamp(1.0, 5.0);
        let d = x_a - x_b;
        let choice = if d > self.tie_margin {
            Choice::A
        } else if -d > self.tie_margin {
            Choice::B
        } else {
            Choice::Tie
        };
        Some(Drawn { other, choice })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_draws_nothing_and_on_follows_the_share() {
        let off = PreferenceSim::default();
        assert!(off.draw("7", "q1", 3.0, &[2.0, 4.0], 0.0, 0.0).is_none());
        let half = PreferenceSim { share: 0.5, ..Default::default() };
        let n = (0..1000).filter(|i| half.draw("7", &format!("q{i}"), 3.0, &[2.0], 0.0, 0.0).is_some()).count();
        assert!((440..=560).contains(&n), "{n} of 1000 at share 0.5");
        assert!(half.draw("7", "q1", 3.0, &[], 0.0, 0.0).is_none(), "no other output, no preference");
    }

    #[test]
    fn the_choice_follows_the_perceived_difference() {
        let all = PreferenceSim { share: 1.0, tie_margin: 0.25 };
        let d = |x_a: f64, b: f64| all.draw("7", "q", x_a, &[b], 0.0, 0.0).unwrap().choice;
        assert_eq!(d(4.0, 2.0), Choice::A);
        assert_eq!(d(2.0, 4.0), Choice::B);
        assert_eq!(d(3.1, 3.0), Choice::Tie);
        // Deterministic per request, noise included.
        let noisy = |id: &str| all.draw("7", id, 3.0, &[3.0, 2.5, 3.5], 0.2, 1.0);
        assert_eq!(noisy("r1"), noisy("r1"));
        assert!(PreferenceSim { share: 1.5, ..Default::default() }.validate().unwrap_err().contains("share"));
    }
}

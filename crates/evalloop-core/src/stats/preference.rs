//! Pairwise preferences ("which of these two outputs is better"): an evaluator's accuracy
//! against people's choices with a bootstrap interval over pairs, the reliability matrix of
//! several people's choices on the same pair, and a Bradley-Terry fit of latent quality.

use serde::{Deserialize, Serialize};

use super::bootstrap::{BootstrapCi, BootstrapConfig, percentile_bootstrap};
use super::{Outcome, Undefined};
use rand::Rng;

/// A person's choice between output A and output B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// A is better.
    A,
    /// B is better.
    B,
    /// Neither.
    Tie,
}

impl Choice {
    /// The stored and wire form: `"a"`, `"b"` or `"tie"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::A => "a",
            Choice::B => "b",
            Choice::Tie => "tie",
        }
    }

    /// Parses `"a"`, `"b"` or `"tie"` (lower case, as stored).
    pub fn parse(s: &str) -> Option<Choice> {
        [Choice::A, Choice::B, Choice::Tie].into_iter().find(|c| c.as_str() == s)
    }

    /// The same judgement seen from the other side (A and B swapped).
    pub fn flipped(self) -> Choice {
        match self {
            Choice::A => Choice::B,
            Choice::B => Choice::A,
            Choice::Tie => Choice::Tie,
        }
    }

    /// The choice as a value on an ordinal scale, for reliability matrices: A = 0, tie = 1,
    /// B = 2.
    pub fn ordinal(self) -> f64 {
        match self {
            Choice::A => 0.0,
            Choice::Tie => 1.0,
            Choice::B => 2.0,
        }
    }
}

/// One judged pair: the evaluator's scores of A and B and a person's choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgedPair {
    /// The evaluator's score of output A.
    pub score_a: f64,
    /// The evaluator's score of output B.
    pub score_b: f64,
    /// What the person chose.
    pub choice: Choice,
}

/// How often the evaluator prefers the output people preferred.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairwiseAccuracy {
    /// Judged pairs given.
    pub pairs: usize,
    /// Pairs where the person chose A or B (the accuracy's denominator).
    pub decisive: usize,
    /// Pairs the person called a tie (left out of the accuracy).
    pub ties: usize,
    /// Decisive pairs where the evaluator scored A and B equally (each counts one half).
    pub evaluator_ties: usize,
    /// Share of decisive pairs where the evaluator scored the chosen output higher, an
    /// evaluator tie counting one half; in [0, 1], 0.5 is chance.
    pub accuracy: f64,
    /// Percentile bootstrap interval over the decisive pairs.
    pub ci: Outcome<BootstrapCi>,
}

fn credit(p: &JudgedPair) -> f64 {
    let d = p.score_a - p.score_b;
    match p.choice {
        _ if d == 0.0 => 0.5,
        Choice::A if d > 0.0 => 1.0,
        Choice::B if d < 0.0 => 1.0,
        _ => 0.0,
    }
}

/// The evaluator's pairwise accuracy against people's choices. People's ties are left out and
/// counted; an evaluator that scores the two outputs equally gets half a point. Undefined when
/// no pair is decisive or a score is not finite.
pub fn pairwise_accuracy(pairs: &[JudgedPair], cfg: &BootstrapConfig) -> Result<PairwiseAccuracy, Undefined> {
    if let Some(p) = pairs.iter().find(|p| !(p.score_a.is_finite() && p.score_b.is_finite())) {
        return Err(Undefined::new(format!("a score is not finite ({} vs {})", p.score_a, p.score_b)));
    }
    let decisive: Vec<f64> = pairs.iter().filter(|p| p.choice != Choice::Tie).map(credit).collect();
    if decisive.is_empty() {
        return Err(Undefined::new(if pairs.is_empty() {
            "no judged pair".to_string()
        } else {
            format!("all {} judged pairs are ties", pairs.len())
        }));
    }
    let n = decisive.len();
    let accuracy = decisive.iter().sum::<f64>() / n as f64;
    let ci = percentile_bootstrap(accuracy, cfg, |rng| {
        Some((0..n).map(|_| decisive[rng.random_range(0..n)]).sum::<f64>() / n as f64)
    });
    Ok(PairwiseAccuracy {
        pairs: pairs.len(),
        decisive: n,
        ties: pairs.len() - n,
        evaluator_ties: decisive.iter().filter(|c| **c == 0.5).count(),
        accuracy,
        ci: ci.into(),
    })
}

/// The reliability matrix of several people's choices on the same pairs: one row per pair
/// (in the order of `pairs`' keys), one column per person (in the order of their names), each
/// choice as [`Choice::ordinal`]; a person's later choice on a pair replaces an earlier one.
/// Feed it to [`super::agreement::rater_agreement`] (ordinal or nominal) for agreement between
/// raters on the same pair.
pub fn choice_units(choices: &[(String, String, Choice)]) -> Vec<Vec<Option<f64>>> {
    let mut by_pair: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, Choice>> = Default::default();
    for (pair, person, c) in choices {
        by_pair.entry(pair).or_default().insert(person, *c);
    }
    let people: std::collections::BTreeSet<&str> = by_pair.values().flat_map(|m| m.keys().copied()).collect();
    let column: std::collections::BTreeMap<&str, usize> = people.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    by_pair
        .values()
        .map(|m| {
            let mut row = vec![None; people.len()];
            for (p, c) in m {
                row[column[p]] = Some(c.ordinal());
            }
            row
        })
        .collect()
}

/// A Bradley-Terry fit: `P(i beats j) = p_i / (p_i + p_j)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BradleyTerry {
    /// `ln p_i` per item, centred to mean 0.
    pub log_strength: Vec<f64>,
    /// Iterations of the MM algorithm until the largest change of a log-strength was under
    /// 1e-10.
    pub iterations: usize,
}

/// Fits Bradley-Terry strengths to `comparisons` `(i, j, choice)` between items `0..n` by
/// maximum likelihood with Hunter's (2004) MM algorithm; a tie counts half a win for each
/// side. Undefined when an item is in no comparison, or when the items cannot be ranked on
/// finite strengths: some set of items never beats the rest (the graph of "beat or tied" is not
/// strongly connected), which puts the maximum at infinity.
pub fn bradley_terry(n: usize, comparisons: &[(usize, usize, Choice)]) -> Result<BradleyTerry, Undefined> {
    if n < 2 {
        return Err(Undefined::new("fewer than two items"));
    }
    let mut wins = vec![0.0; n];
    let mut games = vec![vec![0.0; n]; n];
    let mut beats = vec![Vec::new(); n];
    for &(i, j, c) in comparisons {
        if i >= n || j >= n || i == j {
            return Err(Undefined::new(format!("comparison ({i}, {j}) is not between two of {n} items")));
        }
        games[i][j] += 1.0;
        games[j][i] += 1.0;
        match c {
            Choice::A => {
                wins[i] += 1.0;
                beats[i].push(j);
            }
            Choice::B => {
                wins[j] += 1.0;
                beats[j].push(i);
            }
            Choice::Tie => {
                wins[i] += 0.5;
                wins[j] += 0.5;
                beats[i].push(j);
                beats[j].push(i);
            }
        }
    }
    if let Some(i) = (0..n).find(|&i| games[i].iter().sum::<f64>() == 0.0) {
        return Err(Undefined::new(format!("item {i} is in no comparison")));
    }
    let reach = |edges: &[Vec<usize>]| {
        let mut seen = vec![false; n];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(u) = stack.pop() {
            for &v in &edges[u] {
                if !seen[v] {
                    seen[v] = true;
                    stack.push(v);
                }
            }
        }
        seen.iter().all(|s| *s)
    };
    let mut beaten_by = vec![Vec::new(); n];
    for (i, js) in beats.iter().enumerate() {
        for &j in js {
            beaten_by[j].push(i);
        }
    }
    if !reach(&beats) || !reach(&beaten_by) {
        return Err(Undefined::new(
            "some items never beat the others (the comparisons are not strongly connected): their strengths are infinite",
        ));
    }
    let mut p = vec![1.0; n];
    for it in 1..=100_000 {
        let mut next: Vec<f64> = (0..n)
            .map(|i| {
                let denom: f64 = (0..n).filter(|&j| games[i][j] > 0.0).map(|j| games[i][j] / (p[i] + p[j])).sum();
                wins[i] / denom
            })
            .collect();
        let mean_log = next.iter().map(|x| x.ln()).sum::<f64>() / n as f64;
        for x in &mut next {
            *x /= mean_log.exp();
        }
        let change = next.iter().zip(&p).map(|(a, b)| (a.ln() - b.ln()).abs()).fold(0.0, f64::max);
        p = next;
        if change < 1e-10 {
            return Ok(BradleyTerry { log_strength: p.iter().map(|x| x.ln()).collect(), iterations: it });
        }
    }
    Err(Undefined::new("the MM iterations did not converge in 100000 steps"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BootstrapConfig {
        BootstrapConfig { n_resamples: 500, seed: 3, level: 0.95 }
    }

    #[test]
    fn accuracy_leaves_out_peoples_ties_and_halves_the_evaluators() {
        let p = |a, b, choice| JudgedPair { score_a: a, score_b: b, choice };
        let pairs = [
            p(0.9, 0.1, Choice::A),   // right
            p(0.2, 0.8, Choice::B),   // right
            p(0.7, 0.3, Choice::B),   // wrong
            p(0.5, 0.5, Choice::A),   // evaluator tie: one half
            p(0.1, 0.9, Choice::Tie), // left out
        ];
        let r = pairwise_accuracy(&pairs, &cfg()).unwrap();
        assert_eq!((r.pairs, r.decisive, r.ties, r.evaluator_ties), (5, 4, 1, 1));
        assert_eq!(r.accuracy, 2.5 / 4.0);
        let ci = r.ci.as_ref().unwrap();
        assert!(ci.lower <= r.accuracy && r.accuracy <= ci.upper && ci.lower >= 0.0 && ci.upper <= 1.0);
        assert_eq!(pairwise_accuracy(&pairs, &cfg()).unwrap(), r, "seeded: the same interval");
        let ties = pairwise_accuracy(&pairs[4..], &cfg()).unwrap_err();
        assert_eq!(ties.reason, "all 1 judged pairs are ties");
        assert!(pairwise_accuracy(&[p(f64::NAN, 0.0, Choice::A)], &cfg()).is_err());
    }

    #[test]
    fn choices_on_the_same_pair_form_a_reliability_matrix() {
        let c = |pair: &str, who: &str, ch| (pair.to_string(), who.to_string(), ch);
        let choices = [
            c("p2", "ann", Choice::B),
            c("p1", "bob", Choice::A),
            c("p1", "ann", Choice::Tie),
            c("p1", "ann", Choice::A), // replaces ann's tie
            c("p2", "cy", Choice::B),
        ];
        let units = choice_units(&choices);
        assert_eq!(units, vec![vec![Some(0.0), Some(0.0), None], vec![Some(2.0), None, Some(2.0)]]);
        let cfg = BootstrapConfig { n_resamples: 0, ..Default::default() };
        let r =
            crate::stats::agreement::rater_agreement(&units, crate::stats::agreement::MeasurementLevel::Nominal, &cfg);
        assert_eq!(r.items_used, 2);
        assert_eq!(r.percent_agreement.as_ref(), Some(&1.0));
    }

    #[test]
    fn two_items_have_the_closed_form_strength_ratio() {
        // 3 wins to 1: p_0 / p_1 = 3, with a tie counting half: 3.5 to 1.5.
        let c = [(0, 1, Choice::A), (0, 1, Choice::A), (1, 0, Choice::B), (0, 1, Choice::B)];
        let bt = bradley_terry(2, &c).unwrap();
        assert!((bt.log_strength[0] - bt.log_strength[1] - 3f64.ln()).abs() < 1e-9, "{bt:?}");
        let mut with_tie = c.to_vec();
        with_tie.push((0, 1, Choice::Tie));
        let bt = bradley_terry(2, &with_tie).unwrap();
        assert!((bt.log_strength[0] - bt.log_strength[1] - (3.5f64 / 1.5).ln()).abs() < 1e-9);
        assert!(bt.log_strength.iter().sum::<f64>().abs() < 1e-12);
    }

    /// The fit solves the likelihood equations: each item's wins equal its expected wins.
    #[test]
    fn the_fit_solves_the_score_equations() {
        let mut c = Vec::new();
        let outcomes = [Choice::A, Choice::B, Choice::A, Choice::Tie, Choice::A, Choice::B, Choice::A];
        for (k, (i, j)) in
            [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3), (0, 1), (2, 0), (3, 1), (1, 2)].into_iter().enumerate()
        {
            c.push((i, j, outcomes[k % outcomes.len()]));
        }
        let bt = bradley_terry(4, &c).unwrap();
        let p: Vec<f64> = bt.log_strength.iter().map(|x| x.exp()).collect();
        let mut wins = [0.0; 4];
        let mut expected = [0.0; 4];
        for &(i, j, ch) in &c {
            let (wi, wj) = match ch {
                Choice::A => (1.0, 0.0),
                Choice::B => (0.0, 1.0),
                Choice::Tie => (0.5, 0.5),
            };
            wins[i] += wi;
            wins[j] += wj;
            expected[i] += p[i] / (p[i] + p[j]);
            expected[j] += p[j] / (p[i] + p[j]);
        }
        for k in 0..4 {
            assert!((wins[k] - expected[k]).abs() < 1e-8, "item {k}: {} vs {}", wins[k], expected[k]);
        }
    }

    #[test]
    fn an_unbeaten_item_has_no_finite_strength() {
        let why = bradley_terry(3, &[(0, 1, Choice::A), (0, 2, Choice::A), (1, 2, Choice::Tie)]).unwrap_err();
        assert!(why.reason.contains("not strongly connected"), "{}", why.reason);
        assert!(bradley_terry(3, &[(0, 1, Choice::Tie)]).unwrap_err().reason.contains("item 2 is in no comparison"));
        assert!(bradley_terry(2, &[(0, 0, Choice::A)]).is_err());
    }
}

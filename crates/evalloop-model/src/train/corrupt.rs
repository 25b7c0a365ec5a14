//! Corrupted copies of logged outputs for the self-supervised ranking pairs
//! (`corruption_pairs`): each output must score above a copy made worse in one known way.
//!
//! A copy is drawn from a stream seeded by the run's seed and the example's position, so a run
//! repeats. Word-level families (`drop`, `swap`) damage fluency; sentence-level ones damage
//! coherence (`shuffle`, `remove`, `insert`, `repeat`, `truncate`) or relevance (`replace`,
//! `insert`: a sentence of another prompt's output); source-level ones damage consistency with
//! the prompt (`negate`, `number`, `entity`), in the way UniEval builds its pseudo-labels.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One way of making an output worse (`corruption`, and the keys of `corruption_mix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Corruption {
    /// About 30% of the words dropped, then two neighbours swapped (the copy is shorter).
    Drop,
    /// Word order only: `max(1, round(0.15 n))` swaps of two neighbouring words at random
    /// positions, so the copy has the same words and length and differs in fluency alone.
    Swap,
    /// The sentences in another order (needs two sentences).
    Shuffle,
    /// One sentence removed (needs two sentences).
    Remove,
    /// A sentence of another group's output inserted at a random sentence boundary.
    Insert,
    /// One sentence replaced by a sentence of another group's output.
    Replace,
    /// A span of 3 to 8 words repeated right after itself, as generators loop.
    Repeat,
    /// The output cut at a random word between 40% and 80% of its length, mid-sentence.
    Truncate,
    /// A negation added after the first auxiliary verb (`is` -> `is not`) or removed.
    Negate,
    /// A number changed to another one.
    Number,
    /// A capitalised word (a name) swapped for another one of the prompt that the output does
    /// not use.
    Entity,
}

impl Corruption {
    /// Every family, in the order of their names.
    pub const ALL: [Corruption; 11] = [
        Corruption::Drop,
        Corruption::Entity,
        Corruption::Insert,
        Corruption::Negate,
        Corruption::Number,
        Corruption::Remove,
        Corruption::Repeat,
        Corruption::Replace,
        Corruption::Shuffle,
        Corruption::Swap,
        Corruption::Truncate,
    ];

    /// Whether copies are drawn anew each epoch (every family but `drop`, which is drawn once
    /// per run as it always was).
    pub fn per_epoch(self) -> bool {
        self != Corruption::Drop
    }
}

/// What a copy may borrow from: the prompt of the output (for `entity`) and the output of
/// another group (for `insert` and `replace`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub prompt: &'a str,
    pub donor: Option<&'a str>,
}

/// The output's sentences: split after `.`, `!` or `?` followed by whitespace (the terminator
/// stays with its sentence). Tokenised text (`word .`) splits the same way.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?') && bytes.get(i + 1).is_some_and(|c| c.is_ascii_whitespace()) {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

fn rng_for(seed: u64, i: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A corrupted copy of `output` by `kind`, drawn from the stream of `seed` and position `i`.
/// `None` when the family does not apply (too few words or sentences, no number, no
/// auxiliary, no other name in the prompt, no donor) or when the copy would equal the output.
pub fn corrupt(output: &str, ctx: Context<'_>, seed: u64, i: usize, kind: Corruption) -> Option<String> {
    let mut rng = rng_for(seed, i);
    let copy = corrupt_with(output, ctx, &mut rng, kind)?;
    (copy.split_whitespace().ne(output.split_whitespace())).then_some(copy)
}

fn corrupt_with(output: &str, ctx: Context<'_>, rng: &mut ChaCha8Rng, kind: Corruption) -> Option<String> {
    let words: Vec<&str> = output.split_whitespace().collect();
    match kind {
        Corruption::Drop => {
            if words.len() < 2 {
                return None;
            }
            let mut keep: Vec<bool> = words.iter().map(|_| !rng.random_bool(0.3)).collect();
            if keep.iter().all(|&k| k) {
                keep[rng.random_range(0..words.len())] = false;
            }
            if !keep.iter().any(|&k| k) {
                keep[rng.random_range(0..words.len())] = true;
            }
            let mut kept: Vec<&str> = words.iter().zip(&keep).filter(|(_, k)| **k).map(|(w, _)| *w).collect();
            if kept.len() >= 2 {
                let j = rng.random_range(0..kept.len() - 1);
                kept.swap(j, j + 1);
            }
            Some(kept.join(" "))
        }
        Corruption::Swap => {
            if words.len() < 2 {
                return None;
            }
            let mut w = words.clone();
            for _ in 0..((0.15 * w.len() as f64).round() as usize).max(1) {
                let j = rng.random_range(0..w.len() - 1);
                w.swap(j, j + 1);
            }
            Some(w.join(" "))
        }
        Corruption::Shuffle => {
            let s = sentences(output);
            if s.len() < 2 {
                return None;
            }
            let mut order: Vec<usize> = (0..s.len()).collect();
            // Fisher-Yates; retried a few times when it draws the identity.
            for _ in 0..4 {
                for k in (1..order.len()).rev() {
                    order.swap(k, rng.random_range(0..=k));
                }
                if order.iter().enumerate().any(|(k, &o)| k != o) {
                    break;
                }
            }
            Some(order.iter().map(|&k| s[k]).collect::<Vec<_>>().join(" "))
        }
        Corruption::Remove => {
            let mut s = sentences(output);
            if s.len() < 2 {
                return None;
            }
            s.remove(rng.random_range(0..s.len()));
            Some(s.join(" "))
        }
        Corruption::Insert | Corruption::Replace => {
            let donor = sentences(ctx.donor?);
            if donor.is_empty() {
                return None;
            }
            let pick = donor[rng.random_range(0..donor.len())];
            let mut s = sentences(output);
            if s.is_empty() {
                return None;
            }
            if kind == Corruption::Insert {
                s.insert(rng.random_range(0..=s.len()), pick);
            } else {
                let k = rng.random_range(0..s.len());
                s[k] = pick;
            }
            Some(s.join(" "))
        }
        Corruption::Repeat => {
            if words.len() < 4 {
                return None;
            }
            let len = rng.random_range(3..=8usize).min(words.len() - 1);
            let start = rng.random_range(0..=words.len() - len);
            let mut w: Vec<&str> = words[..start + len].to_vec();
            w.extend_from_slice(&words[start..start + len]);
            w.extend_from_slice(&words[start + len..]);
            Some(w.join(" "))
        }
        Corruption::Truncate => {
            if words.len() < 5 {
                return None;
            }
            let lo = (words.len() as f64 * 0.4).ceil() as usize;
            let hi = ((words.len() as f64 * 0.8).floor() as usize).max(lo);
            let cut = rng.random_range(lo..=hi).clamp(1, words.len() - 1);
            Some(words[..cut].join(" "))
        }
        Corruption::Negate => {
            const AUX: [&str; 14] = [
                "is", "was", "are", "were", "has", "have", "had", "can", "will", "does", "did", "should", "would",
                "could",
            ];
            let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
            let at: Vec<usize> = (0..words.len()).filter(|&k| AUX.contains(&lower[k].as_str())).collect();
            if at.is_empty() {
                return None;
            }
            let k = at[rng.random_range(0..at.len())];
            let mut w: Vec<&str> = words.clone();
            match lower.get(k + 1).map(String::as_str) {
                Some("not") | Some("n't") => {
                    w.remove(k + 1);
                }
                _ => w.insert(k + 1, "not"),
            }
            Some(w.join(" "))
        }
        Corruption::Number => {
            let at: Vec<usize> = (0..words.len())
                .filter(|&k| words[k].chars().any(|c| c.is_ascii_digit()))
                .filter(|&k| words[k].chars().all(|c| c.is_ascii_digit() || matches!(c, ',' | '.' | '%' | '$')))
                .collect();
            if at.is_empty() {
                return None;
            }
            let k = at[rng.random_range(0..at.len())];
            // Every digit of the number replaced by a fresh one, the first one changed for sure.
            let mut changed = false;
            let new: String = words[k]
                .chars()
                .map(|c| match c.to_digit(10) {
                    Some(d) if !changed => {
                        changed = true;
                        char::from_digit((d + rng.random_range(1..=9u32)) % 10, 10).unwrap_or(c)
                    }
                    Some(_) => char::from_digit(rng.random_range(0..10u32), 10).unwrap_or(c),
                    None => c,
                })
                .collect();
            let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
            w[k] = new;
            Some(w.join(" "))
        }
        Corruption::Entity => {
            let is_name = |w: &str| {
                let mut c = w.chars();
                c.next().is_some_and(char::is_uppercase) && w.len() > 1 && c.all(char::is_alphabetic)
            };
            // Names not at a sentence start (where any word is capitalised).
            let at: Vec<usize> = (1..words.len())
                .filter(|&k| is_name(words[k]) && !matches!(words[k - 1], "." | "!" | "?"))
                .filter(|&k| !words[k - 1].ends_with(['.', '!', '?']))
                .collect();
            let in_output: std::collections::BTreeSet<&str> = words.iter().copied().collect();
            let mut others: Vec<&str> = ctx
                .prompt
                .split_whitespace()
                .enumerate()
                .filter(|(k, w)| *k > 0 && is_name(w) && !in_output.contains(w))
                .map(|(_, w)| w)
                .collect();
            others.sort_unstable();
            others.dedup();
            if at.is_empty() || others.is_empty() {
                return None;
            }
            let k = at[rng.random_range(0..at.len())];
            let mut w: Vec<&str> = words.clone();
            w[k] = others[rng.random_range(0..others.len())];
            Some(w.join(" "))
        }
    }
}

/// A copy drawn from a mixture: a family drawn by the weights of `mix` among those that apply to
/// this output (a family that gives no copy is dropped and the draw repeated). `None` when none
/// applies.
pub fn corrupt_mixed(
    output: &str,
    ctx: Context<'_>,
    seed: u64,
    i: usize,
    mix: &BTreeMap<Corruption, f64>,
) -> Option<(Corruption, String)> {
    let mut rng = rng_for(seed, i);
    let mut left: Vec<(Corruption, f64)> = mix.iter().filter(|(_, w)| **w > 0.0).map(|(k, w)| (*k, *w)).collect();
    while !left.is_empty() {
        let total: f64 = left.iter().map(|(_, w)| w).sum();
        let mut u = rng.random_range(0.0..total);
        let mut pick = left.len() - 1;
        for (k, (_, w)) in left.iter().enumerate() {
            if u < *w {
                pick = k;
                break;
            }
            u -= w;
        }
        let kind = left[pick].0;
        let family_seed = seed ^ (kind as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
        if let Some(copy) = corrupt(output, ctx, family_seed, i, kind) {
            return Some((kind, copy));
        }
        left.remove(pick);
    }
    None
}

/// `corrupt_output` kept for the single-family callers: `drop` and `swap` need no context.
pub fn corrupt_output(output: &str, seed: u64, i: usize, kind: Corruption) -> Option<String> {
    corrupt(output, Context::default(), seed, i, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str =
        "The mayor said 12 people were hurt . Police closed the road . Doctors say Smith is in hospital .";
    const SRC: &str = "Officials in Leeds said the mayor , Jones , met Smith and Brown on Monday .";
    const DONOR: &str = "Shares fell sharply . The bank cut rates .";

    #[test]
    fn sentences_split_after_terminators() {
        assert_eq!(
            sentences(OUT),
            vec![
                "The mayor said 12 people were hurt .",
                "Police closed the road .",
                "Doctors say Smith is in hospital ."
            ]
        );
        assert_eq!(sentences("no stop at all"), vec!["no stop at all"]);
        assert_eq!(sentences("a.b. c! d"), vec!["a.b.", "c!", "d"]);
        assert!(sentences("  ").is_empty());
    }

    #[test]
    fn every_family_is_deterministic_and_changes_the_output() {
        let ctx = Context { prompt: SRC, donor: Some(DONOR) };
        for kind in Corruption::ALL {
            let mut made = 0;
            for i in 0..20 {
                let c = corrupt(OUT, ctx, 7, i, kind);
                assert_eq!(c, corrupt(OUT, ctx, 7, i, kind), "{kind:?} {i}");
                if let Some(c) = c {
                    assert_ne!(c, OUT, "{kind:?}");
                    made += 1;
                }
            }
            assert_eq!(made, 20, "{kind:?} applies to every draw on this output");
        }
    }

    #[test]
    fn families_do_what_they_say() {
        let ctx = Context { prompt: SRC, donor: Some(DONOR) };
        let words = |s: &str| {
            let mut w: Vec<String> = s.split_whitespace().map(str::to_string).collect();
            w.sort();
            w
        };
        let shuffled = corrupt(OUT, ctx, 1, 0, Corruption::Shuffle).unwrap();
        assert_eq!(words(&shuffled), words(OUT));
        assert_eq!(sentences(&corrupt(OUT, ctx, 1, 0, Corruption::Remove).unwrap()).len(), 2);
        let inserted = corrupt(OUT, ctx, 1, 0, Corruption::Insert).unwrap();
        assert_eq!(sentences(&inserted).len(), 4);
        assert!(sentences(DONOR).iter().any(|d| inserted.contains(d)));
        let replaced = corrupt(OUT, ctx, 1, 0, Corruption::Replace).unwrap();
        assert_eq!(sentences(&replaced).len(), 3);
        assert!(sentences(DONOR).iter().any(|d| replaced.contains(d)));
        assert!(corrupt(OUT, ctx, 1, 0, Corruption::Repeat).unwrap().split_whitespace().count() > 20);
        let cut = corrupt(OUT, ctx, 1, 0, Corruption::Truncate).unwrap();
        assert!(OUT.starts_with(&cut) && cut.len() < OUT.len());
        let neg = corrupt(OUT, ctx, 1, 0, Corruption::Negate).unwrap();
        assert!(neg.contains(" not "), "{neg}");
        assert_eq!(corrupt("He is not here .", ctx, 1, 0, Corruption::Negate).unwrap(), "He is here .");
        let num = corrupt(OUT, ctx, 1, 0, Corruption::Number).unwrap();
        assert!(!num.contains(" 12 ") && num.split_whitespace().count() == OUT.split_whitespace().count(), "{num}");
        let ent = corrupt(OUT, ctx, 1, 0, Corruption::Entity).unwrap();
        assert!(
            !ent.contains("Smith") && ["Leeds", "Jones", "Brown", "Monday"].iter().any(|n| ent.contains(n)),
            "{ent}"
        );
        // What does not apply gives no copy.
        let one = "just one sentence here";
        assert_eq!(corrupt(one, ctx, 1, 0, Corruption::Shuffle), None);
        assert_eq!(corrupt(one, ctx, 1, 0, Corruption::Remove), None);
        assert_eq!(corrupt(one, ctx, 1, 0, Corruption::Number), None);
        assert_eq!(corrupt(one, ctx, 1, 0, Corruption::Negate), None);
        assert_eq!(corrupt(OUT, Context { prompt: SRC, donor: None }, 1, 0, Corruption::Insert), None);
        assert_eq!(corrupt(OUT, Context { prompt: "", donor: None }, 1, 0, Corruption::Entity), None);
    }

    #[test]
    fn mixtures_draw_by_weight_among_what_applies() {
        let ctx = Context { prompt: SRC, donor: Some(DONOR) };
        let mix: BTreeMap<Corruption, f64> =
            [(Corruption::Shuffle, 3.0), (Corruption::Number, 1.0), (Corruption::Drop, 0.0)].into();
        let mut count: BTreeMap<Corruption, usize> = BTreeMap::new();
        for i in 0..400 {
            let (k, c) = corrupt_mixed(OUT, ctx, 7, i, &mix).unwrap();
            assert_eq!(Some((k, c)), corrupt_mixed(OUT, ctx, 7, i, &mix));
            *count.entry(k).or_default() += 1;
        }
        assert_eq!(count.get(&Corruption::Drop), None);
        let shuffle = count[&Corruption::Shuffle] as f64 / 400.0;
        assert!((0.65..0.85).contains(&shuffle), "{count:?}");
        // One sentence, no number: shuffle and number do not apply, so nothing does.
        assert_eq!(corrupt_mixed("one plain sentence", ctx, 7, 0, &mix), None);
        // A family that does not apply falls through to the next that does.
        let (k, _) = corrupt_mixed("a b c 42 d", ctx, 7, 0, &mix).unwrap();
        assert_eq!(k, Corruption::Number);
    }
}

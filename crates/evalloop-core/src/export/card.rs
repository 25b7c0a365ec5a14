//! The export's dataset card: `card.json` (counts by label source, source and cohort, the
//! policy and weighting used, what was left out) and `README.md`, its rendering for people and
//! for the Hugging Face hub (whose `configs` header lets `load_dataset(DIR)` find the files).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ExportFormat, ExportKind};
use crate::dataset::Scheme;
use crate::feedback::HumanPolicy;

/// The card's file name in an export directory.
pub const CARD_FILE: &str = "card.json";
/// The version of the card's layout.
pub const CARD_VERSION: u32 = 1;

/// `card.json`. Fields in sorted order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportCard {
    /// Rows by label source (`human`, `evaluator`).
    pub by_label_source: BTreeMap<String, usize>,
    /// Rows and weights per cohort.
    pub by_cohort: BTreeMap<String, CohortCount>,
    /// Rows by source (`feedback`, `edit`, `score_margin`, `preference`, `evaluator`).
    pub by_source: BTreeMap<String, usize>,
    /// The window's cohort filter, when there was one.
    pub cohort: Option<String>,
    /// The evaluator whose test split is held out (and whose scores mark disagreements).
    pub evaluator: String,
    /// Evaluator-labelled rows (`--expand-with`), when asked.
    pub expand: Option<ExpandCard>,
    /// The files written beside the card.
    pub files: Vec<String>,
    pub format: ExportFormat,
    pub generator: String,
    /// `[dataset] group_key`: what a group is (none: the prompt).
    pub group_key: Option<String>,
    /// Groups of the evaluator's test split left out (0 with `include_test_split`).
    pub held_out_groups: usize,
    /// The `[human]` policy that turned feedback into scores and verdicts.
    pub human_policy: HumanPolicy,
    pub include_test_split: bool,
    pub kind: ExportKind,
    /// KTO: rows by label (`true`, `false`).
    pub labels: Option<BTreeMap<String, usize>>,
    /// Requests or edits not exported, by reason (`test_split`, `not_approved`, `neutral`,
    /// `empty_edit`, `unchanged_edit`, `evaluator_unsure`).
    pub left_out: BTreeMap<String, usize>,
    /// DPO and reward: the least human-score difference of a score-margin pair.
    pub margin: Option<f64>,
    pub rows: usize,
    /// `[dataset] seed` (of the split that chose the held-out groups).
    pub seed: u64,
    pub since: Option<String>,
    pub until: Option<String>,
    pub version: u32,
    /// `[dataset] weighting`.
    pub weighting: Vec<Scheme>,
}

/// One cohort's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortCount {
    /// Kish's effective sample size of the weights, `(sum w)^2 / sum w^2`.
    pub effective_size: f64,
    pub rows: usize,
    pub weight_sum: f64,
}

/// What `--expand-with` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpandCard {
    /// Requests the evaluator was confident on (either way).
    pub labelled: usize,
    pub min_confidence: f64,
    /// The model directory.
    pub model: String,
    /// Requests without a human score it scored.
    pub scored: usize,
}

/// A few lines for the terminal (user text escaped).
pub(super) fn summary_text(card: &ExportCard, out: &Path) -> String {
    let esc = |s: &str| crate::text::escape(s).into_owned();
    let mut t = format!(
        "export {}: {} rows into {} ({})\n",
        card.kind.name(),
        card.rows,
        esc(&out.display().to_string()),
        card.files.join(", ")
    );
    let counts = |m: &BTreeMap<String, usize>| m.iter().map(|(k, v)| format!("{} {v}", esc(k))).collect::<Vec<_>>();
    let _ = writeln!(t, "  label source: {}", counts(&card.by_label_source).join(", "));
    let _ = writeln!(t, "  source: {}", counts(&card.by_source).join(", "));
    if let Some(l) = &card.labels {
        let _ = writeln!(t, "  label: {}", counts(l).join(", "));
    }
    let _ = writeln!(t, "  {:<16} {:>8} {:>12} {:>10}", "cohort", "rows", "weight sum", "ess");
    for (c, n) in &card.by_cohort {
        let _ = writeln!(t, "  {:<16} {:>8} {:>12.3} {:>10.1}", esc(c), n.rows, n.weight_sum, n.effective_size);
    }
    if card.include_test_split {
        let _ = writeln!(t, "  the evaluator's test split is included");
    } else {
        let _ = writeln!(
            t,
            "  held out: {} groups of evaluator {}'s test split",
            card.held_out_groups,
            esc(&card.evaluator)
        );
    }
    if !card.left_out.is_empty() {
        let _ = writeln!(t, "  left out: {}", counts(&card.left_out).join(", "));
    }
    t.trim_end().to_string()
}

/// `README.md`: a Hugging Face dataset card (YAML header naming the files) and the counts.
pub(super) fn markdown(card: &ExportCard) -> String {
    let md = |s: &str| crate::report::md_escape(s);
    let mut t = String::from("---\nconfigs:\n");
    for f in &card.files {
        let name = f.rsplit_once('.').map_or(f.as_str(), |(n, _)| n);
        let _ = writeln!(t, "- config_name: {name}\n  data_files: {f}");
    }
    t.push_str("---\n\n");
    let _ = writeln!(t, "# {} dataset from evalloop feedback\n", card.kind.name().to_uppercase());
    let _ = writeln!(
        t,
        "{} rows ({}) from the evalloop store, written by {}. Columns follow TRL's {} trainer; every row \
         also has `request_id`, `cohort`, `group`, `source`, `label_source` and `weight`.\n",
        card.rows,
        card.files.join(", "),
        card.generator,
        match card.kind {
            ExportKind::Sft => "SFT",
            ExportKind::Kto => "KTO",
            ExportKind::Dpo => "DPO",
            ExportKind::Reward => "reward",
        }
    );
    let _ = writeln!(t, "## Labels\n");
    let p = &card.human_policy;
    let _ = writeln!(
        t,
        "Human scores (1-5) under the `[human]` policy: thumbs up {}, thumbs down {}, usage {}, edit {}, \
         discard {}; good at or above {}, bad at or below {}.",
        p.thumbs_up,
        p.thumbs_down,
        opt(p.implicit_usage),
        opt(p.implicit_edit),
        opt(p.implicit_discard),
        p.good_min,
        p.bad_max
    );
    if let Some(m) = card.margin {
        let _ = writeln!(t, "Score-margin pairs differ by at least {m} points.");
    }
    if let Some(e) = &card.expand {
        let _ = writeln!(
            t,
            "Evaluator-labelled rows: model {}, confidence at least {} ({} of {} unlabelled requests).",
            md(&e.model),
            e.min_confidence,
            e.labelled,
            e.scored
        );
    }
    let weighting: Vec<String> = card
        .weighting
        .iter()
        .map(|s| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())
        .collect();
    let _ = writeln!(t, "Weights: `{}` (the `[dataset] weighting` schemes).", weighting.join("+"));
    if card.include_test_split {
        let _ = writeln!(t, "The evaluator's test split is included.\n");
    } else {
        let _ = writeln!(
            t,
            "Held out: the {} groups of evaluator {}'s test split (seed {}).\n",
            card.held_out_groups,
            md(&card.evaluator),
            card.seed
        );
    }
    let table = |t: &mut String, title: &str, m: &BTreeMap<String, usize>| {
        let _ = writeln!(t, "| {title} | rows |\n| --- | ---: |");
        for (k, v) in m {
            let _ = writeln!(t, "| {} | {v} |", md(k));
        }
        t.push('\n');
    };
    let _ = writeln!(t, "## Counts\n");
    table(&mut t, "label source", &card.by_label_source);
    table(&mut t, "source", &card.by_source);
    if let Some(l) = &card.labels {
        table(&mut t, "label", l);
    }
    let _ = writeln!(t, "| cohort | rows | weight sum | effective size |\n| --- | ---: | ---: | ---: |");
    for (c, n) in &card.by_cohort {
        let _ = writeln!(t, "| {} | {} | {:.3} | {:.1} |", md(c), n.rows, n.weight_sum, n.effective_size);
    }
    t.push('\n');
    if !card.left_out.is_empty() {
        table(&mut t, "left out", &card.left_out);
    }
    t
}

fn opt(x: Option<f64>) -> String {
    x.map_or("ignored".into(), |v| v.to_string())
}

//! Reading a dataset directory: the JSONL splits and the label kind from dataset_card.json.

use std::path::Path;

use evalloop_core::files::{DatasetCard, DatasetRow, PairRow, UnlabelledRow};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::config::LabelKind;

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The log's request id.
    pub request_id: String,
    /// First text of the pair.
    pub prompt: String,
    /// Second text of the pair.
    pub output: String,
    /// 0/1 (binary) or in [0, 1] (graded).
    pub label: f64,
    /// Loss weight, >= 0.
    pub weight: f64,
    /// The prompt group (the dataset's `group` field: a metadata key such as `group_id`, else
    /// the prompt); `None` when the row has none. Used by the group-level metric and the
    /// pairwise objective.
    pub group: Option<String>,
    /// Multi-task: the label on each trained dimension, in the run's dimension order (the
    /// row's `labels`, in [0, 1]); `None` where the row has none. Empty without dimensions.
    pub labels: Vec<Option<f64>>,
    /// The production evaluator's score of the output (the row's `evaluator_score`), what
    /// `[train] distill` ranks by; `None` where the row has none.
    pub evaluator: Option<f64>,
}

/// Reads a split (`train.jsonl`, ...); a missing file is an empty split when `optional`.
/// Errors name file:line and the field.
pub fn read_split(path: &Path, kind: LabelKind, optional: bool) -> evalloop_core::Result<Vec<Example>> {
    read_split_with(path, kind, &[], optional)
}

/// Reads a split as [`read_split`] does, with each row's label on every one of `dimensions`
/// (its `labels` object must name each, as a number in [0, 1] or `null`).
pub fn read_split_with(
    path: &Path,
    kind: LabelKind,
    dimensions: &[String],
    optional: bool,
) -> evalloop_core::Result<Vec<Example>> {
    if optional && !path.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (line, row) in evalloop_core::jsonl::read_numbered::<DatasetRow>(path)? {
        let at = format!("{}:{line}", path.display());
        let label = row.label.value();
        let label_ok = match kind {
            LabelKind::Binary => label == 0.0 || label == 1.0,
            LabelKind::Graded => (0.0..=1.0).contains(&label),
        };
        if !label_ok {
            let want = match kind {
                LabelKind::Binary => "0 or 1 (binary dataset)",
                LabelKind::Graded => "in [0, 1] (graded dataset)",
            };
            return Err(evalloop_core::Error::Input(format!("{at}: field label is {label}, expected {want}")));
        }
        if !(row.weight >= 0.0 && row.weight.is_finite()) {
            return Err(evalloop_core::Error::Input(format!(
                "{at}: field weight is {}, expected a finite number >= 0",
                row.weight
            )));
        }
        let mut labels = Vec::with_capacity(dimensions.len());
        for d in dimensions {
            let v = match row.labels.as_ref() {
                None => {
                    return Err(evalloop_core::Error::Input(format!(
                        "{at}: field labels is missing; training dimension {d:?} needs a dataset built with \
                         [dataset] dimensions"
                    )));
                }
                Some(m) => *m.get(d).ok_or_else(|| {
                    evalloop_core::Error::Input(format!(
                        "{at}: field labels.{d} is missing (the row has no such dimension)"
                    ))
                })?,
            };
            if let Some(x) = v.filter(|x| !(0.0..=1.0).contains(x)) {
                return Err(evalloop_core::Error::Input(format!(
                    "{at}: field labels.{d} is {x}, expected a number in [0, 1] or null"
                )));
            }
            labels.push(v);
        }
        out.push(Example {
            request_id: row.request_id,
            prompt: row.prompt,
            output: row.output,
            label,
            weight: row.weight,
            group: row.group,
            labels,
            evaluator: row.evaluator_score.filter(|x| x.is_finite()),
        });
    }
    Ok(out)
}

/// Reads `pairs.jsonl`, keeping the pairs of `split`. Errors name file:line and the field.
pub fn read_pairs(path: &Path, split: &str) -> evalloop_core::Result<Vec<PairRow>> {
    let mut out = Vec::new();
    for (line, row) in evalloop_core::jsonl::read_numbered::<PairRow>(path)? {
        let at = format!("{}:{line}", path.display());
        if !(row.weight >= 0.0 && row.weight.is_finite()) {
            return Err(evalloop_core::Error::Input(format!(
                "{at}: field weight is {}, expected a finite number >= 0",
                row.weight
            )));
        }
        if !["train", "validation", "test"].contains(&row.split.as_str()) {
            return Err(evalloop_core::Error::Input(format!(
                "{at}: field split is {:?}, expected train, validation or test",
                row.split
            )));
        }
        if row.request_id_chosen == row.request_id_rejected {
            return Err(evalloop_core::Error::Input(format!(
                "{at}: field request_id_rejected is the chosen request ({:?}); a pair compares two outputs",
                row.request_id_chosen
            )));
        }
        if row.split == split {
            out.push(row);
        }
    }
    Ok(out)
}

/// The micro-batches of epoch `epoch` (0-based), as indices into `examples`, from a seeded
/// shuffle.
///
/// Without `group_aware`: a shuffle of all examples cut into batches of `batch_size`.
/// With `group_aware` (pairwise objectives): the groups are shuffled (examples without a group
/// are groups of one), each group's members too, and batches are filled with whole groups in
/// that order: a group that does not fit in what is left of the current batch starts a new
/// one; only a group larger than `batch_size` is split, into full batches and a remainder that
/// is packed like a group. Batches then hold at most `batch_size` examples.
pub fn epoch_batches(
    examples: &[Example],
    batch_size: usize,
    seed: u64,
    epoch: usize,
    group_aware: bool,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0000_0000_0000 ^ (epoch as u64 + 1));
    if !group_aware {
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.shuffle(&mut rng);
        return order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    }
    let mut by_group: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, e) in examples.iter().enumerate() {
        match &e.group {
            Some(g) => by_group.entry(g.as_str()).or_default().push(i),
            None => groups.push(vec![i]),
        }
    }
    groups.extend(by_group.into_values());
    groups.shuffle(&mut rng);
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for mut g in groups {
        g.shuffle(&mut rng);
        let mut rest = g.as_slice();
        while rest.len() > batch_size {
            batches.push(rest[..batch_size].to_vec());
            rest = &rest[batch_size..];
        }
        if current.len() + rest.len() > batch_size {
            batches.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(rest);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The dimensions of a dataset (`config.dimensions` of its `dataset_card.json`).
pub fn read_card_dimensions(dataset_dir: &Path) -> evalloop_core::Result<Vec<String>> {
    Ok(DatasetCard::read(dataset_dir)?.config.dimensions)
}

/// The label kind of a dataset (`config.label` of its `dataset_card.json`).
pub fn read_label_kind(dataset_dir: &Path) -> evalloop_core::Result<LabelKind> {
    Ok(DatasetCard::read(dataset_dir)?.config.label)
}

/// That `unlabelled.jsonl` can be opened; the error says how to write it.
pub fn check_unlabelled(path: &Path) -> evalloop_core::Result<()> {
    std::fs::File::open(path).map(drop).map_err(|e| {
        evalloop_core::Error::Input(format!(
            "{}: {e}; [train] unlabelled needs a dataset built with [dataset] unlabelled = N",
            path.display()
        ))
    })
}

/// Reads `unlabelled.jsonl` (`[dataset] unlabelled`) as examples with label 0, weight 0 (no
/// pointwise or labelled-pair loss) and no dimension labels (`dims` of them). Errors name
/// file:line and the field; a missing file is an error that says how to write it.
pub fn read_unlabelled(path: &Path, dims: usize) -> evalloop_core::Result<Vec<Example>> {
    check_unlabelled(path)?;
    let rows: Vec<UnlabelledRow> = evalloop_core::jsonl::read(path)?;
    Ok(rows
        .into_iter()
        .map(|r| Example {
            request_id: r.request_id,
            prompt: r.prompt,
            output: r.output,
            label: 0.0,
            weight: 0.0,
            group: r.group,
            labels: vec![None; dims],
            evaluator: r.evaluator_score.filter(|x| x.is_finite()),
        })
        .collect())
}

pub use super::corrupt::corrupt_output;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.jsonl");
        std::fs::write(
            &p,
            "{\"request_id\":\"a\",\"prompt\":\"p\",\"output\":\"o\",\"label\":1,\"weight\":2,\"group\":\"g\",\"cohort\":null,\"is_disagreement\":false}\n\
             {\"request_id\":\"b\",\"prompt\":\"p\",\"output\":\"o\",\"label\":0.5,\"weight\":1}\n",
        )
        .unwrap();
        let err = read_split(&p, LabelKind::Binary, false).unwrap_err().to_string();
        assert!(err.contains("train.jsonl:2") && err.contains("field label"), "{err}");
        let rows = read_split(&p, LabelKind::Graded, false).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].weight, 2.0);
        assert!(read_split(&dir.path().join("none.jsonl"), LabelKind::Graded, true).unwrap().is_empty());
        assert_eq!(rows[0].group.as_deref(), Some("g"));
        assert_eq!(rows[1].group, None);
    }

    #[test]
    fn dimension_labels_are_read_in_order_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.jsonl");
        let row = |labels: &str| {
            format!("{{\"request_id\":\"a\",\"prompt\":\"p\",\"output\":\"o\",\"label\":0.5,\"labels\":{labels}}}\n")
        };
        std::fs::write(&p, row("{\"fluency\":0.25,\"coherence\":null}")).unwrap();
        let dims = ["coherence".to_string(), "fluency".to_string()];
        let rows = read_split_with(&p, LabelKind::Graded, &dims, false).unwrap();
        assert_eq!(rows[0].labels, vec![None, Some(0.25)]);
        assert!(read_split(&p, LabelKind::Graded, false).unwrap()[0].labels.is_empty());
        for (labels, needle) in [
            ("{\"coherence\":0.5}", "train.jsonl:1: field labels.fluency is missing"),
            ("{\"coherence\":1.5,\"fluency\":0}", "train.jsonl:1: field labels.coherence is 1.5"),
            ("null", "train.jsonl:1: field labels is missing"),
        ] {
            std::fs::write(&p, row(labels)).unwrap();
            let err = read_split_with(&p, LabelKind::Graded, &dims, false).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn group_aware_batches_keep_groups_whole_and_split_only_large_ones() {
        let ex = |g: Option<&str>| Example {
            request_id: String::new(),
            prompt: String::new(),
            output: String::new(),
            label: 0.5,
            weight: 1.0,
            group: g.map(str::to_string),
            labels: Vec::new(),
            evaluator: None,
        };
        // Groups of 3, 3, 2, 9 and two ungrouped rows; batch 4.
        let mut examples = Vec::new();
        for (g, n) in [("a", 3), ("b", 3), ("c", 2), ("big", 9)] {
            examples.extend((0..n).map(|_| ex(Some(g))));
        }
        examples.push(ex(None));
        examples.push(ex(None));
        for epoch in 0..5 {
            let batches = epoch_batches(&examples, 4, 7, epoch, true);
            let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..examples.len()).collect::<Vec<_>>());
            assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 4));
            // Small groups are never split; "big" is in 2 full batches plus one part.
            for g in ["a", "b", "c"] {
                let holding = batches.iter().filter(|b| b.iter().any(|&i| examples[i].group.as_deref() == Some(g)));
                assert_eq!(holding.count(), 1, "group {g} split in epoch {epoch}: {batches:?}");
            }
            let big = batches.iter().filter(|b| b.iter().any(|&i| examples[i].group.as_deref() == Some("big")));
            assert_eq!(big.count(), 3);
        }
        assert_ne!(epoch_batches(&examples, 4, 7, 0, true), epoch_batches(&examples, 4, 7, 1, true));
        // Without group awareness: plain chunks of a shuffle.
        let plain = epoch_batches(&examples, 4, 7, 0, false);
        assert_eq!(plain.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 4, 4, 3]);
    }
}

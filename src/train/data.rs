//! Reading a dataset directory: the JSONL splits and the label kind from dataset_card.json.

use std::path::Path;

use serde::Deserialize;

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
}

#[derive(Deserialize)]
struct Row {
    request_id: String,
    prompt: String,
    output: String,
    label: f64,
    #[serde(default = "one")]
    weight: f64,
}

fn one() -> f64 {
    1.0
}

/// Reads a split (`train.jsonl`, ...); a missing file is an empty split when `optional`.
/// Errors name file:line and the field.
pub fn read_split(path: &Path, kind: LabelKind, optional: bool) -> crate::Result<Vec<Example>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::Error::io(path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let row: Row = serde_json::from_str(line).map_err(|e| crate::Error::Input(format!("{at}: {e}")))?;
        let label_ok = match kind {
            LabelKind::Binary => row.label == 0.0 || row.label == 1.0,
            LabelKind::Graded => (0.0..=1.0).contains(&row.label),
        };
        if !label_ok {
            let want = match kind {
                LabelKind::Binary => "0 or 1 (binary dataset)",
                LabelKind::Graded => "in [0, 1] (graded dataset)",
            };
            return Err(crate::Error::Input(format!("{at}: field label is {}, expected {want}", row.label)));
        }
        if !(row.weight >= 0.0 && row.weight.is_finite()) {
            return Err(crate::Error::Input(format!(
                "{at}: field weight is {}, expected a finite number >= 0",
                row.weight
            )));
        }
        out.push(Example {
            request_id: row.request_id,
            prompt: row.prompt,
            output: row.output,
            label: row.label,
            weight: row.weight,
        });
    }
    Ok(out)
}

/// The label kind from `dataset_card.json` (`{"config": {"label": "binary"|"graded"}}`).
pub fn read_label_kind(dataset_dir: &Path) -> crate::Result<LabelKind> {
    #[derive(Deserialize)]
    struct Card {
        config: CardConfig,
    }
    #[derive(Deserialize)]
    struct CardConfig {
        label: LabelKind,
    }
    let path = dataset_dir.join("dataset_card.json");
    let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
    let card: Card = serde_json::from_str(&text)
        .map_err(|e| crate::Error::Input(format!("{}: config.label: {e}", path.display())))?;
    Ok(card.config.label)
}

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
    }
}

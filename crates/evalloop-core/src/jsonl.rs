//! Reading JSON Lines files of typed rows, with errors that name the file and line. Writing goes
//! through [`crate::atomic::AtomicWriter::write_json_line`], so a file is whole or absent.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Reads every non-blank line of `path` as a `T`; an error names `path:line` and serde's reason
/// (the field and what was expected).
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    Ok(read_numbered(path)?.into_iter().map(|(_, row)| row).collect())
}

/// As [`read`], each row with its 1-based line number, for checks that name `path:line` too.
pub fn read_numbered<T: DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push((i + 1, parse_line(path, i + 1, &line)?));
    }
    Ok(out)
}

/// As [`read`], with a missing file read as empty.
pub fn read_optional<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    if path.exists() { read(path) } else { Ok(Vec::new()) }
}

/// Parses line `line_no` (1-based) of `path`.
pub fn parse_line<T: DeserializeOwned>(path: &Path, line_no: usize, line: &str) -> Result<T> {
    serde_json::from_str(line).map_err(|e| Error::Input(format!("{}:{line_no}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
    struct Row {
        id: String,
        n: u32,
    }

    #[test]
    fn rows_round_trip_and_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rows.jsonl");
        let mut w = crate::atomic::AtomicWriter::create(&p).unwrap();
        for r in [Row { id: "a".into(), n: 1 }, Row { id: "b".into(), n: 2 }] {
            w.write_json_line(&r).unwrap();
        }
        w.commit().unwrap();
        let rows: Vec<Row> = read(&p).unwrap();
        assert_eq!(rows, vec![Row { id: "a".into(), n: 1 }, Row { id: "b".into(), n: 2 }]);
        std::fs::write(&p, "{\"id\":\"a\",\"n\":1}\n\n{\"id\":\"b\",\"n\":\"two\"}\n").unwrap();
        let err = read::<Row>(&p).unwrap_err().to_string();
        assert!(err.contains("rows.jsonl:3: invalid type: string \"two\""), "{err}");
        assert!(read_optional::<Row>(&d.path().join("none.jsonl")).unwrap().is_empty());
    }
}

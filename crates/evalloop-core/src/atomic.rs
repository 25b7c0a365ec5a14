//! Atomic file writes: a temp file in the target's directory, fsync, then rename over the target,
//! so a reader (or a crash) never sees a half-written file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut w = AtomicWriter::create(path)?;
    w.write_all(bytes)?;
    w.commit()
}

/// Writes `value` to `path` atomically as pretty JSON with a final newline (keys in the order
/// `value` serializes them; a `serde_json::Value` has them sorted).
pub fn write_json_pretty<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// A file being written; it appears at its path only on [`AtomicWriter::commit`]. Dropped
/// without commit, the temp file is removed and the target is untouched.
pub struct AtomicWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicWriter {
    /// Starts writing `path` (its directory must exist).
    pub fn create(path: &Path) -> Result<AtomicWriter> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
        let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicWriter { path: path.to_path_buf(), tmp, out: Some(BufWriter::new(f)) })
    }

    /// Appends bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let tmp = &self.tmp;
        match &mut self.out {
            Some(w) => w.write_all(bytes).map_err(|e| Error::io(tmp, e)),
            None => Ok(()),
        }
    }

    /// Appends one value as a JSON line.
    pub fn write_json_line<T: serde::Serialize>(&mut self, v: &T) -> Result<()> {
        let mut line = serde_json::to_vec(v).map_err(|e| Error::io(&self.tmp, e.into()))?;
        line.push(b'\n');
        self.write_all(&line)
    }

    /// Flushes, fsyncs and renames the temp file over the target (and fsyncs the directory).
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.clone();
        if let Some(w) = self.out.take() {
            let f = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_write_leaves_the_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.txt");
        write_atomic(&p, b"old").unwrap();
        {
            let mut w = AtomicWriter::create(&p).unwrap();
            w.write_all(b"new").unwrap();
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "the temp file is removed");
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }
}

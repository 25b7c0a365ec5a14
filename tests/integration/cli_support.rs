//! Shared by the command-line tests: the real `evalloop` binary, run in a temp dir on a SQLite
//! file of its own.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// `evalloop` in `dir`, with no store or configuration taken from the environment.
pub fn evalloop(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("evalloop").unwrap();
    c.current_dir(dir).env_remove("EVALLOOP_DB").env_remove("EVALLOOP_CONFIG");
    c
}

/// [`evalloop`] on the store `dir/t.db`.
pub fn bin(dir: &Path) -> Command {
    let mut c = evalloop(dir);
    c.arg("--db").arg(dir.join("t.db"));
    c
}

/// Writes `text` to `dir/name` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `c`, asserts success, and returns its standard output.
pub fn text(c: &mut Command) -> String {
    String::from_utf8(c.assert().success().get_output().stdout.clone()).unwrap()
}

/// Runs `c` with `--json`, asserts success, and parses its standard output.
pub fn json(c: &mut Command) -> serde_json::Value {
    let out = c.arg("--json").assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

//! Shared by the browser tests: finding Chromium and the flags of a headless run on this
//! closed network.

use std::path::PathBuf;

/// The first `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Headless Chromium that starts no connections of its own (background networking, component
/// updates, sync and QUIC off: on a machine without internet they fail, many at a time). A
/// fresh `--user-data-dir` is added by each test.
pub const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

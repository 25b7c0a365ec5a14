//! `evalloop report --from report.json --out DIR`, and report.html in a real browser: headless
//! Chromium loads the page and its DOM must hold every chart's SVG and no injected element.
//!
//! The browser test needs Debian's `chromium` on PATH (`apt-get install -y chromium`); without
//! it the test says so on the terminal and passes, unless `EVALLOOP_REQUIRE_CHROMIUM=1`, which
//! turns the skip into a failure (for CI machines that are meant to have it).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::browser_support::{HEADLESS, on_path};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/report-synthetic.json");

/// The `data-chart` ids report.html must carry (`evalloop::report::CHART_IDS`).
fn chart_ids() -> &'static [&'static str] {
    &evalloop::report::CHART_IDS
}

fn render_fixture(out: &Path) -> anyhow::Result<PathBuf> {
    let done = Command::new(env!("CARGO_BIN_EXE_evalloop"))
        .args(["report", "--from", FIXTURE, "--out"])
        .arg(out)
        .env_remove("EVALLOOP_CONFIG")
        .output()?;
    anyhow::ensure!(done.status.success(), "evalloop report failed: {}", String::from_utf8_lossy(&done.stderr));
    Ok(out.join("report.html"))
}

#[test]
fn report_command_rerenders_the_three_files_from_json() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_evalloop"))
        .args(["--json", "report", "--from", FIXTURE, "--out"])
        .arg(dir.path())
        .env_remove("EVALLOOP_CONFIG")
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let js: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(js["run_id"], "2026-11-23-weekly");
    for f in ["report.json", "report.md", "report.html"] {
        assert!(dir.path().join(f).is_file(), "{f} written");
    }
    // report.json re-renders to the same bytes it was read from.
    assert_eq!(std::fs::read_to_string(dir.path().join("report.json"))?, std::fs::read_to_string(FIXTURE)?);
    Ok(())
}

#[test]
fn report_command_names_the_bad_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("report.json");
    std::fs::write(&bad, "{ not json")?;
    let out = Command::new(env!("CARGO_BIN_EXE_evalloop")).args(["report", "--from"]).arg(&bad).output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    Ok(())
}

/// Runs a command with a deadline; returns its stdout.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> anyhow::Result<String> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("chromium did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    anyhow::ensure!(status.success(), "chromium failed ({status}): {err}");
    Ok(out)
}

/// Says something on the terminal even under the test harness's output capture (which only
/// captures the `print!` family).
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

#[test]
fn report_html_renders_its_svg_charts_in_headless_chromium() -> anyhow::Result<()> {
    let Some(chromium) = on_path("chromium") else {
        let msg = "report_browser: SKIPPED report_html_renders_its_svg_charts_in_headless_chromium: \
                   `chromium` is not on PATH (install it with `apt-get install -y chromium`)";
        anyhow::ensure!(std::env::var_os("EVALLOOP_REQUIRE_CHROMIUM").is_none(), "{msg}");
        say(msg);
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let html = render_fixture(&dir.path().join("run"))?;
    let profile = tempfile::tempdir()?;
    let dom = run_with_timeout(
        Command::new(&chromium)
            .args(HEADLESS)
            .arg("--dump-dom")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("file://{}", html.canonicalize()?.display())),
        Duration::from_secs(120),
    )?;
    assert!(dom.contains("<h1>evalloop report</h1>"), "the page loaded: {}", &dom[..dom.len().min(500)]);
    // Every chart is an <svg> element in the parsed DOM, with marks inside.
    assert_eq!(dom.matches("<svg").count(), chart_ids().len(), "one <svg> per chart");
    for id in chart_ids() {
        assert!(dom.contains(&format!("data-chart=\"{id}\"")), "chart {id} in the DOM");
    }
    assert!(dom.matches("<circle").count() >= 800, "scatter points (400 pre + 400 post) in the DOM");
    assert!(dom.matches("<polyline").count() >= 6, "reliability and training curves in the DOM");
    assert!(dom.matches("<rect").count() >= 24, "cohort bars in the DOM");
    // The hostile cohort name stayed text: no script element, and it did not run.
    assert!(!dom.to_lowercase().contains("<script"), "no <script> element in the DOM");
    assert!(!dom.contains("<title>pwned</title>"));
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"), "the name shows as text");
    Ok(())
}

//! The `evalloop` binary: parse, run, print, map errors to exit codes.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    evalloop::model::alloc::candle_ops_inline();
    evalloop::model::alloc::keep_freed_memory();
    let cli = match evalloop::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVALLOOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let json = cli.json;
    match evalloop::cli::run(cli) {
        Ok(out) => {
            let text = if json { serde_json::to_string_pretty(&out.json).unwrap_or_default() } else { out.text };
            // A closed pipe (`evalloop stats | head`) is not an error worth a panic.
            if !text.is_empty() {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            }
            ExitCode::from(out.code as u8)
        }
        Err(e) => {
            // Each error's message already names its cause; printing the source chain too
            // would repeat it.
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

//! `evalloop serve`: run the HTTP service on the store (`[serve]` in --config).

use std::io::Write;

use evalloop_serve::{ServeError, ServeOptions, ServeSection, ServeSettings};

use super::Outcome;
use crate::config::Settings;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Listen address (default `[serve] addr`, else 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long)]
    pub addr: Option<String>,
}

/// Serves until SIGTERM or Ctrl-C; prints `listening on http://ADDR` once bound.
pub fn run(settings: &Settings, a: ServeArgs) -> Result<Outcome> {
    let section: ServeSection = settings.section("serve", &settings.config.serve)?;
    let serve = ServeSettings::resolve(&section, a.addr.as_deref()).map_err(|e| {
        Error::Input(match &settings.config_path {
            Some(p) => format!("{}: {e}", p.display()),
            None => e,
        })
    })?;
    let opts = ServeOptions { db: settings.db.clone(), policy: settings.policy.clone(), settings: serve };
    evalloop_serve::serve(opts, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "evalloop serve: listening on http://{addr}");
        let _ = out.flush();
    })
    .map_err(service_error)?;
    Ok(Outcome::ok(String::new(), serde_json::json!({ "stopped": true })))
}

/// The service's errors as the command line's.
pub(crate) fn service_error(e: ServeError) -> Error {
    match e {
        ServeError::Input(m) => Error::Input(m),
        other => Error::Service(other.to_string()),
    }
}

//! The TOML config file: raw sections as read, and [`Settings`], the validated form commands see.
//!
//! Precedence: built-in defaults < config file < environment (`EVALLOOP_DB`) < command-line flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::feedback::HumanPolicy;
use crate::{Error, Result};

/// The default store file.
pub const DEFAULT_DB: &str = "evalloop.db";

/// `[store]`: where the log store lives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// A SQLite file path or a `postgres://` URL; default `evalloop.db`.
    pub db: Option<String>,
}

/// A config file as read. Sections belong to the stages that use them; unknown top-level
/// sections are an error, so a typo does not silently fall back to defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub store: StoreSection,
    /// `[human]`: the human-score policy (see [`crate::feedback`]).
    pub human: HumanPolicy,
    /// `[thresholds]`: the CI gate (`evalloop check`).
    pub thresholds: Option<toml::Table>,
    /// `[dataset]`: `evalloop dataset build`.
    pub dataset: Option<toml::Table>,
    /// `[simulate]`: `evalloop simulate`.
    pub simulate: Option<toml::Table>,
    /// `[train]`: `evalloop train`.
    pub train: Option<toml::Table>,
    /// `[score]`: `evalloop score`.
    pub score: Option<toml::Table>,
    /// `[run]`: `evalloop run`.
    pub run: Option<toml::Table>,
    /// `[report]`: the report.
    pub report: Option<toml::Table>,
    /// `[serve]`: `evalloop serve` (evalloop-serve's `ServeSection`).
    pub serve: Option<toml::Table>,
}

impl ConfigFile {
    /// Reads and parses a config file; errors name the file and the TOML position.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
    }
}

/// Validated settings shared by every command.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The store: a SQLite path or a PostgreSQL URL.
    pub db: String,
    pub policy: HumanPolicy,
    /// The config file, when one was given.
    pub config_path: Option<PathBuf>,
    pub config: ConfigFile,
}

impl Settings {
    /// Merges defaults < file < environment/flag (`db_flag` already carries `EVALLOOP_DB`,
    /// since clap reads it) and validates the result.
    pub fn resolve(config_path: Option<&Path>, db_flag: Option<String>) -> Result<Settings> {
        let config = match config_path {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let db = db_flag.or_else(|| config.store.db.clone()).unwrap_or_else(|| DEFAULT_DB.to_string());
        let policy = config.human.clone();
        policy.validate().map_err(|e| {
            Error::Input(match config_path {
                Some(p) => format!("{}: [human]: {e}", p.display()),
                None => e,
            })
        })?;
        Ok(Settings { db, policy, config_path: config_path.map(Path::to_path_buf), config })
    }

    /// Deserializes one optional section into its typed form, with defaults when absent.
    pub fn section<T: serde::de::DeserializeOwned + Default>(
        &self,
        name: &str,
        raw: &Option<toml::Table>,
    ) -> Result<T> {
        match raw {
            None => Ok(T::default()),
            Some(t) => t.clone().try_into().map_err(|e| {
                let file = self.config_path.as_ref().map_or("config".into(), |p| p.display().to_string());
                Error::Input(format!("{file}: [{name}]: {e}"))
            }),
        }
    }
}

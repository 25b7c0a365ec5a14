//! `evalloop keys create|list|revoke`: the service's API keys, kept in the store as hashes.

use clap::Subcommand;
use evalloop_serve::keys::{KeyStore, Scope};
use serde_json::json;

use super::Outcome;
use super::serve::service_error;
use crate::config::Settings;
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum KeysWhat {
    /// Make a key and print it (once: only its hash is stored).
    Create {
        /// A name for the key (letters, digits, '-', '_', '.'), used to list and revoke it.
        #[arg(long)]
        name: String,
        /// ingest (post logs and feedback, make feedback tokens), read (summaries, metrics),
        /// annotate (label annotation queues on the review page) or admin (everything).
        #[arg(long, default_value = "ingest")]
        scope: String,
    },
    /// List the keys (names, scopes, dates; never the keys).
    List,
    /// Revoke a key: the service refuses it within `[serve] key_refresh_ms` (default 1 s).
    Revoke {
        /// The key's name.
        name: String,
    },
}

pub fn run(settings: &Settings, what: KeysWhat) -> Result<Outcome> {
    let mut ks = KeyStore::open(&settings.db).map_err(service_error)?;
    match what {
        KeysWhat::Create { name, scope } => {
            let scope = Scope::parse(&scope)
                .ok_or_else(|| Error::Input(format!("--scope {scope:?}: expected ingest, read, annotate or admin")))?;
            let key = ks.create(&name, scope).map_err(service_error)?;
            let text = format!(
                "{key}\n(key {name:?}, scope {}: shown this once; send it as `Authorization: Bearer KEY`)",
                scope.as_str()
            );
            Ok(Outcome::ok(text, json!({ "key": key, "name": name, "scope": scope })))
        }
        KeysWhat::List => {
            let keys = ks.list().map_err(service_error)?;
            let mut text = format!("{:<24} {:<7} {:<9} {:<21} revoked", "name", "scope", "prefix", "created");
            for k in &keys {
                text.push_str(&format!(
                    "\n{:<24} {:<7} {:<9} {:<21} {}",
                    k.name,
                    k.scope.as_str(),
                    k.prefix,
                    k.created_at,
                    k.revoked_at.as_deref().unwrap_or("-")
                ));
            }
            Ok(Outcome::ok(text, json!({ "keys": keys })))
        }
        KeysWhat::Revoke { name } => {
            ks.revoke(&name).map_err(service_error)?;
            Ok(Outcome::ok(format!("key {name:?} revoked"), json!({ "revoked": name })))
        }
    }
}

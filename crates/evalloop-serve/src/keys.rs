//! API keys and the token secret, kept in the store's database in two tables of their own
//! (`serve_api_keys`, `serve_secret`, created when missing): keys are stored only as SHA-256
//! hashes; the secret that signs feedback tokens is made once and shared by every replica.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Result, ServeError};

/// What a key may do. `admin` may do everything; `ingest` posts logs and feedback and makes
/// feedback tokens; `read` reads summaries and metrics; `annotate` logs in to the review page
/// and labels the items of annotation queues (the key's name is the reviewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Ingest,
    Read,
    Admin,
    Annotate,
}

impl Scope {
    /// Parses `ingest`, `read`, `admin` or `annotate`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            "annotate" => Some(Scope::Annotate),
            _ => None,
        }
    }

    /// `ingest`, `read`, `admin` or `annotate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Annotate => "annotate",
        }
    }

    /// Whether a key of this scope may do what `needed` requires.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub scope: Scope,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `None` while the key works.
    pub revoked_at: Option<String>,
    /// The first characters of the key, to tell keys apart (`evk_AbCd`).
    pub prefix: String,
    /// SHA-256 of the key, hex.
    #[serde(skip)]
    pub hash: String,
}

/// The SHA-256 of a key, hex: what the store keeps and what a request's key is looked up by.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key: `evk_` and 32 random bytes in base64url.
fn new_key() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("evk_{}", URL_SAFE_NO_PAD.encode(b))
}

const SQLITE_TABLES: &str = "CREATE TABLE IF NOT EXISTS serve_api_keys (
        name TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE IF NOT EXISTS serve_secret (id INTEGER PRIMARY KEY CHECK (id = 1), secret BLOB NOT NULL);";

const PG_TABLES: &str = "CREATE TABLE IF NOT EXISTS serve_api_keys (
        name TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE IF NOT EXISTS serve_secret (id INTEGER PRIMARY KEY CHECK (id = 1), secret BYTEA NOT NULL);";

/// The key tables of one store: the SQLite file or PostgreSQL database `--db` names.
pub enum KeyStore {
    Sqlite { conn: rusqlite::Connection, path: String },
    Postgres { client: Box<postgres::Client>, url: String },
}

impl KeyStore {
    /// Opens the key tables of `db` (a SQLite path or a `postgres://` URL), creating them when
    /// missing.
    pub fn open(db: &str) -> Result<KeyStore> {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            let shown = redact(db);
            let err = |e: postgres::Error| ServeError::Store(format!("postgres store {shown}: {}", describe(&e)));
            let mut client = postgres::Client::connect(db, postgres::NoTls).map_err(err)?;
            // Two processes creating the tables at once would race on the catalog: one lock.
            let mut tx = client.transaction().map_err(err)?;
            tx.execute("SELECT pg_advisory_xact_lock(7011800018)", &[]).map_err(err)?;
            tx.batch_execute(PG_TABLES).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(KeyStore::Postgres { client: Box::new(client), url: shown })
        } else {
            let err = |e: rusqlite::Error| ServeError::Store(format!("sqlite store {db}: {e}"));
            let conn = rusqlite::Connection::open(db).map_err(err)?;
            conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;").map_err(err)?;
            conn.execute_batch(SQLITE_TABLES).map_err(err)?;
            Ok(KeyStore::Sqlite { conn, path: db.to_string() })
        }
    }

    fn sqlite_err(path: &str) -> impl Fn(rusqlite::Error) -> ServeError + '_ {
        move |e| ServeError::Store(format!("sqlite store {path}: {e}"))
    }

    fn pg_err(url: &str) -> impl Fn(postgres::Error) -> ServeError + '_ {
        move |e| ServeError::Store(format!("postgres store {url}: {}", describe(&e)))
    }

    /// Makes a key named `name`; returns the key, which is shown this once and never stored.
    pub fn create(&mut self, name: &str, scope: Scope) -> Result<String> {
        if name.is_empty() || name.len() > 100 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ServeError::Input(format!(
                "key name {name:?}: use 1-100 characters among letters, digits, '-', '_' and '.'"
            )));
        }
        let key = new_key();
        let hash = hash_key(&key);
        let prefix: String = key.chars().take(8).collect();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let n = match self {
            KeyStore::Sqlite { conn, path } => conn
                .execute(
                    "INSERT INTO serve_api_keys (name, key_hash, prefix, scope, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(name) DO NOTHING",
                    rusqlite::params![name, hash, prefix, scope.as_str(), now],
                )
                .map_err(Self::sqlite_err(path))? as u64,
            KeyStore::Postgres { client, url } => client
                .execute(
                    "INSERT INTO serve_api_keys (name, key_hash, prefix, scope, created_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &hash, &prefix, &scope.as_str(), &now],
                )
                .map_err(Self::pg_err(url))?,
        };
        if n == 0 {
            return Err(ServeError::Input(format!(
                "a key named {name:?} exists already (revoked keys keep their name)"
            )));
        }
        Ok(key)
    }

    /// Every key, revoked ones included, by name.
    pub fn list(&mut self) -> Result<Vec<KeyInfo>> {
        const SQL: &str =
            "SELECT name, key_hash, prefix, scope, created_at, revoked_at FROM serve_api_keys ORDER BY name";
        let mut rows: Vec<(String, String, String, String, String, Option<String>)> = Vec::new();
        match self {
            KeyStore::Sqlite { conn, path } => {
                let err = Self::sqlite_err(path);
                let mut st = conn.prepare_cached(SQL).map_err(&err)?;
                let it = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                    .map_err(&err)?;
                for r in it {
                    rows.push(r.map_err(&err)?);
                }
            }
            KeyStore::Postgres { client, url } => {
                for r in client.query(SQL, &[]).map_err(Self::pg_err(url))? {
                    rows.push((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)));
                }
            }
        }
        rows.into_iter()
            .map(|(name, hash, prefix, scope, created_at, revoked_at)| {
                let scope = Scope::parse(&scope)
                    .ok_or_else(|| ServeError::Store(format!("key {name:?} has an unknown scope {scope:?}")))?;
                Ok(KeyInfo { name, scope, created_at, revoked_at, prefix, hash })
            })
            .collect()
    }

    /// Revokes the key named `name`; an error when there is none (revoking twice is fine).
    pub fn revoke(&mut self, name: &str) -> Result<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let n = match self {
            KeyStore::Sqlite { conn, path } => conn
                .execute(
                    "UPDATE serve_api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE name = ?1",
                    rusqlite::params![name, now],
                )
                .map_err(Self::sqlite_err(path))? as u64,
            KeyStore::Postgres { client, url } => client
                .execute(
                    "UPDATE serve_api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1",
                    &[&name, &now],
                )
                .map_err(Self::pg_err(url))?,
        };
        if n == 0 {
            return Err(ServeError::Input(format!("no key named {name:?}")));
        }
        Ok(())
    }

    /// The secret that signs feedback tokens: 32 random bytes made by the first process that
    /// asks, the same for every later one.
    pub fn token_secret(&mut self) -> Result<Vec<u8>> {
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        let fresh = fresh.to_vec();
        match self {
            KeyStore::Sqlite { conn, path } => {
                let err = Self::sqlite_err(path);
                conn.execute(
                    "INSERT INTO serve_secret (id, secret) VALUES (1, ?1) ON CONFLICT(id) DO NOTHING",
                    [&fresh],
                )
                .map_err(&err)?;
                conn.query_row("SELECT secret FROM serve_secret WHERE id = 1", [], |r| r.get(0)).map_err(&err)
            }
            KeyStore::Postgres { client, url } => {
                let err = Self::pg_err(url);
                client
                    .execute(
                        "INSERT INTO serve_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                        &[&fresh],
                    )
                    .map_err(&err)?;
                client.query_one("SELECT secret FROM serve_secret WHERE id = 1", &[]).map(|r| r.get(0)).map_err(&err)
            }
        }
    }
}

/// A PostgreSQL error with the server's message (`postgres::Error` alone says "db error").
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

/// A URL with its password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_as_hashes_and_revocation_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db").display().to_string();
        let mut ks = KeyStore::open(&db).unwrap();
        let key = ks.create("web", Scope::Ingest).unwrap();
        assert!(key.starts_with("evk_") && key.len() > 40);
        assert!(ks.create("web", Scope::Read).unwrap_err().to_string().contains("exists"));
        assert!(ks.create("bad name", Scope::Read).is_err());
        let listed = ks.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].hash, hash_key(&key));
        assert!(listed[0].revoked_at.is_none());
        let raw: String = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT key_hash FROM serve_api_keys", [], |r| r.get(0))
            .unwrap();
        assert_ne!(raw, key);
        ks.revoke("web").unwrap();
        assert!(ks.list().unwrap()[0].revoked_at.is_some());
        assert!(ks.revoke("nope").is_err());
        let s1 = ks.token_secret().unwrap();
        assert_eq!(s1.len(), 32);
        assert_eq!(KeyStore::open(&db).unwrap().token_secret().unwrap(), s1);
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}

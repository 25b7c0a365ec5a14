//! The SQLite store's schema: the migrations from each version to the next, run in one
//! transaction on open, and the `dimension_ratings` table.

use super::SqliteStore;
use crate::store::{StoreError, StoreResult};

/// The schema version this program writes. Each entry of `MIGRATIONS` moves one version up.
pub const SCHEMA_VERSION: i64 = 5;

/// Migration `i` takes a store from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 0 -> 1: logs, scores, feedback.
    "CREATE TABLE eval_logs (
        request_id TEXT PRIMARY KEY,
        ts INTEGER NOT NULL,
        prompt TEXT NOT NULL,
        output TEXT NOT NULL,
        feedback_collected INTEGER,
        cohort TEXT,
        user_id TEXT,
        use_case TEXT,
        prompt_version TEXT,
        metadata TEXT NOT NULL
    );
    CREATE INDEX eval_logs_ts ON eval_logs(ts);
    CREATE INDEX eval_logs_cohort ON eval_logs(cohort);
    CREATE TABLE eval_scores (
        request_id TEXT NOT NULL,
        evaluator TEXT NOT NULL,
        overall REAL NOT NULL,
        scores TEXT NOT NULL,
        PRIMARY KEY (request_id, evaluator)
    ) WITHOUT ROWID;
    CREATE INDEX eval_scores_evaluator ON eval_scores(evaluator);
    CREATE TABLE feedback_events (
        event_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        feedback_type TEXT NOT NULL,
        value_num REAL,
        value_text TEXT,
        user_id TEXT,
        ts INTEGER NOT NULL
    );
    CREATE INDEX feedback_events_request ON feedback_events(request_id, feedback_type, value_num);
    CREATE INDEX feedback_events_ts ON feedback_events(ts);",
    // 1 -> 2: runs of the weekly loop.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        config_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        decision TEXT,
        run_dir TEXT NOT NULL,
        model_path TEXT,
        dataset_card TEXT,
        metrics TEXT
    );",
    // 2 -> 3: the cohort index carries request_id, so per-cohort aggregates (bias, dataset
    // rates) read the index alone instead of every wide log row.
    "DROP INDEX eval_logs_cohort;
    CREATE INDEX eval_logs_cohort ON eval_logs(cohort, request_id);",
    // 3 -> 4: integer keys and a narrow log table. `eval_logs` keeps one narrow row per request
    // (an INTEGER PRIMARY KEY `log_id`, the request id and the indexed columns); prompt, output
    // and metadata move to `log_texts`, so the analyses never read them. Scores are keyed by
    // (log_id, evaluator); feedback carries the log_id of its request, NULL while orphaned (the
    // partial index finds those when their log arrives). log_id keeps the old rowid, i.e. the
    // ingest order. Feedback has two indexes instead of three: by log_id (covering the human
    // score) and the orphans by request_id; the unused one on its time is gone.
    "CREATE TABLE eval_logs_v4 (
        log_id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        ts INTEGER NOT NULL,
        cohort TEXT,
        use_case TEXT,
        user_id TEXT,
        prompt_version TEXT,
        feedback_collected INTEGER
    );
    INSERT INTO eval_logs_v4 (log_id, request_id, ts, cohort, use_case, user_id, prompt_version, feedback_collected)
        SELECT rowid, request_id, ts, cohort, use_case, user_id, prompt_version, feedback_collected
        FROM eval_logs ORDER BY rowid;
    CREATE TABLE log_texts (
        log_id INTEGER PRIMARY KEY,
        prompt TEXT NOT NULL,
        output TEXT NOT NULL,
        metadata TEXT NOT NULL
    );
    INSERT INTO log_texts (log_id, prompt, output, metadata)
        SELECT rowid, prompt, output, metadata FROM eval_logs ORDER BY rowid;
    CREATE TABLE eval_scores_v4 (
        log_id INTEGER NOT NULL,
        evaluator TEXT NOT NULL,
        overall REAL NOT NULL,
        scores TEXT NOT NULL,
        PRIMARY KEY (log_id, evaluator)
    ) WITHOUT ROWID;
    INSERT INTO eval_scores_v4 (log_id, evaluator, overall, scores)
        SELECT l.rowid, s.evaluator, s.overall, s.scores
        FROM eval_scores s JOIN eval_logs l ON l.request_id = s.request_id ORDER BY 1, 2;
    CREATE TABLE feedback_events_v4 (
        event_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        log_id INTEGER,
        feedback_type TEXT NOT NULL,
        value_num REAL,
        value_text TEXT,
        user_id TEXT,
        ts INTEGER NOT NULL
    );
    INSERT INTO feedback_events_v4 (rowid, event_id, request_id, log_id, feedback_type, value_num, value_text,
            user_id, ts)
        SELECT f.rowid, f.event_id, f.request_id, l.rowid, f.feedback_type, f.value_num, f.value_text, f.user_id, f.ts
        FROM feedback_events f LEFT JOIN eval_logs l ON l.request_id = f.request_id ORDER BY f.rowid;
    DROP TABLE eval_logs;
    DROP TABLE eval_scores;
    DROP TABLE feedback_events;
    ALTER TABLE eval_logs_v4 RENAME TO eval_logs;
    ALTER TABLE eval_scores_v4 RENAME TO eval_scores;
    ALTER TABLE feedback_events_v4 RENAME TO feedback_events;
    CREATE INDEX eval_logs_ts ON eval_logs(ts);
    CREATE INDEX eval_logs_cohort ON eval_logs(cohort);
    CREATE INDEX eval_scores_evaluator ON eval_scores(evaluator);
    CREATE INDEX feedback_events_log ON feedback_events(log_id, feedback_type, value_num);
    CREATE INDEX feedback_events_orphans ON feedback_events(request_id) WHERE log_id IS NULL;",
    // 4 -> 5: integer evaluator ids and narrow scores. Evaluator names move to `evaluators`;
    // `eval_scores` keeps (evaluator_id, log_id, overall) keyed in that order, so one
    // evaluator's scores are one contiguous range (no separate evaluator index) and a lookup
    // compares integers, not text: about 21 bytes a row instead of 53. The other scores of an
    // ingested log (its `eval_scores` map without `overall`, as JSON), which no query reads,
    // move to `log_scores`, one row per log that has any.
    "CREATE TABLE evaluators (
        evaluator_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    INSERT INTO evaluators (name) SELECT DISTINCT evaluator FROM eval_scores ORDER BY evaluator;
    CREATE TABLE eval_scores_v5 (
        evaluator_id INTEGER NOT NULL,
        log_id INTEGER NOT NULL,
        overall REAL NOT NULL,
        PRIMARY KEY (evaluator_id, log_id)
    ) WITHOUT ROWID;
    INSERT INTO eval_scores_v5 (evaluator_id, log_id, overall)
        SELECT e.evaluator_id, s.log_id, s.overall FROM eval_scores s JOIN evaluators e ON e.name = s.evaluator
        ORDER BY 1, 2;
    CREATE TABLE log_scores (
        log_id INTEGER PRIMARY KEY,
        evaluator_id INTEGER NOT NULL,
        scores TEXT NOT NULL
    );
    INSERT INTO log_scores (log_id, evaluator_id, scores)
        SELECT s.log_id, e.evaluator_id, s.scores FROM eval_scores s JOIN evaluators e ON e.name = s.evaluator
        WHERE s.scores <> '{}' ORDER BY s.log_id;
    DROP TABLE eval_scores;
    ALTER TABLE eval_scores_v5 RENAME TO eval_scores;",
];

/// Ratings of one human dimension (feedback events with a `dimension`), kept apart from
/// `feedback_events` so that the human score and the analyses, which read only that table, are
/// unchanged by them. Created on open for new and existing stores alike (no schema version of
/// its own); keyed by request id, so a rating that comes before its log needs no attaching.
pub(super) const DIMENSION_RATINGS_SQL: &str = "CREATE TABLE IF NOT EXISTS dimension_ratings (
        event_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        dimension TEXT NOT NULL,
        value_num REAL NOT NULL,
        user_id TEXT,
        ts INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dimension_ratings_request ON dimension_ratings(request_id, dimension, value_num);";

/// Preferences between two outputs (`explicit_preference` events), kept apart from
/// `feedback_events` as dimension ratings are, so no human score or pointwise analysis counts
/// them. Created on open for new and existing stores alike; keyed by request ids, so a
/// preference that comes before its logs needs no attaching. `choice` is `a`, `b` or `tie`.
pub(super) const PREFERENCES_SQL: &str = "CREATE TABLE IF NOT EXISTS preferences (
        event_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        other_request_id TEXT NOT NULL,
        dimension TEXT,
        choice TEXT NOT NULL,
        user_id TEXT,
        ts INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS preferences_request ON preferences(request_id);
    CREATE INDEX IF NOT EXISTS preferences_other ON preferences(other_request_id);";

impl SqliteStore {
    /// Brings the file to [`SCHEMA_VERSION`]; a newer file is refused, a failed step leaves the
    /// file at its old version.
    pub(super) fn migrate(&mut self) -> StoreResult<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: self.path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        // Every step in one transaction: a store that fails any step (3 -> 4 -> 5) is left as
        // it was, at its old version. The transaction takes the write lock before it reads the
        // version again, so of two processes opening a new file at once, the second waits for
        // the first and then finds the schema in place.
        let path = self.path.display().to_string();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        let found: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        if found >= SCHEMA_VERSION {
            return tx.commit().map_err(|source| StoreError::Sqlite { path, source });
        }
        MIGRATIONS
            .iter()
            .skip(found as usize)
            .try_for_each(|sql| tx.execute_batch(sql))
            .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")))
            .and_then(|_| tx.commit())
            .map_err(|source| StoreError::Sqlite { path, source })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::{Connection, params};

    use super::*;
    use crate::record::{EvalLog, FeedbackEvent, to_micros};
    use crate::store::Store;
    use crate::store::rows::stored_text;
    use crate::store::sqlite::tests::{answers, fixture, load, log};

    /// Writes the fixture with the version-3 schema and SQL, as the previous release did.
    fn write_v3(path: &Path, logs: &[EvalLog], events: &[FeedbackEvent], second: &[(String, f64)]) {
        let mut c = Connection::open(path).unwrap();
        let tx = c.transaction().unwrap();
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.execute_batch("PRAGMA user_version = 3").unwrap();
        for l in logs {
            let n = tx
                .execute(
                    "INSERT INTO eval_logs (request_id, ts, prompt, output, feedback_collected, cohort, user_id,
                         use_case, prompt_version, metadata)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(request_id) DO NOTHING",
                    params![
                        l.request_id,
                        to_micros(&l.timestamp),
                        l.prompt,
                        l.output,
                        l.feedback_collected,
                        l.meta_str("user_cohort"),
                        l.meta_str("user_id"),
                        l.meta_str("use_case"),
                        l.meta_str("prompt_version"),
                        serde_json::to_string(&l.metadata).unwrap(),
                    ],
                )
                .unwrap();
            if n == 1 {
                tx.execute(
                    "INSERT INTO eval_scores (request_id, evaluator, overall, scores) VALUES (?1, ?2, ?3, '{}')",
                    params![l.request_id, l.evaluator, l.overall()],
                )
                .unwrap();
            }
        }
        for e in events {
            let text = stored_text(&e.value);
            tx.execute(
                "INSERT INTO feedback_events (event_id, request_id, feedback_type, value_num, value_text, user_id, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    e.event_id,
                    e.request_id,
                    e.feedback_type.as_str(),
                    e.value.as_number(),
                    text,
                    e.user_id,
                    to_micros(&e.timestamp)
                ],
            )
            .unwrap();
        }
        for (id, score) in second {
            tx.execute(
                "INSERT INTO eval_scores (request_id, evaluator, overall, scores) VALUES (?1, 'judge-v2', ?2, '{}')",
                params![id, score],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn version_3_store_migrates_and_answers_the_same() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut fresh = SqliteStore::open(&dir.path().join("fresh.db")).unwrap();
        load(&mut fresh, &logs, &events, &second);
        let old = dir.path().join("old.db");
        write_v3(&old, &logs, &events, &second);
        let migrated = SqliteStore::open(&old).unwrap();
        assert_eq!(migrated.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(answers(&migrated), answers(&fresh));
        assert_eq!(migrated.stats().unwrap().orphaned_feedback, 1);
        // The migrated store keeps taking writes: the orphan's log arrives.
        let mut migrated = migrated;
        migrated.begin().unwrap();
        migrated.insert_logs(&[log("zzz", "pro", 0.3)]).unwrap();
        migrated.commit().unwrap();
        assert_eq!(migrated.stats().unwrap().orphaned_feedback, 0);
    }

    #[test]
    fn failed_migration_leaves_the_version_3_store_untouched() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        write_v3(&old, &logs, &events, &second);
        // A table in the way of the migration makes it fail half-way through.
        Connection::open(&old).unwrap().execute_batch("CREATE TABLE eval_scores_v4 (x)").unwrap();
        assert!(SqliteStore::open(&old).is_err());
        let c = Connection::open(&old).unwrap();
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let logs_v4: i64 = c
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('eval_logs_v4', 'log_texts')", [], |r| {
                r.get(0)
            })
            .unwrap();
        let prompt: i64 =
            c.query_row("SELECT COUNT(*) FROM eval_logs WHERE prompt IS NOT NULL", [], |r| r.get(0)).unwrap();
        assert_eq!((version, logs_v4, prompt), (3, 0, 40));
    }

    /// Writes the fixture with the version-4 schema: version 3, then the 3 -> 4 step alone.
    fn write_v4(path: &Path, logs: &[EvalLog], events: &[FeedbackEvent], second: &[(String, f64)]) {
        write_v3(path, logs, events, second);
        let mut c = Connection::open(path).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[3]).unwrap();
        // An ingested log's other scores, as version 4 kept them beside `overall`.
        tx.execute_batch(
            "UPDATE eval_scores SET scores = '{\"coherence\":2.5}' WHERE evaluator = 'baseline'
                 AND log_id = (SELECT log_id FROM eval_logs WHERE request_id = 'r007');
             PRAGMA user_version = 4;",
        )
        .unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn version_4_store_migrates_and_answers_the_same() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut fresh = SqliteStore::open(&dir.path().join("fresh.db")).unwrap();
        load(&mut fresh, &logs, &events, &second);
        let old = dir.path().join("old.db");
        write_v4(&old, &logs, &events, &second);
        let mut migrated = SqliteStore::open(&old).unwrap();
        assert_eq!(migrated.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(answers(&migrated), answers(&fresh));
        let others: Vec<(String, String, String)> = migrated
            .connection()
            .prepare(
                "SELECT l.request_id, e.name, o.scores FROM log_scores o JOIN eval_logs l ON l.log_id = o.log_id
                 JOIN evaluators e ON e.evaluator_id = o.evaluator_id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(others, [("r007".to_string(), "baseline".to_string(), r#"{"coherence":2.5}"#.to_string())]);
        // The migrated store keeps taking writes, with a new evaluator and other scores.
        let mut extra = log("zzz", "pro", 0.3);
        extra.eval_scores.insert("fluency".into(), 0.25);
        migrated.begin().unwrap();
        migrated.insert_logs(&[extra]).unwrap();
        migrated.insert_scores("judge-v3", &[("zzz".into(), 0.75)]).unwrap();
        migrated.commit().unwrap();
        assert_eq!(migrated.evaluators().unwrap(), ["baseline", "judge-v2", "judge-v3"]);
        let stored: String = migrated
            .connection()
            .query_row(
                "SELECT scores FROM log_scores o JOIN eval_logs l USING (log_id) WHERE l.request_id = 'zzz'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, r#"{"fluency":0.25}"#);
    }

    #[test]
    fn failed_migration_leaves_the_version_4_store_untouched() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        write_v4(&old, &logs, &events, &second);
        Connection::open(&old).unwrap().execute_batch("CREATE TABLE eval_scores_v5 (x)").unwrap();
        assert!(SqliteStore::open(&old).is_err());
        let c = Connection::open(&old).unwrap();
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let new_tables: i64 = c
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('evaluators', 'log_scores')", [], |r| {
                r.get(0)
            })
            .unwrap();
        let scores: i64 = c.query_row("SELECT COUNT(scores) FROM eval_scores", [], |r| r.get(0)).unwrap();
        assert_eq!((version, new_tables, scores), (4, 0, 40 + second.len() as i64));
    }

    #[test]
    fn migration_from_version_3_is_one_transaction() {
        // The 3 -> 4 step succeeds, the 4 -> 5 step fails: the store stays at version 3.
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        write_v3(&old, &logs, &events, &second);
        Connection::open(&old).unwrap().execute_batch("CREATE TABLE eval_scores_v5 (x)").unwrap();
        assert!(SqliteStore::open(&old).is_err());
        let c = Connection::open(&old).unwrap();
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let v4_tables: i64 =
            c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'log_texts'", [], |r| r.get(0)).unwrap();
        assert_eq!((version, v4_tables), (3, 0));
    }

    #[test]
    fn new_stores_use_16_kib_pages() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let size: i64 = s.connection().query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(size, 16384);
    }

    #[test]
    fn reopening_keeps_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        drop(SqliteStore::open(&p).unwrap());
        let s = SqliteStore::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    }
}

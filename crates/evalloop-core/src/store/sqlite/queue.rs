//! The SQLite store's annotation-queue tables: queues (their spec as JSON), their items with
//! selection probabilities, and reviewers' answers linked to their feedback events.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::queue::{QueueItem, QueueLabel, QueueSpec};
use crate::record::to_micros;
use crate::store::{BatchOutcome, StoreError, StoreResult};

/// The queue tables, created on open for new and existing stores alike (no schema version of
/// their own, as `dimension_ratings`): nothing else reads them, so older programs are unaffected.
pub(super) const QUEUE_TABLES_SQL: &str = "CREATE TABLE IF NOT EXISTS review_queues (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS queue_items (
        queue TEXT NOT NULL,
        position INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        probability REAL NOT NULL,
        priority REAL NOT NULL,
        other_request_id TEXT,
        PRIMARY KEY (queue, position)
    );
    CREATE TABLE IF NOT EXISTS queue_labels (
        queue TEXT NOT NULL,
        request_id TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        outcome TEXT NOT NULL,
        event_id TEXT,
        ts INTEGER NOT NULL,
        other_request_id TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (queue, request_id, other_request_id, reviewer)
    );";

/// Brings queue tables made before preference queues to the shape above: `queue_items` gains
/// the nullable `other_request_id`; `queue_labels` is rebuilt with `other_request_id` (`''` for
/// a single request) in its key, since one request may be in several pairs of a queue and a
/// reviewer answers each. Both steps run in one immediate transaction and only when missing.
pub(super) fn migrate_pairs(store: &SqliteStore) -> StoreResult<()> {
    let err = store.err();
    let has = |table: &str| -> rusqlite::Result<bool> {
        store.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = 'other_request_id')",
            [table],
            |r| r.get(0),
        )
    };
    if has("queue_items").map_err(&err)? && has("queue_labels").map_err(&err)? {
        return Ok(());
    }
    store.conn.execute_batch("BEGIN IMMEDIATE").map_err(&err)?;
    let step = || -> rusqlite::Result<()> {
        if !has("queue_items")? {
            store.conn.execute_batch("ALTER TABLE queue_items ADD COLUMN other_request_id TEXT")?;
        }
        if !has("queue_labels")? {
            store.conn.execute_batch(
                "CREATE TABLE queue_labels_pairs (
                    queue TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    reviewer TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    event_id TEXT,
                    ts INTEGER NOT NULL,
                    other_request_id TEXT NOT NULL DEFAULT '',
                    PRIMARY KEY (queue, request_id, other_request_id, reviewer)
                );
                INSERT INTO queue_labels_pairs (queue, request_id, reviewer, outcome, event_id, ts)
                    SELECT queue, request_id, reviewer, outcome, event_id, ts FROM queue_labels;
                DROP TABLE queue_labels;
                ALTER TABLE queue_labels_pairs RENAME TO queue_labels;",
            )?;
        }
        Ok(())
    };
    match step() {
        Ok(()) => store.conn.execute_batch("COMMIT").map_err(&err),
        Err(e) => {
            let _ = store.conn.execute_batch("ROLLBACK");
            Err(err(e))
        }
    }
}

fn spec_of(name: &str, json: &str) -> StoreResult<QueueSpec> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("queue {name:?}: its stored spec does not parse ({e})")))
}

pub(super) fn create_queue(store: &mut SqliteStore, spec: &QueueSpec, items: &[QueueItem]) -> StoreResult<()> {
    let err = store.err();
    let json = serde_json::to_string(spec).map_err(|e| StoreError::Invalid(format!("queue {:?}: {e}", spec.name)))?;
    let n = store
        .conn
        .execute(
            "INSERT INTO review_queues (name, spec, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO NOTHING",
            params![spec.name, json, spec.created_at],
        )
        .map_err(&err)?;
    if n == 0 {
        return Err(StoreError::Invalid(format!("a queue named {:?} exists already", spec.name)));
    }
    let mut st = store
        .conn
        .prepare_cached(
            "INSERT INTO queue_items (queue, position, request_id, probability, priority, other_request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(&err)?;
    for i in items {
        st.execute(params![i.queue, i.position, i.request_id, i.probability, i.priority, i.other_request_id])
            .map_err(&err)?;
    }
    Ok(())
}

pub(super) fn queues(store: &SqliteStore) -> StoreResult<Vec<QueueSpec>> {
    let err = store.err();
    let mut st = store.conn.prepare_cached("SELECT name, spec FROM review_queues ORDER BY name").map_err(&err)?;
    let rows: Vec<(String, String)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(&err)?.collect::<Result<_, _>>().map_err(&err)?;
    rows.iter().map(|(n, s)| spec_of(n, s)).collect()
}

pub(super) fn queue(store: &SqliteStore, name: &str) -> StoreResult<Option<QueueSpec>> {
    let err = store.err();
    let json: Option<String> = store
        .conn
        .query_row("SELECT spec FROM review_queues WHERE name = ?1", [name], |r| r.get(0))
        .optional()
        .map_err(&err)?;
    json.map(|j| spec_of(name, &j)).transpose()
}

pub(super) fn queue_items(store: &SqliteStore, queue: Option<&str>) -> StoreResult<Vec<QueueItem>> {
    let err = store.err();
    let mut st = store
        .conn
        .prepare_cached(
            "SELECT queue, position, request_id, probability, priority, other_request_id FROM queue_items
             WHERE ?1 IS NULL OR queue = ?1 ORDER BY queue, position",
        )
        .map_err(&err)?;
    st.query_map([queue], |r| {
        Ok(QueueItem {
            queue: r.get(0)?,
            position: r.get(1)?,
            request_id: r.get(2)?,
            probability: r.get(3)?,
            priority: r.get(4)?,
            other_request_id: r.get(5)?,
        })
    })
    .map_err(&err)?
    .collect::<Result<_, _>>()
    .map_err(&err)
}

pub(super) fn queue_labels(store: &SqliteStore, queue: Option<&str>) -> StoreResult<Vec<QueueLabel>> {
    let err = store.err();
    let mut st = store
        .conn
        .prepare_cached(
            "SELECT queue, request_id, other_request_id, reviewer, outcome, event_id, ts FROM queue_labels
             WHERE ?1 IS NULL OR queue = ?1 ORDER BY ts, queue, request_id, other_request_id, reviewer",
        )
        .map_err(&err)?;
    let rows: Vec<crate::queue::LabelRow> = st
        .query_map([queue], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .map_err(&err)?
        .collect::<Result<_, _>>()
        .map_err(&err)?;
    rows.into_iter().map(label_of).collect()
}

/// A stored answer row as a [`QueueLabel`].
pub(in crate::store) fn label_of(row: crate::queue::LabelRow) -> StoreResult<QueueLabel> {
    crate::queue::label_from_row(row).map_err(StoreError::Invalid)
}

pub(super) fn insert_queue_labels(store: &mut SqliteStore, labels: &[QueueLabel]) -> StoreResult<BatchOutcome> {
    let err = store.err();
    let mut st = store
        .conn
        .prepare_cached(
            "INSERT INTO queue_labels (queue, request_id, other_request_id, reviewer, outcome, event_id, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(queue, request_id, other_request_id, reviewer) DO NOTHING",
        )
        .map_err(&err)?;
    let mut out = BatchOutcome::default();
    for l in labels {
        let n = st
            .execute(params![
                l.queue,
                l.request_id,
                l.other_request_id.as_deref().unwrap_or(""),
                l.reviewer,
                l.outcome.as_str(),
                l.event_id,
                to_micros(&l.timestamp)
            ])
            .map_err(&err)?;
        if n == 0 {
            out.duplicate += 1;
        } else {
            out.stored += 1;
        }
    }
    Ok(out)
}

//! The PostgreSQL store's annotation-queue tables, as the SQLite store's (`sqlite/queue.rs`).

use super::{MIGRATION_LOCK, Params, PostgresStore, describe};
use crate::queue::{QueueItem, QueueLabel, QueueSpec};
use crate::record::to_micros;
use crate::store::{BatchOutcome, StoreError, StoreResult};

/// The queue tables, created on open under the migration lock (see the SQLite store's); tables
/// made before preference queues gain `other_request_id` (in `queue_labels`' key).
const QUEUE_TABLES_SQL: &str = r#"CREATE TABLE IF NOT EXISTS review_queues (
        name TEXT COLLATE "C" PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS queue_items (
        queue TEXT COLLATE "C" NOT NULL,
        position BIGINT NOT NULL,
        request_id TEXT COLLATE "C" NOT NULL,
        probability DOUBLE PRECISION NOT NULL,
        priority DOUBLE PRECISION NOT NULL,
        other_request_id TEXT COLLATE "C",
        PRIMARY KEY (queue, position)
    );
    CREATE TABLE IF NOT EXISTS queue_labels (
        queue TEXT COLLATE "C" NOT NULL,
        request_id TEXT COLLATE "C" NOT NULL,
        reviewer TEXT COLLATE "C" NOT NULL,
        outcome TEXT NOT NULL,
        event_id TEXT,
        ts BIGINT NOT NULL,
        other_request_id TEXT COLLATE "C" NOT NULL DEFAULT '',
        PRIMARY KEY (queue, request_id, other_request_id, reviewer)
    );
    DO $$ BEGIN
        -- Checked first, so that opening a migrated store takes no table lock.
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'queue_items'::regclass
                       AND attname = 'other_request_id' AND NOT attisdropped) THEN
            ALTER TABLE queue_items ADD COLUMN other_request_id TEXT COLLATE "C";
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'queue_labels'::regclass
                       AND attname = 'other_request_id' AND NOT attisdropped) THEN
            ALTER TABLE queue_labels ADD COLUMN other_request_id TEXT COLLATE "C" NOT NULL DEFAULT '';
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = 'queue_labels'::regclass AND i.indisprimary AND a.attname = 'other_request_id'
        ) THEN
            ALTER TABLE queue_labels DROP CONSTRAINT queue_labels_pkey;
            ALTER TABLE queue_labels ADD PRIMARY KEY (queue, request_id, other_request_id, reviewer);
        END IF;
    END $$;"#;

impl PostgresStore {
    /// Creates the queue tables when missing.
    pub(super) fn create_queue_tables(&mut self) -> StoreResult<()> {
        let err = |e: postgres::Error| StoreError::Postgres { url: self.shown.clone(), message: describe(&e) };
        let mut c = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut tx = c.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1::int8)", &[&MIGRATION_LOCK]).map_err(err)?;
        tx.batch_execute(QUEUE_TABLES_SQL).map_err(err)?;
        tx.commit().map_err(err)
    }
}

fn spec_of(name: &str, json: &str) -> StoreResult<QueueSpec> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("queue {name:?}: its stored spec does not parse ({e})")))
}

pub(super) fn create_queue(store: &mut PostgresStore, spec: &QueueSpec, items: &[QueueItem]) -> StoreResult<()> {
    let json = serde_json::to_string(spec).map_err(|e| StoreError::Invalid(format!("queue {:?}: {e}", spec.name)))?;
    let n = store
        .client()
        .execute(
            "INSERT INTO review_queues (name, spec, created_at) VALUES ($1::text, $2::text, $3::text)
             ON CONFLICT (name) DO NOTHING",
            &[&spec.name, &json, &spec.created_at],
        )
        .map_err(store.err())?;
    if n == 0 {
        return Err(StoreError::Invalid(format!("a queue named {:?} exists already", spec.name)));
    }
    let mut c = store.client();
    let st = c
        .prepare(
            "INSERT INTO queue_items (queue, position, request_id, probability, priority, other_request_id)
             VALUES ($1::text, $2::int8, $3::text, $4::float8, $5::float8, $6::text)",
        )
        .map_err(store.err())?;
    for i in items {
        c.execute(
            &st,
            &[&i.queue, &i64::from(i.position), &i.request_id, &i.probability, &i.priority, &i.other_request_id],
        )
        .map_err(store.err())?;
    }
    Ok(())
}

pub(super) fn queues(store: &PostgresStore) -> StoreResult<Vec<QueueSpec>> {
    let rows: Vec<(String, String)> =
        store.query_map("SELECT name, spec FROM review_queues ORDER BY name", &Params::default(), |r| {
            Ok((r.try_get(0)?, r.try_get(1)?))
        })?;
    rows.iter().map(|(n, s)| spec_of(n, s)).collect()
}

pub(super) fn queue(store: &PostgresStore, name: &str) -> StoreResult<Option<QueueSpec>> {
    let mut params = Params::default();
    let p = params.bind(name.to_string(), "text");
    let rows: Vec<String> =
        store.query_map(&format!("SELECT spec FROM review_queues WHERE name = {p}"), &params, |r| r.try_get(0))?;
    rows.first().map(|j| spec_of(name, j)).transpose()
}

pub(super) fn queue_items(store: &PostgresStore, queue: Option<&str>) -> StoreResult<Vec<QueueItem>> {
    let mut params = Params::default();
    let p = params.bind(queue.map(str::to_string), "text");
    let sql = format!(
        "SELECT queue, position, request_id, probability, priority, other_request_id FROM queue_items
         WHERE {p} IS NULL OR queue = {p} ORDER BY queue, position"
    );
    store.query_map(&sql, &params, |r| {
        let position: i64 = r.try_get(1)?;
        Ok(QueueItem {
            queue: r.try_get(0)?,
            position: position as u32,
            request_id: r.try_get(2)?,
            probability: r.try_get(3)?,
            priority: r.try_get(4)?,
            other_request_id: r.try_get(5)?,
        })
    })
}

pub(super) fn queue_labels(store: &PostgresStore, queue: Option<&str>) -> StoreResult<Vec<QueueLabel>> {
    let mut params = Params::default();
    let p = params.bind(queue.map(str::to_string), "text");
    let sql = format!(
        "SELECT queue, request_id, other_request_id, reviewer, outcome, event_id, ts FROM queue_labels
         WHERE {p} IS NULL OR queue = {p} ORDER BY ts, queue, request_id, other_request_id, reviewer"
    );
    let rows = store.query_map(&sql, &params, |r| {
        Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?))
    })?;
    rows.into_iter().map(|r| crate::queue::label_from_row(r).map_err(StoreError::Invalid)).collect()
}

pub(super) fn insert_queue_labels(store: &mut PostgresStore, labels: &[QueueLabel]) -> StoreResult<BatchOutcome> {
    let mut out = BatchOutcome::default();
    let mut c = store.client();
    let st = c
        .prepare(
            "INSERT INTO queue_labels (queue, request_id, other_request_id, reviewer, outcome, event_id, ts)
             VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::int8)
             ON CONFLICT (queue, request_id, other_request_id, reviewer) DO NOTHING",
        )
        .map_err(store.err())?;
    for l in labels {
        let n = c
            .execute(
                &st,
                &[
                    &l.queue,
                    &l.request_id,
                    &l.other_request_id.as_deref().unwrap_or(""),
                    &l.reviewer,
                    &l.outcome.as_str(),
                    &l.event_id,
                    &to_micros(&l.timestamp),
                ],
            )
            .map_err(store.err())?;
        if n == 0 {
            out.duplicate += 1;
        } else {
            out.stored += 1;
        }
    }
    Ok(out)
}

pub(super) fn lock_queue(store: &mut PostgresStore, name: &str) -> StoreResult<()> {
    store
        .client()
        .execute("SELECT 1 FROM review_queues WHERE name = $1::text FOR UPDATE", &[&name])
        .map_err(store.err())?;
    Ok(())
}

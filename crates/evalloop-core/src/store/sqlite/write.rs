//! Writes to the SQLite store: logs with their scores and texts, feedback events (and
//! dimension ratings), scores of a new evaluator.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::record::{EvalLog, FeedbackEvent, to_micros};
use crate::store::rows;
use crate::store::{BatchOutcome, StoreResult};

/// [`Store::insert_logs`](crate::store::Store::insert_logs): each log, its texts and scores;
/// feedback that came before it is attached to it.
pub(super) fn insert_logs(store: &mut SqliteStore, logs: &[EvalLog]) -> StoreResult<BatchOutcome> {
    let err = store.err();
    let mut out = BatchOutcome::default();
    let mut log_stmt = store
        .conn
        .prepare_cached(
            "INSERT INTO eval_logs (request_id, ts, feedback_collected, cohort, user_id, use_case, prompt_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(request_id) DO NOTHING",
        )
        .map_err(&err)?;
    let mut text_stmt = store
        .conn
        .prepare_cached("INSERT INTO log_texts (log_id, prompt, output, metadata) VALUES (?1, ?2, ?3, ?4)")
        .map_err(&err)?;
    let mut score_stmt = store
        .conn
        .prepare_cached(
            "INSERT INTO eval_scores (evaluator_id, log_id, overall) VALUES (?1, ?2, ?3)
             ON CONFLICT(evaluator_id, log_id) DO NOTHING",
        )
        .map_err(&err)?;
    let mut others_stmt = store
        .conn
        .prepare_cached("INSERT INTO log_scores (log_id, evaluator_id, scores) VALUES (?1, ?2, ?3)")
        .map_err(&err)?;
    // Feedback that came before its log is attached to it here; when there is none (the
    // usual case, read from the small partial index), the per-log update is skipped.
    let orphans: bool = store
        .conn
        .query_row("SELECT EXISTS (SELECT 1 FROM feedback_events WHERE log_id IS NULL)", [], |r| r.get(0))
        .map_err(&err)?;
    let mut attach = store
        .conn
        .prepare_cached("UPDATE feedback_events SET log_id = ?1 WHERE request_id = ?2 AND log_id IS NULL")
        .map_err(&err)?;
    for l in logs {
        let n = log_stmt
            .execute(params![
                l.request_id,
                to_micros(&l.timestamp),
                l.feedback_collected,
                l.meta_str("user_cohort"),
                l.meta_str("user_id"),
                l.meta_str("use_case"),
                l.meta_str("prompt_version"),
            ])
            .map_err(&err)?;
        if n == 0 {
            out.duplicate += 1;
            continue;
        }
        out.stored += 1;
        let log_id = store.conn.last_insert_rowid();
        let metadata = serde_json::to_string(&l.metadata).unwrap_or_else(|_| "{}".into());
        text_stmt.execute(params![log_id, l.prompt, l.output, metadata]).map_err(&err)?;
        // After last_insert_rowid: a new evaluator's id is an insert too.
        let evaluator_id = store.evaluator_id(&l.evaluator)?;
        score_stmt.execute(params![evaluator_id, log_id, l.overall()]).map_err(&err)?;
        if let Some(others) = rows::other_scores(l) {
            others_stmt.execute(params![log_id, evaluator_id, others]).map_err(&err)?;
        }
        if orphans {
            attach.execute(params![log_id, l.request_id]).map_err(&err)?;
        }
    }
    Ok(out)
}

/// [`Store::insert_feedback`](crate::store::Store::insert_feedback): preferences go to
/// `preferences`, other events with a dimension to `dimension_ratings`, the rest to
/// `feedback_events`.
pub(super) fn insert_feedback(store: &mut SqliteStore, events: &[FeedbackEvent]) -> StoreResult<BatchOutcome> {
    let err = store.err();
    let mut out = BatchOutcome::default();
    let mut stmt = store
        .conn
        .prepare_cached(
            "INSERT INTO feedback_events (event_id, request_id, log_id, feedback_type, value_num, value_text,
                 user_id, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(event_id) DO NOTHING",
        )
        .map_err(&err)?;
    let mut dim_stmt = store
        .conn
        .prepare_cached(
            "INSERT INTO dimension_ratings (event_id, request_id, dimension, value_num, user_id, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(event_id) DO NOTHING",
        )
        .map_err(&err)?;
    let mut pref_stmt = store
        .conn
        .prepare_cached(
            "INSERT INTO preferences (event_id, request_id, other_request_id, dimension, choice, user_id, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(event_id) DO NOTHING",
        )
        .map_err(&err)?;
    let mut log_id = store.conn.prepare_cached("SELECT log_id FROM eval_logs WHERE request_id = ?1").map_err(&err)?;
    for e in events {
        let text = rows::stored_text(&e.value);
        let mut id: Option<i64> = log_id.query_row([&e.request_id], |r| r.get(0)).optional().map_err(&err)?;
        if let (Some(b), Some(_)) = (&e.other_request_id, id) {
            // A preference is orphaned while either of its outputs has no log.
            id = log_id.query_row([b], |r| r.get(0)).optional().map_err(&err)?;
        }
        let n = match (&e.other_request_id, &e.dimension) {
            (Some(b), d) => pref_stmt.execute(params![
                e.event_id,
                e.request_id,
                b,
                d,
                e.value.to_json().as_str(),
                e.user_id,
                to_micros(&e.timestamp),
            ]),
            (None, Some(d)) => dim_stmt.execute(params![
                e.event_id,
                e.request_id,
                d,
                e.value.as_number(),
                e.user_id,
                to_micros(&e.timestamp),
            ]),
            (None, None) => stmt.execute(params![
                e.event_id,
                e.request_id,
                id,
                e.feedback_type.as_str(),
                e.value.as_number(),
                text,
                e.user_id,
                to_micros(&e.timestamp),
            ]),
        }
        .map_err(&err)?;
        if n == 0 {
            out.duplicate += 1;
            continue;
        }
        out.stored += 1;
        if id.is_none() {
            out.orphaned += 1;
        }
    }
    Ok(out)
}

/// [`Store::insert_scores`](crate::store::Store::insert_scores): an upsert per request.
pub(super) fn insert_scores(
    store: &mut SqliteStore,
    evaluator: &str,
    scores: &[(String, f64)],
) -> StoreResult<BatchOutcome> {
    let err = store.err();
    let mut out = BatchOutcome::default();
    let mut stmt = store
        .conn
        .prepare_cached(
            "INSERT INTO eval_scores (evaluator_id, log_id, overall)
             SELECT ?2, l.log_id, ?3 FROM eval_logs l WHERE l.request_id = ?1
             ON CONFLICT(evaluator_id, log_id) DO UPDATE SET overall = excluded.overall",
        )
        .map_err(&err)?;
    let evaluator = store.evaluator_id(evaluator)?;
    for (id, score) in scores {
        if stmt.execute(params![id, evaluator, score]).map_err(&err)? == 0 {
            out.orphaned += 1;
        } else {
            out.stored += 1;
        }
    }
    Ok(out)
}

impl SqliteStore {
    /// The `evaluator_id` of an evaluator name, added to `evaluators` when new.
    fn evaluator_id(&self, name: &str) -> StoreResult<i64> {
        if let Some(&id) = self.evaluator_ids.borrow().get(name) {
            return Ok(id);
        }
        let err = self.err();
        let mut add = self
            .conn
            .prepare_cached("INSERT INTO evaluators (name) VALUES (?1) ON CONFLICT(name) DO NOTHING")
            .map_err(&err)?;
        add.execute([name]).map_err(&err)?;
        let mut get = self.conn.prepare_cached("SELECT evaluator_id FROM evaluators WHERE name = ?1").map_err(&err)?;
        let id: i64 = get.query_row([name], |r| r.get(0)).map_err(&err)?;
        self.evaluator_ids.borrow_mut().insert(name.to_string(), id);
        Ok(id)
    }
}

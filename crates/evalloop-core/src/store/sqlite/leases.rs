//! The SQLite store's scoring leases (see [`crate::store::leases`]): each step in a write
//! transaction (`BEGIN IMMEDIATE`), so workers on one file take turns.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::store::leases::{LeaseProgress, LeasedRange, PlannedRange};
use crate::store::{Store, StoreResult};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SqliteStore {
    /// Runs `f` inside the caller's transaction, or inside a write transaction of its own when
    /// none is open (as the PostgreSQL store's `in_transaction` does).
    fn in_transaction<T>(&mut self, f: impl FnOnce(&mut SqliteStore) -> StoreResult<T>) -> StoreResult<T> {
        if self.in_tx {
            return f(self);
        }
        self.begin()?;
        match f(self) {
            Ok(v) => {
                self.commit()?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.rollback();
                Err(e)
            }
        }
    }

    pub(super) fn plan_leases(&mut self, job: &str, ranges: &[PlannedRange]) -> StoreResult<bool> {
        self.in_transaction(|s| {
            let err = s.err();
            let planned: i64 = s
                .conn
                .query_row("SELECT COUNT(*) FROM score_leases WHERE job = ?1", [job], |r| r.get(0))
                .map_err(&err)?;
            if planned > 0 {
                return Ok(false);
            }
            let mut ins = s
                .conn
                .prepare_cached(
                    "INSERT INTO score_leases (job, range_no, first_id, last_id, requests, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'todo')",
                )
                .map_err(&err)?;
            for (i, r) in ranges.iter().enumerate() {
                ins.execute(params![job, i as i64, r.first_id, r.last_id, r.requests as i64]).map_err(&err)?;
            }
            Ok(true)
        })
    }

    pub(super) fn next_lease(&mut self, job: &str, worker: &str, ttl_ms: i64) -> StoreResult<Option<LeasedRange>> {
        self.in_transaction(|s| {
            let err = s.err();
            let now = now_ms();
            let next = s
                .conn
                .query_row(
                    "SELECT range_no, first_id, last_id, attempts FROM score_leases
                     WHERE job = ?1 AND (state = 'todo' OR (state = 'leased' AND lease_until < ?2))
                     ORDER BY range_no LIMIT 1",
                    params![job, now],
                    |r| {
                        Ok(LeasedRange {
                            range_no: r.get(0)?,
                            first_id: r.get(1)?,
                            last_id: r.get(2)?,
                            attempts: r.get(3)?,
                        })
                    },
                )
                .optional()
                .map_err(&err)?;
            let Some(mut l) = next else { return Ok(None) };
            s.conn
                .execute(
                    "UPDATE score_leases SET state = 'leased', worker = ?3, lease_until = ?4, attempts = attempts + 1
                     WHERE job = ?1 AND range_no = ?2",
                    params![job, l.range_no, worker, now + ttl_ms],
                )
                .map_err(&err)?;
            l.attempts += 1;
            Ok(Some(l))
        })
    }

    pub(super) fn finish_lease(
        &mut self,
        job: &str,
        range_no: i64,
        worker: &str,
        evaluator: &str,
        scores: &[(String, f64)],
    ) -> StoreResult<bool> {
        self.in_transaction(|s| {
            let holder: Option<(String, Option<String>)> = s
                .conn
                .query_row(
                    "SELECT state, worker FROM score_leases WHERE job = ?1 AND range_no = ?2",
                    params![job, range_no],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(s.err())?;
            if !matches!(&holder, Some((state, Some(w))) if state == "leased" && w == worker) {
                return Ok(false);
            }
            s.insert_scores(evaluator, scores)?;
            s.conn
                .execute(
                    "UPDATE score_leases SET state = 'done', finished_by = ?3 WHERE job = ?1 AND range_no = ?2",
                    params![job, range_no, worker],
                )
                .map_err(s.err())?;
            Ok(true)
        })
    }

    pub(super) fn leases_of(&self, job: &str) -> StoreResult<LeaseProgress> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'done'), COUNT(*) FILTER (WHERE state = 'leased'),
                        COUNT(*) FILTER (WHERE state = 'todo'),
                        COALESCE(SUM(CASE WHEN state = 'done' THEN requests ELSE 0 END), 0),
                        COALESCE(SUM(MAX(attempts - 1, 0)), 0)
                 FROM score_leases WHERE job = ?1",
                [job],
                |r| {
                    let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
                    Ok(LeaseProgress {
                        ranges: n(0)?,
                        done: n(1)?,
                        leased: n(2)?,
                        todo: n(3)?,
                        requests_done: n(4)?,
                        takeovers: n(5)?,
                    })
                },
            )
            .map_err(self.err())
    }
}

//! The scored requests (the join every analysis stands on), as rows or as columns, read in
//! `log_id` chunks on several connections when the store is large.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};

use super::SqliteStore;
use super::query::scored_sql;
use crate::store::rows;
use crate::store::{ScoredColumns, ScoredQuery, ScoredRequest, ScoredRow, Store, StoreResult};

/// [`Store::scored_requests`]: the rows of every chunk, sorted by request id and evaluator.
pub(super) fn scored_requests(store: &SqliteStore, q: &ScoredQuery) -> StoreResult<Vec<ScoredRequest>> {
    let (sql, params) = scored_sql(q, false);
    let run = |conn: &Connection, a: i64, b: i64| -> rusqlite::Result<Vec<ScoredRequest>> {
        // Reserving the row bound once spares the copies and fresh pages of a doubling
        // vector of large rows.
        let events = chunk_row_bound(conn, a, b)?;
        let mut params = params.clone();
        params.extend([SqlValue::Integer(a), SqlValue::Integer(b)]);
        let mut stmt = conn.prepare(&sql)?;
        let mut out = Vec::with_capacity(q.limit.map_or(events, |n| events.min(n as i64)).max(0) as usize);
        for row in
            stmt.query_map(params_from_iter(params.iter()), |r| rows::scored_request(r, std::convert::identity))?
        {
            out.push(row?);
        }
        Ok(out)
    };
    if q.limit.is_some() {
        return run(&store.conn, i64::MIN, i64::MAX).map_err(store.err());
    }
    // Appending to the first chunk's vector (reserved for every chunk) copies only the
    // other chunks' rows, where a fresh vector would copy all of them into fresh pages.
    let mut chunks = store.on_chunks(run)?.into_iter();
    let mut rows = chunks.next().unwrap_or_default();
    for chunk in chunks {
        rows.extend(chunk);
    }
    rows.sort_unstable_by(|a, b| (&a.request_id, &a.evaluator).cmp(&(&b.request_id, &b.evaluator)));
    Ok(rows)
}

/// [`Store::scored_columns`]: the lean query read straight into columns (through
/// [`scored_requests`] when text or a limit is asked).
pub(super) fn scored_columns(store: &SqliteStore, q: &ScoredQuery) -> StoreResult<ScoredColumns> {
    if q.with_text || q.limit.is_some() {
        return Ok(ScoredColumns::from_rows(&store.scored_requests(&ScoredQuery { with_text: false, ..q.clone() })?));
    }
    let (sql, params) = scored_sql(q, true);
    let run = |conn: &Connection, a: i64, b: i64| -> rusqlite::Result<ScoredColumns> {
        let events = chunk_row_bound(conn, a, b)?;
        let mut params = params.clone();
        params.extend([SqlValue::Integer(a), SqlValue::Integer(b)]);
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(params.iter()))?;
        let mut out = ScoredColumns::with_capacity(events.max(0) as usize);
        while let Some(r) = rows.next()? {
            out.push(ScoredRow {
                request_id: r.get_ref(0)?.as_str()?,
                evaluator: r.get_ref(2)?.as_str()?,
                eval_score: r.get(3)?,
                human_score: r.get(4)?,
                cohort: r.get_ref(6)?.as_str_or_null()?,
                use_case: r.get_ref(7)?.as_str_or_null()?,
                group: r.get_ref(8)?.as_str_or_null()?,
            });
        }
        Ok(out)
    };
    let mut chunks = store.on_chunks(run)?.into_iter();
    let mut cols = chunks.next().unwrap_or_default();
    for chunk in chunks {
        cols.append(&chunk);
    }
    cols.sort_by_request();
    Ok(cols)
}

/// The number of rows to reserve for the scored requests of the `log_id` chunk `[a, b]`: its
/// feedback event count, which bounds the rows of one evaluator. The first chunk's buffer
/// receives the other chunks' rows too, so its bound covers all of them (`on_chunks` gives the
/// first chunk `a = i64::MIN`).
fn chunk_row_bound(conn: &Connection, a: i64, b: i64) -> rusqlite::Result<i64> {
    let upper = if a == i64::MIN { i64::MAX } else { b };
    conn.query_row("SELECT COUNT(*) FROM feedback_events WHERE log_id BETWEEN ?1 AND ?2", [a, upper], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::HumanPolicy;
    use crate::store::Filter;
    use crate::store::sqlite::chunks::PARALLEL_MIN_LOGS;
    use crate::store::sqlite::tests::{fixture, load};

    #[test]
    fn scored_columns_hold_the_scored_requests_rows() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        load(&mut s, &logs, &events, &second);
        let judge = Filter { evaluator: Some("judge-v2".into()), ..Default::default() };
        let policy = HumanPolicy { implicit_usage: Some(4.0), ..Default::default() };
        let queries = [
            ScoredQuery::default(),
            ScoredQuery { filter: judge, group_key: Some("tier".into()), ..Default::default() },
            ScoredQuery { policy, group_key: Some("user_cohort".into()), ..Default::default() },
            ScoredQuery { limit: Some(3), with_text: true, ..Default::default() },
        ];
        for parallel_min_logs in [PARALLEL_MIN_LOGS, 0] {
            s.parallel_min_logs = parallel_min_logs;
            for q in &queries {
                let want = ScoredColumns::from_rows(&s.scored_requests(q).unwrap());
                let cols = s.scored_columns(q).unwrap();
                assert!(!cols.is_empty());
                let rows = |c: &ScoredColumns| (0..c.len()).map(|i| format!("{:?}", c.row(i))).collect::<Vec<_>>();
                assert_eq!(rows(&cols), rows(&want), "{q:?} with parallel_min_logs {parallel_min_logs}");
            }
        }
    }
}

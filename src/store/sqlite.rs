//! The SQLite store: one file (WAL mode), schema created and migrated by the program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params, params_from_iter};

use super::{
    BatchOutcome, CohortStats, Filter, RequestText, RunRecord, ScoredQuery, ScoredRequest, Store, StoreError,
    StoreResult, StoreStats,
};
use crate::feedback::HumanPolicy;
use crate::record::{EvalLog, FeedbackEvent, FeedbackValue, format_timestamp, from_micros, to_micros};

/// The schema version this program writes. Each entry of [`MIGRATIONS`] moves one version up.
pub const SCHEMA_VERSION: i64 = 3;

/// Migration `i` takes a store from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
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
];

/// A store in one SQLite file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    in_tx: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and migrates it to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let err = |source| StoreError::Sqlite { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 10000;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(err)?;
        let mut store = SqliteStore { conn, path: path.to_path_buf(), in_tx: false };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.path.display().to_string(), source }
    }

    /// The schema version recorded in the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(self.err())
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: self.path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (version, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self
                .conn
                .transaction()
                .map_err(|source| StoreError::Sqlite { path: self.path.display().to_string(), source })?;
            tx.execute_batch(sql)
                .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1)))
                .and_then(|_| tx.commit())
                .map_err(|source| StoreError::Sqlite { path: self.path.display().to_string(), source })?;
        }
        Ok(())
    }

    /// Direct access for tests and benchmarks.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// SQL for the score one feedback event contributes under a policy; parameters ?1..?5 are the
/// thumbs-up, thumbs-down, usage, edit and discard scores (NULL = ignored). Table alias `f`.
const EVENT_SCORE_SQL: &str = "CASE f.feedback_type
        WHEN 'explicit_thumbs_up' THEN ?1
        WHEN 'explicit_thumbs_down' THEN ?2
        WHEN 'explicit_rating' THEN f.value_num
        WHEN 'implicit_usage' THEN CASE WHEN f.value_num = 1 THEN ?3 END
        WHEN 'implicit_edit' THEN CASE WHEN f.value_num = 1 THEN ?4 END
        WHEN 'implicit_discard' THEN CASE WHEN f.value_num = 1 THEN ?5 END
    END";

fn policy_params(p: &HumanPolicy) -> Vec<SqlValue> {
    let opt = |x: Option<f64>| x.map_or(SqlValue::Null, SqlValue::Real);
    vec![
        SqlValue::Real(p.thumbs_up),
        SqlValue::Real(p.thumbs_down),
        opt(p.implicit_usage),
        opt(p.implicit_edit),
        opt(p.implicit_discard),
    ]
}

/// A JSON path for a metadata key, quoted so any key is taken literally.
pub(crate) fn json_path(key: &str) -> String {
    format!("$.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Column for a metadata key that has one, else a `json_extract` on the metadata text.
fn metadata_expr(key: &str, params: &mut Vec<SqlValue>) -> String {
    match key {
        "user_cohort" => "l.cohort".into(),
        "user_id" => "l.user_id".into(),
        "use_case" => "l.use_case".into(),
        "prompt_version" => "l.prompt_version".into(),
        _ => {
            params.push(SqlValue::Text(json_path(key)));
            format!("CAST(json_extract(l.metadata, ?{}) AS TEXT)", params.len())
        }
    }
}

/// Appends `AND ...` conditions for a filter on `eval_logs l` (and `eval_scores s` when
/// `with_scores`); values travel as parameters, never in the SQL text.
fn filter_sql(f: &Filter, with_scores: bool, params: &mut Vec<SqlValue>) -> String {
    let mut sql = String::new();
    let push = |sql: &mut String, cond: &str, v: SqlValue, params: &mut Vec<SqlValue>| {
        params.push(v);
        sql.push_str(&format!(" AND {cond} ?{}", params.len()));
    };
    if let Some(t) = f.since {
        push(&mut sql, "l.ts >=", SqlValue::Integer(to_micros(&t)), params);
    }
    if let Some(t) = f.until {
        push(&mut sql, "l.ts <", SqlValue::Integer(to_micros(&t)), params);
    }
    if let Some(c) = &f.cohort {
        push(&mut sql, "l.cohort =", SqlValue::Text(c.clone()), params);
    }
    if with_scores && let Some(e) = &f.evaluator {
        push(&mut sql, "s.evaluator =", SqlValue::Text(e.clone()), params);
    }
    for (k, v) in &f.metadata {
        let expr = metadata_expr(k, params);
        push(&mut sql, &format!("{expr} ="), SqlValue::Text(v.clone()), params);
    }
    sql
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn begin(&mut self) -> StoreResult<()> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.err())?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(self.err())?;
            self.in_tx = false;
        }
        Ok(())
    }

    fn rollback(&mut self) -> StoreResult<()> {
        if self.in_tx {
            self.conn.execute_batch("ROLLBACK").map_err(self.err())?;
            self.in_tx = false;
        }
        Ok(())
    }

    fn insert_logs(&mut self, logs: &[EvalLog]) -> StoreResult<BatchOutcome> {
        let err = self.err();
        let mut out = BatchOutcome::default();
        let mut log_stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO eval_logs (request_id, ts, prompt, output, feedback_collected, cohort, user_id,
                     use_case, prompt_version, metadata)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(request_id) DO NOTHING",
            )
            .map_err(&err)?;
        let mut score_stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO eval_scores (request_id, evaluator, overall, scores) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(request_id, evaluator) DO NOTHING",
            )
            .map_err(&err)?;
        for l in logs {
            let n = log_stmt
                .execute(params![
                    l.request_id,
                    to_micros(&l.timestamp),
                    l.prompt,
                    l.output,
                    l.feedback_collected,
                    l.meta_str("user_cohort"),
                    l.meta_str("user_id"),
                    l.meta_str("use_case"),
                    l.meta_str("prompt_version"),
                    serde_json::to_string(&l.metadata).unwrap_or_else(|_| "{}".into()),
                ])
                .map_err(&err)?;
            if n == 0 {
                out.duplicate += 1;
                continue;
            }
            out.stored += 1;
            let others: BTreeMap<&str, f64> =
                l.eval_scores.iter().filter(|(k, _)| k.as_str() != "overall").map(|(k, v)| (k.as_str(), *v)).collect();
            let others = serde_json::to_string(&others).unwrap_or_else(|_| "{}".into());
            score_stmt.execute(params![l.request_id, l.evaluator, l.overall(), others]).map_err(&err)?;
        }
        Ok(out)
    }

    fn insert_feedback(&mut self, events: &[FeedbackEvent]) -> StoreResult<BatchOutcome> {
        let err = self.err();
        let mut out = BatchOutcome::default();
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO feedback_events (event_id, request_id, feedback_type, value_num, value_text, user_id, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(event_id) DO NOTHING",
            )
            .map_err(&err)?;
        let mut exists = self.conn.prepare_cached("SELECT 1 FROM eval_logs WHERE request_id = ?1").map_err(&err)?;
        for e in events {
            let text = match &e.value {
                FeedbackValue::Text(t) => Some(t.as_str()),
                _ => None,
            };
            let n = stmt
                .execute(params![
                    e.event_id,
                    e.request_id,
                    e.feedback_type.as_str(),
                    e.value.as_number(),
                    text,
                    e.user_id,
                    to_micros(&e.timestamp),
                ])
                .map_err(&err)?;
            if n == 0 {
                out.duplicate += 1;
                continue;
            }
            out.stored += 1;
            if !exists.exists([&e.request_id]).map_err(&err)? {
                out.orphaned += 1;
            }
        }
        Ok(out)
    }

    fn insert_scores(&mut self, evaluator: &str, scores: &[(String, f64)]) -> StoreResult<BatchOutcome> {
        let err = self.err();
        let mut out = BatchOutcome::default();
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO eval_scores (request_id, evaluator, overall, scores)
                 SELECT ?1, ?2, ?3, '{}' WHERE EXISTS (SELECT 1 FROM eval_logs WHERE request_id = ?1)
                 ON CONFLICT(request_id, evaluator) DO UPDATE SET overall = excluded.overall",
            )
            .map_err(&err)?;
        for (id, score) in scores {
            if stmt.execute(params![id, evaluator, score]).map_err(&err)? == 0 {
                out.orphaned += 1;
            } else {
                out.stored += 1;
            }
        }
        Ok(out)
    }

    fn log_exists(&self, request_id: &str) -> StoreResult<bool> {
        let mut s = self.conn.prepare_cached("SELECT 1 FROM eval_logs WHERE request_id = ?1").map_err(self.err())?;
        s.exists([request_id]).map_err(self.err())
    }

    fn feedback_for(&self, request_id: &str) -> StoreResult<Vec<FeedbackEvent>> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT event_id, feedback_type, value_num, value_text, user_id, ts FROM feedback_events
                 WHERE request_id = ?1 ORDER BY ts, event_id",
            )
            .map_err(self.err())?;
        let rows = s
            .query_map([request_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<f64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(super::stored_event(request_id, row.map_err(self.err())?)?);
        }
        Ok(out)
    }

    fn stats(&self) -> StoreResult<StoreStats> {
        let err = self.err();
        let count = |sql: &str| -> StoreResult<u64> {
            self.conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(self.err())
        };
        let mut st = StoreStats {
            backend: "sqlite".into(),
            location: self.location(),
            schema_version: self.schema_version()?,
            logs: count("SELECT COUNT(*) FROM eval_logs")?,
            feedback_events: count("SELECT COUNT(*) FROM feedback_events")?,
            orphaned_feedback: count(
                "SELECT COUNT(*) FROM feedback_events f WHERE NOT EXISTS
                 (SELECT 1 FROM eval_logs l WHERE l.request_id = f.request_id)",
            )?,
            ..Default::default()
        };
        st.feedback_by_type = self.counted(
            "SELECT feedback_type, COUNT(*) FROM feedback_events GROUP BY feedback_type ORDER BY feedback_type",
        )?;
        st.cohorts = self.counted("SELECT cohort, COUNT(*) FROM eval_logs GROUP BY cohort ORDER BY cohort")?;
        st.evaluators =
            self.counted("SELECT evaluator, COUNT(*) FROM eval_scores GROUP BY evaluator ORDER BY evaluator")?;
        let (lo, hi): (Option<i64>, Option<i64>) = self
            .conn
            .query_row("SELECT MIN(ts), MAX(ts) FROM eval_logs", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(&err)?;
        st.first_timestamp = lo.map(|t| format_timestamp(&from_micros(t)));
        st.last_timestamp = hi.map(|t| format_timestamp(&from_micros(t)));
        Ok(st)
    }

    fn evaluators(&self) -> StoreResult<Vec<String>> {
        let mut s =
            self.conn.prepare("SELECT DISTINCT evaluator FROM eval_scores ORDER BY evaluator").map_err(self.err())?;
        let rows = s.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn scored_requests(&self, q: &ScoredQuery) -> StoreResult<Vec<ScoredRequest>> {
        let mut params = policy_params(&q.policy);
        let group = match &q.group_key {
            Some(k) => metadata_expr(k, &mut params),
            None => "NULL".into(),
        };
        let text = if q.with_text { "l.prompt, l.output, l.metadata" } else { "NULL, NULL, NULL" };
        let cond = filter_sql(&q.filter, true, &mut params);
        // Without a limit the rows are sorted here: SQLite would sort them in a temporary B-tree
        // although the feedback aggregate already comes in request order.
        let order = match q.limit {
            Some(n) => {
                params.push(SqlValue::Integer(n as i64));
                format!(" ORDER BY l.request_id, s.evaluator LIMIT ?{}", params.len())
            }
            None => String::new(),
        };
        // CROSS JOIN fixes the join order: the (few) requests with feedback drive the lookups.
        // Left to itself, SQLite 3.54 may scan every score of the evaluator instead.
        let sql = format!(
            "WITH h AS (
                SELECT f.request_id, AVG({EVENT_SCORE_SQL}) AS human, COUNT({EVENT_SCORE_SQL}) AS n
                FROM feedback_events f GROUP BY f.request_id
             )
             SELECT l.request_id, l.ts, s.evaluator, s.overall, h.human, h.n, l.cohort, l.use_case, {group}, {text}
             FROM h CROSS JOIN eval_logs l CROSS JOIN eval_scores s
             WHERE l.request_id = h.request_id AND s.request_id = l.request_id AND h.human IS NOT NULL{cond}
             {order}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params_from_iter(params.iter()), |r| {
                let prompt: Option<String> = r.get(9)?;
                let text = match prompt {
                    Some(prompt) => Some(RequestText { prompt, output: r.get(10)?, metadata: r.get(11)? }),
                    None => None,
                };
                Ok(ScoredRequest {
                    request_id: r.get(0)?,
                    timestamp_us: r.get(1)?,
                    evaluator: r.get(2)?,
                    eval_score: r.get(3)?,
                    human_score: r.get(4)?,
                    n_scored_events: r.get::<_, i64>(5)? as u64,
                    cohort: r.get(6)?,
                    use_case: r.get(7)?,
                    group: r.get(8)?,
                    text,
                })
            })
            .map_err(self.err())?;
        let mut rows: Vec<ScoredRequest> = rows.collect::<Result<_, _>>().map_err(self.err())?;
        if q.limit.is_none() {
            rows.sort_by(|a, b| (&a.request_id, &a.evaluator).cmp(&(&b.request_id, &b.evaluator)));
        }
        Ok(rows)
    }

    fn cohort_stats(&self, filter: &Filter, policy: &HumanPolicy) -> StoreResult<Vec<CohortStats>> {
        let mut params = policy_params(policy);
        params.push(SqlValue::Real(policy.good_min));
        let good = params.len();
        // With an evaluator, its score is one primary-key lookup per request; without one, the
        // mean over the request's evaluators.
        let score_join = match &filter.evaluator {
            Some(e) => {
                params.push(SqlValue::Text(e.clone()));
                format!("LEFT JOIN eval_scores s ON s.request_id = l.request_id AND s.evaluator = ?{}", params.len())
            }
            None => "LEFT JOIN (SELECT request_id, AVG(overall) AS overall FROM eval_scores GROUP BY request_id) s
                     ON s.request_id = l.request_id"
                .to_string(),
        };
        let cond = filter_sql(&Filter { evaluator: None, ..filter.clone() }, false, &mut params);
        let sql = format!(
            "WITH h AS (
                SELECT f.request_id,
                       MAX(f.feedback_type LIKE 'explicit%') AS ex,
                       MAX(f.feedback_type LIKE 'implicit%') AS im,
                       AVG({EVENT_SCORE_SQL}) AS human
                FROM feedback_events f GROUP BY f.request_id
             )
             SELECT l.cohort, COUNT(*), COUNT(h.request_id), COALESCE(SUM(h.ex), 0), COALESCE(SUM(h.im), 0),
                    COUNT(h.human), COALESCE(SUM(h.human >= ?{good}), 0), AVG(s.overall)
             FROM eval_logs l LEFT JOIN h ON h.request_id = l.request_id
                              {score_join}
             WHERE 1 = 1{cond}
             GROUP BY l.cohort ORDER BY l.cohort"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params_from_iter(params.iter()), |r| {
                let n = |i| r.get::<_, i64>(i).map(|x| x as u64);
                Ok(CohortStats {
                    cohort: r.get(0)?,
                    requests: n(1)?,
                    with_feedback: n(2)?,
                    with_explicit: n(3)?,
                    with_implicit: n(4)?,
                    with_human_score: n(5)?,
                    positive: n(6)?,
                    mean_eval_score: r.get(7)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn eval_scores(&self, filter: &Filter) -> StoreResult<Vec<f64>> {
        let mut params = Vec::new();
        let cond = filter_sql(filter, true, &mut params);
        let sql = format!(
            "SELECT s.overall FROM eval_logs l JOIN eval_scores s ON s.request_id = l.request_id
             WHERE 1 = 1{cond} ORDER BY l.request_id, s.evaluator"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt.query_map(params_from_iter(params.iter()), |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn request_ids(&self, filter: &Filter) -> StoreResult<Vec<String>> {
        let mut params = Vec::new();
        let cond = filter_sql(filter, true, &mut params);
        let join = if filter.evaluator.is_some() { "JOIN eval_scores s ON s.request_id = l.request_id" } else { "" };
        let sql = format!("SELECT l.request_id FROM eval_logs l {join} WHERE 1 = 1{cond} ORDER BY l.request_id");
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt.query_map(params_from_iter(params.iter()), |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn request_texts(&self, ids: &[String]) -> StoreResult<Vec<(String, RequestText)>> {
        ids.iter().map(|id| Ok((id.clone(), self.text_of(id)?))).collect()
    }

    fn save_run(&mut self, r: &RunRecord) -> StoreResult<()> {
        let js = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        self.conn
            .execute(
                "INSERT INTO runs (id, started_at, finished_at, config_hash, status, decision, run_dir, model_path,
                     dataset_card, metrics) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(id) DO UPDATE SET finished_at = excluded.finished_at, status = excluded.status,
                     decision = excluded.decision, model_path = excluded.model_path,
                     dataset_card = excluded.dataset_card, metrics = excluded.metrics",
                params![
                    r.id,
                    r.started_at,
                    r.finished_at,
                    r.config_hash,
                    r.status,
                    r.decision,
                    r.run_dir,
                    r.model_path,
                    js(&r.dataset_card),
                    js(&r.metrics)
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn runs(&self) -> StoreResult<Vec<RunRecord>> {
        let mut s = self
            .conn
            .prepare(
                "SELECT id, started_at, finished_at, config_hash, status, decision, run_dir, model_path, dataset_card,
                     metrics FROM runs ORDER BY started_at DESC, id DESC",
            )
            .map_err(self.err())?;
        let parse = |t: Option<String>| t.and_then(|t| serde_json::from_str(&t).ok());
        let rows = s
            .query_map([], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    finished_at: r.get(2)?,
                    config_hash: r.get(3)?,
                    status: r.get(4)?,
                    decision: r.get(5)?,
                    run_dir: r.get(6)?,
                    model_path: r.get(7)?,
                    dataset_card: parse(r.get(8)?),
                    metrics: parse(r.get(9)?),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

impl SqliteStore {
    /// `(key, count)` pairs from a two-column query.
    fn counted<K: rusqlite::types::FromSql>(&self, sql: &str) -> StoreResult<Vec<(K, u64)>> {
        let mut s = self.conn.prepare(sql).map_err(self.err())?;
        let rows = s.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn text_of(&self, id: &str) -> StoreResult<RequestText> {
        let mut s = self
            .conn
            .prepare_cached("SELECT prompt, output, metadata FROM eval_logs WHERE request_id = ?1")
            .map_err(self.err())?;
        let mut rows = s.query([id]).map_err(self.err())?;
        match rows.next().map_err(self.err())? {
            Some(r) => Ok(RequestText {
                prompt: r.get(0).map_err(self.err())?,
                output: r.get(1).map_err(self.err())?,
                metadata: r.get(2).map_err(self.err())?,
            }),
            None => Err(StoreError::Invalid(format!("no log for request {id:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EvalLog;
    use chrono::Utc;
    use serde_json::json;

    fn log(id: &str, cohort: &str, overall: f64) -> EvalLog {
        EvalLog::from_json(
            json!({"request_id": id, "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o",
                    "eval_scores": {"overall": overall}, "metadata": {"user_cohort": cohort, "group_id": "g"}}),
            false,
        )
        .unwrap()
    }

    fn fb(id: &str, t: &str, v: serde_json::Value) -> FeedbackEvent {
        FeedbackEvent::from_json(json!({"request_id": id, "feedback_type": t, "value": v}), false, Utc::now()).unwrap()
    }

    #[test]
    fn scored_requests_average_all_explicit_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        s.begin().unwrap();
        s.insert_logs(&[log("a", "free", 0.9), log("b", "pro", 0.2), log("c", "pro", 0.5)]).unwrap();
        let o = s
            .insert_feedback(&[
                fb("a", "explicit_thumbs_up", json!(true)),
                fb("a", "explicit_rating", json!(2)),
                fb("b", "explicit_thumbs_down", json!(true)),
                fb("c", "implicit_discard", json!(true)),
                fb("zzz", "explicit_rating", json!(3)),
            ])
            .unwrap();
        s.commit().unwrap();
        assert_eq!(o, BatchOutcome { stored: 5, duplicate: 0, orphaned: 1 });
        let q = ScoredQuery { group_key: Some("group_id".into()), ..Default::default() };
        let rows = s.scored_requests(&q).unwrap();
        assert_eq!(rows.len(), 2, "c has only an unmapped implicit event; zzz is orphaned");
        assert_eq!(rows[0].human_score, 3.5);
        assert_eq!(rows[0].group.as_deref(), Some("g"));
        assert_eq!(rows[1].human_score, 1.0);
        let policy = HumanPolicy { implicit_discard: Some(2.0), ..Default::default() };
        let rows = s.scored_requests(&ScoredQuery { policy, ..Default::default() }).unwrap();
        assert_eq!(rows.len(), 3);
        let cs = s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!((cs[1].requests, cs[1].with_feedback, cs[1].with_implicit), (2, 2, 1));
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

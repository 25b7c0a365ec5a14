//! `cohort_stats` in one pass over each table: every log's cohort coded in an array indexed by
//! `log_id`, then the scores and the feedback aggregate read in `log_id` order, each row
//! counted for its cohort. The statements are stepped through SQLite's C API (`raw`);
//! the tests compare the result with one plain SQL `GROUP BY`.

use std::collections::BTreeMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};

use super::SqliteStore;
use super::query::{EVENT_SCORE_SQL, filter_sql, policy_params};
use super::raw::RawStmt;
use crate::feedback::HumanPolicy;
use crate::store::{CohortStats, Filter, StoreResult};

/// [`Store::cohort_stats`](crate::store::Store::cohort_stats): each chunk scanned, the chunks'
/// counts merged.
pub(super) fn cohort_stats(
    store: &SqliteStore,
    filter: &Filter,
    policy: &HumanPolicy,
) -> StoreResult<Vec<CohortStats>> {
    // Per window of log_ids: first each log's cohort, as a code in an array indexed by
    // log_id; then the scores and the feedback aggregate in log_id order, each row looking
    // its cohort up there. A constant number of queries per window and no per-log seeks.
    //
    // Without a time or metadata filter the cohorts come from the cohort index, one range
    // per cohort value (its log_ids in order, no text per row); otherwise from a scan of
    // the narrow logs with the filter.
    let by_index = filter.since.is_none() && filter.until.is_none() && filter.metadata.is_empty();
    let mut log_params = Vec::new();
    let cond = filter_sql(&Filter { evaluator: None, ..filter.clone() }, false, &mut log_params);
    let logs_sql = format!(
        "SELECT l.log_id, l.cohort FROM eval_logs l WHERE l.log_id BETWEEN ?{} AND ?{}{cond} ORDER BY l.log_id",
        log_params.len() + 1,
        log_params.len() + 2
    );
    // One evaluator's scores are one range of the primary key (evaluator_id, log_id): one
    // scan per evaluator (the named one, or each in the store), merged here by log_id, and a
    // request's score is the mean over its evaluators (a `GROUP BY log_id` over the whole
    // table would sort all of it, for each chunk).
    let scores_sql = "SELECT log_id, overall FROM eval_scores
         WHERE evaluator_id = ?3 AND log_id BETWEEN ?1 AND ?2 ORDER BY log_id";
    let evaluator_ids: Vec<i64> = {
        let (sql, p) = match &filter.evaluator {
            Some(e) => ("SELECT evaluator_id FROM evaluators WHERE name = ?1", vec![SqlValue::Text(e.clone())]),
            None => ("SELECT evaluator_id FROM evaluators ORDER BY evaluator_id", Vec::new()),
        };
        let mut stmt = store.conn.prepare(sql).map_err(store.err())?;
        stmt.query_map(params_from_iter(p.iter()), |r| r.get(0))
            .map_err(store.err())?
            .collect::<Result<_, _>>()
            .map_err(store.err())?
    };
    let feedback_sql = format!(
        "SELECT f.log_id, MAX(f.feedback_type LIKE 'explicit%'), MAX(f.feedback_type LIKE 'implicit%'),
                AVG({EVENT_SCORE_SQL})
         FROM feedback_events f WHERE f.log_id BETWEEN ?6 AND ?7 GROUP BY f.log_id ORDER BY f.log_id"
    );
    let policy_params = policy_params(policy);
    let good_min = policy.good_min;
    let window_len = store.cohort_window.max(1);
    let run = |conn: &Connection, a: i64, b: i64| -> rusqlite::Result<Vec<(Option<String>, CohortAcc)>> {
        // All windows read one snapshot (a reader's own transaction; on this connection,
        // the caller's when one is open).
        let _snapshot = match conn.is_autocommit() {
            true => Some(rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Deferred)?),
            false => None,
        };
        let (lo, hi): (Option<i64>, Option<i64>) = conn.query_row(
            "SELECT (SELECT log_id FROM eval_logs WHERE log_id >= ?1 ORDER BY log_id LIMIT 1),
                    (SELECT log_id FROM eval_logs WHERE log_id <= ?2 ORDER BY log_id DESC LIMIT 1)",
            [a, b],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(Vec::new()) };
        // The cohort values to read from the index (`None`: scan the logs instead).
        let values = match (&filter.cohort, by_index) {
            (_, false) => None,
            (Some(c), true) => Some(vec![Some(c.as_bytes().to_vec())]),
            (None, true) => cohort_values(conn)?,
        };
        let mut cohorts = CohortCodes::default();
        if let Some(values) = &values {
            for v in values {
                cohorts.code_of(v.as_deref());
            }
        }
        let span = (hi - lo).saturating_add(1).min(window_len);
        let mut codes: Vec<u32> = vec![NO_COHORT; span as usize];
        let mut next = Some(lo);
        while let Some(w0) = next.filter(|&w| w <= hi) {
            let w1 = w0.saturating_add(window_len - 1).min(hi);
            next = w1.checked_add(1);
            let window = [SqlValue::Integer(w0), SqlValue::Integer(w1)];
            codes.fill(NO_COHORT);
            let len = (w1 - w0 + 1) as usize;
            let slot = move |id: i64| usize::try_from(id - w0).ok().filter(|&i| i < len);
            match &values {
                Some(values) => {
                    for (code, v) in values.iter().enumerate() {
                        let mut logs = match v {
                            Some(t) => RawStmt::new(
                                conn,
                                "SELECT log_id FROM eval_logs WHERE cohort = ?3 AND log_id BETWEEN ?1 AND ?2
                                 ORDER BY log_id",
                                &[window[0].clone(), window[1].clone(), utf8(t)],
                            )?,
                            None => RawStmt::new(
                                conn,
                                "SELECT log_id FROM eval_logs WHERE cohort IS NULL AND log_id BETWEEN ?1 AND ?2
                                 ORDER BY log_id",
                                &window,
                            )?,
                        };
                        let acc = &mut cohorts.accs[code];
                        while logs.step()? {
                            if let Some(i) = slot(logs.int(0)) {
                                codes[i] = code as u32;
                                acc.requests += 1;
                            }
                        }
                    }
                }
                None => {
                    let mut lp = log_params.clone();
                    lp.extend(window.clone());
                    let mut logs = RawStmt::new(conn, &logs_sql, &lp)?;
                    while logs.step()? {
                        if let Some(i) = slot(logs.int(0)) {
                            let code = cohorts.code_of(logs.text(1));
                            codes[i] = code as u32;
                            cohorts.accs[code].requests += 1;
                        }
                    }
                }
            }
            // The scores and feedback are read between the first and the last log coded (a
            // rare cohort's or time range's logs may fill few windows, or a small part of one).
            let coded = codes[..len]
                .iter()
                .position(|&c| c != NO_COHORT)
                .zip(codes[..len].iter().rposition(|&c| c != NO_COHORT));
            let Some((first, last)) = coded else { continue };
            let coded = [SqlValue::Integer(w0 + first as i64), SqlValue::Integer(w0 + last as i64)];
            let code_at = |id: i64| slot(id).map(|i| codes[i]).filter(|&c| c != NO_COHORT);
            // Each evaluator's cursor and its current (log_id, overall), None once exhausted.
            let mut scores = Vec::with_capacity(evaluator_ids.len());
            for &e in &evaluator_ids {
                let mut stmt = RawStmt::new(conn, scores_sql, &[coded[0].clone(), coded[1].clone(), e.into()])?;
                let head = next_score(&mut stmt)?;
                scores.push((stmt, head));
            }
            // Log by log in log_id order: the mean of its evaluators' scores.
            while let Some(log_id) = scores.iter().filter_map(|(_, h)| h.map(|(id, _)| id)).min() {
                let (mut sum, mut n) = (0.0, 0u32);
                for (rows, head) in scores.iter_mut() {
                    if let Some((id, v)) = *head
                        && id == log_id
                    {
                        sum += v;
                        n += 1;
                        *head = next_score(rows)?;
                    }
                }
                if let Some(code) = code_at(log_id) {
                    let acc = &mut cohorts.accs[code as usize];
                    acc.score_sum.add(sum / f64::from(n));
                    acc.scored += 1;
                }
            }
            let mut fp = policy_params.clone();
            fp.extend(coded);
            let mut fb = RawStmt::new(conn, &feedback_sql, &fp)?;
            while fb.step()? {
                let Some(code) = code_at(fb.int(0)) else { continue };
                let acc = &mut cohorts.accs[code as usize];
                acc.with_feedback += 1;
                acc.with_explicit += fb.int(1) as u64;
                acc.with_implicit += fb.int(2) as u64;
                if let Some(h) = fb.opt_real(3) {
                    acc.with_human_score += 1;
                    acc.positive += u64::from(h >= good_min);
                }
            }
        }
        Ok(cohorts.into_named())
    };
    let mut merged: BTreeMap<Option<String>, CohortAcc> = BTreeMap::new();
    for (cohort, acc) in store.on_chunks(run)?.into_iter().flatten() {
        merged.entry(cohort).or_default().merge(&acc);
    }
    Ok(merged
        .into_iter()
        .map(|(cohort, a)| CohortStats {
            cohort,
            requests: a.requests,
            with_feedback: a.with_feedback,
            with_explicit: a.with_explicit,
            with_implicit: a.with_implicit,
            with_human_score: a.with_human_score,
            positive: a.positive,
            mean_eval_score: (a.scored > 0).then(|| a.score_sum.value() / a.scored as f64),
        })
        .collect())
}

/// The next `(log_id, overall)` of a scores cursor, `None` once it is exhausted.
fn next_score(rows: &mut RawStmt<'_>) -> rusqlite::Result<Option<(i64, f64)>> {
    Ok(rows.step()?.then(|| (rows.int(0), rows.real(1))))
}

/// A compensated (Kahan-Babuska-Neumaier) sum, as SQLite's own `SUM` and `AVG` keep it.
#[derive(Debug, Clone, Copy, Default)]
struct KbnSum {
    sum: f64,
    err: f64,
}

impl KbnSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.err += (self.sum - t) + x;
        } else {
            self.err += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn merge(&mut self, o: &KbnSum) {
        self.add(o.sum);
        self.err += o.err;
    }

    fn value(&self) -> f64 {
        self.sum + self.err
    }
}

/// Per-cohort counts of [`Store::cohort_stats`] for one chunk of logs; chunks merge exactly.
#[derive(Debug, Clone, Copy, Default)]
struct CohortAcc {
    requests: u64,
    with_feedback: u64,
    with_explicit: u64,
    with_implicit: u64,
    with_human_score: u64,
    positive: u64,
    scored: u64,
    score_sum: KbnSum,
}

impl CohortAcc {
    fn merge(&mut self, o: &CohortAcc) {
        self.requests += o.requests;
        self.with_feedback += o.with_feedback;
        self.with_explicit += o.with_explicit;
        self.with_implicit += o.with_implicit;
        self.with_human_score += o.with_human_score;
        self.positive += o.positive;
        self.scored += o.scored;
        self.score_sum.merge(&o.score_sum);
    }
}

/// How many log_ids `cohort_stats` codes at once: the window's array of cohort codes is 4 MiB.
pub(super) const COHORT_WINDOW: i64 = 1 << 20;

/// The code of a log_id in the window that is not in the filtered logs.
const NO_COHORT: u32 = u32::MAX;

/// At most this many cohort values are read one index range each; more, and the logs are
/// scanned instead.
const MAX_COHORT_RANGES: usize = 256;

/// The distinct values of `eval_logs.cohort` (`None` for NULL), in index order, found by one
/// index seek each; `None` when they are more than [`MAX_COHORT_RANGES`] or any is not valid
/// text (the index ranges would then not cover every log exactly as the scan does).
fn cohort_values(conn: &Connection) -> rusqlite::Result<Option<Vec<Option<Vec<u8>>>>> {
    let mut values = Vec::new();
    let has_null = conn.query_row("SELECT EXISTS (SELECT 1 FROM eval_logs WHERE cohort IS NULL)", [], |r| r.get(0))?;
    if has_null {
        values.push(None);
    }
    let mut first =
        RawStmt::new(conn, "SELECT cohort FROM eval_logs WHERE cohort IS NOT NULL ORDER BY cohort LIMIT 1", &[])?;
    let mut next = match first.step()? {
        true => first.text(0).map(<[u8]>::to_vec),
        false => return Ok(Some(values)),
    };
    loop {
        let Some(v) = next.take() else { return Ok(None) };
        if values.len() >= MAX_COHORT_RANGES || std::str::from_utf8(&v).is_err() {
            return Ok(None);
        }
        let mut after =
            RawStmt::new(conn, "SELECT cohort FROM eval_logs WHERE cohort > ?1 ORDER BY cohort LIMIT 1", &[utf8(&v)])?;
        values.push(Some(v));
        if !after.step()? {
            return Ok(Some(values));
        }
        next = after.text(0).map(<[u8]>::to_vec);
    }
}

/// A cohort value (valid UTF-8: [`cohort_values`] checks) as a text parameter.
fn utf8(v: &[u8]) -> SqlValue {
    SqlValue::Text(String::from_utf8_lossy(v).into_owned())
}

/// The cohorts of one `cohort_stats` chunk: value (bytes; `None` for NULL and non-text) ->
/// code, and each code's counts.
#[derive(Default)]
struct CohortCodes {
    values: Vec<Option<Vec<u8>>>,
    accs: Vec<CohortAcc>,
    last: usize,
}

impl CohortCodes {
    /// The code of a cohort value, added when new; the previous row's cohort is tried first.
    fn code_of(&mut self, v: Option<&[u8]>) -> usize {
        if self.last < self.values.len() && self.values[self.last].as_deref() == v {
            return self.last;
        }
        self.last = match self.values.iter().position(|c| c.as_deref() == v) {
            Some(i) => i,
            None => {
                self.values.push(v.map(<[u8]>::to_vec));
                self.accs.push(CohortAcc::default());
                self.values.len() - 1
            }
        };
        self.last
    }

    /// The cohorts that had logs in the chunk, named.
    fn into_named(self) -> Vec<(Option<String>, CohortAcc)> {
        self.values
            .into_iter()
            .zip(self.accs)
            .filter(|(_, a)| a.requests > 0)
            .map(|(v, a)| (v.map(|t| String::from_utf8_lossy(&t).into_owned()), a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::tests::{fixture, load, log};

    /// `cohort_stats` as one `GROUP BY` over the logs, written apart from the store's scans: the
    /// counts, and the mean score (SQLite's `AVG`, so compared within rounding).
    fn cohort_stats_by_sql(s: &SqliteStore, evaluator: Option<&str>, policy: &HumanPolicy) -> Vec<CohortStats> {
        let mut params = policy_params(policy);
        params.push(SqlValue::Real(policy.good_min));
        params.push(evaluator.map_or(SqlValue::Null, |e| SqlValue::Text(e.into())));
        let sql = format!(
            "WITH h AS (SELECT f.log_id, MAX(f.feedback_type LIKE 'explicit%') AS ex,
                     MAX(f.feedback_type LIKE 'implicit%') AS im, AVG({EVENT_SCORE_SQL}) AS human
                 FROM feedback_events f WHERE f.log_id IS NOT NULL GROUP BY f.log_id),
             sc AS (SELECT s.log_id, AVG(s.overall) AS score FROM eval_scores s JOIN evaluators e USING (evaluator_id)
                 WHERE ?7 IS NULL OR e.name = ?7 GROUP BY s.log_id)
             SELECT l.cohort, COUNT(*), COUNT(h.log_id), TOTAL(h.ex), TOTAL(h.im), COUNT(h.human),
                 TOTAL(h.human >= ?6), AVG(sc.score)
             FROM eval_logs l LEFT JOIN h ON h.log_id = l.log_id LEFT JOIN sc ON sc.log_id = l.log_id
             GROUP BY l.cohort ORDER BY l.cohort"
        );
        let mut stmt = s.connection().prepare(&sql).unwrap();
        let n = |r: &rusqlite::Row<'_>, i| r.get::<_, f64>(i).map(|x| x as u64);
        stmt.query_map(params_from_iter(params.iter()), |r| {
            Ok(CohortStats {
                cohort: r.get(0)?,
                requests: n(r, 1)?,
                with_feedback: n(r, 2)?,
                with_explicit: n(r, 3)?,
                with_implicit: n(r, 4)?,
                with_human_score: n(r, 5)?,
                positive: n(r, 6)?,
                mean_eval_score: r.get(7)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn cohort_stats_from_index_ranges_windows_and_chunks_equal_the_log_scan() {
        let (mut logs, events, second) = fixture();
        // An empty cohort value (not NULL) and a log with no scores' evaluator but the first.
        logs.push(log("r100", "", 0.25));
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        load(&mut s, &logs, &events, &second);
        let usage = HumanPolicy { implicit_usage: Some(4.0), ..Default::default() };
        let early = Some(chrono::DateTime::<Utc>::from_timestamp(0, 0).unwrap());
        let filters = [
            Filter::default(),
            Filter { evaluator: Some("judge-v2".into()), ..Default::default() },
            Filter { cohort: Some("pro".into()), ..Default::default() },
            Filter { cohort: Some(String::new()), ..Default::default() },
            Filter { cohort: Some("nobody".into()), ..Default::default() },
        ];
        let all = |s: &SqliteStore| -> Vec<Vec<CohortStats>> {
            filters
                .iter()
                .flat_map(|f| [HumanPolicy::default(), usage.clone()].map(|p| s.cohort_stats(f, &p).unwrap()))
                .collect()
        };
        let by_index = all(&s);
        // A time filter that keeps every log reads the cohorts from the log scan instead.
        let scanned: Vec<Vec<CohortStats>> = filters
            .iter()
            .flat_map(|f| {
                let f = Filter { since: early, ..f.clone() };
                [HumanPolicy::default(), usage.clone()].map(|p| s.cohort_stats(&f, &p).unwrap())
            })
            .collect();
        assert_eq!(by_index, scanned);
        assert_eq!(by_index[0].len(), 5, "free, pro, enterprise, the empty value and NULL");
        assert_eq!(by_index[8], Vec::new(), "an unknown cohort has no logs");
        for (got, evaluator, policy) in [
            (&by_index[0], None, HumanPolicy::default()),
            (&by_index[1], None, usage.clone()),
            (&by_index[2], Some("judge-v2"), HumanPolicy::default()),
        ] {
            assert_close(got, &cohort_stats_by_sql(&s, evaluator, &policy));
        }
        // Windows of a few log_ids (one chunk: the same sums in the same order) answer alike.
        s.cohort_window = 3;
        assert_eq!(all(&s), by_index);
        // Chunks on several connections merge their sums: equal within rounding.
        s.parallel_min_logs = 0;
        for (got, want) in all(&s).iter().zip(&by_index) {
            assert_close(got, want);
        }
    }

    /// Equal counts and cohorts, mean scores equal within rounding.
    fn assert_close(got: &[CohortStats], want: &[CohortStats]) {
        let counts = |c: &[CohortStats]| {
            c.iter().map(|c| CohortStats { mean_eval_score: None, ..c.clone() }).collect::<Vec<_>>()
        };
        assert_eq!(counts(got), counts(want));
        for (g, w) in got.iter().zip(want) {
            match (g.mean_eval_score, w.mean_eval_score) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{g} vs {w}"),
                (g, w) => assert_eq!(g, w),
            }
        }
    }

    #[test]
    fn cohort_stats_inside_a_write_transaction_see_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        s.begin().unwrap();
        s.insert_logs(&[log("a", "free", 0.5), log("b", "pro", 0.25)]).unwrap();
        let cs = s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap();
        assert_eq!(
            cs.iter().map(|c| (c.cohort.as_deref(), c.requests)).collect::<Vec<_>>(),
            [(Some("free"), 1), (Some("pro"), 1)]
        );
        s.rollback().unwrap();
        assert_eq!(s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap(), Vec::new());
    }
}

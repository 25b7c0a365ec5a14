//! The SQL of the filtered reads: the human score of a feedback event under a policy, metadata
//! keys, filters and the scored-requests query. Values travel as parameters, never in the SQL
//! text.

use rusqlite::types::Value as SqlValue;

use crate::feedback::HumanPolicy;
use crate::record::to_micros;
use crate::store::{Filter, ScoredQuery};

/// SQL for the score one feedback event contributes under a policy; parameters ?1..?5 are the
/// thumbs-up, thumbs-down, usage, edit and discard scores (NULL = ignored). Table alias `f`.
pub(super) const EVENT_SCORE_SQL: &str = "CASE f.feedback_type
        WHEN 'explicit_thumbs_up' THEN ?1
        WHEN 'explicit_thumbs_down' THEN ?2
        WHEN 'explicit_rating' THEN f.value_num
        WHEN 'implicit_usage' THEN CASE WHEN f.value_num = 1 THEN ?3 END
        WHEN 'implicit_edit' THEN CASE WHEN f.value_num = 1 THEN ?4 END
        WHEN 'implicit_discard' THEN CASE WHEN f.value_num = 1 THEN ?5 END
    END";

/// The parameters ?1..?5 of [`EVENT_SCORE_SQL`] under a policy.
pub(super) fn policy_params(p: &HumanPolicy) -> Vec<SqlValue> {
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
            format!(
                "CAST(json_extract((SELECT t.metadata FROM log_texts t WHERE t.log_id = l.log_id), ?{}) AS TEXT)",
                params.len()
            )
        }
    }
}

/// Appends `AND ...` conditions for a filter on `eval_logs l` (and `eval_scores s` when
/// `with_scores`: its evaluator by name, looked up once); values travel as parameters, never in
/// the SQL text.
pub(super) fn filter_sql(f: &Filter, with_scores: bool, params: &mut Vec<SqlValue>) -> String {
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
        params.push(SqlValue::Text(e.clone()));
        sql.push_str(&format!(
            " AND s.evaluator_id = (SELECT evaluator_id FROM evaluators WHERE name = ?{})",
            params.len()
        ));
    }
    for (k, v) in &f.metadata {
        let expr = metadata_expr(k, params);
        push(&mut sql, &format!("{expr} ="), SqlValue::Text(v.clone()), params);
    }
    sql
}

/// The scored-requests query of [`Store::scored_requests`] and its parameters; the caller
/// appends the chunk's `log_id` bounds as the last two parameters. `lean` (for
/// [`Store::scored_columns`]) leaves out the time and the count of scored events, which cost a
/// second evaluation of the event-score expression per feedback event.
pub(super) fn scored_sql(q: &ScoredQuery, lean: bool) -> (String, Vec<SqlValue>) {
    let mut params = policy_params(&q.policy);
    let group = match &q.group_key {
        Some(k) => metadata_expr(k, &mut params),
        None => "NULL".into(),
    };
    let (text, text_join) = if q.with_text {
        ("t.prompt, t.output, t.metadata", " CROSS JOIN log_texts t")
    } else {
        ("NULL, NULL, NULL", "")
    };
    let text_cond = if q.with_text { " AND t.log_id = l.log_id" } else { "" };
    let cond = filter_sql(&q.filter, true, &mut params);
    let order = match q.limit {
        Some(n) => {
            params.push(SqlValue::Integer(n as i64));
            format!(" ORDER BY l.request_id, e.name LIMIT ?{}", params.len())
        }
        None => String::new(),
    };
    let (lo, hi) = (params.len() + 1, params.len() + 2);
    let (ts, count) = if lean { ("0", "0".to_string()) } else { ("l.ts", format!("COUNT({EVENT_SCORE_SQL})")) };
    // The feedback aggregate comes in log_id order from its covering index and drives
    // integer-key lookups into the narrow log table and the scores (CROSS JOIN fixes that
    // order). Without a limit the rows are sorted by the caller, and a large store is read in
    // log_id chunks on several connections at once.
    let sql = format!(
        "WITH h AS (
            SELECT f.log_id, AVG({EVENT_SCORE_SQL}) AS human, {count} AS n
            FROM feedback_events f WHERE f.log_id BETWEEN ?{lo} AND ?{hi} GROUP BY f.log_id
         )
         SELECT l.request_id, {ts}, e.name, s.overall, h.human, h.n, l.cohort, l.use_case, {group}, {text}
         FROM h CROSS JOIN eval_logs l CROSS JOIN evaluators e CROSS JOIN eval_scores s{text_join}
         WHERE l.log_id = h.log_id AND s.evaluator_id = e.evaluator_id AND s.log_id = h.log_id
             AND h.human IS NOT NULL{text_cond}{cond}
         {order}"
    );
    (sql, params)
}

//! Test fixtures of the SQLite store (logs over several cohorts, feedback of every kind, a
//! second evaluator) and the tests of its writes and smaller reads.

use chrono::Utc;
use serde_json::json;

use super::*;

pub(super) fn log(id: &str, cohort: &str, overall: f64) -> EvalLog {
    EvalLog::from_json(
        json!({"request_id": id, "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o",
                "eval_scores": {"overall": overall}, "metadata": {"user_cohort": cohort, "group_id": "g"}}),
        false,
    )
    .unwrap()
}

pub(super) fn fb(id: &str, t: &str, v: serde_json::Value) -> FeedbackEvent {
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

/// Logs over three cohorts (and none), two evaluators, metadata keys; feedback of every
/// kind, one orphan.
pub(super) fn fixture() -> (Vec<EvalLog>, Vec<FeedbackEvent>, Vec<(String, f64)>) {
    let cohorts = ["free", "pro", "enterprise", ""];
    let logs: Vec<EvalLog> = (0..40)
        .map(|i| {
            let mut l = log(&format!("r{:03}", (i * 7) % 40), cohorts[i % 4], (i as f64 * 0.37) % 1.0);
            if i % 4 == 3 {
                l.metadata.remove("user_cohort");
            }
            l.metadata.insert("tier".into(), json!(format!("t{}", i % 3)));
            l
        })
        .collect();
    let kinds = [
        ("explicit_thumbs_up", json!(true)),
        ("explicit_thumbs_down", json!(true)),
        ("explicit_rating", json!(4)),
        ("explicit_rating", json!(1)),
        ("explicit_text_comment", json!("hm")),
        ("implicit_usage", json!(true)),
        ("implicit_discard", json!(false)),
    ];
    let mut events: Vec<FeedbackEvent> = (0..60)
        .map(|j| {
            let (t, v) = &kinds[j % kinds.len()];
            let mut e = fb(&format!("r{:03}", (j * 11) % 37), t, v.clone());
            e.event_id = format!("e{j:03}");
            e
        })
        .collect();
    let mut orphan = fb("zzz", "explicit_rating", json!(3));
    orphan.event_id = "e-orphan".into();
    events.push(orphan);
    let second: Vec<(String, f64)> =
        (0..40).step_by(3).map(|i| (format!("r{i:03}"), (i as f64 * 0.11) % 1.0)).collect();
    (logs, events, second)
}

pub(super) fn load(s: &mut SqliteStore, logs: &[EvalLog], events: &[FeedbackEvent], second: &[(String, f64)]) {
    s.begin().unwrap();
    s.insert_logs(logs).unwrap();
    s.insert_feedback(events).unwrap();
    s.insert_scores("judge-v2", second).unwrap();
    s.commit().unwrap();
}

/// Everything the analyses read, as JSON (the store's location left out).
pub(super) fn answers(s: &SqliteStore) -> serde_json::Value {
    let judge = Filter { evaluator: Some("judge-v2".into()), ..Default::default() };
    let tier = Filter { metadata: vec![("tier".into(), "t1".into())], ..Default::default() };
    let policy = HumanPolicy { implicit_usage: Some(4.0), ..Default::default() };
    let queries = [
        ScoredQuery::default(),
        ScoredQuery { filter: judge.clone(), with_text: true, group_key: Some("tier".into()), ..Default::default() },
        ScoredQuery { filter: tier.clone(), policy: policy.clone(), limit: Some(3), ..Default::default() },
        ScoredQuery { filter: Filter { cohort: Some("pro".into()), ..Default::default() }, ..Default::default() },
    ];
    let mut stats = s.stats().unwrap();
    stats.location.clear();
    let ids = s.request_ids(&Filter::default()).unwrap();
    let feedback = ["r000", "zzz"].map(|id| format!("{:?}", s.feedback_for(id).unwrap()));
    json!({
        "scored": queries.iter().map(|q| s.scored_requests(q).unwrap()).collect::<Vec<_>>(),
        "cohorts": [
            s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap(),
            s.cohort_stats(&judge, &policy).unwrap(),
            s.cohort_stats(&tier, &HumanPolicy::default()).unwrap(),
        ],
        "eval_scores": [s.eval_scores(&Filter::default()).unwrap(), s.eval_scores(&judge).unwrap()],
        "ids": [&ids, &s.request_ids(&judge).unwrap()],
        "texts": s.request_texts(&ids).unwrap(),
        "feedback": feedback,
        "stats": stats,
    })
}

#[test]
fn evaluator_added_in_a_rolled_back_transaction_is_added_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    s.begin().unwrap();
    s.insert_logs(&[log("a", "free", 0.9)]).unwrap();
    s.commit().unwrap();
    s.begin().unwrap();
    s.insert_scores("judge", &[("a".into(), 0.5)]).unwrap();
    s.rollback().unwrap();
    assert_eq!(s.evaluators().unwrap(), ["baseline"]);
    s.begin().unwrap();
    let o = s.insert_scores("judge", &[("a".into(), 0.25)]).unwrap();
    s.commit().unwrap();
    assert_eq!(o.stored, 1);
    assert_eq!(s.evaluators().unwrap(), ["baseline", "judge"]);
    let judge = Filter { evaluator: Some("judge".into()), ..Default::default() };
    assert_eq!(s.eval_scores(&judge).unwrap(), [0.25]);
}

#[test]
fn orphaned_feedback_counts_once_its_log_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    s.begin().unwrap();
    let o = s.insert_feedback(&[fb("late", "explicit_rating", json!(5))]).unwrap();
    s.commit().unwrap();
    assert_eq!(o.orphaned, 1);
    assert!(s.scored_requests(&ScoredQuery::default()).unwrap().is_empty());
    s.begin().unwrap();
    s.insert_logs(&[log("late", "pro", 0.4), log("other", "pro", 0.6)]).unwrap();
    s.commit().unwrap();
    let rows = s.scored_requests(&ScoredQuery::default()).unwrap();
    assert_eq!((rows.len(), rows[0].request_id.as_str(), rows[0].human_score), (1, "late", 5.0));
    assert_eq!(s.stats().unwrap().orphaned_feedback, 0);
    let cs = s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap();
    assert_eq!((cs[0].requests, cs[0].with_feedback, cs[0].positive), (2, 1, 1));
}

/// Dimension ratings land in their own table: the human score, cohort figures and the
/// feedback table answer as without them; their means come back per request and dimension.
#[test]
fn dimension_ratings_are_stored_apart_and_change_no_answer() {
    let (logs, events, second) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut plain = SqliteStore::open(&dir.path().join("plain.db")).unwrap();
    load(&mut plain, &logs, &events, &second);
    let mut with = SqliteStore::open(&dir.path().join("with.db")).unwrap();
    load(&mut with, &logs, &events, &second);
    let rating = |id: &str, v: u8, dim: &str, user: &str| {
        FeedbackEvent::from_json(
            json!({"request_id": id, "feedback_type": "explicit_rating", "value": v, "dimension": dim,
                   "user_id": user, "timestamp": "2026-05-15T11:00:00Z"}),
            false,
            Utc::now(),
        )
        .unwrap()
    };
    let dims = [
        rating("r000", 1, "coherence", "u1"),
        rating("r000", 4, "coherence", "u2"),
        rating("r000", 5, "relevance", "u1"),
        rating("r007", 2, "fluency", "u1"),
        rating("nolog", 3, "coherence", "u1"),
    ];
    with.begin().unwrap();
    let o = with.insert_feedback(&dims).unwrap();
    let again = with.insert_feedback(&dims[..2]).unwrap();
    with.commit().unwrap();
    assert_eq!(o, BatchOutcome { stored: 5, duplicate: 0, orphaned: 1 });
    assert_eq!(again, BatchOutcome { stored: 0, duplicate: 2, orphaned: 0 });
    let mut a = answers(&with);
    assert_eq!(a["stats"]["dimension_ratings"], 5);
    a["stats"]["dimension_ratings"] = json!(0);
    assert_eq!(a, answers(&plain), "dimension ratings changed an answer");
    let got = with.dimension_scores(&["coherence".into(), "relevance".into()]).unwrap();
    let got: Vec<(&str, &str, f64, u64)> =
        got.iter().map(|d| (d.request_id.as_str(), d.dimension.as_str(), d.mean, d.ratings)).collect();
    assert_eq!(got, vec![("nolog", "coherence", 3.0, 1), ("r000", "coherence", 2.5, 2), ("r000", "relevance", 5.0, 1)]);
    assert!(with.dimension_scores(&[]).unwrap().is_empty());
    // A store opened again (as an existing one is) keeps the table and its rows.
    drop(with);
    let reopened = SqliteStore::open(&dir.path().join("with.db")).unwrap();
    assert_eq!(reopened.dimension_scores(&["fluency".into()]).unwrap().len(), 1);
}

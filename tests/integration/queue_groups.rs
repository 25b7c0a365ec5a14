//! Whole-group rating queues on both stores: `queue create --whole-groups` draws prompt groups
//! (cluster sampling) with the documented group priorities, every output of a drawn group is an
//! item with its group's probability; `queue show` and `estimate` treat the groups as the
//! sampling units (the interval of the weighted mean sums each group before squaring) and give
//! the evaluator's weighted correlation with the labels. The PostgreSQL half runs under
//! `scripts/with-postgres.sh` (`EVALLOOP_TEST_PG`) and says so on stderr when skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;

use crate::queue_support::{Example, LOGS, example};
use crate::serve_support::{PgSchema, ok_json, run_in as run};

fn create(db: &str, d: &Path, name: &str, strategy: &str, groups: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "queue",
        "create",
        "--name",
        name,
        "--strategy",
        strategy,
        "--size",
        groups,
        "--whole-groups",
        "--group-key",
        "group_id",
        "--evaluator",
        "baseline-unigram-f1",
    ];
    args.extend_from_slice(extra);
    ok_json(db, d, &args)
}

/// The items of a queue by group: every group's requests, each item's probability.
fn by_group(ex: &Example, items: &[Value]) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut out: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for i in items {
        let id = i["request_id"].as_str().unwrap().to_string();
        out.entry(ex.group[&id].clone()).or_default().push((id, i["probability"].as_f64().unwrap()));
    }
    out
}

fn groups_contract(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ex = example(d);
    ok_json(db, d, &["ingest", "logs", LOGS]);
    ok_json(db, d, &["ingest", "scores", d.join("retrained.jsonl").to_str().unwrap()]);
    let mut size: HashMap<&str, usize> = HashMap::new();
    for g in ex.group.values() {
        *size.entry(g.as_str()).or_default() += 1;
    }
    let n_groups = size.len();
    assert_eq!(n_groups, 56);

    // random: 5 whole groups, every output of each, probability 5 / 56.
    let r = create(db, d, "gr", "random", "5", &[]);
    assert_eq!(r["queue"]["whole_groups"], true);
    assert_eq!(r["queue"]["population"], ex.group.len());
    let items = r["items"].as_array().unwrap();
    let groups = by_group(&ex, items);
    assert_eq!(groups.len(), 5);
    for (g, members) in &groups {
        assert_eq!(members.len(), size[g.as_str()], "group {g} drawn in part");
        for (_, p) in members {
            assert!((p - 5.0 / n_groups as f64).abs() < 1e-12, "{p}");
        }
    }
    assert_eq!(r["queue"]["size"], items.len());

    // disagreement: a group's priority is the mean over its pairs of |(s_a - s_b) - (t_a - t_b)|.
    let r = create(db, d, "gd", "disagreement", "8", &["--against", "retrained"]);
    let items = r["items"].as_array().unwrap();
    let mut prio_prob = Vec::new();
    for (g, members) in by_group(&ex, items) {
        let ids: Vec<&String> = ex.group.iter().filter(|(_, h)| **h == g).map(|(id, _)| id).collect();
        let mut v = Vec::new();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                v.push(((ex.base[*a] - ex.base[*b]) - (ex.retrained[*a] - ex.retrained[*b])).abs());
            }
        }
        let want = v.iter().sum::<f64>() / v.len() as f64;
        for i in items.iter().filter(|i| ex.group[i["request_id"].as_str().unwrap()] == g) {
            assert!((i["priority"].as_f64().unwrap() - want).abs() < 1e-12, "{i}: want {want}");
        }
        prio_prob.push((want, members[0].1));
    }
    prio_prob.sort_by(|x, y| x.0.total_cmp(&y.0));
    for w in prio_prob.windows(2) {
        assert!(w[0].1 <= w[1].1 + 1e-12, "probability falls as priority rises: {w:?}");
    }
    assert!(prio_prob.iter().all(|(_, p)| *p >= 0.2 * 8.0 / n_groups as f64 - 1e-12));

    // Refusals: whole groups of pairs; more groups than the population has.
    let (code, _, err) = run(
        db,
        d,
        &[
            "queue",
            "create",
            "--name",
            "x",
            "--kind",
            "preference",
            "--strategy",
            "random",
            "--size",
            "2",
            "--whole-groups",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--whole-groups applies to rating and thumbs queues"), "{err}");
    let (code, _, err) = run(
        db,
        d,
        &[
            "queue",
            "create",
            "--name",
            "x",
            "--strategy",
            "random",
            "--size",
            "57",
            "--whole-groups",
            "--group-key",
            "group_id",
            "--evaluator",
            "baseline-unigram-f1",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only 56 prompt group(s)"), "{err}");

    // Labels for every item of "gr": a rating that depends on the group, so groups differ.
    let items: Vec<Value> =
        run(db, d, &["queue", "export", "gr"]).1.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let group_index: BTreeMap<&str, usize> =
        ex.group.values().collect::<BTreeSet<_>>().into_iter().enumerate().map(|(i, g)| (g.as_str(), i)).collect();
    let rating = |id: &str| 1 + (group_index[ex.group[id].as_str()] + id.len()) % 5;
    let answers: String = items
        .iter()
        .map(|i| {
            let id = i["request_id"].as_str().unwrap();
            format!("{{\"request_id\": \"{id}\", \"reviewer\": \"ann\", \"answer\": {}}}\n", rating(id))
        })
        .collect();
    std::fs::write(d.join("answers.jsonl"), answers).unwrap();
    ok_json(db, d, &["queue", "import", "gr", d.join("answers.jsonl").to_str().unwrap()]);

    // The weighted mean with the groups as units, computed here from the definition.
    let ys: Vec<(String, f64, f64)> = items
        .iter()
        .map(|i| {
            let id = i["request_id"].as_str().unwrap().to_string();
            let y = rating(&id) as f64;
            (id, y, i["probability"].as_f64().unwrap())
        })
        .collect();
    let wsum: f64 = ys.iter().map(|(_, _, p)| 1.0 / p).sum();
    let mean = ys.iter().map(|(_, y, p)| y / p).sum::<f64>() / wsum;
    let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
    for (id, y, p) in &ys {
        *totals.entry(ex.group[id].as_str()).or_default() += (y - mean) / p;
    }
    let m = totals.len() as f64;
    let se = (m / (m - 1.0) * totals.values().map(|t| t * t).sum::<f64>() / (wsum * wsum)).sqrt();
    let shown = ok_json(db, d, &["queue", "show", "gr", "--bootstrap", "0"]);
    let ipw = &shown["ipw_mean"];
    assert!((ipw["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{ipw}");
    assert!((ipw["std_error"].as_f64().unwrap() - se).abs() < 1e-12, "{ipw}: want se {se}");
    assert_eq!((ipw["n"].as_u64().unwrap(), ipw["units"].as_u64().unwrap()), (ys.len() as u64, 5));
    // The evaluator's correlation with the labels: equal weights here, so Pearson's r.
    let xs: Vec<f64> = ys.iter().map(|(id, _, _)| ex.base[id]).collect();
    let yv: Vec<f64> = ys.iter().map(|(_, y, _)| *y).collect();
    let r = evalloop::stats::corr::pearson(&xs, &yv).unwrap().estimate;
    let c = &shown["ipw_correlation"];
    assert!((c["r"].as_f64().unwrap() - r).abs() < 1e-12, "{c}: want {r}");
    assert!(c["low"].as_f64().unwrap() < r && r < c["high"].as_f64().unwrap(), "{c}");
    assert_eq!(c["units"], 5);
    let (code, text, err) = run(db, d, &["queue", "show", "gr", "--bootstrap", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("drawn by whole prompt groups: the intervals treat the 5 group(s) as the units"), "{text}");

    // `estimate` gives the queue's classical figure with the same units.
    let est = ok_json(db, d, &["estimate", "--evaluator", "baseline-unigram-f1"]);
    let q = est["queues"].as_array().unwrap().iter().find(|q| q["queue"] == "gr").expect("queue gr in estimate");
    assert!((q["classical"]["estimate"].as_f64().unwrap() - mean).abs() < 1e-12, "{q}");
    assert!((q["classical"]["std_error"].as_f64().unwrap() - se).abs() < 1e-12, "{q}");

    // The next round leaves the labelled groups out.
    let r = create(db, d, "gr2", "random", "6", &["--exclude-labelled"]);
    let next = by_group(&ex, r["items"].as_array().unwrap());
    assert!(next.keys().all(|g| !groups.contains_key(g)), "a labelled group drawn again");
    assert_eq!(r["queue"]["population"], ex.group.len() - ys.len());
}

#[test]
fn whole_group_queues_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    groups_contract(&dir.path().join("q.db").display().to_string());
}

#[test]
fn whole_group_queues_on_postgres() {
    let Some(pg) = PgSchema::new("qgroups") else { return };
    groups_contract(&pg.url);
}

//! `evalloop score --store` with leased ranges, on SQLite and (with `EVALLOOP_TEST_PG`, set by
//! `scripts/with-postgres.sh`) PostgreSQL: a worker killed with kill -9 while it holds a range,
//! then four worker processes on the same job; every request is scored, each range written by
//! exactly one worker (the killed one's taken over when its lease expired), and the scores equal
//! a single-process run's.

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;

use crate::cli_support::{self, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn evalloop(dir: &Path, db: &str) -> Command {
    let mut c = cli_support::evalloop(dir);
    c.args(["--db", db]);
    c
}

fn databases(dir: &Path) -> Vec<String> {
    let mut dbs = vec![dir.join("t.db").display().to_string()];
    if let Ok(url) = std::env::var("EVALLOOP_TEST_PG")
        && !url.is_empty()
    {
        let schema = format!("score_workers_{}", std::process::id());
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("EVALLOOP_TEST_PG answers");
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        dbs.push(format!("{url}{sep}options=-csearch_path%3D{schema}"));
    }
    dbs
}

/// A model trained for one epoch from a tiny random base on the example data.
fn model(dir: &Path) -> std::path::PathBuf {
    let base = dir.join("base");
    evalloop::model::testutil::write_tiny_base(&base, 3, false);
    let db = dir.join("m.db").display().to_string();
    let ex = root().join("data/example");
    evalloop(dir, &db).args(["ingest", "logs"]).arg(ex.join("logs.jsonl")).assert().success();
    evalloop(dir, &db).args(["ingest", "feedback"]).arg(ex.join("feedback.jsonl")).assert().success();
    std::fs::write(
        dir.join("c.toml"),
        format!(
            "[dataset]\nlabel = \"graded\"\n\n[train]\nbase_model = \"{}\"\nepochs = 1\nbatch_size = 16\nmax_length = 48\n",
            base.display()
        ),
    )
    .unwrap();
    evalloop(dir, &db).args(["--config", "c.toml", "dataset", "build", "--out", "ds"]).assert().success();
    evalloop(dir, &db).args(["--config", "c.toml", "train", "--dataset", "ds", "--out", "model"]).assert().success();
    dir.join("model")
}

fn scores(db: &str, evaluator: &str) -> std::collections::BTreeMap<String, f64> {
    let store = evalloop::store::open(db).unwrap();
    let f = evalloop::store::Filter { evaluator: Some(evaluator.into()), ..Default::default() };
    store.evaluated_requests(&f).unwrap().into_iter().map(|r| (r.request_id, r.eval_score)).collect()
}

#[test]
fn killed_worker_loses_only_its_range_and_four_workers_finish_the_job() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let m = model(dir);
    let logs = root().join("data/example/logs.jsonl");
    for db in databases(dir) {
        let on = if db.starts_with("postgres") { "postgres" } else { "sqlite" };
        evalloop(dir, &db).args(["ingest", "logs"]).arg(&logs).assert().success();
        let store_args = |c: &mut Command| {
            c.args(["score", "--store", "--evaluator", "baseline-unigram-f1", "--model"]).arg(&m);
        };
        // The single-process reference.
        let mut c = evalloop(dir, &db);
        store_args(&mut c);
        let one = json(c.args(["--evaluator-name", "one", "--range-size", "50"]));
        assert_eq!(one["stored"].as_u64(), Some(392), "{on}: {one}");

        // A worker that leases a range and is killed with kill -9 before it writes it.
        let mut victim = std::process::Command::new(assert_cmd::cargo::cargo_bin("evalloop"));
        victim
            .current_dir(dir)
            .env_remove("EVALLOOP_DB")
            .env_remove("EVALLOOP_CONFIG")
            .args(["--db", &db, "score", "--store", "--evaluator", "baseline-unigram-f1", "--model"])
            .arg(&m)
            .args(["--evaluator-name", "many", "--job", "many", "--worker", "--worker-name", "victim"])
            .args(["--range-size", "50", "--lease-seconds", "2", "--lease-pause-ms", "600000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = victim.spawn().unwrap();
        let start = Instant::now();
        loop {
            let store = evalloop::store::open(&db).unwrap();
            let p = store.lease_progress("many").unwrap();
            if p.leased == 1 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{on}: the worker never leased a range");
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().unwrap();
        child.wait().unwrap();

        // Four workers finish the job, the killed worker's range once its lease expired.
        let mut c = evalloop(dir, &db);
        store_args(&mut c);
        let many = json(c.args(["--evaluator-name", "many", "--job", "many", "--workers", "4"]).args([
            "--range-size",
            "50",
            "--lease-seconds",
            "2",
        ]));
        let p = &many["progress"];
        assert_eq!((p["ranges"].as_u64(), p["done"].as_u64()), (Some(8), Some(8)), "{on}: {many}");
        assert_eq!(p["takeovers"].as_u64(), Some(1), "{on}: {many}");
        assert_eq!(many["stored"].as_u64(), Some(392), "{on}: {many}");

        // Every range written once, none by the killed worker; the scores equal the reference.
        let (a, b) = (scores(&db, "one"), scores(&db, "many"));
        assert_eq!(a.len(), 392);
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{on}");
        for (id, x) in &a {
            assert!((x - b[id]).abs() < 1e-6, "{on}: {id}: {x} vs {}", b[id]);
        }
        let store = evalloop::store::open(&db).unwrap();
        let again = store.lease_progress("many").unwrap();
        assert_eq!((again.done, again.leased, again.todo), (8, 0, 0), "{on}");
        drop(store);

        // Running the job again finds nothing to do.
        let mut c = evalloop(dir, &db);
        store_args(&mut c);
        let rerun = json(c.args(["--evaluator-name", "many", "--job", "many", "--range-size", "50"]));
        assert_eq!(rerun["stored"].as_u64(), Some(0), "{on}: {rerun}");
    }
}

//! `evalloop export` on the shipped example with edits (tests/fixtures/export/edits.jsonl): the
//! rows of each kind checked against the store's own human scores, the held-out groups against
//! `dataset build`'s test split, edits, weights, Parquet, the evaluator-labelled rows of a tiny
//! random model, the directory written whole, bad input refused, and the same bytes from a
//! PostgreSQL store (when `EVALLOOP_TEST_PG` is set).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use evalloop::feedback::HumanPolicy;
use evalloop::store::{Filter, ScoredQuery};
use serde_json::Value;

use crate::cli_support::{evalloop, text};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn config() -> PathBuf {
    root().join("configs/dataset.toml")
}

fn bin(dir: &Path, db: &str) -> Command {
    let mut c = evalloop(dir);
    c.arg("--db").arg(db).arg("--config").arg(config());
    c
}

/// A store with the example's logs and feedback and the fixture's edits.
fn example(dir: &Path, db: &str) {
    for (what, file) in [
        ("logs", root().join("data/example/logs.jsonl")),
        ("feedback", root().join("data/example/feedback.jsonl")),
        ("feedback", root().join("tests/fixtures/export/edits.jsonl")),
    ] {
        bin(dir, db).args(["ingest", what]).arg(file).assert().success();
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn export(dir: &Path, db: &str, args: &[&str]) -> Value {
    let out = bin(dir, db).arg("--json").arg("export").args(args).assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

/// The groups `dataset build` puts in its test split, with the same config.
fn test_groups(dir: &Path, db: &str) -> BTreeSet<String> {
    bin(dir, db).args(["dataset", "build", "--out"]).arg(dir.join("ds")).assert().success();
    lines(&dir.join("ds/test.jsonl")).iter().map(|r| r["group"].as_str().unwrap().to_string()).collect()
}

/// Each request's human score under the default policy (the example's config uses it), read
/// through the library.
fn human_scores(db: &str) -> BTreeMap<String, f64> {
    let store = evalloop::store::open(db).unwrap();
    store
        .scored_requests(&ScoredQuery {
            filter: Filter::default(),
            policy: HumanPolicy::default(),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| (r.request_id, r.human_score))
        .collect()
}

fn logs() -> BTreeMap<String, Value> {
    lines(&root().join("data/example/logs.jsonl"))
        .into_iter()
        .map(|l| (l["request_id"].as_str().unwrap().to_string(), l))
        .collect()
}

const EDITED: &str = "John Avlon: low turnout in the Florida GOP primary shows an enthusiasm gap, a bad omen for the \
                      party.\nSecond line \u{1b}[31mred\u{1b}[0m.";

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn every_kind_on_the_example_follows_the_feedback() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("t.db").display().to_string();
    example(d.path(), &db);
    let held = test_groups(d.path(), &db);
    assert!(!held.is_empty());
    let scores = human_scores(&db);
    let logs = logs();
    let group_of = |id: &str| logs[id]["metadata"]["group_id"].as_str().unwrap().to_string();

    // SFT: approved outputs and the three usable edits (the latest of a request's two edits).
    let card = export(d.path(), &db, &["sft", "--out", "sft"]);
    let rows = lines(&d.path().join("sft/sft.jsonl"));
    let messages = lines(&d.path().join("sft/sft_messages.jsonl"));
    assert_eq!(rows.len(), messages.len());
    assert_eq!(card["rows"], rows.len());
    assert_eq!(
        keys(&rows[0]),
        ["cohort", "completion", "group", "label_source", "prompt", "request_id", "source", "weight"]
    );
    let mut edits = BTreeMap::new();
    for (r, m) in rows.iter().zip(&messages) {
        let id = r["request_id"].as_str().unwrap();
        assert!(!held.contains(&group_of(id)), "{id} is in the test split");
        assert_eq!(r["label_source"], "human");
        assert_eq!(m["messages"][0], serde_json::json!({"role": "user", "content": r["prompt"]}));
        assert_eq!(m["messages"][1], serde_json::json!({"role": "assistant", "content": r["completion"]}));
        match r["source"].as_str().unwrap() {
            "feedback" => {
                assert!(scores[id] >= 4.0, "{id} not approved: {}", scores[id]);
                assert_eq!(r["completion"], logs[id]["output"]);
            }
            "edit" => {
                edits.insert(id.to_string(), r["completion"].as_str().unwrap().to_string());
            }
            s => panic!("source {s}"),
        }
    }
    let approved = scores.iter().filter(|(id, h)| **h >= 4.0 && !held.contains(&group_of(id))).count();
    assert_eq!(rows.len() - edits.len(), approved);
    assert_eq!(edits.len(), 3, "{edits:?}");
    assert_eq!(edits["newsroom-2140-fragments"], EDITED);
    assert!(edits.contains_key("newsroom-7569-lede3"), "an edit of a request without a human score");
    assert_eq!(card["left_out"]["empty_edit"], 1);
    assert_eq!(card["left_out"]["unchanged_edit"], 1);
    // Weights: ipw + normalize, so they average 1 and are equal within a cohort.
    let w: Vec<f64> = rows.iter().map(|r| r["weight"].as_f64().unwrap()).collect();
    assert!((w.iter().sum::<f64>() / w.len() as f64 - 1.0).abs() < 1e-4);
    let mut by_cohort: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        by_cohort.entry(r["cohort"].as_str().unwrap()).or_default().insert(r["weight"].to_string());
    }
    assert!(by_cohort.values().all(|ws| ws.len() == 1), "{by_cohort:?}");
    assert!(by_cohort.len() == 3 && by_cohort["free"] != by_cohort["enterprise"]);

    // KTO: good true, bad false, neutral left out; edits true.
    let card = export(d.path(), &db, &["kto", "--out", "kto"]);
    let rows = lines(&d.path().join("kto/kto.jsonl"));
    let (mut t, mut f) = (0, 0);
    for r in &rows {
        let id = r["request_id"].as_str().unwrap();
        assert!(!held.contains(&group_of(id)));
        let label = r["label"].as_bool().unwrap();
        if r["source"] == "edit" {
            assert!(label);
        } else {
            assert_eq!(label, scores[id] >= 4.0, "{id}");
            assert!(scores[id] >= 4.0 || scores[id] <= 2.0, "{id} is neutral: {}", scores[id]);
        }
        if label { t += 1 } else { f += 1 }
    }
    assert!(f > 0 && t > f);
    assert_eq!(card["labels"], serde_json::json!({"true": t, "false": f}));

    // DPO and reward: the same pairs; margin pairs of one prompt whose scores differ by >= 1.
    export(d.path(), &db, &["dpo", "--out", "dpo"]);
    export(d.path(), &db, &["reward", "--out", "reward"]);
    let dpo = lines(&d.path().join("dpo/dpo.jsonl"));
    assert_eq!(dpo, lines(&d.path().join("reward/reward.jsonl")));
    let (mut margin, mut edit) = (0, 0);
    for p in &dpo {
        let (a, b) = (p["request_id"].as_str().unwrap(), p["rejected_request_id"].as_str().unwrap());
        assert_ne!(p["chosen"], p["rejected"]);
        assert!(!held.contains(&group_of(a)) && !held.contains(&group_of(b)));
        if p["source"] == "edit" {
            edit += 1;
            assert_eq!((a, &p["rejected"]), (b, &logs[a]["output"]));
            assert_eq!(p["chosen"].as_str().unwrap(), edits[a]);
        } else {
            margin += 1;
            assert_eq!(p["source"], "score_margin");
            assert!(scores[a] - scores[b] >= 1.0 - 1e-9, "{a} {} over {b} {}", scores[a], scores[b]);
            assert_eq!((&logs[a]["prompt"], &logs[b]["prompt"]), (&p["prompt"], &p["prompt"]));
            assert_eq!((&p["chosen"], &p["rejected"]), (&logs[a]["output"], &logs[b]["output"]));
        }
    }
    assert_eq!(edit, 3);
    // Every qualifying pair is there: count them from the scores.
    let mut by_prompt: BTreeMap<(String, &str), Vec<(&str, f64)>> = BTreeMap::new();
    for (id, h) in &scores {
        if !held.contains(&group_of(id)) {
            by_prompt.entry((group_of(id), logs[id]["prompt"].as_str().unwrap())).or_default().push((id, *h));
        }
    }
    let want: usize = by_prompt
        .values()
        .map(|v| {
            let mut n = 0;
            for (i, (a, ha)) in v.iter().enumerate() {
                for (b, hb) in &v[i + 1..] {
                    if (ha - hb).abs() >= 1.0 - 1e-9 && logs[*a]["output"] != logs[*b]["output"] {
                        n += 1;
                    }
                }
            }
            n
        })
        .sum();
    assert_eq!(margin, want);
    let wide = export(d.path(), &db, &["dpo", "--out", "dpo3", "--margin", "3"]);
    assert!(wide["rows"].as_u64().unwrap() < dpo.len() as u64 && wide["margin"] == 3.0);
}

#[test]
fn test_split_filters_parquet_and_the_output_folder() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("t.db").display().to_string();
    example(d.path(), &db);
    let held = test_groups(d.path(), &db);
    let plain = export(d.path(), &db, &["kto", "--out", "a"]);
    let all = export(d.path(), &db, &["kto", "--out", "b", "--include-test-split"]);
    let rows = lines(&d.path().join("b/kto.jsonl"));
    let in_test = rows.iter().filter(|r| held.contains(r["group"].as_str().unwrap())).count();
    assert!(in_test > 0);
    assert_eq!(all["rows"].as_u64().unwrap(), plain["rows"].as_u64().unwrap() + in_test as u64);
    assert_eq!(
        (all["held_out_groups"].as_u64(), plain["held_out_groups"].as_u64()),
        (Some(0), Some(held.len() as u64))
    );

    // Filters: one cohort, one window.
    let pro = export(d.path(), &db, &["kto", "--out", "c", "--cohort", "pro"]);
    assert!(lines(&d.path().join("c/kto.jsonl")).iter().all(|r| r["cohort"] == "pro"));
    assert_eq!(pro["by_cohort"].as_object().unwrap().len(), 1);
    let none = bin(d.path(), &db).args(["export", "kto", "--out", "e", "--since", "2030-01-01"]).assert().code(2);
    let err = String::from_utf8_lossy(&none.get_output().stderr).to_string();
    assert!(err.contains("no labelled requests") || err.contains("no examples"), "{err}");
    assert!(!d.path().join("e").exists());

    // Parquet: the same rows, in a Parquet file.
    let pq = export(d.path(), &db, &["sft", "--out", "p", "--format", "parquet"]);
    let js = export(d.path(), &db, &["sft", "--out", "j"]);
    assert_eq!(pq["rows"], js["rows"]);
    assert_eq!(pq["files"], serde_json::json!(["sft.parquet", "sft_messages.parquet"]));
    for f in ["sft.parquet", "sft_messages.parquet"] {
        let bytes = std::fs::read(d.path().join("p").join(f)).unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "{f}");
    }

    // The folder: replaced whole when it is an earlier export, refused when it is anything else.
    export(d.path(), &db, &["dpo", "--out", "a"]);
    let names: BTreeSet<String> =
        std::fs::read_dir(d.path().join("a")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["README.md", "card.json", "dpo.jsonl"].map(String::from)));
    std::fs::create_dir(d.path().join("mine")).unwrap();
    std::fs::write(d.path().join("mine/notes.txt"), "keep").unwrap();
    let refused = bin(d.path(), &db).args(["export", "sft", "--out", "mine"]).assert().code(2);
    let err = String::from_utf8_lossy(&refused.get_output().stderr).to_string();
    assert!(err.contains("mine") && err.contains("not an evalloop export"), "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("mine/notes.txt")).unwrap(), "keep");
    // No temporary folder is left behind.
    assert!(std::fs::read_dir(d.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
}

#[test]
fn bad_arguments_are_refused_with_the_flag_named() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("t.db").display().to_string();
    example(d.path(), &db);
    for (args, needle) in [
        (vec!["dpo", "--out", "x", "--margin", "0"], "--margin 0"),
        (vec!["dpo", "--out", "x", "--margin", "NaN"], "--margin NaN"),
        (vec!["kto", "--out", "x", "--expand-with", "m", "--min-confidence", "0.2"], "--min-confidence 0.2"),
        (vec!["kto", "--out", "x", "--evaluator", "nobody"], "nobody"),
        (vec!["kto", "--out", "x", "--since", "yesterday"], "--since"),
    ] {
        let a = bin(d.path(), &db).arg("export").args(&args).assert().code(2);
        let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!d.path().join("x").exists());
    }
    // --min-confidence needs --expand-with (and the reverse): clap's usage error.
    bin(d.path(), &db).args(["export", "kto", "--out", "x", "--min-confidence", "0.9"]).assert().code(2);
}

/// The edited text is kept and shown escaped by `summary`.
#[test]
fn summary_shows_the_edited_output_escaped() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("t.db").display().to_string();
    example(d.path(), &db);
    let text = text(bin(d.path(), &db).args(["summary", "newsroom-2140-fragments"]));
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.contains("edited outputs (2):"), "{text}");
    assert!(text.contains("party.\\nSecond line \\u{1b}[31mred\\u{1b}[0m."), "{text}");
    let json = bin(d.path(), &db).args(["--json", "summary", "newsroom-2140-fragments"]).assert().success();
    let v: Value = serde_json::from_slice(&json.get_output().stdout).unwrap();
    assert_eq!(v["edited_outputs"][1], EDITED);
}

/// `record --type edit --edited-output TEXT` stores the text; on another type it is refused.
#[test]
fn record_takes_an_edits_text() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("t.db").display().to_string();
    example(d.path(), &db);
    let id = "newsroom-7569-lede3";
    bin(d.path(), &db)
        .args(["record", "--request-id", id, "--type", "edit", "--edited-output", "A shorter lede."])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(
        &bin(d.path(), &db).args(["--json", "summary", id]).assert().success().get_output().stdout,
    )
    .unwrap();
    assert_eq!(
        v["edited_outputs"],
        serde_json::json!([
            "Drinking on television has become a shortcut to looking sophisticated.",
            "A shorter lede."
        ])
    );
    let a = bin(d.path(), &db)
        .args(["record", "--request-id", id, "--type", "thumbs-up", "--edited-output", "x"])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(err.contains("--edited-output") && err.contains("explicit_thumbs_up"), "{err}");
}

/// `--expand-with` a tiny random classifier: every request without a human score outside the
/// test split is scored; the rows it labels are those whose score (computed here with the
/// library's scorer) passes the confidence, each `label_source = "evaluator"`.
#[test]
fn expand_with_adds_the_evaluators_confident_rows() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("t.db").display().to_string();
    example(d.path(), &db);
    let model = d.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    let cfg = evalloop::model::testutil::tiny_config();
    std::fs::write(model.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    evalloop::model::testutil::write_tokenizer(&model);
    let weights: std::collections::HashMap<String, candle_core::Tensor> =
        evalloop::model::testutil::random_weights(&cfg, 3).into_iter().collect();
    candle_core::safetensors::save(&weights, model.join("model.safetensors")).unwrap();

    let held = test_groups(d.path(), &db);
    let scores = human_scores(&db);
    let logs = logs();
    let unlabelled: Vec<&Value> = logs
        .values()
        .filter(|l| {
            let id = l["request_id"].as_str().unwrap();
            !scores.contains_key(id) && !held.contains(l["metadata"]["group_id"].as_str().unwrap())
        })
        .collect();
    let scorer = evalloop::score::Scorer::load(&model, &candle_core::Device::Cpu).unwrap();
    let pairs: Vec<(&str, &str)> =
        unlabelled.iter().map(|l| (l["prompt"].as_str().unwrap(), l["output"].as_str().unwrap())).collect();
    let p: BTreeMap<&str, f64> =
        unlabelled.iter().map(|l| l["request_id"].as_str().unwrap()).zip(scorer.score_pairs(&pairs).unwrap()).collect();
    // A confidence that keeps some of the random model's scores and not others.
    let mut spread: Vec<f64> = p.values().map(|s| (s - 0.5).abs()).collect();
    spread.sort_by(f64::total_cmp);
    let min_conf = 0.5 + spread[spread.len() / 2];
    let conf = format!("{min_conf}");
    let card = export(
        d.path(),
        &db,
        &["kto", "--out", "k", "--expand-with", model.to_str().unwrap(), "--min-confidence", &conf],
    );
    let rows = lines(&d.path().join("k/kto.jsonl"));
    let evaluator: BTreeMap<&str, bool> = rows
        .iter()
        .filter(|r| r["label_source"] == "evaluator")
        .map(|r| (r["request_id"].as_str().unwrap(), r["label"].as_bool().unwrap()))
        .collect();
    let want: BTreeMap<&str, bool> = p
        .iter()
        .filter(|(_, s)| **s >= min_conf || **s <= 1.0 - min_conf)
        .map(|(id, s)| (*id, *s >= min_conf))
        .collect();
    assert!(!want.is_empty() && want.len() < p.len(), "{} of {}", want.len(), p.len());
    assert_eq!(evaluator, want);
    assert!(rows.iter().filter(|r| r["label_source"] == "evaluator").all(|r| r["source"] == "evaluator"));
    assert_eq!(card["expand"]["scored"], p.len());
    assert_eq!(card["expand"]["labelled"], want.len());
    assert_eq!(card["by_label_source"]["evaluator"], want.len());
}

/// The same export from a PostgreSQL store gives the same bytes.
#[test]
fn postgres_store_exports_the_same_files() {
    let Ok(url) = std::env::var("EVALLOOP_TEST_PG") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "export_cli::postgres_store_exports_the_same_files SKIPPED: EVALLOOP_TEST_PG is not set"
        );
        return;
    };
    let schema = format!("t_export_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let pg = format!("{url}{sep}options=-csearch_path%3D{schema}");
    let d = tempfile::tempdir().unwrap();
    let sqlite = d.path().join("t.db").display().to_string();
    example(d.path(), &sqlite);
    example(d.path(), &pg);
    for kind in ["sft", "kto", "dpo"] {
        export(d.path(), &sqlite, &[kind, "--out", &format!("s-{kind}")]);
        export(d.path(), &pg, &[kind, "--out", &format!("p-{kind}")]);
        for f in std::fs::read_dir(d.path().join(format!("s-{kind}"))).unwrap() {
            let f = f.unwrap().file_name();
            let a = std::fs::read(d.path().join(format!("s-{kind}")).join(&f)).unwrap();
            let b = std::fs::read(d.path().join(format!("p-{kind}")).join(&f)).unwrap();
            assert!(a == b, "{kind}: {f:?} differs between SQLite and PostgreSQL");
        }
    }
    let _ = admin.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}

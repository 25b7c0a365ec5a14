//! Shared by the queue tests: the shipped example's requests and a second evaluator over them.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

pub const LOGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/example/logs.jsonl");
pub const FEEDBACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/example/feedback.jsonl");

/// Each example request's base score, group and cohort; and a second evaluator's scores
/// (written to `retrained.jsonl`): the base moved by an amount that depends on the request, so
/// that some outputs of a group change places.
pub struct Example {
    pub base: HashMap<String, f64>,
    pub retrained: HashMap<String, f64>,
    pub group: HashMap<String, String>,
    pub cohort: HashMap<String, String>,
}

/// Reads the example's logs and writes `dir/retrained.jsonl`.
pub fn example(dir: &Path) -> Example {
    let mut e =
        Example { base: HashMap::new(), retrained: HashMap::new(), group: HashMap::new(), cohort: HashMap::new() };
    let mut out = String::new();
    for (i, line) in std::fs::read_to_string(LOGS).unwrap().lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let id = v["request_id"].as_str().unwrap().to_string();
        let base = v["eval_scores"]["overall"].as_f64().unwrap();
        let moved = if i % 3 == 0 { 1.0 - base } else { (base + 0.02).min(1.0) };
        out.push_str(&format!(
            "{{\"request_id\": \"{id}\", \"evaluator\": \"retrained\", \"eval_scores\": {{\"overall\": {moved}}}}}\n"
        ));
        e.base.insert(id.clone(), base);
        e.retrained.insert(id.clone(), moved);
        e.group.insert(id.clone(), v["metadata"]["group_id"].as_str().unwrap().to_string());
        e.cohort.insert(id, v["metadata"]["user_cohort"].as_str().unwrap().to_string());
    }
    std::fs::write(dir.join("retrained.jsonl"), out).unwrap();
    e
}

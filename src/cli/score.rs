//! `evalloop score`: a trained evaluator's scores for a JSONL file or for the store.

use std::path::PathBuf;

use serde_json::json;

use super::{FilterArgs, Outcome};
use crate::config::Settings;
use crate::store;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The trained model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// JSON Lines with request_id, prompt, output.
    #[arg(long, requires = "output", conflicts_with = "store")]
    pub input: Option<PathBuf>,
    /// Where to write the input lines with `score` added.
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Score the store's logs (filtered) and store the scores as a new evaluator.
    #[arg(long)]
    pub store: bool,
    /// The new evaluator's name (default: the model directory's name).
    #[arg(long)]
    pub evaluator_name: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The linear layers' arithmetic: fp32 (the model as trained) or int8 (int8 weights and
    /// activations on the CPU, faster; its scores' Spearman with fp32's is in BENCHMARKS.md).
    #[arg(long, default_value = "fp32")]
    pub precision: crate::model::Precision,
    /// --store: score with N worker processes on this machine, each a `--worker` (RAYON_NUM_THREADS
    /// of each: the cores divided among them unless set); 0 = in this process.
    #[arg(long, default_value_t = 0, requires = "store", conflicts_with = "worker")]
    pub workers: usize,
    /// --store: run as one worker of the job: lease ranges of requests until none is left.
    /// Start any number of them, on any machine pointed at the same store.
    #[arg(long, requires = "store")]
    pub worker: bool,
    /// --store: the job's name; its workers share its ranges, and running it again resumes it
    /// (default: the evaluator name and a hash of the model's weights file and the filter).
    #[arg(long, requires = "store")]
    pub job: Option<String>,
    /// --store: requests per leased range (the most a killed worker loses).
    #[arg(long, default_value_t = 1000)]
    pub range_size: usize,
    /// --store: seconds a lease lasts; a range whose worker stopped is taken over after it.
    #[arg(long, default_value_t = 600.0)]
    pub lease_seconds: f64,
    /// --store: this worker's name in the lease table (default host-pid).
    #[arg(long)]
    pub worker_name: Option<String>,
    /// Testing aid: milliseconds to wait after each lease, before scoring.
    #[arg(long, hide = true, default_value_t = 0)]
    pub lease_pause_ms: u64,
}

/// Scores `--input` into `--output`, or the store's logs as a new evaluator.
pub fn run(settings: &Settings, a: ScoreArgs) -> Result<Outcome> {
    let device = crate::model::parse_device(&a.device)?;
    if let (Some(input), Some(output)) = (&a.input, &a.output) {
        let opts = crate::score::ScoreOptions {
            batch_size: a.batch_size,
            device,
            precision: a.precision,
            ..Default::default()
        };
        let s = crate::score::score_jsonl(&a.model, input, output, &opts)?;
        let text = format!("scored {} lines into {} (mean score {:.4})", s.rows, output.display(), s.mean_score);
        return Ok(Outcome::ok(text, json!({"rows": s.rows, "mean_score": s.mean_score, "output": output})));
    }
    if !a.store {
        return Err(Error::Input("score: give --input FILE --output FILE, or --store".into()));
    }
    let name = a.evaluator_name.clone().unwrap_or_else(|| {
        a.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "retrained".into())
    });
    let scorer =
        crate::score::Scorer::load(&a.model, &device)?.with_batch_size(a.batch_size).with_precision(a.precision)?;
    let mut store = store::open(&settings.db)?;
    let mut filter = a.filter.resolve()?;
    // A blended model needs each request's production score: that of the evaluator it was
    // trained beside (blend.json), else the one --evaluator names, else the store's only one.
    let production = match scorer.blend() {
        None => None,
        Some(b) => {
            if filter.evaluator.is_none() {
                filter.evaluator = match b.evaluator.clone() {
                    Some(e) => Some(e),
                    None => match store.evaluators()?.as_slice() {
                        [only] => Some(only.clone()),
                        names => {
                            return Err(Error::Input(format!(
                                "score: the model blends with the production evaluator's score and the store has \
                                 {} evaluators; name one with --evaluator",
                                names.len()
                            )));
                        }
                    },
                };
            }
            Some(store.eval_scores(&filter)?)
        }
    };
    let ids = store.request_ids(&filter)?;
    if production.as_ref().is_some_and(|p| p.len() != ids.len()) {
        return Err(Error::Input(format!(
            "score: {} requests but {} production scores for evaluator {:?}",
            ids.len(),
            production.as_ref().map_or(0, Vec::len),
            filter.evaluator
        )));
    }
    // Request ids in this process's order (the ranges' bounds compare in it), with their
    // production scores.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&x, &y| ids[x].cmp(&ids[y]));
    let ids: Vec<String> = order.iter().map(|&i| ids[i].clone()).collect();
    let production: Option<Vec<f64>> = production.map(|p| order.iter().map(|&i| p[i]).collect());

    if !(a.lease_seconds > 0.0 && a.lease_seconds.is_finite()) {
        return Err(Error::Input(format!("--lease-seconds {} must be a positive number", a.lease_seconds)));
    }
    if a.range_size == 0 {
        return Err(Error::Input("--range-size must be at least 1".into()));
    }
    let job = match &a.job {
        Some(j) => j.clone(),
        None => default_job(&name, &a.model, &filter, a.precision),
    };
    store.lease_plan(&job, &crate::store::leases::plan(&ids, a.range_size))?;
    let before = store.lease_progress(&job)?;
    let mut mine = (0u64, 0u64);
    if a.workers > 0 {
        spawn_workers(settings, &a, &name, &job)?;
    } else {
        let worker = a.worker_name.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
            format!("{host}-{}", std::process::id())
        });
        let ttl_ms = (a.lease_seconds * 1000.0) as i64;
        loop {
            let Some(r) = store.lease_next(&job, &worker, ttl_ms)? else {
                // Nothing to lease: done, unless a range is still leased. Its worker may have
                // stopped: wait for the lease to expire or the range to be done, then look again.
                if store.lease_progress(&job)?.leased == 0 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis((ttl_ms / 4).clamp(50, 2000) as u64));
                continue;
            };
            if a.lease_pause_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(a.lease_pause_ms));
            }
            let lo = ids.partition_point(|x| *x < r.first_id);
            let hi = ids.partition_point(|x| *x <= r.last_id);
            let mut rows: Vec<(String, f64)> = Vec::with_capacity(hi - lo);
            for start in (lo..hi).step_by(4096) {
                let end = (start + 4096).min(hi);
                let chunk = &ids[start..end];
                let texts = store.request_texts(chunk)?;
                let pairs: Vec<(String, String)> = texts.into_iter().map(|(_, t)| (t.prompt, t.output)).collect();
                let part = production.as_ref().map(|p| &p[start..end]);
                rows.extend(chunk.iter().cloned().zip(scorer.score_blended(&pairs, part)?));
            }
            if store.lease_finish(&job, r.range_no, &worker, &name, &rows)? {
                mine.0 += 1;
                mine.1 += rows.len() as u64;
            } else {
                tracing::warn!(
                    "range {} of job {} was taken over by another worker (its lease expired); its scores are theirs",
                    r.range_no,
                    crate::text::escape(&job)
                );
            }
        }
    }
    let after = store.lease_progress(&job)?;
    let stored = after.requests_done - before.requests_done;
    let mut text = format!(
        "scored {stored} requests in {} as evaluator {:?} (job {:?}: {} of {} ranges done",
        store.location(),
        crate::text::escape(&name),
        crate::text::escape(&job),
        after.done,
        after.ranges
    );
    if after.takeovers > 0 {
        text.push_str(&format!(", {} taken over from stopped workers", after.takeovers));
    }
    text.push(')');
    if a.worker {
        text.push_str(&format!("; this worker: {} ranges, {} requests", mine.0, mine.1));
    }
    Ok(Outcome::ok(
        text,
        json!({"evaluator": name, "job": job, "stored": stored, "progress": after,
               "this_worker": {"ranges": mine.0, "requests": mine.1}}),
    ))
}

/// The job of a run without `--job`: the evaluator name and a hash of the model's weights file
/// (path, size, modification time) and the filter, so that running the same command again
/// resumes it and a retrained model or another filter starts a new one (int8 scoring too: its
/// scores are not fp32's).
fn default_job(
    name: &str,
    model: &std::path::Path,
    filter: &crate::store::Filter,
    precision: crate::model::Precision,
) -> String {
    let weights = model.join("model.safetensors");
    let meta = std::fs::metadata(&weights).ok();
    let stamp =
        meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let key = format!(
        "{}|{}|{:?}|{:?}",
        std::fs::canonicalize(&weights).unwrap_or(weights).display(),
        meta.map_or(0, |m| m.len()),
        stamp,
        filter
    );
    // fp32 keeps the key it had before there was a choice, so its jobs resume as they did.
    let key = match precision {
        crate::model::Precision::F32 => key,
        p => format!("{key}|{}", p.name()),
    };
    format!("{name}@{:012x}", crate::hash::hash64(&[&key]) >> 16)
}

/// Runs `--workers N` worker processes of this executable on the same job and waits for all;
/// an error when one fails.
fn spawn_workers(settings: &Settings, a: &ScoreArgs, name: &str, job: &str) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::Internal(format!("score --workers: {e}")))?;
    let threads = std::env::var("RAYON_NUM_THREADS").ok().unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (cores / a.workers).max(1).to_string()
    });
    let mut children = Vec::new();
    for i in 0..a.workers {
        let mut c = std::process::Command::new(&exe);
        c.env("RAYON_NUM_THREADS", &threads)
            .arg("--db")
            .arg(&settings.db)
            .args(["score", "--store", "--worker", "--model"])
            .arg(&a.model)
            .args(["--evaluator-name", name, "--job", job])
            .args(["--range-size", &a.range_size.to_string(), "--lease-seconds", &a.lease_seconds.to_string()])
            .args(["--batch-size", &a.batch_size.to_string(), "--device", &a.device])
            .args(["--precision", a.precision.name()])
            .args(["--worker-name", &format!("{}-w{i}", std::process::id())])
            .stdout(std::process::Stdio::null());
        for (flag, v) in [
            ("--since", &a.filter.since),
            ("--until", &a.filter.until),
            ("--evaluator", &a.filter.evaluator),
            ("--cohort", &a.filter.cohort),
        ] {
            if let Some(v) = v {
                c.args([flag, v]);
            }
        }
        children.push(c.spawn().map_err(|e| Error::Internal(format!("score --workers: starting a worker: {e}")))?);
    }
    let mut failed = Vec::new();
    for (i, mut ch) in children.into_iter().enumerate() {
        let status = ch.wait().map_err(|e| Error::Internal(format!("score --workers: {e}")))?;
        if !status.success() {
            failed.push(format!("worker {i} ({status})"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "score --workers: {} failed; run the command again to finish the job's ranges",
            failed.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Precision;

    /// int8 scores are not fp32's: the same command in int8 is another job, and fp32 keeps its
    /// job's name.
    #[test]
    fn int8_scoring_is_its_own_job() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
        let filter = crate::store::Filter::default();
        let fp32 = default_job("e", dir.path(), &filter, Precision::F32);
        assert_eq!(fp32, default_job("e", dir.path(), &filter, Precision::F32));
        assert_ne!(fp32, default_job("e", dir.path(), &filter, Precision::Int8));
        assert!(fp32.starts_with("e@"));
    }
}

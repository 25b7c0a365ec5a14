//! The training loop of one model: epochs of optimizer steps, evaluation and early stopping at
//! each epoch's end, checkpoints, the progress bar and `metrics.jsonl`, then the kept model's
//! final evaluation and its model directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::checkpoint::{self, CheckpointState};
use super::config::TrainConfig;
use super::data;
use super::error::{Result, TrainError};
use super::evaluate::evaluate;
use super::metrics_log::MetricsLog;
use super::optim::{AdamW, lr_at};
use super::output::write_output;
use super::setup::{Setup, corrupted_copies, setup, trainable_filter};
use super::step::{LossTerms, step_gradients};
use super::{EvalRecord, TrainSummary};
use crate as model;
use crate::{Encoded, TrainableModel, weights};

/// Trains `cfg` on `dataset_dir` into `out_dir` (see [`super::train`]). `stop_after` (tests
/// only) returns `None` after that many optimizer steps, as if the process had been killed.
pub(super) fn run(
    dataset_dir: &Path,
    cfg: &TrainConfig,
    out_dir: &Path,
    resume: bool,
    device: &Device,
    stop_after: Option<usize>,
) -> Result<Option<TrainSummary>> {
    let setup = setup(dataset_dir, cfg)?;
    let mut trainer = Trainer::start(&setup, cfg, out_dir, resume, device)?;
    if !trainer.train(stop_after)? {
        return Ok(None);
    }
    trainer.finish(out_dir).map(Some)
}

/// A run in progress: the model, the optimizer, the resumable state and where it is written.
struct Trainer<'a> {
    setup: &'a Setup,
    cfg: &'a TrainConfig,
    device: &'a Device,
    tm: TrainableModel,
    opt: AdamW,
    state: CheckpointState,
    log: MetricsLog,
    bar: indicatif::ProgressBar,
    terms: LossTerms,
    /// Optimizer steps of the whole run.
    total_steps: usize,
    /// Warmup steps of the learning-rate schedule.
    warmup: usize,
    /// `out_dir/train_state`: the checkpoint and the best weights so far.
    state_dir: PathBuf,
    ckpt_path: PathBuf,
    best_path: PathBuf,
    /// When this process started training (the throughput counts from here).
    started: Instant,
    /// Examples seen since `started`.
    seen_since_start: usize,
    /// Sum and count of step losses since the last `train` line.
    running_loss: f64,
    running_n: usize,
}

impl<'a> Trainer<'a> {
    /// Loads the base weights with a seeded head, sets up the optimizer and the step budget,
    /// and with `resume` restores the checkpoint in `out_dir` when there is one.
    fn start(setup: &'a Setup, cfg: &'a TrainConfig, out_dir: &Path, resume: bool, device: &'a Device) -> Result<Self> {
        let state_dir = out_dir.join("train_state");
        std::fs::create_dir_all(&state_dir).map_err(|e| evalloop_core::Error::io(&state_dir, e))?;
        let ckpt_path = state_dir.join("checkpoint.safetensors");
        let best_path = state_dir.join("best.safetensors");

        // Initial weights: the base checkpoint plus a seeded head.
        let base_weights = setup.base_dir.join("model.safetensors");
        let ckpt = weights::load_checkpoint(&base_weights, setup.config.family())?;
        let (init, report) = weights::init_weights(&setup.config, Some(ckpt), &base_weights, cfg.seed)?;
        tracing::info!(
            base = %setup.base_dir.display(),
            loaded = report.loaded.len(),
            initialized = ?report.initialized,
            unused = report.unused.len(),
            "base model loaded"
        );
        let mut tm = TrainableModel::new(&setup.config, init, trainable_filter(cfg), cfg.seed.wrapping_add(1), device)?;
        let mut opt = AdamW::new(tm.params(), cfg, setup.config.num_hidden_layers)?;

        let terms = LossTerms::of(setup.objective);
        // Group-aware batches can differ in number from epoch to epoch: count each epoch's steps.
        let mut total_steps: usize =
            (0..cfg.epochs).map(|e| epoch_plan(setup, cfg, terms, e).len().div_ceil(cfg.grad_accum)).sum();
        if cfg.max_steps > 0 && (cfg.epochs == 0 || cfg.max_steps < total_steps) {
            total_steps = cfg.max_steps;
        }
        let warmup = if cfg.warmup_steps > 0 {
            cfg.warmup_steps
        } else {
            (cfg.warmup_ratio * total_steps as f64).ceil() as usize
        };

        let shards = match cfg.data_parallel {
            _ if !device.is_cpu() => 1,
            0 => rayon::current_num_threads().max(1),
            n => n,
        };
        let mut state = CheckpointState::new(setup.fingerprint.clone(), tm.dropout_rng().state()?, shards);
        let metrics_path = out_dir.join("metrics.jsonl");
        let mut keep_metrics = None;
        if resume && ckpt_path.is_file() {
            let (st, tensors) = checkpoint::read(&ckpt_path)?;
            if st.fingerprint != setup.fingerprint {
                return Err(TrainError::Core(evalloop_core::Error::Input(format!(
                    "{}: the checkpoint was written with another config or training data; \
                     run without --resume to start over",
                    ckpt_path.display()
                ))));
            }
            tm.set_params(&tensors.params)?;
            opt.restore(st.adam_step, &tensors.m, &tensors.v, tm.params())?;
            tm.dropout_rng().restore(&st.rng)?;
            keep_metrics = Some(st.metrics_len);
            tracing::info!(step = st.step, epoch = st.epoch + 1, shards = st.shards, "resuming from checkpoint");
            state = st;
        } else if resume {
            tracing::info!(path = %ckpt_path.display(), "no checkpoint to resume from; starting over");
        }
        let log = MetricsLog::open(&metrics_path, keep_metrics)?;
        let bar = progress_bar(total_steps, state.step);
        Ok(Trainer {
            setup,
            cfg,
            device,
            tm,
            opt,
            state,
            log,
            bar,
            terms,
            total_steps,
            warmup,
            state_dir,
            ckpt_path,
            best_path,
            started: Instant::now(),
            seen_since_start: 0,
            running_loss: 0.0,
            running_n: 0,
        })
    }

    /// Runs epochs until the step budget, the epoch count or early stopping ends training;
    /// false when `stop_after` steps cut it short first.
    fn train(&mut self, stop_after: Option<usize>) -> Result<bool> {
        let (setup, cfg) = (self.setup, self.cfg);
        let mut finished = self.state.done;
        while !finished {
            if self.state.epoch >= cfg.epochs.max(1) && cfg.epochs > 0 || self.state.step >= self.total_steps {
                break;
            }
            let batches = epoch_plan(setup, cfg, self.terms, self.state.epoch);
            let batches_per_epoch = batches.len();
            let epoch_copies;
            let train_corrupt = if self.state.epoch == 0 || !cfg.corruption_per_epoch() {
                &setup.train_corrupt
            } else {
                epoch_copies = corrupted_copies(&setup.tokenizer, &setup.train, cfg, self.state.epoch)?;
                &epoch_copies
            };
            let mut epoch_cut = false;
            while self.state.next_batch < batches_per_epoch {
                let first = self.state.next_batch;
                let last = (first + cfg.grad_accum).min(batches_per_epoch);
                let micro: Vec<&[usize]> = batches[first..last].iter().map(Vec::as_slice).collect();
                self.step(&micro, train_corrupt)?;
                self.state.next_batch = last;
                if self.state.step >= self.total_steps {
                    epoch_cut = self.state.next_batch < batches_per_epoch;
                    break;
                }
                if cfg.checkpoint_every > 0 && self.state.step.is_multiple_of(cfg.checkpoint_every) {
                    self.save_checkpoint()?;
                }
                if stop_after.is_some_and(|s| self.state.step >= s) {
                    self.bar.abandon();
                    return Ok(false);
                }
            }

            // End of an epoch (or of the step budget): evaluate, keep the best, maybe stop.
            if self.end_of_epoch()? {
                finished = true;
            }
            self.state.epoch += 1;
            self.state.next_batch = 0;
            if epoch_cut || self.state.step >= self.total_steps || (cfg.epochs > 0 && self.state.epoch >= cfg.epochs) {
                finished = true;
            }
            self.state.done = finished;
            self.save_checkpoint()?;
            if stop_after.is_some_and(|s| self.state.step >= s) && !finished {
                self.bar.abandon();
                return Ok(false);
            }
        }
        self.bar.finish_and_clear();
        Ok(true)
    }

    /// One optimizer step over the micro-batches `micro`, then the progress bar and, every
    /// `log_every` steps (and at the last), a `train` line.
    fn step(&mut self, micro: &[&[usize]], train_corrupt: &[Option<Encoded>]) -> Result<()> {
        let cfg = self.cfg;
        let mut step = step_gradients(
            &self.tm,
            self.setup,
            cfg,
            self.terms,
            micro,
            train_corrupt,
            self.state.shards,
            self.device,
        )?;
        if step.update {
            let lr = lr_at(self.state.step, cfg.learning_rate, self.warmup, self.total_steps);
            self.opt.step(self.tm.params(), &mut step.grads, lr, cfg.grad_clip)?;
        }
        let examples: usize = micro.iter().map(|m| m.len()).sum();
        self.seen_since_start += examples;
        self.running_loss += step.loss;
        self.running_n += 1;
        self.state.step += 1;
        let rate = self.seen_since_start as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_position(self.state.step as u64);
        self.bar.set_message(format!("loss {:.4}  {rate:.1} ex/s", step.loss));
        if self.state.step.is_multiple_of(cfg.log_every) || self.state.step == self.total_steps {
            let lr = lr_at(self.state.step - 1, cfg.learning_rate, self.warmup, self.total_steps);
            let loss = self.running_loss / self.running_n.max(1) as f64;
            self.log.train(self.state.step, self.state.epoch + 1, loss, lr, rate)?;
            // Logs go to stderr like the bar: hide the bar while the line is written.
            let step = self.state.step;
            self.bar.suspend(|| tracing::info!(step, loss, lr, examples_per_sec = rate, "train"));
            self.running_loss = 0.0;
            self.running_n = 0;
        }
        Ok(())
    }

    /// Evaluates the epoch that just ended on the validation split (if any), records it, keeps
    /// the weights when they are the best so far; true when early stopping ends the run.
    fn end_of_epoch(&mut self) -> Result<bool> {
        let (setup, cfg) = (self.setup, self.cfg);
        if setup.validation.is_empty() {
            return Ok(false);
        }
        let epoch_no = self.state.epoch + 1;
        let m = evaluate(
            &self.tm.model,
            setup,
            &setup.validation,
            &setup.validation_enc,
            cfg.eval_batch_size,
            self.device,
        )?;
        self.log.eval("validation", self.state.step, Some(epoch_no), &m)?;
        let step = self.state.step;
        self.bar.suspend(|| {
            tracing::info!(
                epoch = epoch_no,
                step,
                loss = m.loss,
                spearman = ?m.spearman,
                group_spearman = ?m.group_spearman,
                auc = ?m.auc,
                "validation"
            )
        });
        let verdict = self.state.early_stopping.update(epoch_no, &m, cfg);
        self.state.history.push(EvalRecord { epoch: epoch_no, step: self.state.step, metrics: m });
        if verdict.keep {
            let bytes = weights::safetensors_bytes(&self.tm.tensors(), None)?;
            evalloop_core::atomic::write_atomic(&self.best_path, &bytes)?;
        }
        if verdict.stop {
            tracing::info!(epoch = epoch_no, patience = cfg.patience, "early stopping");
        }
        Ok(verdict.stop)
    }

    /// Writes the checkpoint: weights, AdamW moments, the dropout stream's position and the
    /// loop's state, with metrics.jsonl's length made durable first.
    fn save_checkpoint(&mut self) -> Result<()> {
        self.state.metrics_len = self.log.sync_len()?;
        self.state.rng = self.tm.dropout_rng().state()?;
        self.state.adam_step = self.opt.step_count();
        checkpoint::write(&self.ckpt_path, &self.state, &self.tm, &self.opt)?;
        tracing::debug!(step = self.state.step, "checkpoint written");
        Ok(())
    }

    /// The kept model (the best validation checkpoint, else the last weights): its validation
    /// and test metrics, the `test` line, and the model directory in `out_dir`.
    fn finish(mut self, out_dir: &Path) -> Result<TrainSummary> {
        let (setup, cfg, device) = (self.setup, self.cfg, self.device);
        let best = &self.state.early_stopping;
        let final_weights: BTreeMap<String, Tensor> = if best.best_epoch.is_some() && self.best_path.is_file() {
            weights::load_checkpoint(&self.best_path, setup.config.family())?
        } else {
            self.tm.tensors()
        };
        let infer = model::InferenceModel::from_tensors(&setup.config, final_weights.clone(), device)?;
        let validation = if setup.validation.is_empty() {
            None
        } else {
            Some(evaluate(&infer.model, setup, &setup.validation, &setup.validation_enc, cfg.eval_batch_size, device)?)
        };
        let test = if setup.test.is_empty() {
            None
        } else {
            let m = evaluate(&infer.model, setup, &setup.test, &setup.test_enc, cfg.eval_batch_size, device)?;
            self.log.eval("test", self.state.step, best.best_epoch, &m)?;
            Some(m)
        };
        self.log.sync_len()?;

        let summary = TrainSummary {
            out_dir: out_dir.to_path_buf(),
            label: setup.kind,
            steps: self.state.step,
            epochs_completed: self.state.epoch,
            stopped_early: best.stopped_early,
            best_epoch: best.best_epoch,
            validation,
            test,
            history: self.state.history.clone(),
            members: Vec::new(),
            selection: None,
            blend: None,
            distill: setup.distill.clone(),
            dapt: None,
        };
        write_output(out_dir, cfg, setup, &final_weights, &summary)?;
        if !cfg.keep_checkpoints {
            std::fs::remove_dir_all(&self.state_dir).map_err(|e| evalloop_core::Error::io(&self.state_dir, e))?;
        }
        tracing::info!(out = %out_dir.display(), steps = summary.steps, "training done");
        Ok(summary)
    }
}

/// Epoch `epoch`'s micro-batches (indices into `setup.train`), group-aware under a pairwise
/// objective.
fn epoch_plan(setup: &Setup, cfg: &TrainConfig, terms: LossTerms, epoch: usize) -> Vec<Vec<usize>> {
    data::epoch_batches(&setup.train, cfg.batch_size, cfg.seed, epoch, terms.pairwise)
}

/// The progress bar over `total_steps` optimizer steps, at `position`.
fn progress_bar(total_steps: usize, position: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total_steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(position as u64);
    bar
}

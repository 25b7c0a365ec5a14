//! The `[train]` section of the config file.

use serde::{Deserialize, Serialize};

pub use crate::Truncation;

/// Which kind of label the dataset has (its dataset_card.json `config.label`): binary labels
/// train one logit with BCE (score = sigmoid(logit)), graded ones one output with MSE (score =
/// the output).
pub use evalloop_core::files::LabelKind;

/// The training objective (`objective` in `[train]`).
///
/// - `graded`: per-example weighted MSE of the output against the label (labels in [0, 1]).
/// - `binary`: per-example weighted BCE with logits (labels 0/1).
/// - `pairwise`: a weighted logistic (RankNet) loss over ordered pairs within a group (see
///   [`super::loss::pairwise_loss`]); the output is an unbounded score whose order within a
///   group is what is learnt.
/// - `graded+pairwise`: the pointwise loss of the label kind plus `pairwise_weight` times the
///   pairwise loss.
/// - `self_supervised`: only the `corruption_pairs` pairs (each output ranked above a corrupted
///   copy of itself), no labelled pair and no pointwise loss: the labels serve validation alone
///   (and no dimension outputs are trained). Needs `corruption_pairs`; with `unlabelled` it
///   learns from every logged output. Its scores are not on the labels' scale.
///
/// The validation `loss` is always the label kind's pointwise loss of the model's output; under
/// `pairwise` the output is not fitted to the labels' scale, so watch `group_spearman` (or
/// `spearman`) instead (`eval_metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    /// Weighted MSE.
    #[serde(rename = "graded")]
    Graded,
    /// Weighted BCE with logits.
    #[serde(rename = "binary")]
    Binary,
    /// Weighted logistic pairwise ranking loss within groups.
    #[serde(rename = "pairwise")]
    Pairwise,
    /// The label kind's pointwise loss plus `pairwise_weight` times the pairwise loss.
    #[serde(rename = "graded+pairwise")]
    GradedPairwise,
    /// The corruption pairs alone (labels unused in the loss).
    #[serde(rename = "self_supervised")]
    SelfSupervised,
}

/// Which pairs of a micro-batch the pairwise loss compares (`pair_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairScope {
    /// Only two outputs of the same group (prompt): the within-group ranking.
    #[serde(rename = "group")]
    Group,
    /// Any two labelled outputs of the micro-batch, of the same group or not: more pairs where
    /// groups have few labelled outputs each, at the price of comparing outputs of different
    /// prompts (right when the human scale is absolute, as a 1-5 rating is).
    #[serde(rename = "batch")]
    Batch,
}

/// How `corruption_pairs` corrupts an output (`corruption`, and the keys of `corruption_mix`).
pub use super::corrupt::Corruption;

impl Objective {
    /// Whether the objective has a pairwise term (and batches keep groups together).
    pub fn has_pairwise(self) -> bool {
        matches!(self, Objective::Pairwise | Objective::GradedPairwise | Objective::SelfSupervised)
    }

    /// Whether the objective fits the labels pointwise (graded, binary, graded+pairwise).
    pub fn has_pointwise(self) -> bool {
        !matches!(self, Objective::Pairwise | Objective::SelfSupervised)
    }
}

/// How the blend stage (`blend_evaluator`) chooses the production evaluator's share `w`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlendRule {
    /// The least-squares weights of the two standardised scores for the label, from their
    /// correlations within prompt groups: the model's with the label and with the evaluator on
    /// the validation split, the evaluator's with the label on the training and validation
    /// splits (labels it never saw); over the whole splits when the validation split has fewer
    /// than 10 within-group degrees of freedom. A negative weight becomes 0, and so does the
    /// evaluator's when its correlation with the label is not positive.
    #[default]
    Regression,
    /// The `w` in 0, 0.05, ..., 1 with the best validation `eval_metric` (the smallest among
    /// the best).
    Search,
}

/// The metric early stopping and best-checkpoint selection watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalMetric {
    /// Validation loss (lower is better).
    Loss,
    /// Spearman correlation of scores with labels (higher is better).
    Spearman,
    /// ROC AUC (binary labels only; higher is better).
    Auc,
    /// Accuracy at 0.5 (binary labels only; higher is better).
    Accuracy,
    /// `group_spearman`: mean within-group Spearman over the validation groups (the dataset's
    /// `group` field; higher is better). An evaluation where no group is usable never counts
    /// as an improvement.
    GroupSpearman,
}

/// One entry of `[[train.candidates]]`: a name and `[train]` keys that override the base
/// configuration's (see [`TrainConfig::candidates`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Directory name under `candidates/` and the name in the selection report: letters,
    /// digits, `_` and `-`; not `base` (the base configuration's own name).
    pub name: String,
    /// The overridden `[train]` keys, checked as the `[train]` table is.
    #[serde(flatten)]
    pub overrides: toml::Table,
}

/// Raw `[train]` settings. Every key has a default; unknown keys are an error.
///
/// ```toml
/// [train]
/// base_model = "sentence-transformers/all-MiniLM-L6-v2"   # or a local directory
/// epochs = 3
/// max_steps = 0            # 0 = no limit
/// batch_size = 16
/// max_length = 256
/// learning_rate = 5e-5
/// seed = 7
/// # ranking quality; these are the defaults
/// truncation = "longest_first"   # or "output_first"
/// # objective = "graded"         # unset = from the label kind ("graded" or "binary")
/// pair_min_diff = 0.1
/// pairwise_weight = 1.0
/// pair_scope = "group"           # or "batch"
/// layer_lr_decay = 1.0
/// eval_metric = "spearman"       # or "group_spearman", "loss", "auc", "accuracy"
/// # seeds = [1, 2, 3]            # an ensemble: one member per seed
/// # multi-task (docs/guide/multi-dimension.md)
/// # dimensions = ["relevance"]   # unset = the dataset card's config.dimensions; [] = one output
/// dimension_weight = 1.0
/// # speed
/// data_parallel = 0              # shards of a micro-batch run side by side; 0 = CPU threads
/// # model selection: also train these variants, keep the best on held-back labels
/// # [[train.candidates]]
/// # name = "self_supervised"
/// # objective = "self_supervised"
/// select_min_groups = 5
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Hub repo id (read from the local Hugging Face cache, offline) or a local directory with
    /// config.json, tokenizer.json, model.safetensors. Default
    /// `sentence-transformers/all-MiniLM-L6-v2`.
    pub base_model: String,
    /// Passes over the training split (default 3).
    pub epochs: usize,
    /// Stop after this many optimizer steps; 0 = no limit (default 0). Sets the schedule
    /// length when smaller than `epochs` worth of steps.
    pub max_steps: usize,
    /// Examples per forward pass (default 16). The optimizer batch is
    /// `batch_size * grad_accum`.
    pub batch_size: usize,
    /// Truncation length in tokens of a (prompt, output) pair, special tokens included; capped
    /// by the model's `max_position_embeddings` (default 256).
    pub max_length: usize,
    /// Peak learning rate of AdamW (default 5e-5).
    pub learning_rate: f64,
    /// Seed of the head initialisation, data order and dropout (default 7).
    pub seed: u64,
    /// Decoupled AdamW weight decay, not applied to biases and LayerNorm weights (default 0.01).
    pub weight_decay: f64,
    /// AdamW beta1 (default 0.9).
    pub adam_beta1: f64,
    /// AdamW beta2 (default 0.999).
    pub adam_beta2: f64,
    /// AdamW epsilon (default 1e-8).
    pub adam_eps: f64,
    /// Warmup as a share of the total optimizer steps (default 0.1); ignored when
    /// `warmup_steps` > 0.
    pub warmup_ratio: f64,
    /// Warmup in optimizer steps; 0 = use `warmup_ratio` (default 0).
    pub warmup_steps: usize,
    /// Clip gradients to this global L2 norm; 0 = no clipping (default 1.0).
    pub grad_clip: f64,
    /// Micro-batches per optimizer step (default 1).
    pub grad_accum: usize,
    /// Metric for early stopping and the best checkpoint: `loss`, `spearman`, `group_spearman`
    /// (mean within-group Spearman, see [`super::metrics`]), `auc`, `accuracy` (default
    /// "spearman").
    pub eval_metric: EvalMetric,
    /// Epochs without improvement of `eval_metric` before stopping; 0 = never stop early
    /// (default 2).
    pub patience: usize,
    /// Keep the epoch with the best validation `eval_metric` (default true); false = keep the
    /// last epoch's weights (validation is still computed and logged, `patience` is ignored):
    /// for validation splits too small to choose an epoch by.
    pub keep_best: bool,
    /// Keep the embeddings fixed (default false).
    pub freeze_embeddings: bool,
    /// Keep the lowest k encoder layers fixed (default 0).
    pub freeze_layers: usize,
    /// Write a resumable checkpoint every N optimizer steps, besides the one at each epoch end;
    /// 0 = only at epoch ends (default 0).
    pub checkpoint_every: usize,
    /// Write a metrics.jsonl line every N optimizer steps (default 10).
    pub log_every: usize,
    /// Override every dropout probability of the base config; unset = keep the base model's.
    pub dropout: Option<f64>,
    /// Label kind; unset = read `config.label` from the dataset's dataset_card.json.
    pub label: Option<LabelKind>,
    /// Batch size of evaluation passes (default 32).
    pub eval_batch_size: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (default "cpu").
    pub device: String,
    /// Keep the resumable training state (`train_state/`) after a successful run (default
    /// false).
    pub keep_checkpoints: bool,
    /// Which text of a (prompt, output) pair is cut when the pair exceeds `max_length`:
    /// `"longest_first"` or `"output_first"` (keep the whole output, cut the prompt); see
    /// [`Truncation`]. Written to `training_config.json` and used again by the scorer
    /// (default "longest_first").
    pub truncation: Truncation,
    /// Training objective: `"graded"`, `"binary"`, `"pairwise"` or `"graded+pairwise"` (see
    /// [`Objective`]); unset = the label kind's pointwise loss (default unset). `"binary"`
    /// needs binary labels; `"graded"` on binary labels fits MSE to 0/1.
    pub objective: Option<Objective>,
    /// Smallest label difference for a pair of the same group to count in the pairwise loss
    /// (default 0.1, in label units; binary labels differ by 0 or 1).
    pub pair_min_diff: f64,
    /// Weight of the pairwise term in `"graded+pairwise"` (default 1.0): loss = pointwise +
    /// `pairwise_weight` * pairwise.
    pub pairwise_weight: f64,
    /// Which pairs the pairwise loss uses: `"group"` (two outputs of the same group) or
    /// `"batch"` (any two outputs of a micro-batch); default "group". See [`PairScope`].
    pub pair_scope: PairScope,
    /// Layer-wise learning-rate decay: encoder layer l (1-based) of L gets
    /// `learning_rate * layer_lr_decay^(L - l)`, the embeddings `layer_lr_decay^L`, the pooler
    /// and classifier the full rate; 1.0 = off (default 1.0, usual values 0.8-0.95).
    pub layer_lr_decay: f64,
    /// Train an ensemble: one member per seed into `out/member-<seed>/` (each with this
    /// config and `seed` replaced), plus `out/ensemble.json`; the scorer averages the members'
    /// scores. Empty = one model from `seed` in `out/` (default empty).
    pub seeds: Vec<u64>,
    /// Human dimensions to learn besides the primary score, one extra output each (outputs
    /// 1..K of the head, graded MSE against the dataset rows' `labels`); unset = the dataset
    /// card's `config.dimensions`, `[]` = one output (default unset).
    pub dimensions: Option<Vec<String>>,
    /// Weight of the dimension term: loss = primary loss + `dimension_weight` x the mean over
    /// dimensions of each one's masked weighted MSE (default 1.0).
    pub dimension_weight: f64,
    /// Data parallelism on the CPU: each micro-batch is cut into this many shards (at most one
    /// per example), whose forward and backward passes run side by side on the thread pool,
    /// each with its own dropout stream; their gradients are added in shard order. 0 = the
    /// number of CPU threads (`RAYON_NUM_THREADS` or the cores); on CUDA always 1 (default 0).
    /// The shard count, not the thread count, decides the result: a run is repeatable with the
    /// same count on any machine, and `--resume` keeps the count the run started with.
    pub data_parallel: usize,
    /// Synthetic ranking pairs (needs a pairwise objective): each training output is paired
    /// with a corrupted copy of itself (see `corruption`; drawn from `seed`)
    /// that must score lower, with weight `corruption_pairs` x the example's weight (1 for an
    /// unlabelled output), added to the pairwise term beside the labelled pairs. The copies get
    /// no pointwise loss. 0 = off (default 0).
    pub corruption_pairs: f64,
    /// How the copies of `corruption_pairs` are made: `"drop"` (words dropped and two swapped)
    /// or `"swap"` (word order only; see [`Corruption`]); default "drop". Drop copies are drawn
    /// once per run, swap copies anew each epoch.
    pub corruption: Corruption,
    /// A mixture of corruption families instead of the one `corruption` names: family name ->
    /// weight (`swap`, `drop`, `shuffle`, `remove`, `insert`, `replace`, `repeat`, `truncate`,
    /// `negate`, `number`, `entity`; see [`Corruption`]). Each output's copy is drawn anew each
    /// epoch: a family by weight among those that apply to it. Empty = `corruption` alone
    /// (default empty).
    pub corruption_mix: std::collections::BTreeMap<String, f64>,
    /// Also train on the dataset's `unlabelled.jsonl` (`[dataset] unlabelled`): logged outputs
    /// without a human score, used only in `corruption_pairs` pairs (each output above its own
    /// corrupted copy), batched with their groups like labelled rows; needs `corruption_pairs`
    /// (default false).
    pub unlabelled: bool,
    /// The blend stage: after training (and any ensemble or selection), blend the model's score
    /// with the production evaluator's `overall` (the dataset rows' `evaluator_score`), with the
    /// evaluator's share chosen by `blend_rule` and the result mapped onto the labels' scale;
    /// written as `blend.json`, which every scorer applies (scoring then needs each request's
    /// production score). Needs a validation split (default false).
    pub blend_evaluator: bool,
    /// How the blend stage chooses the production evaluator's share (default `"regression"`).
    pub blend_rule: BlendRule,
    /// Train on the dataset's preference pairs (`pairs.jsonl`, written by `dataset build` when
    /// the store holds preferences): each train-split pair adds the chosen output ranked above
    /// the rejected one to the pairwise term, with weight `preference_pairs` x the pair's
    /// weight. Outputs that are not labelled rows join the batch of their group with no
    /// pointwise loss. Needs a pairwise objective; with pairs and no labelled rows, `"pairwise"`
    /// trains on the pairs alone. 0 = off (default 0).
    pub preference_pairs: f64,
    /// Distillation from the production evaluator: within each prompt group of a batch, every
    /// two outputs (labelled or `unlabelled`) that both carry the dataset's `evaluator_score`
    /// are a soft ranking pair: the first is taken as better with probability
    /// `sigmoid((e_a - e_b) / (distill_temperature x sd))` (sd: the spread of the training rows'
    /// evaluator scores), added to the pairwise term with weight `distill` (both orders,
    /// weighted by that probability and its complement). The human labels' terms correct it.
    /// Needs a pairwise objective (default 0: off).
    pub distill: f64,
    /// The softness of `distill`'s targets, in standard deviations of the evaluator's scores:
    /// small values make every score gap a near-certain pair, large ones make all pairs
    /// near-even (default 0.5).
    pub distill_temperature: f64,
    /// `distill` runs only when the production evaluator agrees with the human labels it never
    /// saw at least this much: the group-level Spearman of `evaluator_score` with the label
    /// over the labelled training and validation rows (the dataset-level Spearman when no group
    /// has two rows). Below it the run trains without distillation and says so in the log and
    /// in `metrics.json` (`distill`); -1 always distils (default 0.1).
    pub distill_min_agreement: f64,
    /// Domain-adaptive pretraining: epochs of masked-language-model training of the base
    /// encoder on the dataset's training, validation and unlabelled texts before the scoring
    /// stage, which then starts from the adapted encoder (BERT and RoBERTa families; default 0:
    /// off). See `dapt.rs`.
    pub dapt_epochs: usize,
    /// The share of ordinary tokens masked in each sequence (default 0.15).
    pub dapt_mask_probability: f64,
    /// The peak learning rate of the pretraining stage (default 5e-5).
    pub dapt_learning_rate: f64,
    /// Model selection: besides the base configuration (named `base`), train one model per
    /// candidate (the base configuration with the candidate's keys replaced) into
    /// `out/candidates/<name>/`, and keep the one with the best `eval_metric` (the base
    /// configuration's) on the labels it did not train on: the validation split, and for a
    /// `self_supervised` candidate (no label in its loss) the training split's labels as well.
    /// The kept model's files are copied into `out/`, and `metrics.json` gets a `selection`
    /// with every candidate's figure. With `eval_metric = "group_spearman"` and fewer than
    /// `select_min_groups` usable groups in some candidate's judged rows, the candidates are
    /// compared on the dataset-level `spearman` instead. Needs a validation split; not with
    /// `seeds` (default empty: one configuration, no selection).
    pub candidates: Vec<Candidate>,
    /// See `candidates` (default 5).
    pub select_min_groups: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            base_model: "sentence-transformers/all-MiniLM-L6-v2".to_string(),
            epochs: 3,
            max_steps: 0,
            batch_size: 16,
            max_length: 256,
            learning_rate: 5e-5,
            seed: 7,
            weight_decay: 0.01,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            warmup_ratio: 0.1,
            warmup_steps: 0,
            grad_clip: 1.0,
            grad_accum: 1,
            eval_metric: EvalMetric::Spearman,
            patience: 2,
            freeze_embeddings: false,
            freeze_layers: 0,
            checkpoint_every: 0,
            log_every: 10,
            dropout: None,
            label: None,
            eval_batch_size: 32,
            device: "cpu".to_string(),
            keep_checkpoints: false,
            truncation: Truncation::LongestFirst,
            objective: None,
            pair_min_diff: 0.1,
            pairwise_weight: 1.0,
            pair_scope: PairScope::Group,
            layer_lr_decay: 1.0,
            seeds: Vec::new(),
            dimensions: None,
            dimension_weight: 1.0,
            data_parallel: 0,
            corruption_pairs: 0.0,
            corruption: Corruption::Drop,
            corruption_mix: Default::default(),
            unlabelled: false,
            blend_evaluator: false,
            blend_rule: BlendRule::Regression,
            preference_pairs: 0.0,
            distill: 0.0,
            distill_temperature: 0.5,
            distill_min_agreement: 0.1,
            dapt_epochs: 0,
            dapt_mask_probability: 0.15,
            dapt_learning_rate: 5e-5,
            keep_best: true,
            candidates: Vec::new(),
            select_min_groups: 5,
        }
    }
}

#[derive(Deserialize)]
struct TrainFile {
    #[serde(default)]
    train: TrainConfig,
}

impl TrainConfig {
    /// Reads the `[train]` table of a TOML document (other tables are ignored; a missing
    /// `[train]` gives the defaults). `origin` names the file in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> evalloop_core::Result<Self> {
        let file: TrainFile =
            toml::from_str(text).map_err(|e| evalloop_core::Error::Input(format!("{origin}: [train]: {e}")))?;
        file.train.validate(origin)?;
        Ok(file.train)
    }

    /// Checks ranges; errors name the key.
    /// The corruption families of `corruption_pairs` with their weights: `corruption_mix`
    /// parsed, or `corruption` alone with weight 1. Errors name the key: an unknown family, or a
    /// weight that is not a number >= 0, or a mixture whose weights are all 0.
    pub fn corruption_families(&self) -> Result<std::collections::BTreeMap<Corruption, f64>, String> {
        if self.corruption_mix.is_empty() {
            return Ok([(self.corruption, 1.0)].into());
        }
        let mut out = std::collections::BTreeMap::new();
        for (name, &w) in &self.corruption_mix {
            let kind: Corruption = serde_json::from_value(serde_json::Value::String(name.clone())).map_err(|_| {
                let known: Vec<String> = Corruption::ALL
                    .iter()
                    .filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(str::to_string))
                    .collect();
                format!("corruption_mix.{name}: unknown corruption family (known: {})", known.join(", "))
            })?;
            if !(w >= 0.0 && w.is_finite()) {
                return Err(format!("corruption_mix.{name}: {w} is not a number >= 0"));
            }
            out.insert(kind, w);
        }
        if out.values().all(|w| *w == 0.0) {
            return Err("corruption_mix: every weight is 0".into());
        }
        Ok(out)
    }

    /// Whether the corrupted copies are drawn anew each epoch (a mixture, or any family but
    /// `drop`).
    pub fn corruption_per_epoch(&self) -> bool {
        !self.corruption_mix.is_empty() || self.corruption.per_epoch()
    }

    pub fn validate(&self, origin: &str) -> evalloop_core::Result<()> {
        let bad = |key: &str, msg: String| Err(evalloop_core::Error::Input(format!("{origin}: [train] {key}: {msg}")));
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.eval_batch_size == 0 {
            return bad("eval_batch_size", "must be at least 1".into());
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", "must be at least 1".into());
        }
        if self.epochs == 0 && self.max_steps == 0 {
            return bad("epochs", "epochs and max_steps are both 0".into());
        }
        if self.max_length < 8 {
            return bad("max_length", format!("{} is too short (at least 8)", self.max_length));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate", format!("{} is not a positive number", self.learning_rate));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad("warmup_ratio", format!("{} is not in [0, 1)", self.warmup_ratio));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad("weight_decay", format!("{} is negative", self.weight_decay));
        }
        if self.grad_clip.is_nan() || self.grad_clip < 0.0 {
            return bad("grad_clip", format!("{} is negative", self.grad_clip));
        }
        if let Some(p) = self.dropout
            && !(0.0..1.0).contains(&p)
        {
            return bad("dropout", format!("{p} is not in [0, 1)"));
        }
        if self.log_every == 0 {
            return bad("log_every", "must be at least 1".into());
        }
        if !(self.pair_min_diff >= 0.0 && self.pair_min_diff.is_finite()) {
            return bad("pair_min_diff", format!("{} is not a number >= 0", self.pair_min_diff));
        }
        if !(self.pairwise_weight >= 0.0 && self.pairwise_weight.is_finite()) {
            return bad("pairwise_weight", format!("{} is not a number >= 0", self.pairwise_weight));
        }
        if !(self.layer_lr_decay > 0.0 && self.layer_lr_decay <= 1.0) {
            return bad("layer_lr_decay", format!("{} is not in (0, 1]", self.layer_lr_decay));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(s) = self.seeds.iter().find(|s| !seen.insert(**s)) {
            return bad("seeds", format!("seed {s} is listed twice"));
        }
        if !(self.corruption_pairs >= 0.0 && self.corruption_pairs.is_finite()) {
            return bad("corruption_pairs", format!("{} is not a number >= 0", self.corruption_pairs));
        }
        if !(self.preference_pairs >= 0.0 && self.preference_pairs.is_finite()) {
            return bad("preference_pairs", format!("{} is not a number >= 0", self.preference_pairs));
        }
        if !(self.distill >= 0.0 && self.distill.is_finite()) {
            return bad("distill", format!("{} is not a number >= 0", self.distill));
        }
        if !(self.distill_temperature > 0.0 && self.distill_temperature.is_finite()) {
            return bad("distill_temperature", format!("{} is not a positive number", self.distill_temperature));
        }
        if !(self.dapt_mask_probability > 0.0 && self.dapt_mask_probability < 1.0) {
            return bad("dapt_mask_probability", format!("{} is not in (0, 1)", self.dapt_mask_probability));
        }
        if !(self.dapt_learning_rate > 0.0 && self.dapt_learning_rate.is_finite()) {
            return bad("dapt_learning_rate", format!("{} is not a positive number", self.dapt_learning_rate));
        }
        if !(-1.0..=1.0).contains(&self.distill_min_agreement) {
            return bad("distill_min_agreement", format!("{} is not in [-1, 1]", self.distill_min_agreement));
        }
        if self.distill > 0.0 && !self.objective.is_some_and(|o| o.has_pairwise()) {
            return bad("distill", "needs objective = \"pairwise\" or \"graded+pairwise\"".into());
        }
        if self.preference_pairs > 0.0
            && !matches!(self.objective, Some(Objective::Pairwise | Objective::GradedPairwise))
        {
            return bad("preference_pairs", "needs objective = \"pairwise\" or \"graded+pairwise\"".into());
        }
        if self.corruption_pairs > 0.0 && !self.objective.is_some_and(Objective::has_pairwise) {
            return bad("corruption_pairs", "needs objective = \"pairwise\" or \"graded+pairwise\"".into());
        }
        self.corruption_families().map_err(|e| evalloop_core::Error::Input(format!("{origin}: [train] {e}")))?;
        if self.objective == Some(Objective::SelfSupervised) {
            if self.corruption_pairs <= 0.0 {
                return bad(
                    "objective",
                    "\"self_supervised\" learns only from corruption pairs: set corruption_pairs > 0".into(),
                );
            }
            if self.dimensions.as_ref().is_some_and(|d| !d.is_empty()) {
                return bad(
                    "dimensions",
                    "\"self_supervised\" trains no dimension outputs (labels are not used)".into(),
                );
            }
        }
        if self.unlabelled && self.corruption_pairs <= 0.0 {
            return bad(
                "unlabelled",
                "unlabelled outputs are used only in corruption pairs: set corruption_pairs > 0".into(),
            );
        }
        if !(self.dimension_weight >= 0.0 && self.dimension_weight.is_finite()) {
            return bad("dimension_weight", format!("{} is not a number >= 0", self.dimension_weight));
        }
        if let Err(e) = evalloop_core::record::check_dimension_list(self.dimensions.as_deref().unwrap_or_default()) {
            return bad("dimensions", e);
        }
        if !self.candidates.is_empty() {
            if !self.seeds.is_empty() {
                return bad("candidates", "model selection cannot be combined with seeds (an ensemble)".into());
            }
            self.candidate_configs(origin)?;
        }
        Ok(())
    }

    /// The configurations model selection trains: `("base", self)` without its candidates,
    /// then each candidate's (its keys over the base's), checked. Errors name the candidate.
    pub fn candidate_configs(&self, origin: &str) -> evalloop_core::Result<Vec<(String, TrainConfig)>> {
        let base = TrainConfig { candidates: Vec::new(), ..self.clone() };
        let mut out = vec![("base".to_string(), base.clone())];
        let bad = |name: &str, msg: String| {
            evalloop_core::Error::Input(format!("{origin}: [[train.candidates]] {name:?}: {msg}"))
        };
        let table = match toml::Value::try_from(&base) {
            Ok(toml::Value::Table(t)) => t,
            Ok(_) => unreachable!("a struct serializes to a table"),
            Err(e) => return Err(evalloop_core::Error::Input(format!("{origin}: [train]: {e}"))),
        };
        for c in &self.candidates {
            let name = c.name.as_str();
            if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
                return Err(bad(name, "a name is letters, digits, '_' and '-'".into()));
            }
            if out.iter().any(|(n, _)| n == name) {
                return Err(bad(name, "the name is used twice (\"base\" is the base configuration's)".into()));
            }
            for key in ["candidates", "seeds", "select_min_groups"] {
                if c.overrides.contains_key(key) {
                    return Err(bad(name, format!("{key} cannot be set per candidate")));
                }
            }
            let mut merged = table.clone();
            merged.extend(c.overrides.clone());
            let cfg: TrainConfig = toml::Value::Table(merged).try_into().map_err(|e| bad(name, e.to_string()))?;
            cfg.validate(&format!("{origin}: [[train.candidates]] {name:?}"))?;
            out.push((name.to_string(), cfg));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_example_parses_and_unknown_keys_are_rejected() {
        let text = r#"
            [store]
            path = "x.db"
            [train]
            base_model = "sentence-transformers/all-MiniLM-L6-v2"
            epochs = 3
            max_steps = 0
            batch_size = 16
            max_length = 256
            learning_rate = 5e-5
            seed = 7
        "#;
        let cfg = TrainConfig::from_toml_str(text, "evalloop.toml").unwrap();
        assert_eq!(cfg, TrainConfig::default());
        let cfg = TrainConfig::from_toml_str("[train]\neval_metric = \"auc\"\n", "f").unwrap();
        assert_eq!(cfg.eval_metric, EvalMetric::Auc);
        let cfg = TrainConfig::from_toml_str("[train]\neval_metric = \"group_spearman\"\n", "f").unwrap();
        assert_eq!(cfg.eval_metric, EvalMetric::GroupSpearman);
        let cfg = TrainConfig::from_toml_str(
            "[train]\ntruncation = \"output_first\"\nobjective = \"graded+pairwise\"\nlayer_lr_decay = 0.9\nseeds = [1, 2]\npair_scope = \"batch\"\n",
            "f",
        )
        .unwrap();
        assert_eq!(cfg.truncation, Truncation::OutputFirst);
        assert_eq!(cfg.objective, Some(Objective::GradedPairwise));
        assert_eq!((cfg.layer_lr_decay, cfg.seeds.clone()), (0.9, vec![1, 2]));
        assert_eq!((cfg.pair_scope, TrainConfig::default().pair_scope), (PairScope::Batch, PairScope::Group));
        let err = TrainConfig::from_toml_str("[train]\npair_scope = \"all\"\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("pair_scope"), "{err}");
        let err = TrainConfig::from_toml_str("[train]\nlayer_lr_decay = 1.5\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("layer_lr_decay"), "{err}");
        let err = TrainConfig::from_toml_str("[train]\nobjective = \"listwise\"\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("listwise"), "{err}");
        let err = TrainConfig::from_toml_str("[train]\nbatchsize = 3\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("batchsize"), "{err}");
        let cfg =
            TrainConfig::from_toml_str("[train]\ndimensions = [\"coherence\"]\ndimension_weight = 0.5\n", "f").unwrap();
        assert_eq!((cfg.dimensions, cfg.dimension_weight), (Some(vec!["coherence".to_string()]), 0.5));
        let cfg = TrainConfig::from_toml_str("[train]\ndimensions = []\n", "f").unwrap();
        assert_eq!(cfg.dimensions, Some(vec![]));
        let err = TrainConfig::from_toml_str("[train]\ndimensions = [\"Co\"]\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("f.toml: [train] dimensions"), "{err}");
        let err = TrainConfig::from_toml_str("[train]\ndimension_weight = -1\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("dimension_weight"), "{err}");
        let err = TrainConfig::from_toml_str("[train]\nbatch_size = 0\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("f.toml: [train] batch_size"), "{err}");
    }
}

//! Run configuration: the TOML file `sae run` reads, checked before any work starts.
//!
//! Every key has a default except the data source; unknown keys are errors (a typo
//! must not silently fall back to a default).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::learn::model::Learner;

use crate::data::ingest::synth::Layout;
use crate::data::ingest::Format;
use crate::data::preprocess::NormSpec;
pub use crate::data::store::Precision;
use crate::encode::{Code, Mode};
use crate::error::{Error, Result};
use crate::evaluate::classify::{Classifier, ClassifyParams};
use crate::evaluate::linear::Scaling;
use crate::learn::optim::LbfgsParams;
use crate::learn::sae::objective::Penalty;
use crate::learn::sae::Decoder;

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the run folder.
    pub name: String,
    /// Parent folder of run folders.
    #[serde(default = "default_out")]
    pub out_dir: PathBuf,
    /// Master seed.
    #[serde(default = "one")]
    pub seed: u64,
    /// Worker threads (0: all cores).
    #[serde(default)]
    pub threads: usize,
    /// Where patch stores, models, checkpoints and features go, named by the hash of
    /// what determines them, so runs that share work share files (sweeps set this).
    /// Unset: inside the run folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Memory budget in bytes (`"2G"`, `"512M"` or a number; 0: none): chunk and
    /// tile sizes shrink to fit it, and a run that cannot fit stops before it starts.
    #[serde(default, deserialize_with = "bytes", skip_serializing_if = "is_zero")]
    pub max_memory: u64,
    /// Synthetic data to generate first (instead of reading `data.path`).
    #[serde(default)]
    pub synth: Option<SynthConfig>,
    /// Dataset.
    #[serde(default)]
    pub data: DataConfig,
    /// Patch sampling and normalisation.
    #[serde(default)]
    pub patches: PatchConfig,
    /// Autoencoder.
    #[serde(default)]
    pub model: ModelConfig,
    /// Optimiser.
    #[serde(default)]
    pub train: TrainConfig,
    /// Feature extraction.
    #[serde(default)]
    pub features: FeatureConfig,
    /// Classification.
    #[serde(default)]
    pub classify: ClassifyConfig,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Bytes {
        Number(u64),
        Text(String),
    }
    match Bytes::deserialize(d)? {
        Bytes::Number(n) => Ok(n),
        Bytes::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
    }
}

/// Parses a byte count: `123`, `512M`, `2G`, `1.5GiB` (binary units).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(Error::config(
                "max_memory",
                format!("unknown unit in {s:?}"),
            ))
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| Error::config("max_memory", format!("{s:?} is not a byte count")))?;
    Ok((v * scale as f64) as u64)
}

fn default_out() -> PathBuf {
    PathBuf::from("runs")
}
/// The master seed when none is given (configs and subcommands alike).
pub const DEFAULT_SEED: u64 = 1;

fn one() -> u64 {
    DEFAULT_SEED
}

/// Synthetic dataset written into the run folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Layout.
    pub layout: Layout,
    /// Training images.
    pub train: usize,
    /// Test images.
    pub test: usize,
    /// Unlabeled images (STL-10 layout).
    #[serde(default)]
    pub unlabeled: usize,
}

impl SynthConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn check(&self) -> Result<()> {
        if self.train == 0 || self.test == 0 {
            return Err(Error::config(
                "synth",
                "train and test need at least one image",
            ));
        }
        Ok(())
    }
}

/// Dataset location.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Format.
    pub format: Format,
    /// Folder (relative paths are relative to the working directory).
    #[serde(default)]
    pub path: PathBuf,
    /// Pixel order of pickled arrays: "auto" or hwc/whc/chw/cwh.
    #[serde(default = "auto")]
    pub pixel_order: String,
    /// Use only the first N training images (0: all).
    #[serde(default)]
    pub train_limit: usize,
    /// Use only the first N test images (0: all).
    #[serde(default)]
    pub test_limit: usize,
    /// Sample patches from only the first N unlabeled images (0: all).
    #[serde(default)]
    pub unlabeled_limit: usize,
    /// Resize every image to this side first, by area averaging (0: as stored).
    #[serde(default)]
    pub resize: usize,
    /// Train on one fold of the training set (1-based line of `fold_indices.txt` in the
    /// data folder: STL-10's protocol of ten folds of 1,000 images; 0: all images).
    #[serde(default)]
    pub fold: usize,
    /// Evaluate on this fraction of the training images, held out (a seeded random
    /// choice), instead of the test set, which is then never read: the protocol for
    /// choosing settings (0: evaluate on the test set).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub holdout: f64,
    /// First label of pickled datasets (0 or 1); unset: decided once from all label
    /// files of the dataset together (1-based only when no file holds a 0). CIFAR-10 is
    /// 0-based and STL-10 1-based by format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_base: Option<u8>,
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn auto() -> String {
    "auto".into()
}

impl DataConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn check(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(k, m));
        if self.pixel_order != "auto" {
            self.pixel_order
                .parse::<crate::data::ingest::PixelOrder>()?;
        }
        if !(0.0..0.9).contains(&self.holdout) {
            return bad("data.holdout", "must lie in [0, 0.9)");
        }
        if self.label_base.is_some_and(|b| b > 1) {
            return bad("data.label_base", "must be 0 or 1");
        }
        Ok(())
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            format: Format::Cifar10,
            path: PathBuf::new(),
            pixel_order: auto(),
            train_limit: 0,
            test_limit: 0,
            unlabeled_limit: 0,
            resize: 0,
            fold: 0,
            holdout: 0.0,
            label_base: None,
        }
    }
}

/// Normalisation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// The study's.
    Ufldl,
    /// Contrast normalisation + ZCA.
    Zca,
}

/// Patch sampling.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchConfig {
    /// Number of training patches.
    pub count: usize,
    /// Patch side.
    pub size: usize,
    /// Normalisation.
    pub norm: NormKind,
    /// Contrast normalisation before ZCA.
    pub contrast: bool,
    /// Contrast ε (0..255 units squared).
    pub cn_eps: f64,
    /// ZCA ε.
    pub zca_eps: f64,
}

impl Default for PatchConfig {
    fn default() -> Self {
        PatchConfig {
            count: 100_000,
            size: 8,
            norm: NormKind::Ufldl,
            contrast: true,
            cn_eps: 10.0,
            zca_eps: 0.1,
        }
    }
}

impl PatchConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn check(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(k, m));
        if self.count == 0 {
            return bad("patches.count", "must be at least 1");
        }
        if self.size == 0 {
            return bad("patches.size", "must be at least 1");
        }
        if !(self.zca_eps >= 0.0 && self.cn_eps >= 0.0) {
            return bad("patches.zca_eps", "epsilons must be non-negative");
        }
        Ok(())
    }

    /// The normalisation spec.
    pub fn norm_spec(&self) -> NormSpec {
        match self.norm {
            NormKind::Ufldl => NormSpec::Ufldl,
            NormKind::Zca => NormSpec::Zca {
                contrast: self.contrast,
                cn_eps: self.cn_eps,
                zca_eps: self.zca_eps,
            },
        }
    }
}

/// Autoencoder shape and penalties.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// What makes the code layer: the autoencoder, or a dictionary to compare it with.
    #[serde(skip_serializing_if = "Learner::is_autoencoder")]
    pub learner: Learner,
    /// Hidden layer sizes (symmetric stacks, e.g. [75, 48, 75]).
    pub hidden: Vec<usize>,
    /// Passes over the store of the OMP-1 learner.
    #[serde(skip_serializing_if = "is_default_passes")]
    pub passes: usize,
    /// Sparse (code) layer, 1-based among hidden layers; default the middle one.
    pub sparse_layer: Option<usize>,
    /// Output activation.
    pub decoder: Decoder,
    /// Target activation ρ.
    pub rho: f64,
    /// Weight decay λ.
    pub lambda: f64,
    /// Sparsity weight β.
    pub beta: f64,
}

/// Default OMP-1 passes (left out of the config's hash).
const PASSES: usize = 10;

fn is_default_passes(p: &usize) -> bool {
    *p == PASSES
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            learner: Learner::Autoencoder,
            hidden: vec![25],
            passes: PASSES,
            sparse_layer: None,
            decoder: Decoder::Sigmoid,
            rho: 0.01,
            lambda: 1e-5,
            beta: 3.0,
        }
    }
}

impl ModelConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn check(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(k, m));
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return bad("model.hidden", "needs hidden layers of at least one unit");
        }
        if !self.learner.is_autoencoder() && self.hidden.len() != 1 {
            return bad(
                "model.hidden",
                "a dictionary learner makes one layer of atoms: give one size",
            );
        }
        if self.learner == Learner::Omp1 && self.passes == 0 {
            return bad("model.passes", "must be at least 1");
        }
        if !(self.rho > 0.0 && self.rho < 1.0) {
            return bad("model.rho", "must lie in (0, 1)");
        }
        if !(self.lambda >= 0.0 && self.beta >= 0.0) {
            return bad("model.lambda", "lambda and beta must be non-negative");
        }
        Ok(())
    }

    /// The penalty.
    pub fn penalty(&self) -> Penalty {
        Penalty {
            lambda: self.lambda,
            beta: self.beta,
            rho: self.rho,
        }
    }
}

/// Which optimiser trains the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Full-batch L-BFGS (the study's).
    Lbfgs,
    /// Mini-batch SGD with momentum.
    Sgd,
    /// Mini-batch Adam.
    Adam,
}

/// Optimiser settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser.
    pub optimizer: Optimizer,
    /// Mini-batch peak step size (where the probe starts, with `lr_probe`).
    pub learning_rate: f64,
    /// Choose the peak step size by a short probe ([`crate::learn::minibatch::probe_lr`]).
    pub lr_probe: bool,
    /// Step-size schedule over the run.
    pub schedule: crate::learn::minibatch::Schedule,
    /// Fraction of the run's steps spent warming the step size up from zero.
    pub warmup: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Rows per mini-batch step.
    pub batch_size: usize,
    /// Mini-batch passes over the store.
    pub epochs: usize,
    /// L-BFGS iterations.
    pub max_iter: usize,
    /// L-BFGS history pairs.
    pub memory: usize,
    /// Gradient tolerance (max |g|).
    pub gtol: f64,
    /// Relative function-decrease tolerance.
    pub ftol: f64,
    /// Rows per store batch (the streaming chunk).
    pub chunk: usize,
    /// Checkpoint every this many iterations (L-BFGS) or steps (mini-batch).
    pub checkpoint_every: usize,
    /// ... or after this many seconds, whichever comes first.
    pub checkpoint_seconds: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: Optimizer::Lbfgs,
            learning_rate: 1e-3,
            lr_probe: true,
            schedule: crate::learn::minibatch::Schedule::Cosine,
            warmup: 0.02,
            momentum: 0.9,
            batch_size: 1024,
            epochs: 40,
            max_iter: 400,
            memory: 10,
            gtol: 1e-9,
            ftol: 1e-12,
            chunk: 65_536,
            checkpoint_every: 10,
            checkpoint_seconds: 120.0,
        }
    }
}

impl TrainConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn check(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(k, m));
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("train.learning_rate", "must be positive");
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad("train.warmup", "must be a fraction of the run in [0, 1)");
        }
        if self.batch_size == 0 || self.epochs == 0 {
            return bad(
                "train.batch_size",
                "batch_size and epochs must be at least 1",
            );
        }
        if self.memory == 0 || self.chunk == 0 {
            return bad("train.memory", "memory and chunk must be at least 1");
        }
        Ok(())
    }

    /// Mini-batch parameters, unless the optimiser is L-BFGS.
    pub fn minibatch(&self) -> Option<crate::learn::minibatch::MinibatchParams> {
        use crate::learn::minibatch::{Method, MinibatchParams};
        let method = match self.optimizer {
            Optimizer::Lbfgs => return None,
            Optimizer::Sgd => Method::Sgd {
                lr: self.learning_rate,
                momentum: self.momentum,
            },
            Optimizer::Adam => Method::Adam {
                lr: self.learning_rate,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        };
        Some(MinibatchParams {
            method,
            batch: self.batch_size,
            epochs: self.epochs,
            schedule: self.schedule,
            warmup: self.warmup,
            probe: self.lr_probe,
        })
    }

    /// The optimiser with its settings, for [`crate::learn::training::TrainJob`].
    pub fn optimiser(&self) -> crate::learn::training::Optimiser {
        use crate::learn::training::Optimiser;
        match self.minibatch() {
            Some(mb) => Optimiser::Minibatch(mb),
            None => Optimiser::Lbfgs(self.lbfgs()),
        }
    }

    /// L-BFGS parameters.
    pub fn lbfgs(&self) -> LbfgsParams {
        LbfgsParams {
            max_iter: self.max_iter,
            memory: self.memory,
            gtol: self.gtol,
            ftol: self.ftol,
            ..LbfgsParams::default()
        }
    }
}

/// Feature extraction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureConfig {
    /// Grid steps.
    pub steps: Vec<usize>,
    /// Feature modes.
    pub modes: Vec<Mode>,
    /// Code: "sigmoid" (the study's), "softthreshold" or "triangle".
    pub encoder: EncoderKind,
    /// Threshold α of the soft-threshold code.
    pub alpha: f64,
    /// Add the code layer's bias before the soft threshold (`W·a + b`), or leave it out
    /// (`W·a`, Coates & Ng's code of a dictionary).
    pub bias: bool,
    /// Cells per side of the pooling grid of `pool` (2: the four quadrants).
    #[serde(skip_serializing_if = "is_two")]
    pub pool_grid: usize,
    /// Scale each code unit's weights (and bias) to unit norm before encoding, as the
    /// atoms of a dictionary are, so that `alpha` means the same for every unit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unit_atoms: bool,
    /// Also encode every image mirrored left to right, as a second row with the same
    /// image number and label: training images gain their mirrors as extra rows, and a
    /// test image is classified from the summed scores (or tree votes) of itself and its
    /// mirror. The linear classifiers hold out whole images to choose L2 and score them
    /// the same way, so an image and its mirror fall on the same side of the split.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flip: bool,
    /// How feature files keep their values: "f32", or "f16" (half the disk and half
    /// the bytes each pass of a linear classifier reads, three significant digits).
    #[serde(skip_serializing_if = "is_f32")]
    pub precision: Precision,
}

fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}

fn is_two(v: &usize) -> bool {
    *v == 2
}

/// The code of [`FeatureConfig::encoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// Sigmoid activations.
    Sigmoid,
    /// Two-sided soft threshold.
    Softthreshold,
    /// k-means triangle activations.
    Triangle,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            steps: vec![8],
            modes: vec![Mode::Pool],
            encoder: EncoderKind::Sigmoid,
            alpha: 0.25,
            bias: false,
            pool_grid: 2,
            unit_atoms: false,
            flip: false,
            precision: Precision::F32,
        }
    }
}

impl EncoderKind {
    /// The name used in configs and result tables.
    pub fn name(self) -> &'static str {
        match self {
            EncoderKind::Sigmoid => "sigmoid",
            EncoderKind::Softthreshold => "softthreshold",
            EncoderKind::Triangle => "triangle",
        }
    }
}

impl FeatureConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn check(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(k, m));
        if self.steps.contains(&0) {
            return bad("features.steps", "steps must be at least 1");
        }
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return bad("features.alpha", "must be a non-negative number");
        }
        if !(1..=16).contains(&self.pool_grid) {
            return bad("features.pool_grid", "must lie in 1..=16");
        }
        Ok(())
    }

    /// The code the encoder computes.
    pub fn code(&self) -> Code {
        match self.encoder {
            EncoderKind::Sigmoid => Code::Sigmoid,
            EncoderKind::Softthreshold => Code::SoftThreshold {
                alpha: self.alpha as f32,
                bias: self.bias,
            },
            EncoderKind::Triangle => Code::Triangle,
        }
    }

    /// The name of a feature set at `step` in `mode`: it names the feature files, so
    /// it holds every setting that changes them.
    pub fn set_name(&self, step: usize, mode: Mode) -> String {
        let grid = match mode {
            Mode::Pool if self.pool_grid != 2 => self.pool_grid.to_string(),
            _ => String::new(),
        };
        let unit = if self.unit_atoms { "-unit" } else { "" };
        let flip = if self.flip { "-flip" } else { "" };
        let half = match self.precision {
            Precision::F32 => "",
            Precision::F16 => "-f16",
        };
        format!(
            "step{step}-{}{grid}{}{unit}{flip}{half}",
            mode.name(),
            self.code().tag()
        )
    }
}

/// Classification.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    /// Classifiers to run on every feature set.
    pub classifiers: Vec<Classifier>,
    /// Also classify raw pixels.
    pub raw_baseline: bool,
    /// Classifiers for the raw-pixel baseline (default: `classifiers`); smartcore's
    /// logistic regression takes minutes on thousands of raw pixels.
    pub raw_classifiers: Option<Vec<Classifier>>,
    /// Random-forest trees.
    pub rf_trees: u16,
    /// Logistic-regression L2 weight.
    pub lr_alpha: f64,
    /// Candidate L2 weights of softmax and svm (on the mean loss), chosen on a
    /// validation split.
    pub l2: Vec<f64>,
    /// Fraction of training images held out to choose `l2`.
    pub validation: f64,
    /// L-BFGS iterations of softmax and svm (the first L2 candidate, or the only fit).
    pub max_iter: usize,
    /// L-BFGS iterations of each later candidate, started from the previous one's
    /// solution, and of the refit on all rows, started from the chosen one's.
    pub warm_iter: usize,
    /// Variance floor of the feature standardisation, as a fraction of the mean
    /// variance over features: damps features that are almost constant.
    pub var_floor: f64,
    /// How features are scaled for the classifiers: "feature" (each to unit variance),
    /// "global" (centred, one common scale) or "none". Left out of the serialised
    /// config at its default, so runs from before the key keep their hash.
    #[serde(skip_serializing_if = "is_feature_scaling")]
    pub scaling: Scaling,
}

fn is_feature_scaling(s: &Scaling) -> bool {
    *s == Scaling::Feature
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            classifiers: vec![Classifier::Rf, Classifier::Lr],
            raw_baseline: true,
            raw_classifiers: None,
            rf_trees: 100,
            lr_alpha: 1.0,
            l2: vec![3e-2, 1e-2, 3e-3, 1e-3],
            validation: 0.1,
            max_iter: 150,
            warm_iter: 150,
            var_floor: 0.01,
            scaling: Scaling::Feature,
        }
    }
}

impl ClassifyConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn check(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(k, m));
        if self.rf_trees == 0 {
            return bad("classify.rf_trees", "must be at least 1");
        }
        if self.l2.is_empty() || self.l2.iter().any(|v| !(*v >= 0.0 && v.is_finite())) {
            return bad("classify.l2", "needs at least one non-negative value");
        }
        if !(0.0..0.9).contains(&self.validation) {
            return bad("classify.validation", "must lie in [0, 0.9)");
        }
        if self.max_iter == 0 {
            return bad("classify.max_iter", "must be at least 1");
        }
        if self.warm_iter == 0 {
            return bad("classify.warm_iter", "must be at least 1");
        }
        if !(self.var_floor >= 0.0 && self.var_floor.is_finite()) {
            return bad("classify.var_floor", "must be a non-negative number");
        }
        Ok(())
    }

    /// Parameters with `seed`.
    pub fn params(&self, seed: u64) -> ClassifyParams {
        ClassifyParams {
            rf_trees: self.rf_trees,
            lr_alpha: self.lr_alpha,
            linear: crate::evaluate::linear::LinearParams {
                l2: self.l2.clone(),
                validation: self.validation,
                max_iter: self.max_iter,
                warm_iter: self.warm_iter,
                seed,
            },
            var_floor: self.var_floor,
            scaling: self.scaling,
            seed,
        }
    }
}

impl Config {
    /// Parses and checks a TOML file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Config::parse(path, &text)
    }

    /// Parses and checks TOML `text` read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let c: Config =
            toml::from_str(text).map_err(|e| Error::bad(path, format!("invalid config: {e}")))?;
        c.check()?;
        Ok(c)
    }

    /// Rejects values that cannot work, naming the key.
    pub fn check(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(k, m));
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return bad("name", "must be a plain folder name");
        }
        if self.synth.is_none() && self.data.path.as_os_str().is_empty() {
            return bad("data.path", "is required unless [synth] generates the data");
        }
        self.data.check()?;
        if let Some(s) = &self.synth {
            s.check()?;
        }
        self.patches.check()?;
        let p = &self.patches;
        if self.data.resize > 0 && self.data.resize < p.size {
            return bad("data.resize", "images cannot be smaller than patches.size");
        }
        self.model.check()?;
        let m = &self.model;
        if m.decoder == Decoder::Sigmoid && p.norm == NormKind::Zca && m.learner.is_autoencoder() {
            return bad(
                "model.decoder",
                "a sigmoid decoder cannot reconstruct whitened patches; use \"linear\"",
            );
        }
        self.train.check()?;
        self.features.check()?;
        if self.features.flip && self.classify.classifiers.contains(&Classifier::Lr) {
            return bad(
                "features.flip",
                "lr gives classes, not scores, so it cannot classify an image from itself \
                 and its mirror together; use softmax or svm (or rf)",
            );
        }
        self.classify.check()
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        self.out_dir.join(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse() {
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("12 parsecs").is_err());
    }

    /// Mirrored images are scored by summing scores, which lr does not give: a config
    /// that asks for both stops at load, naming the key; softmax, svm and rf pass.
    #[test]
    fn flip_with_lr_is_refused_at_load() {
        let text = |c: &str| {
            format!(
                "name = \"f\"\n[synth]\nlayout = \"cifar10\"\ntrain = 20\ntest = 10\n[features]\nflip = true\n[classify]\nclassifiers = [{c}]\n"
            )
        };
        let path = Path::new("f.toml");
        let err = Config::parse(path, &text("\"rf\", \"lr\"")).unwrap_err();
        assert!(err.to_string().contains("features.flip"), "{err}");
        for ok in ["\"rf\"", "\"svm\", \"softmax\""] {
            Config::parse(path, &text(ok)).unwrap();
        }
    }
}

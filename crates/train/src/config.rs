//! The training configuration: one YAML document, every knob named, defaults visible.
//!
//! A run's config is read from a YAML file, overridden by `--set dotted.key=value` pairs, filled
//! with the defaults below and validated. The *resolved* config (all defaults written out) is what
//! a run stores in its directory and what the grid hashes into a cell id.
//!
//! The `balanced` loss layout is our reconstruction of the paper's balanced contrastive loss (the
//! paper's exact formula could not be recovered): per anchor i with positive j among 2N views,
//! `L_i = −α·s(z_i,z_j)/τ + λ·log Σ_{k≠i} exp(s(z_i,z_k)/τ)`; α = λ = 1 is NT-Xent.

use crate::yamlscan;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_norway::Value;
use std::path::Path;

/// A string-valued config choice as an enum: each variant is (de)serialised as exactly its
/// spelling in the YAML (so resolved configs, and the cell ids hashed from them, are the same
/// bytes as when these keys were strings), and a value outside the list is refused when the
/// config is read, by serde, with the key's dotted path and the allowed spellings.
macro_rules! choice {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $var),+
        }

        impl $name {
            /// Every value, in the order of the docs.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The spelling in the YAML.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $s),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// The value of a spelling (for command-line flags such as `bench step --model`).
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown value `{s}`, expected one of {}", all.join(", "))
                })
            }
        }
    };
}

choice! {
    /// `data.dataset`.
    DatasetName {
        /// The official CIFAR-10 binary release.
        Cifar10 = "cifar10",
        /// The official CIFAR-100 binary release (fine labels).
        Cifar100 = "cifar100",
        /// A class-per-folder tree of JPEGs or a list file (`data::folder`).
        Imagefolder = "imagefolder",
    }
}

choice! {
    /// `model.arch`.
    Arch {
        Resnet18 = "resnet18",
        Resnet50 = "resnet50",
    }
}

choice! {
    /// `model.stem`.
    Stem {
        /// 3×3 conv stride 1, no max-pool.
        Cifar = "cifar",
        /// 7×7 conv stride 2 + max-pool.
        Imagenet = "imagenet",
    }
}

choice! {
    /// `model.ops`: which kernels the layers run on.
    Ops {
        /// Our im2col/gemm and direct convolutions and fused batch norm ([`crate::ops`]).
        Custom = "custom",
        /// candle's ops.
        Stock = "stock",
    }
}

choice! {
    /// `augment.preset`.
    Preset {
        /// crop, flip, color_jitter, grayscale.
        Simclr = "simclr",
        /// No transform (only what `augment.add` adds).
        None = "none",
    }
}

choice! {
    /// A transform of the augmentation pipeline (`augment.remove`, `augment.add`), in the
    /// canonical order in which the pipeline applies them ([`crate::augment`]).
    Transform {
        Crop = "crop",
        Flip = "flip",
        ColorJitter = "color_jitter",
        Grayscale = "grayscale",
        Blur = "blur",
        Solarize = "solarize",
        Rotation = "rotation",
        Cutout = "cutout",
    }
}

choice! {
    /// `loss.name`: the training objective.
    LossName {
        /// Our reconstruction of the paper's balanced contrastive loss.
        Balanced = "balanced",
        /// `balanced` at α = λ = 1, coupled.
        Ntxent = "ntxent",
        /// Fig. 1–2: attract the own class prototype, repel the closest other one.
        SupervisedPrototype = "supervised_prototype",
    }
}

choice! {
    /// `loss.max` of the supervised prototype objective.
    LossMax {
        Hard = "hard",
        /// τ·logsumexp(·/τ).
        Smooth = "smooth",
    }
}

choice! {
    /// `loss.prototypes` of the supervised prototype objective.
    PrototypeKind {
        /// EMA class means.
        Realistic = "realistic",
        /// Fixed simplex ETF directions, seeded random rotation.
        Oracle = "oracle",
    }
}

choice! {
    /// `optim.name`.
    OptimName {
        Sgd = "sgd",
        /// SGD with LARS trust ratios (SimCLR).
        Lars = "lars",
        Adamw = "adamw",
    }
}

/// Complete configuration of one training run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seed of every random choice (init, sampling, augmentation, probe).
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub augment: AugmentConfig,
    pub loss: LossConfig,
    pub optim: OptimConfig,
    pub train: TrainLoopConfig,
    pub eval: EvalConfig,
}

/// Which images to train on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `cifar10` or `cifar100` (official binary releases), or `imagefolder`.
    pub dataset: DatasetName,
    /// Keep this many training images per class (first in file order after a seeded shuffle).
    pub per_class: Option<usize>,
    /// Keep a seeded random fraction of the training images, in (0, 1].
    pub fraction: Option<f64>,
    /// Long-tailed subset: class c keeps n_max·ρ^(−c/(C−1)) images (CIFAR-10-LT profile), ρ ≥ 1.
    pub imbalance_ratio: Option<f64>,
    /// Run on files whose MD5 differs from the official release (recorded in the metrics).
    pub allow_unverified: bool,
    // The keys below are for `dataset: imagefolder` only (ImageNet, ImageNet-LT, any
    // class-per-folder tree of JPEGs; see `data::folder`) and must be unset for CIFAR. Paths are
    // relative to the data root (absolute ones are used as they are). Unset keys are not written
    // to the resolved config, so adding them left CIFAR configs (and cell ids) unchanged.
    /// Training images as class folders, `<train_dir>/<class>/*.JPEG` (or use `train_list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_dir: Option<String>,
    /// Validation (test) images as class folders (or use `val_list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_dir: Option<String>,
    /// Training list file, `relative/path.JPEG label` per line (the ImageNet-LT format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_list: Option<String>,
    /// Validation list file, same format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_list: Option<String>,
    /// Probe-bank list file, same format (unset: the bank is drawn from the training part). The
    /// linear probe's training set and the kNN memory then come from these images, less any the
    /// run holds out as its validation split: for a long-tailed training list, a balanced bank
    /// scores the encoder rather than the probe's class prior (ImageNet-LT's convention; `make-lt`
    /// writes one, `bank.txt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank_list: Option<String>,
    /// Folder the paths in list files are relative to (default: the data root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_root: Option<String>,
    /// Class mapping file, `wnid name` per line, label i = line i (default: the sorted class
    /// folder names of `train_dir`, or `class_0000`… for a training list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_map: Option<String>,
    /// Skip and count bad entries (missing file, undecodable JPEG, label out of range, malformed
    /// list line) instead of stopping the run. Written out as `false` for folder datasets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_bad: Option<bool>,
    /// Batches decoded ahead of the trainer. Written out as 4 for folder datasets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    /// JPEG decoding threads (default: the run's `--threads`; results do not depend on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_threads: Option<usize>,
    /// Evaluation centre crop: the centred square of side `eval_crop`·min(h, w), resized to
    /// `augment.size` (0.875: Resize(256) + CenterCrop(224)). Written out as 0.875 for folder
    /// datasets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_crop: Option<f64>,
    /// Resize every decoded image so that its shorter side is this many pixels before the
    /// training crops and the evaluation centre crop (unset: full size). Changes the input
    /// distribution (crops of a pre-shrunk image); see `crate::input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize_short: Option<usize>,
    /// Keep each (resized) decoded image in memory after its first decode (unset: false; the
    /// results are identical, only faster). For small datasets: ImageNet does not fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_images: Option<bool>,
}

impl DataConfig {
    /// Default of `data.prefetch` for folder datasets.
    pub const DEFAULT_PREFETCH: usize = 4;
    /// Default of `data.eval_crop` for folder datasets.
    pub const DEFAULT_EVAL_CROP: f64 = 0.875;

    /// `dataset: imagefolder`.
    pub fn is_folder(&self) -> bool {
        self.dataset == DatasetName::Imagefolder
    }

    /// For folder datasets, writes out the defaults of `skip_bad`, `prefetch` and `eval_crop` so
    /// that resolved configs show them; other datasets are left as they are.
    pub fn fill_folder_defaults(&mut self) {
        if self.is_folder() {
            self.skip_bad.get_or_insert(false);
            self.prefetch.get_or_insert(Self::DEFAULT_PREFETCH);
            self.eval_crop.get_or_insert(Self::DEFAULT_EVAL_CROP);
        }
    }

    fn validate_folder_keys(&self) -> Result<()> {
        let paths = [
            ("data.train_dir", &self.train_dir),
            ("data.val_dir", &self.val_dir),
            ("data.train_list", &self.train_list),
            ("data.val_list", &self.val_list),
            ("data.bank_list", &self.bank_list),
            ("data.list_root", &self.list_root),
            ("data.class_map", &self.class_map),
        ];
        if !self.is_folder() {
            let knobs = [
                ("data.skip_bad", self.skip_bad.is_some()),
                ("data.prefetch", self.prefetch.is_some()),
                ("data.decode_threads", self.decode_threads.is_some()),
                ("data.eval_crop", self.eval_crop.is_some()),
                ("data.resize_short", self.resize_short.is_some()),
                ("data.cache_images", self.cache_images.is_some()),
            ];
            let set = paths.iter().map(|(k, v)| (*k, v.is_some())).chain(knobs);
            for (key, is_set) in set {
                if is_set {
                    bail!(
                        "`{key}` is only for `data.dataset: imagefolder` (dataset is `{}`)",
                        self.dataset
                    );
                }
            }
            return Ok(());
        }
        for (key, v) in paths {
            if v.as_deref().is_some_and(|p| p.trim().is_empty()) {
                bail!("`{key}` must not be empty");
            }
        }
        for (part, dir, list) in [
            ("train", &self.train_dir, &self.train_list),
            ("val", &self.val_dir, &self.val_list),
        ] {
            if dir.is_some() == list.is_some() {
                bail!("`data.dataset: imagefolder` needs exactly one of `data.{part}_dir` and `data.{part}_list`");
            }
        }
        if self.list_root.is_some()
            && self.train_list.is_none()
            && self.val_list.is_none()
            && self.bank_list.is_none()
        {
            bail!(
                "`data.list_root` is only used with `data.train_list` / `data.val_list` / `data.bank_list`"
            );
        }
        if self.prefetch == Some(0) || self.decode_threads == Some(0) || self.resize_short == Some(0) {
            bail!("`data.prefetch`, `data.decode_threads` and `data.resize_short` must be ≥ 1");
        }
        if let Some(c) = self.eval_crop {
            if !(c > 0.0 && c <= 1.0) {
                bail!("`data.eval_crop` must be in (0, 1], got {c}");
            }
        }
        Ok(())
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetName::Cifar10,
            per_class: None,
            fraction: None,
            imbalance_ratio: None,
            allow_unverified: false,
            train_dir: None,
            val_dir: None,
            train_list: None,
            val_list: None,
            bank_list: None,
            list_root: None,
            class_map: None,
            skip_bad: None,
            prefetch: None,
            decode_threads: None,
            eval_crop: None,
            resize_short: None,
            cache_images: None,
        }
    }
}

/// Encoder and projection head.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `resnet18` or `resnet50`.
    pub arch: Arch,
    /// Channels of the first stage (64 is the standard ResNet; 16 gives widths 16-32-64-128).
    pub width: usize,
    /// `cifar` (3×3 conv stride 1, no max-pool) or `imagenet` (7×7 stride 2 + max-pool).
    pub stem: Stem,
    /// Hidden width of the projection head Linear–BN–ReLU–Linear.
    pub proj_hidden: usize,
    /// Output width of the projection head.
    pub proj_dim: usize,
    /// `custom` (our im2col/gemm convolution and fused batch norm) or `stock` (candle's ops).
    pub ops: Ops,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Resnet18,
            width: 64,
            stem: Stem::Cifar,
            proj_hidden: 512,
            proj_dim: 128,
            ops: Ops::Custom,
        }
    }
}

/// Colour jitter with torchvision semantics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JitterConfig {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    /// Probability that the jitter is applied at all.
    pub p: f32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            p: 0.8,
        }
    }
}

/// Gaussian blur.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlurConfig {
    pub p: f32,
    /// σ drawn uniformly from this range, in pixels.
    pub sigma: [f32; 2],
    /// Kernel size as a fraction of the image side (rounded to the next odd number, ≥ 3).
    pub kernel_frac: f32,
}

impl Default for BlurConfig {
    fn default() -> Self {
        Self {
            p: 0.5,
            sigma: [0.1, 2.0],
            kernel_frac: 0.1,
        }
    }
}

/// Solarisation: pixels at or above the threshold are inverted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SolarizeConfig {
    pub p: f32,
    pub threshold: f32,
}

impl Default for SolarizeConfig {
    fn default() -> Self {
        Self {
            p: 0.2,
            threshold: 0.5,
        }
    }
}

/// Random rotation by an angle uniform in [−degrees, degrees], zero fill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    pub p: f32,
    pub degrees: f32,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            p: 0.5,
            degrees: 30.0,
        }
    }
}

/// Cutout: one square of side `size_frac`·side set to zero (after normalisation: the mean).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CutoutConfig {
    pub p: f32,
    pub size_frac: f32,
}

impl Default for CutoutConfig {
    fn default() -> Self {
        Self {
            p: 0.5,
            size_frac: 0.5,
        }
    }
}

/// The augmentation pipeline: a preset, transforms removed from it or added to it, and the
/// parameters of every transform (used only when the transform is in the pipeline).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// `simclr` (crop, flip, color_jitter, grayscale) or `none`.
    pub preset: Preset,
    /// Names removed from the preset: crop, flip, color_jitter, grayscale, …
    pub remove: Vec<Transform>,
    /// Names added after the preset: blur, solarize, rotation, cutout, …
    pub add: Vec<Transform>,
    /// Output side in pixels (the dataset's side for CIFAR).
    pub size: usize,
    pub crop_scale: [f32; 2],
    pub crop_ratio: [f32; 2],
    pub flip_p: f32,
    pub jitter: JitterConfig,
    pub grayscale_p: f32,
    pub blur: BlurConfig,
    pub solarize: SolarizeConfig,
    pub rotation: RotationConfig,
    pub cutout: CutoutConfig,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            preset: Preset::Simclr,
            remove: vec![],
            add: vec![],
            size: 32,
            crop_scale: [0.08, 1.0],
            crop_ratio: [0.75, 4.0 / 3.0],
            flip_p: 0.5,
            jitter: JitterConfig::default(),
            grayscale_p: 0.2,
            blur: BlurConfig::default(),
            solarize: SolarizeConfig::default(),
            rotation: RotationConfig::default(),
            cutout: CutoutConfig::default(),
        }
    }
}

/// The training objective.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// `balanced` (reconstruction of the paper's balanced contrastive loss), `ntxent`
    /// (balanced at α = λ = 1) or `supervised_prototype` (Fig. 1–2: attract own prototype,
    /// repel the closest other one).
    pub name: LossName,
    /// Temperature τ > 0.
    pub tau: f64,
    /// Weight α > 0 of the attracting (positive-pair) term.
    pub alpha: f64,
    /// Weight λ > 0 of the repelling (log-sum-exp) term.
    pub lambda: f64,
    /// Exclude the positive from the log-sum-exp (decoupled form).
    pub decoupled: bool,
    /// Supervised prototype objective: `hard` max or `smooth` (τ·logsumexp(·/τ)).
    pub max: LossMax,
    /// Supervised prototype objective: `realistic` (EMA class means) or `oracle` (fixed simplex
    /// ETF directions, seeded random rotation).
    pub prototypes: PrototypeKind,
    /// EMA momentum of the realistic prototypes.
    pub ema: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            name: LossName::Balanced,
            tau: 0.5,
            alpha: 1.0,
            lambda: 1.0,
            decoupled: false,
            max: LossMax::Hard,
            prototypes: PrototypeKind::Realistic,
            ema: 0.9,
        }
    }
}

/// Optimiser and learning-rate schedule (linear warm-up, then cosine decay to zero).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// `sgd`, `lars` or `adamw`.
    pub name: OptimName,
    /// Peak learning rate (not scaled by batch size).
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Exclude batch-norm parameters and biases from weight decay (and LARS adaptation).
    pub exclude_bn_bias: bool,
    pub warmup_epochs: f64,
    /// AdamW β₁, β₂.
    pub betas: [f64; 2],
    /// LARS trust coefficient η.
    pub trust_coef: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            name: OptimName::Sgd,
            lr: 0.06,
            momentum: 0.9,
            weight_decay: 5e-4,
            exclude_bn_bias: true,
            warmup_epochs: 0.0,
            betas: [0.9, 0.999],
            trust_coef: 0.001,
        }
    }
}

/// The training loop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainLoopConfig {
    pub epochs: usize,
    /// Images per step (each gives two views: 2·batch_size forward passes).
    pub batch_size: usize,
    /// Cap on steps per epoch (None: one pass over the training subset).
    pub steps_per_epoch: Option<usize>,
    /// Divergence rule: the run is stopped as diverged when, at the end of an epoch, the L2 norm
    /// of all trainable parameters exceeds this multiple of its value at initialisation (unset:
    /// [`TrainLoopConfig::DEFAULT_MAX_WEIGHT_GROWTH`]; `.inf` turns the rule off). Unset keys
    /// are not written to the resolved config, so cell ids did not change when it was added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_weight_growth: Option<f64>,
    /// Arithmetic of the training step's convolutions: `f32` (unset: the default) or `bf16`
    /// (bf16 operands, f32 accumulation, weights and optimiser in f32; custom ops on a CPU with
    /// AVX-512 BF16 only; see `ops::bf16`). Evaluation runs in f32 either way. Unset keys are not
    /// written to the resolved config, so no cell id changed when it was added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<crate::ops::Precision>,
}

impl TrainLoopConfig {
    /// Default of `train.max_weight_growth`.
    pub const DEFAULT_MAX_WEIGHT_GROWTH: f64 = 100.0;

    /// The divergence limit in effect.
    pub fn weight_growth_limit(&self) -> f64 {
        self.max_weight_growth.unwrap_or(Self::DEFAULT_MAX_WEIGHT_GROWTH)
    }

    /// The precision in effect (`train.precision`, f32 when unset).
    pub fn precision(&self) -> crate::ops::Precision {
        self.precision.unwrap_or_default()
    }
}

impl Default for TrainLoopConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 256,
            steps_per_epoch: None,
            max_weight_growth: None,
            precision: None,
        }
    }
}

/// Evaluation after training: linear probe, weighted kNN and prototype representation bias.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Training images for the probe and kNN bank (None: the whole official training split).
    pub train_images: Option<usize>,
    /// Test images (None: the whole official test split).
    pub test_images: Option<usize>,
    /// Validation split: images of the official training split held out of everything the run
    /// trains on (the self-supervised subset and the probe/kNN bank), stratified by class and
    /// seeded; the linear probe and kNN are also scored on them (`val_*` metrics). None: the
    /// default min(5000, N/10) of the N training images (5,000 for CIFAR); 0: no validation split.
    pub val_images: Option<usize>,
    /// Epochs of softmax regression on standardised frozen features.
    pub linear_epochs: usize,
    pub linear_lr: f64,
    pub linear_batch: usize,
    pub linear_weight_decay: f64,
    pub knn_k: usize,
    pub knn_temperature: f64,
    /// K: augmented views per image for the prototype bias (0 disables the metric).
    pub bias_views: usize,
    /// Test images on which the bias is measured.
    pub bias_images: usize,
    /// Also evaluate a randomly initialised encoder of the same architecture (same seed) as a
    /// reference: its linear/kNN accuracy and prototype bias are stored beside the run's.
    pub random_init_reference: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            train_images: None,
            test_images: None,
            val_images: None,
            linear_epochs: 30,
            linear_lr: 1e-2,
            linear_batch: 256,
            linear_weight_decay: 1e-4,
            knn_k: 200,
            knn_temperature: 0.1,
            bias_views: 8,
            bias_images: 1000,
            random_init_reference: false,
        }
    }
}

fn positive_finite(key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        bail!("`{key}` must be a finite number > 0, got {v}");
    }
    Ok(())
}

fn non_negative_finite(key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("`{key}` must be a finite number ≥ 0, got {v}");
    }
    Ok(())
}

/// A decay or momentum coefficient: in [0, 1).
fn unit_open(key: &str, v: f64) -> Result<()> {
    if !(0.0..1.0).contains(&v) {
        bail!("`{key}` must be in [0, 1), got {v}");
    }
    Ok(())
}

/// A closed range of finite values.
fn in_range(key: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if !(lo..=hi).contains(&v) {
        bail!("`{key}` must be in [{lo}, {hi}], got {v}");
    }
    Ok(())
}

/// A `[lo, hi]` pair with 0 < lo ≤ hi < ∞.
fn positive_interval(key: &str, v: [f32; 2]) -> Result<()> {
    if !(v[0] > 0.0 && v[0] <= v[1] && v[1].is_finite()) {
        bail!("`{key}` must satisfy 0 < lo ≤ hi (finite), got {v:?}");
    }
    Ok(())
}

/// A count that must be ≥ 1 when set (0 would make an empty set or no work at all).
fn at_least_one(key: &str, v: Option<usize>) -> Result<()> {
    if v == Some(0) {
        bail!("`{key}` must be ≥ 1, got 0");
    }
    Ok(())
}

fn probability(key: &str, v: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        bail!("`{key}` must be a probability in [0, 1], got {v}");
    }
    Ok(())
}

impl Config {
    /// Checks every value range and name; the error names the offending key.
    pub fn validate(&self) -> Result<()> {
        self.data.validate_folder_keys()?;
        if let Some(f) = self.data.fraction {
            if !(f > 0.0 && f <= 1.0) {
                bail!("`data.fraction` must be in (0, 1], got {f}");
            }
        }
        if let Some(r) = self.data.imbalance_ratio {
            if !(r.is_finite() && r >= 1.0) {
                bail!("`data.imbalance_ratio` must be ≥ 1, got {r}");
            }
        }
        if self.data.per_class == Some(0) {
            bail!("`data.per_class` must be ≥ 1");
        }
        if self.model.width == 0 || self.model.proj_hidden == 0 || self.model.proj_dim == 0 {
            bail!("`model.width`, `model.proj_hidden` and `model.proj_dim` must be ≥ 1");
        }
        // Static bounds far beyond any use (the standard width is 64, the ImageNet side 224);
        // what a machine can hold is checked before a run allocates (`crate::memory`).
        for (key, v, max) in [
            ("model.width", self.model.width, 4096),
            ("model.proj_hidden", self.model.proj_hidden, 1 << 16),
            ("model.proj_dim", self.model.proj_dim, 1 << 16),
            ("augment.size", self.augment.size, 2048),
            ("train.batch_size", self.train.batch_size, 1 << 16),
            ("eval.bias_views", self.eval.bias_views, 1024),
            ("data.prefetch", self.data.prefetch.unwrap_or(1), 1024),
            ("data.decode_threads", self.data.decode_threads.unwrap_or(1), 1024),
        ] {
            if v > max {
                bail!("`{key}` must be ≤ {max}, got {v}");
            }
        }
        if self.augment.size == 0 {
            bail!("`augment.size` must be ≥ 1");
        }
        let a = &self.augment;
        if !(a.crop_scale[0] > 0.0 && a.crop_scale[0] <= a.crop_scale[1] && a.crop_scale[1] <= 1.0) {
            bail!(
                "`augment.crop_scale` must satisfy 0 < lo ≤ hi ≤ 1, got {:?}",
                a.crop_scale
            );
        }
        positive_interval("augment.crop_ratio", a.crop_ratio)?;
        probability("augment.flip_p", a.flip_p)?;
        probability("augment.jitter.p", a.jitter.p)?;
        probability("augment.grayscale_p", a.grayscale_p)?;
        probability("augment.blur.p", a.blur.p)?;
        probability("augment.solarize.p", a.solarize.p)?;
        probability("augment.rotation.p", a.rotation.p)?;
        probability("augment.cutout.p", a.cutout.p)?;
        if !(0.0..=0.5).contains(&a.jitter.hue) {
            bail!("`augment.jitter.hue` must be in [0, 0.5], got {}", a.jitter.hue);
        }
        for (k, v) in [
            ("augment.jitter.brightness", a.jitter.brightness),
            ("augment.jitter.contrast", a.jitter.contrast),
            ("augment.jitter.saturation", a.jitter.saturation),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("`{k}` must be ≥ 0, got {v}");
            }
        }
        positive_interval("augment.blur.sigma", a.blur.sigma)?;
        // Kernel side as a fraction of the image side (wider than the image is allowed: the
        // reflect padding repeats); its memory is bounded by `check_memory`.
        in_range("augment.blur.kernel_frac", a.blur.kernel_frac.into(), 0.0, 4.0)?;
        in_range("augment.cutout.size_frac", a.cutout.size_frac.into(), 0.0, 1.0)?;
        in_range("augment.rotation.degrees", a.rotation.degrees.into(), 0.0, 180.0)?;
        in_range(
            "augment.solarize.threshold",
            a.solarize.threshold.into(),
            0.0,
            1.0,
        )?;
        positive_finite("loss.tau", self.loss.tau)?;
        positive_finite("loss.alpha", self.loss.alpha)?;
        positive_finite("loss.lambda", self.loss.lambda)?;
        unit_open("loss.ema", self.loss.ema)?;
        let o = &self.optim;
        positive_finite("optim.lr", o.lr)?;
        unit_open("optim.momentum", o.momentum)?;
        non_negative_finite("optim.weight_decay", o.weight_decay)?;
        // A warm-up longer than the run never reaches the peak learning rate.
        in_range(
            "optim.warmup_epochs",
            o.warmup_epochs,
            0.0,
            self.train.epochs as f64,
        )?;
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                bail!(
                    "`optim.betas` must both be in [0, 1), got {:?} (β{})",
                    o.betas,
                    i + 1
                );
            }
        }
        positive_finite("optim.trust_coef", o.trust_coef)?;
        if self.train.epochs == 0 || self.train.batch_size < 2 {
            bail!("`train.epochs` must be ≥ 1 and `train.batch_size` ≥ 2");
        }
        at_least_one("train.steps_per_epoch", self.train.steps_per_epoch)?;
        if let Some(g) = self.train.max_weight_growth {
            if g.is_nan() || g <= 1.0 {
                bail!("`train.max_weight_growth` must be > 1 (.inf: no limit), got {g}");
            }
        }
        if self.train.precision() == crate::ops::Precision::Bf16 && self.model.ops != Ops::Custom {
            bail!("`train.precision: bf16` runs on the custom CPU kernels only: set `model.ops: custom`");
        }
        let e = &self.eval;
        // An empty probe/kNN bank or test set would give made-up accuracies (100 % or 0 %).
        at_least_one("eval.train_images", e.train_images)?;
        at_least_one("eval.test_images", e.test_images)?;
        at_least_one("eval.linear_epochs", Some(e.linear_epochs))?;
        if e.knn_k == 0 || e.linear_batch == 0 {
            bail!("`eval.knn_k` and `eval.linear_batch` must be ≥ 1");
        }
        positive_finite("eval.knn_temperature", e.knn_temperature)?;
        positive_finite("eval.linear_lr", e.linear_lr)?;
        non_negative_finite("eval.linear_weight_decay", e.linear_weight_decay)?;
        Ok(())
    }

    /// The effective loss weights: `ntxent` forces α = λ = 1 and the coupled form.
    pub fn loss_weights(&self) -> (f64, f64) {
        if self.loss.name == LossName::Ntxent {
            (1.0, 1.0)
        } else {
            (self.loss.alpha, self.loss.lambda)
        }
    }

    /// Serialises the resolved config as YAML.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("config serialises")
    }
}

/// Sets `dotted.key` to `value` in a YAML mapping, creating intermediate mappings.
/// The value is parsed as YAML (`0.5`, `true`, `[a, b]`, `null` …).
pub fn set_dotted(root: &mut Value, key: &str, value: &str) -> Result<()> {
    if let Some((_, column)) = yamlscan::too_deep(value, yamlscan::MAX_DEPTH) {
        bail!("--set {key} (value column {column}): {}", yamlscan::DEPTH_MESSAGE);
    }
    let parsed: Value = serde_norway::from_str(value)
        .with_context(|| format!("--set {key}={value}: the value is not valid YAML"))?;
    use protoclr_formats::dotted::{self, DottedError};
    dotted::set_dotted(root, key, parsed).map_err(|e| match e {
        DottedError::EmptySegment => anyhow::anyhow!("--set {key}: empty key segment"),
        DottedError::NotAMapping(p) => anyhow::anyhow!("--set {key}: `{p}` is not a mapping"),
    })
}

/// Which `--set` set each config leaf: two with different keys that set the same leaf
/// (`model.width=4` and `model={width: 8}`), or a leaf and a value above it, are an error naming
/// both (the same key twice is an override, the later one wins) (`protoclr_grid::value::LeafClaims` does the same for the
/// mappings of experiment files).
#[derive(Default)]
struct SetClaims(protoclr_formats::claims::LeafClaims<String>);

impl SetClaims {
    /// Records that the `--set` text `who` sets `value` at the dotted `key` (its owner: the key).
    fn claim(&mut self, who: &str, key: &str, value: &Value) -> Result<()> {
        let mut paths = Vec::new();
        protoclr_formats::dotted::leaf_paths(
            key.split('.').map(str::to_string).collect(),
            value,
            &|_| "?".into(),
            &mut paths,
        );
        self.0
            .claim(who, &key.to_string(), paths)
            .map_err(|(leaf, other)| anyhow::anyhow!("`{leaf}` is set twice: by `{other}` and by `{who}`"))
    }
}

/// Deserialises a YAML value into a validated [`Config`]; `origin` names the source in errors
/// (a file path, or "grid cell"). Unknown keys and wrong types are reported with their dotted path.
pub fn from_value(value: Value, origin: &str) -> Result<Config> {
    let value = if value.is_null() {
        Value::Mapping(Default::default())
    } else {
        value
    };
    let mut cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{origin}: key `{path}`: {}", e.into_inner())
    })?;
    cfg.data.fill_folder_defaults();
    cfg.validate()
        .with_context(|| format!("{origin}: invalid config"))?;
    Ok(cfg)
}

/// Parses YAML text into a value, reporting the line and column of syntax and type errors.
pub fn parse_yaml_text(text: &str, origin: &str) -> Result<Value> {
    // Deep nesting first: the parser's time grows with the square of the depth.
    if let Some((line, column)) = yamlscan::too_deep(text, yamlscan::MAX_DEPTH) {
        bail!(
            "{origin} (line {line}, column {column}): {}",
            yamlscan::DEPTH_MESSAGE
        );
    }
    // A typed parse first: serde_norway reports line and column for unknown keys and wrong types.
    if let Err(e) = serde_norway::from_str::<Config>(text) {
        let loc = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        // Only report here when the error has a location; otherwise from_value names the key.
        if !loc.is_empty() {
            bail!("{origin}{loc}: {e}");
        }
    }
    serde_norway::from_str(text).with_context(|| format!("{origin}: not valid YAML"))
}

/// Loads a config file (or defaults when `path` is None), applies `key=value` overrides,
/// validates, and returns the resolved config.
pub fn load(path: Option<&Path>, sets: &[String]) -> Result<Config> {
    let (mut value, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?;
            (
                parse_yaml_text(&text, &p.display().to_string())?,
                p.display().to_string(),
            )
        }
        None => (Value::Mapping(Default::default()), "defaults".to_string()),
    };
    let mut claims = SetClaims::default();
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set `{s}`: expected key=value"))?;
        set_dotted(&mut value, k.trim(), v.trim())?;
        let parsed: Value = serde_norway::from_str(v.trim()).unwrap_or(Value::Null);
        claims.claim(&format!("--set {s}"), k.trim(), &parsed)?;
    }
    let origin = if sets.is_empty() {
        origin
    } else {
        format!("{origin} with --set overrides")
    };
    from_value(value, &origin)
}

/// Resolves a partial YAML config (as the grid builds it) into the full canonical YAML value:
/// every default written out, validated.
pub fn resolve_value(value: Value, origin: &str) -> Result<Value> {
    let cfg = from_value(value, origin)?;
    Ok(serde_norway::to_value(&cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every choice key with its values as the YAML spells them (the spellings the keys had when
    /// they were strings) and the config's value of that key.
    #[allow(clippy::type_complexity)]
    fn choices() -> Vec<(
        &'static str,
        Vec<&'static str>,
        Box<dyn Fn(&Config) -> &'static str>,
    )> {
        vec![
            (
                "data.dataset",
                vec!["cifar10", "cifar100", "imagefolder"],
                Box::new(|c| c.data.dataset.as_str()),
            ),
            (
                "model.arch",
                vec!["resnet18", "resnet50"],
                Box::new(|c| c.model.arch.as_str()),
            ),
            (
                "model.stem",
                vec!["cifar", "imagenet"],
                Box::new(|c| c.model.stem.as_str()),
            ),
            (
                "model.ops",
                vec!["custom", "stock"],
                Box::new(|c| c.model.ops.as_str()),
            ),
            (
                "augment.preset",
                vec!["simclr", "none"],
                Box::new(|c| c.augment.preset.as_str()),
            ),
            (
                "loss.name",
                vec!["balanced", "ntxent", "supervised_prototype"],
                Box::new(|c| c.loss.name.as_str()),
            ),
            (
                "loss.max",
                vec!["hard", "smooth"],
                Box::new(|c| c.loss.max.as_str()),
            ),
            (
                "loss.prototypes",
                vec!["realistic", "oracle"],
                Box::new(|c| c.loss.prototypes.as_str()),
            ),
            (
                "optim.name",
                vec!["sgd", "lars", "adamw"],
                Box::new(|c| c.optim.name.as_str()),
            ),
        ]
    }

    #[test]
    fn choices_read_and_write_their_old_spelling() {
        for (key, values, get) in choices() {
            let leaf = key.rsplit('.').next().unwrap();
            for v in &values {
                let mut sets = vec![format!("{key}={v}")];
                if *v == "imagefolder" {
                    sets.extend(["data.train_dir=t".to_string(), "data.val_dir=v".into()]);
                }
                let cfg = load(None, &sets).unwrap_or_else(|e| panic!("{key}={v}: {e:#}"));
                assert_eq!(get(&cfg), *v);
                // Written as the string was: the same line in the resolved YAML, and back.
                let line = format!("{leaf}: {}", serde_norway::to_string(v).unwrap());
                assert!(
                    cfg.to_yaml().lines().any(|l| l.trim() == line.trim()),
                    "{key}: {v}"
                );
                assert_eq!(load_text(&cfg.to_yaml()), cfg);
            }
        }
        // Transform lists, in the order written (the pipeline sorts them, not the config).
        let cfg = load(None, &["augment.add=[cutout, blur]".into()]).unwrap();
        assert_eq!(cfg.augment.add, [Transform::Cutout, Transform::Blur]);
        assert!(
            cfg.to_yaml().contains("\n  add:\n  - cutout\n  - blur\n"),
            "{}",
            cfg.to_yaml()
        );
        // The Rust-side lists are the same as the YAML's.
        let arch: Vec<&str> = Arch::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(arch, ["resnet18", "resnet50"]);
        assert_eq!("lars".parse::<OptimName>(), Ok(OptimName::Lars));
        assert!("resnet34"
            .parse::<Arch>()
            .unwrap_err()
            .contains("resnet18, resnet50"));
    }

    #[test]
    fn a_bad_choice_is_refused_naming_the_key_and_the_allowed_values() {
        for (key, values, _) in choices() {
            // From --set (the key's dotted path comes from serde_path_to_error) ...
            let msg = format!("{:#}", load(None, &[format!("{key}=fancy")]).unwrap_err());
            assert!(
                msg.contains(&format!("`{key}`")) && msg.contains("fancy"),
                "{msg}"
            );
            for v in &values {
                assert!(msg.contains(&format!("`{v}`")), "{key}: {msg}");
            }
            // ... and from a file, with its line.
            let (section, leaf) = key.split_once('.').unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.yaml");
            std::fs::write(&path, format!("seed: 1\n{section}:\n  {leaf}: fancy\n")).unwrap();
            let msg = format!("{:#}", load(Some(&path), &[]).unwrap_err());
            assert!(msg.contains("c.yaml") && msg.contains("line 3"), "{msg}");
            assert!(msg.contains(key) && msg.contains("fancy"), "{msg}");
            for v in &values {
                assert!(msg.contains(&format!("`{v}`")), "{key}: {msg}");
            }
        }
    }

    #[test]
    fn a_bad_transform_name_is_refused_naming_the_list_and_the_known_names() {
        for key in ["augment.remove", "augment.add"] {
            let msg = format!(
                "{:#}",
                load(None, &[format!("{key}=[flip, sharpen]")]).unwrap_err()
            );
            assert!(msg.contains(key) && msg.contains("sharpen"), "{msg}");
            for t in Transform::ALL {
                assert!(msg.contains(&format!("`{t}`")), "{msg}");
            }
        }
    }

    #[test]
    fn defaults_round_trip_through_yaml() {
        let c = Config::default();
        let back: Config = serde_norway::from_str(&c.to_yaml()).unwrap();
        assert_eq!(c, back);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let err = parse_yaml_text("seed: 1\nloss:\n  tau: 0.5\n  gamma: 2\n", "x.yaml").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("x.yaml"), "{msg}");
        assert!(msg.contains("gamma"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn set_overrides_and_validation() {
        let cfg = load(None, &["loss.tau=0.2".into(), "loss.alpha=1.5".into()]).unwrap();
        assert_eq!(cfg.loss.tau, 0.2);
        assert_eq!(cfg.loss.alpha, 1.5);
        let err = load(None, &["loss.tau=0".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("loss.tau"));
        let err = load(None, &["loss.lambda=-1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("loss.lambda"));
        let err = load(None, &["augment.add=[sharpen]".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("sharpen"));
        let err = load(None, &["optim.lrr=1".into()]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("lrr"), "{msg}");
    }

    #[test]
    fn ntxent_forces_unit_weights() {
        let cfg = load(None, &["loss.name=ntxent".into(), "loss.alpha=2".into()]).unwrap();
        assert_eq!(cfg.loss_weights(), (1.0, 1.0));
    }

    #[test]
    fn folder_dataset_keys() {
        // CIFAR configs do not mention the folder keys, and refuse them.
        let c = Config::default();
        assert!(!c.to_yaml().contains("train_dir") && !c.to_yaml().contains("prefetch"));
        let err = load(None, &["data.train_dir=train".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("data.train_dir"), "{err:#}");
        let err = load(None, &["data.skip_bad=false".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("data.skip_bad"), "{err:#}");
        // A folder dataset: defaults written out, round trip.
        let sets = |extra: &[&str]| -> Vec<String> {
            [
                "data.dataset=imagefolder",
                "data.train_dir=imagenet/train",
                "data.val_list=imagenet/val.txt",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
        };
        let cfg = load(None, &sets(&[])).unwrap();
        assert_eq!(cfg.data.skip_bad, Some(false));
        assert_eq!(cfg.data.prefetch, Some(DataConfig::DEFAULT_PREFETCH));
        assert_eq!(cfg.data.eval_crop, Some(0.875));
        assert_eq!(cfg.data.decode_threads, None);
        let yaml = cfg.to_yaml();
        assert!(
            yaml.contains("skip_bad: false") && yaml.contains("prefetch: 4"),
            "{yaml}"
        );
        assert_eq!(load_text(&yaml), cfg);
        // Exactly one source per part; ranges.
        let err = load(None, &sets(&["data.train_list=x.txt"])).unwrap_err();
        assert!(format!("{err:#}").contains("data.train_dir"), "{err:#}");
        let err = load(
            None,
            &["data.dataset=imagefolder".into(), "data.train_dir=t".into()],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("data.val_dir"), "{err:#}");
        let err = load(None, &sets(&["data.eval_crop=1.5"])).unwrap_err();
        assert!(format!("{err:#}").contains("data.eval_crop"), "{err:#}");
        let err = load(None, &sets(&["data.prefetch=0"])).unwrap_err();
        assert!(format!("{err:#}").contains("data.prefetch"), "{err:#}");
        let err = load(None, &sets(&["data.resize_short=0"])).unwrap_err();
        assert!(format!("{err:#}").contains("data.resize_short"), "{err:#}");
        let err = load(None, &["data.cache_images=true".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("data.cache_images"), "{err:#}");
        // Unset, the two keys are not written (resolved configs, hence cell ids, unchanged).
        assert!(
            !yaml.contains("resize_short") && !yaml.contains("cache_images"),
            "{yaml}"
        );
        let cfg = load(None, &sets(&["data.resize_short=72", "data.cache_images=true"])).unwrap();
        assert_eq!(
            (cfg.data.resize_short, cfg.data.cache_images),
            (Some(72), Some(true))
        );
        assert_eq!(load_text(&cfg.to_yaml()), cfg);
        let err = load(
            None,
            &sets(&["data.list_root=x", "data.val_list=null", "data.val_dir=v"]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("data.list_root"), "{err:#}");
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_key() {
        // (override, key the error must name): every numeric key has a range.
        let cases = [
            // Empty evaluation sets (made-up accuracies: 100 % or 0 %).
            ("eval.train_images=0", "eval.train_images"),
            ("eval.test_images=0", "eval.test_images"),
            ("eval.linear_epochs=0", "eval.linear_epochs"),
            // Non-finite or negative optimiser values.
            ("optim.warmup_epochs=.inf", "optim.warmup_epochs"),
            ("optim.warmup_epochs=101", "optim.warmup_epochs"),
            ("optim.betas=[2, 2]", "optim.betas"),
            ("optim.betas=[0.9, 1]", "optim.betas"),
            ("optim.trust_coef=-5", "optim.trust_coef"),
            ("optim.trust_coef=.nan", "optim.trust_coef"),
            ("optim.momentum=1.5", "optim.momentum"),
            ("optim.weight_decay=.inf", "optim.weight_decay"),
            ("optim.lr=.inf", "optim.lr"),
            ("eval.linear_weight_decay=-1", "eval.linear_weight_decay"),
            ("eval.linear_lr=.nan", "eval.linear_lr"),
            ("eval.knn_temperature=0", "eval.knn_temperature"),
            ("loss.ema=1", "loss.ema"),
            ("augment.crop_ratio=[0.75, .inf]", "augment.crop_ratio"),
            ("augment.blur.sigma=[0.1, .inf]", "augment.blur.sigma"),
            ("augment.blur.kernel_frac=-1", "augment.blur.kernel_frac"),
            ("augment.blur.kernel_frac=.inf", "augment.blur.kernel_frac"),
            ("augment.cutout.size_frac=2", "augment.cutout.size_frac"),
            ("augment.rotation.degrees=-3", "augment.rotation.degrees"),
            ("augment.rotation.degrees=.nan", "augment.rotation.degrees"),
            ("augment.solarize.threshold=.nan", "augment.solarize.threshold"),
            ("augment.jitter.brightness=.inf", "augment.jitter.brightness"),
            ("data.fraction=.nan", "data.fraction"),
            // Sizes beyond any use (the machine's memory is checked too: `crate::memory`).
            ("model.width=1000000000", "model.width"),
            ("augment.size=4096", "augment.size"),
            ("augment.blur.kernel_frac=1e9", "augment.blur.kernel_frac"),
            ("eval.bias_views=100000", "eval.bias_views"),
        ];
        let mut accepted = Vec::new();
        for (set, key) in cases {
            match load(None, &[set.to_string()]) {
                Ok(_) => accepted.push(set),
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains(&format!("`{key}`")), "{set}: {msg}");
                }
            }
        }
        assert!(accepted.is_empty(), "accepted: {accepted:?}");
        // The edges of the ranges are accepted.
        for set in [
            "optim.warmup_epochs=100",
            "optim.betas=[0, 0.999]",
            "optim.momentum=0",
            "eval.linear_weight_decay=0",
            "eval.train_images=1",
            "augment.cutout.size_frac=1",
            "augment.blur.kernel_frac=0",
        ] {
            load(None, &[set.to_string()]).unwrap_or_else(|e| panic!("{set}: {e:#}"));
        }
    }

    #[test]
    fn two_overrides_of_one_leaf_are_an_error() {
        // A dotted key and a nested one that set the same leaf, in either order (the same key
        // twice is an override: the later one wins, as `folder_dataset_keys` relies on).
        for sets in [
            ["model.width=4", "model={width: 8}"],
            ["model={width: 8}", "model.width=4"],
            ["augment={blur: {p: 0.1}}", "augment.blur.p=0.2"],
        ] {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let msg = format!("{:#}", load(None, &sets).unwrap_err());
            let leaf = if sets[0].starts_with("augment") {
                "augment.blur.p"
            } else {
                "model.width"
            };
            assert!(msg.contains(&format!("`{leaf}` is set twice")), "{sets:?}: {msg}");
            assert!(
                sets.iter().all(|s| msg.contains(&format!("--set {s}"))),
                "{sets:?}: {msg}"
            );
        }
        let msg = format!(
            "{:#}",
            load(None, &["model.width=8".into(), "model=4".into()]).unwrap_err()
        );
        assert!(msg.contains("`model` is set twice"), "{msg}");
        assert_eq!(
            load(None, &["model.width=4".into(), "model.width=8".into()])
                .unwrap()
                .model
                .width,
            8
        );
        // Different leaves of one mapping are fine.
        let cfg = load(None, &["model={width: 8}".into(), "model.proj_dim=64".into()]).unwrap();
        assert_eq!((cfg.model.width, cfg.model.proj_dim), (8, 64));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // 100,000 nested brackets: libyaml needs about a minute for them; the pre-scan refuses
        // the text at once, naming the file, line and column.
        let deep = format!("seed: 1\nloss: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let msg = format!("{:#}", parse_yaml_text(&deep, "deep.yaml").unwrap_err());
        assert!(
            msg.starts_with("deep.yaml (line 2, column 71): ") && msg.contains("nested deeper"),
            "{msg}"
        );
        let set = format!("loss.tau={}1{}", "{a: ".repeat(100_000), "}".repeat(100_000));
        let msg = format!("{:#}", load(None, &[set]).unwrap_err());
        assert!(
            msg.contains("--set loss.tau") && msg.contains("nested deeper"),
            "{msg}"
        );
    }

    fn load_text(yaml: &str) -> Config {
        from_value(parse_yaml_text(yaml, "t").unwrap(), "t").unwrap()
    }
}

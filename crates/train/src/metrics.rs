//! What a run reports: `metrics.json` ([`Metrics`], the keys in docs/formats.md), its per-epoch
//! records ([`EpochRecord`], also kept in every checkpoint) and the evaluation of one encoder
//! ([`EvalResult`], computed by [`crate::protocol::score`]).

use serde::{Deserialize, Serialize};

pub use protoclr_formats::metrics::Status;

/// One epoch's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    /// Augmented views through the network per second (2 per image).
    pub images_per_sec: f64,
    pub wall_s: f64,
    /// Mean over the epoch's steps of ‖mean unit projection‖ ([`crate::diag::ViewStats`]): 1 when
    /// all views point one way. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_direction: Option<f64>,
    /// Supervised prototype objective: share of training views nearest their own prototype,
    /// averaged over the epoch's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_train_acc: Option<f64>,
}

/// Evaluation of one encoder (see [`crate::protocol`]; the keys in docs/formats.md). Every
/// `Option` is null when not computed (and absent in files written before it existed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalResult {
    pub linear_top1: f64,
    pub linear_top5: f64,
    pub knn_top1: f64,
    pub knn_top5: f64,
    pub bias_l2: Option<f64>,
    pub bias_l2_ci95: Option<[f64; 2]>,
    pub bias_cos: Option<f64>,
    pub bias_cos_ci95: Option<[f64; 2]>,
    /// Images of the probe/kNN bank.
    pub n_train: usize,
    pub n_test: usize,
    /// Linear probe (trained on the bank) and kNN (bank as memory) on the validation split.
    #[serde(default)]
    pub val_linear_top1: Option<f64>,
    #[serde(default)]
    pub val_linear_top5: Option<f64>,
    #[serde(default)]
    pub val_knn_top1: Option<f64>,
    #[serde(default)]
    pub val_knn_top5: Option<f64>,
    #[serde(default)]
    pub n_val: Option<usize>,
    /// Scale-free bias ([`crate::bias`]).
    #[serde(default)]
    pub bias_rel: Option<f64>,
    #[serde(default)]
    pub bias_rel_ci95: Option<[f64; 2]>,
    /// Theorem bounds on the bias images: share in [0, 1] where each holds, mean slack, samples.
    #[serde(default)]
    pub bound_attract_holds: Option<f64>,
    #[serde(default)]
    pub bound_attract_slack: Option<f64>,
    #[serde(default)]
    pub bound_repel_holds: Option<f64>,
    #[serde(default)]
    pub bound_repel_slack: Option<f64>,
    #[serde(default)]
    pub bound_n: Option<usize>,
    /// Long-tail groups ([`crate::eval::group_accuracy`]): linear-probe test top-1 of the many-,
    /// medium- and few-shot classes by their count in the self-supervised training set, and the
    /// number of classes in each group. Null when that set is balanced.
    #[serde(default)]
    pub linear_many: Option<f64>,
    #[serde(default)]
    pub linear_medium: Option<f64>,
    #[serde(default)]
    pub linear_few: Option<f64>,
    #[serde(default)]
    pub n_many: Option<usize>,
    #[serde(default)]
    pub n_medium: Option<usize>,
    #[serde(default)]
    pub n_few: Option<usize>,
}

/// Where and why a run diverged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Diverged {
    pub epoch: usize,
    pub step: usize,
    pub what: String,
}

fn cpu_label() -> String {
    "cpu".into()
}

/// `metrics.json` (see docs/formats.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub schema: u32,
    /// `completed` or `diverged`: the one [`Status`] the grid and the report read.
    pub status: Status,
    pub epochs_planned: usize,
    pub epochs: Vec<EpochRecord>,
    pub eval: Option<EvalResult>,
    pub reference: Option<EvalResult>,
    pub diverged: Option<Diverged>,
    pub wall_time_s: f64,
    pub train_images_per_sec: f64,
    pub train_images: usize,
    pub threads: usize,
    /// `cpu` or `cuda:N` (absent in results written before devices existed: `cpu`).
    #[serde(default = "cpu_label")]
    pub device: String,
    pub git_commit: String,
    pub dataset: String,
    pub dataset_fingerprint: String,
    pub dataset_verified: bool,
    pub config_sha256: String,
    pub protoclr_version: String,
    /// [`crate::NUMERICS_VERSION`] of the binary that trained the run (absent in files written
    /// before it existed: `None`, "unversioned").
    #[serde(default)]
    pub numerics_version: Option<u32>,
    /// With `train.precision: bf16`, the unit that multiplied (`amx` or `avx512_bf16`, or
    /// `f32` where neither outruns f32 FMAs and bf16 falls back to the f32 kernels;
    /// [`crate::ops::bf16::unit`]): the units accumulate in different orders, so a bf16 run is
    /// reproducible bit for bit only on a CPU with the same unit. Absent for f32 runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16_unit: Option<String>,
}

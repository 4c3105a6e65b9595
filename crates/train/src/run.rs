//! One training run: SimCLR-style two-view training with the configured objective, a checkpoint
//! after every epoch, resumption from the last checkpoint, then evaluation (linear probe, kNN,
//! prototype bias) and `metrics.json`.
//!
//! Crash safety: each epoch's checkpoint is one self-checking file written atomically
//! ([`crate::checkpoint`]); an unusable one is reported and an older one (or epoch 0) used.
//! SIGINT/SIGTERM stop the run between steps ([`crate::signals`]). Divergence: a non-finite loss
//! or gradient, or parameters grown beyond `train.max_weight_growth` × their initial norm.
//!
//! Reproducibility: every random choice of epoch e (the sample order and each view's
//! augmentation) is drawn from a stream seeded by (seed, e, image, view), and the checkpoint holds
//! the parameters, batch-norm statistics, optimiser buffers and prototypes, so a run resumed from
//! epoch k continues exactly as an uninterrupted one. Same config and seed → same metrics.

use crate::augment::Pipeline;
use crate::bias;
use crate::checkpoint::{self, CheckpointMeta};
use crate::config::Config;
use crate::data::Dataset;
use crate::eval::{self, ImageSet};
use crate::fsutil::{atomic_write, remove_stale_temps, sha256_hex};
use crate::loss::{self, Prototypes};
use crate::model::SimClrModel;
use crate::optim::{lr_at, Optimizer};
use crate::protocol::{self, EvalFeatures, EvalSets, Features};
use crate::signals::{self, Interrupted};
use crate::source::TrainSource;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// `train.precision`, or an error naming the key where this machine cannot run it (bf16 needs
/// the custom ops on a CPU with AVX-512 BF16).
pub fn checked_precision(cfg: &Config, device: &candle_core::Device) -> Result<crate::ops::Precision> {
    let p = cfg.train.precision();
    if p == crate::ops::Precision::Bf16 {
        if !device.is_cpu() {
            bail!("`train.precision: bf16` runs on the CPU kernels only, not on {device:?}");
        }
        if !crate::ops::bf16::has_bf16() {
            bail!("`train.precision: bf16` needs a CPU with AVX-512 BF16 (avx512_bf16); this one has none: use f32");
        }
    }
    Ok(p)
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// indicatif bar on stderr (epoch, loss, img/s, ETA).
    Bar,
    /// One JSON object a line on stdout (for the grid runner).
    Jsonl,
    None,
}

/// Where a run reads and writes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    /// Checkpoints (default `out_dir/checkpoints`).
    pub checkpoint_dir: Option<PathBuf>,
    /// Folder holding `cifar-10-batches-bin/` and/or `cifar-100-binary/`.
    pub data_root: PathBuf,
    pub progress: ProgressMode,
    /// Where the model trains and evaluates ([`crate::device::parse`]); data are prepared on
    /// the host whatever the device.
    pub device: Device,
}

/// One epoch's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    /// Augmented views through the network per second (2 per image).
    pub images_per_sec: f64,
    pub wall_s: f64,
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
    /// Long-tail groups ([`eval::group_accuracy`]): linear-probe test top-1 of the many-,
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
    pub status: String,
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
    /// With `train.precision: bf16`, the unit that multiplied (`amx` or `avx512_bf16`,
    /// [`crate::ops::bf16::unit`]): the two accumulate in different orders, so a bf16 run is
    /// reproducible bit for bit only on a CPU with the same unit. Absent for f32 runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16_unit: Option<String>,
}

/// The commit of the working tree (`PROTOCLR_GIT_COMMIT` overrides), or "unknown".
pub fn git_commit() -> String {
    if let Ok(c) = std::env::var("PROTOCLR_GIT_COMMIT") {
        return c;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Prints a progress line in `Jsonl` mode; a closed stdout stops the lines, not the run
/// ([`signals::stdout_line`]).
pub(crate) fn emit(mode: ProgressMode, v: serde_json::Value) {
    if mode == ProgressMode::Jsonl {
        signals::stdout_line(&v.to_string());
    }
}

/// L2 norm of all trainable parameters.
fn weight_norm(model: &SimClrModel) -> Result<f64> {
    let mut sq = 0f64;
    for (_, v) in &model.params.vars {
        sq += v.as_tensor().sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(sq.sqrt())
}

/// Seeded subset of `n` indices of size `k` (all when `k` is None or ≥ n), sorted.
pub(crate) fn seeded_subset(n: usize, k: Option<usize>, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if let Some(k) = k.filter(|&k| k < n) {
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        idx.truncate(k);
        idx.sort_unstable();
    }
    idx
}

fn images(ds: &Dataset) -> ImageSet<'_> {
    ImageSet {
        pixels: &ds.images,
        n: ds.n,
        h: ds.height,
        w: ds.width,
    }
}

/// Evaluates `model`'s encoder on the in-memory CIFAR splits: the [`EvalSets`] of the official
/// training split `train` (of which `heldout` is the validation split) and `test`, scored by
/// [`protocol::score`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate(
    model: &SimClrModel,
    cfg: &Config,
    train: &Dataset,
    heldout: &[usize],
    train_counts: &[usize],
    test: &Dataset,
    pipeline: &Pipeline,
    mean: [f32; 3],
    std: [f32; 3],
    progress: ProgressMode,
) -> Result<EvalResult> {
    let e = &cfg.eval;
    let size = cfg.augment.size;
    let sets = EvalSets::new(cfg, train.n, heldout, test.n);
    emit(progress, serde_json::json!({"event": "eval", "what": "features"}));
    let feats = |ds: &Dataset, idx: &[usize]| -> Result<Features> {
        let sub = ds.subset(idx);
        let x = eval::extract_features(&model.encoder, &images(&sub), size, mean, std, 512)?;
        Ok(Features {
            x,
            labels: sub.labels,
        })
    };
    let views = |idx: &[usize]| -> Result<Features> {
        let sub = test.subset(idx);
        let x = bias::view_features(
            &model.encoder,
            &images(&sub),
            pipeline,
            size,
            e.bias_views,
            cfg.seed,
        )?;
        Ok(Features {
            x,
            labels: sub.labels,
        })
    };
    let f = EvalFeatures {
        bank: feats(train, &sets.bank)?,
        test: feats(test, &sets.test)?,
        val: (!sets.val.is_empty())
            .then(|| feats(train, &sets.val))
            .transpose()?,
        views: (!sets.bias.is_empty()).then(|| views(&sets.bias)).transpose()?,
        train_counts: train_counts.to_vec(),
    };
    protocol::score(&f, cfg, model.encoder.feat_dim, train.num_classes, progress)
}

/// Outcome of [`train`].
#[derive(Debug)]
pub enum Outcome {
    Completed(Metrics),
    Diverged(Metrics),
}

impl Outcome {
    pub fn metrics(&self) -> &Metrics {
        match self {
            Outcome::Completed(m) | Outcome::Diverged(m) => m,
        }
    }
}

/// Trains (or resumes) the run described by `cfg` into `opts.out_dir`.
pub fn train(cfg: &Config, opts: &RunOptions) -> Result<Outcome> {
    cfg.validate()?;
    // Before anything is allocated: sizes the machine cannot hold are a config error.
    crate::memory::check(cfg, !opts.device.is_cpu())?;
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create run folder {}", out.display()))?;
    remove_stale_temps(out);
    let yaml = cfg.to_yaml();
    let config_sha = sha256_hex(yaml.as_bytes());
    let cfg_path = out.join("config.yaml");
    if let Ok(existing) = std::fs::read_to_string(&cfg_path) {
        if existing != yaml {
            bail!(
                "{} holds a run of a different config; use another --out (nothing was changed)",
                cfg_path.display()
            );
        }
        let metrics_path = out.join("metrics.json");
        if let Ok(text) = std::fs::read_to_string(&metrics_path) {
            if let Ok(m) = serde_json::from_str::<Metrics>(&text) {
                if m.config_sha256 == config_sha {
                    return Ok(if m.status == "diverged" {
                        Outcome::Diverged(m)
                    } else {
                        Outcome::Completed(m)
                    });
                }
            }
        }
    }
    let ckpt_dir = opts
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| out.join("checkpoints"));
    remove_stale_temps(&ckpt_dir);

    // CIFAR in memory, or an image-folder dataset streamed from disk (crate::source). Opened
    // before config.yaml is written, so that a dataset error leaves the run folder reusable
    // with another config (e.g. `--skip-bad`).
    let source = TrainSource::open(cfg, &opts.data_root)?;
    if !cfg_path.exists() {
        atomic_write(&cfg_path, yaml.as_bytes())?;
    }
    let (mean, std) = source.mean_std(&cfg.data.dataset);
    let pipeline = Pipeline::new(&cfg.augment, mean, std)?;
    let classes = source.num_classes();

    let mut model = SimClrModel::new_on(&cfg.model, cfg.seed, &opts.device)?;
    model.precision = checked_precision(cfg, &opts.device)?;
    let mut opt = Optimizer::new(&cfg.optim);
    let supervised = cfg.loss.name == "supervised_prototype";
    let mut protos = if !supervised {
        None
    } else if cfg.loss.prototypes == "oracle" {
        Some(Prototypes::oracle(classes, cfg.model.proj_dim, cfg.seed)?)
    } else {
        Some(Prototypes::realistic(
            classes,
            cfg.model.proj_dim,
            cfg.loss.ema as f32,
        ))
    };
    let init_norm = weight_norm(&model)?;
    let growth_limit = cfg.train.weight_growth_limit();
    let found = checkpoint::find(&ckpt_dir, &config_sha, &model, protos.as_ref(), cfg.train.epochs);
    let mut last_ckpt = found.as_ref().map(|l| l.path.clone());
    let resumed = found
        .map(|l| l.apply(&model, &mut opt, protos.as_mut()))
        .transpose()?;
    let (start_epoch, mut records, prior_wall) = match resumed {
        Some(m) => (m.epochs_done, m.epochs, m.wall_time_s),
        None => (0, vec![], 0.0),
    };

    let b = cfg.train.batch_size;
    let n = source.n_train();
    if n < b {
        bail!("train.batch_size {b} exceeds the {n} training images selected by `data`");
    }
    let steps = (n / b).min(cfg.train.steps_per_epoch.unwrap_or(usize::MAX));
    let total_steps = steps * cfg.train.epochs;
    let warmup = (cfg.optim.warmup_epochs * steps as f64).round() as usize;
    let (alpha, lambda) = cfg.loss_weights();
    let size = cfg.augment.size;

    let bar = if opts.progress == ProgressMode::Bar {
        let pb = ProgressBar::new(total_steps as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps · {msg} · ETA {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        pb.set_position((start_epoch * steps) as u64);
        pb.reset_eta();
        Some(pb)
    } else {
        None
    };
    let run_start = Instant::now();
    let mut diverged: Option<Diverged> = None;
    'epochs: for epoch in start_epoch..cfg.train.epochs {
        let t_epoch = Instant::now();
        let mut batches = source.epoch(cfg, &pipeline, epoch, steps);
        let mut loss_sum = 0f64;
        let mut lr = 0.0;
        for step in 0..steps {
            if let Some(signal) = signals::stop_requested() {
                if let Some(pb) = &bar {
                    pb.abandon();
                }
                return Err(Interrupted {
                    signal,
                    epochs_done: epoch,
                    epochs_planned: cfg.train.epochs,
                    checkpoint: last_ckpt,
                }
                .into());
            }
            let (buf, batch_labels) = batches.next_batch()?;
            let x = Tensor::from_vec(buf, (2 * b, 3, size, size), &opts.device)?;
            let labels: Vec<u32> = batch_labels
                .iter()
                .chain(&batch_labels)
                .map(|&l| l as u32)
                .collect();
            if let Some(p) = protos.as_mut().filter(|p| !p.complete()) {
                // Realistic prototypes start from the first batch's class means (no gradient).
                let (_, z0) = model.forward(&x, false)?;
                p.update(&z0, &labels)?;
            }
            let proto_t = protos.as_ref().map(|p| p.tensor()).transpose()?;
            let smooth = (cfg.loss.max == "smooth").then_some(cfg.loss.tau);
            let out = model.train_step(&x, |z| match &proto_t {
                None => loss::balanced(z, cfg.loss.tau, alpha, lambda, cfg.loss.decoupled),
                Some(p) => loss::supervised_prototype(z, &labels, p, alpha, lambda, smooth),
            })?;
            let lv = out.loss as f64;
            let Some(grads) = out.grads else {
                diverged = Some(Diverged {
                    epoch: epoch + 1,
                    step: step + 1,
                    what: format!("loss is {lv}"),
                });
                break 'epochs;
            };
            lr = lr_at(cfg.optim.lr, epoch * steps + step, total_steps, warmup);
            if let Err(bad) = opt.step(&model.params.vars, grads, lr)? {
                diverged = Some(Diverged {
                    epoch: epoch + 1,
                    step: step + 1,
                    what: format!("non-finite gradient in `{}`", bad.0),
                });
                break 'epochs;
            }
            if let Some(p) = protos.as_mut() {
                p.update(&out.z, &labels)?;
            }
            loss_sum += lv;
            if let Some(pb) = &bar {
                pb.inc(1);
                let ips = 2.0 * b as f64 * (step + 1) as f64 / t_epoch.elapsed().as_secs_f64();
                pb.set_message(format!(
                    "epoch {}/{} · loss {lv:.4} · {ips:.0} img/s",
                    epoch + 1,
                    cfg.train.epochs
                ));
            }
            emit(
                opts.progress,
                serde_json::json!({"event": "step", "epoch": epoch + 1, "epochs": cfg.train.epochs,
                                   "step": step + 1, "steps": steps, "loss": lv}),
            );
        }
        let wall = t_epoch.elapsed().as_secs_f64();
        let rec = EpochRecord {
            epoch: epoch + 1,
            loss: loss_sum / steps as f64,
            lr,
            images_per_sec: 2.0 * (b * steps) as f64 / wall,
            wall_s: wall,
        };
        let growth = weight_norm(&model)? / init_norm;
        emit(
            opts.progress,
            serde_json::json!({"event": "epoch", "epoch": rec.epoch, "epochs": cfg.train.epochs,
                               "loss": rec.loss, "images_per_sec": rec.images_per_sec,
                               "weight_growth": growth}),
        );
        records.push(rec);
        if growth.is_nan() || growth > growth_limit {
            diverged = Some(Diverged {
                epoch: epoch + 1,
                step: steps,
                what: format!(
                    "parameter norm {growth:.3e} × its initial value (limit train.max_weight_growth = {growth_limit})"
                ),
            });
            break 'epochs;
        }
        let meta = CheckpointMeta {
            config_sha256: config_sha.clone(),
            epochs_done: epoch + 1,
            epochs: records.clone(),
            optimizer_t: opt.t,
            proto_seen: protos.as_ref().map(|p| p.seen.clone()),
            tensors_sha256: String::new(),
            wall_time_s: prior_wall + run_start.elapsed().as_secs_f64(),
        };
        last_ckpt = Some(checkpoint::save(&ckpt_dir, &model, &opt, protos.as_ref(), &meta)?);
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }

    let train_secs: f64 = records.iter().map(|r| r.wall_s).sum();
    let train_views: f64 = records.iter().map(|r| r.images_per_sec * r.wall_s).sum();
    let mut metrics = Metrics {
        schema: 1,
        status: "completed".into(),
        epochs_planned: cfg.train.epochs,
        epochs: records,
        eval: None,
        reference: None,
        diverged: None,
        wall_time_s: 0.0,
        train_images_per_sec: if train_secs > 0.0 {
            train_views / train_secs
        } else {
            0.0
        },
        train_images: n,
        threads: rayon::current_num_threads(),
        device: crate::device::label(&opts.device),
        git_commit: git_commit(),
        dataset: cfg.data.dataset.clone(),
        dataset_fingerprint: source.fingerprint().to_string(),
        dataset_verified: source.verified(),
        config_sha256: config_sha,
        protoclr_version: env!("CARGO_PKG_VERSION").into(),
        numerics_version: Some(crate::NUMERICS_VERSION),
        bf16_unit: (model.precision == crate::ops::Precision::Bf16).then(|| crate::ops::bf16::unit().into()),
    };
    let outcome = if let Some(d) = diverged {
        metrics.status = "diverged".into();
        metrics.diverged = Some(d);
        metrics.wall_time_s = prior_wall + run_start.elapsed().as_secs_f64();
        atomic_write(
            &out.join("metrics.json"),
            serde_json::to_string_pretty(&metrics)?.as_bytes(),
        )?;
        Outcome::Diverged(metrics)
    } else {
        let stop_check = |last_ckpt: &Option<PathBuf>| -> Result<()> {
            match signals::stop_requested() {
                Some(signal) => Err(Interrupted {
                    signal,
                    epochs_done: cfg.train.epochs,
                    epochs_planned: cfg.train.epochs,
                    checkpoint: last_ckpt.clone(),
                }
                .into()),
                None => Ok(()),
            }
        };
        stop_check(&last_ckpt)?;
        metrics.eval = Some(source.evaluate(&model, cfg, &pipeline, mean, std, opts.progress)?);
        if cfg.eval.random_init_reference {
            stop_check(&last_ckpt)?;
            emit(
                opts.progress,
                serde_json::json!({"event": "eval", "what": "reference"}),
            );
            let fresh = SimClrModel::new_on(&cfg.model, cfg.seed, &opts.device)?;
            metrics.reference =
                Some(source.evaluate(&fresh, cfg, &pipeline, mean, std, ProgressMode::None)?);
        }
        metrics.wall_time_s = prior_wall + run_start.elapsed().as_secs_f64();
        atomic_write(
            &out.join("metrics.json"),
            serde_json::to_string_pretty(&metrics)?.as_bytes(),
        )?;
        // The run is finished: only the newest checkpoint is kept (the trained weights).
        if let Some(latest) = checkpoint::list(&ckpt_dir, &metrics.config_sha256).first() {
            checkpoint::prune(&ckpt_dir, &metrics.config_sha256, latest.0)?;
        }
        Outcome::Completed(metrics)
    };
    emit(
        opts.progress,
        serde_json::json!({"event": "done", "status": outcome.metrics().status}),
    );
    Ok(outcome)
}

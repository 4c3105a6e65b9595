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
//!
//! [`train`] is the loop; what it drives lives beside it: the batches and the evaluation of
//! either kind of data ([`crate::source`], scored by [`crate::protocol`]), the forward and
//! backward pass ([`crate::step`]), the update ([`crate::optim`]), the checkpoints
//! ([`crate::checkpoint`]), the progress output ([`crate::progress`]) and the `metrics.json`
//! types ([`crate::metrics`], re-exported here).

use crate::augment::Pipeline;
use crate::checkpoint::{self, CheckpointMeta};
use crate::config::{Config, LossMax, LossName, PrototypeKind};
use crate::diag;
use crate::loss::{self, Prototypes};
use crate::model::SimClrModel;
use crate::optim::{lr_at, Optimizer};
use crate::progress::Progress;
use crate::reference;
use crate::signals::{self, Interrupted};
use crate::source::TrainSource;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use protoclr_formats::fsutil::atomic_write;
use protoclr_formats::sha256_hex;
use protoclr_formats::temps::remove_stale_temps;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::metrics::{Diverged, EpochRecord, EvalResult, Metrics, Status};
pub use crate::progress::ProgressMode;

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
    /// Folder of shared random-init reference evaluations ([`crate::reference`]); None computes
    /// the reference in every run.
    pub reference_cache: Option<PathBuf>,
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

/// L2 norm of all trainable parameters.
fn weight_norm(model: &SimClrModel) -> Result<f64> {
    let mut sq = 0f64;
    for (_, v) in &model.params.vars {
        sq += v.as_tensor().sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(sq.sqrt())
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

/// The outcome of a run already finished in `out` with this config (`yaml`, hashed
/// `config_sha`), or None. A `config.yaml` of another config there is an error.
fn finished_run(out: &Path, yaml: &str, config_sha: &str) -> Result<Option<Outcome>> {
    let cfg_path = out.join("config.yaml");
    let Ok(existing) = std::fs::read_to_string(&cfg_path) else {
        return Ok(None);
    };
    if existing != yaml {
        bail!(
            "{} holds a run of a different config; use another --out (nothing was changed)",
            cfg_path.display()
        );
    }
    let Ok(text) = std::fs::read_to_string(out.join("metrics.json")) else {
        return Ok(None);
    };
    Ok(serde_json::from_str::<Metrics>(&text)
        .ok()
        .filter(|m| m.config_sha256 == config_sha)
        .map(|m| {
            if m.status == Status::Diverged {
                Outcome::Diverged(m)
            } else {
                Outcome::Completed(m)
            }
        }))
}

/// The class prototypes of the supervised prototype objective (None for the contrastive ones).
fn prototypes(cfg: &Config, classes: usize) -> Result<Option<Prototypes>> {
    if cfg.loss.name != LossName::SupervisedPrototype {
        return Ok(None);
    }
    Ok(Some(match cfg.loss.prototypes {
        PrototypeKind::Oracle => Prototypes::oracle(classes, cfg.model.proj_dim, cfg.seed)?,
        PrototypeKind::Realistic => Prototypes::realistic(classes, cfg.model.proj_dim, cfg.loss.ema as f32),
    }))
}

/// The error of a run stopped by a signal after `epochs_done` epochs.
fn interrupted(signal: i32, epochs_done: usize, cfg: &Config, checkpoint: &Option<PathBuf>) -> anyhow::Error {
    Interrupted {
        signal,
        epochs_done,
        epochs_planned: cfg.train.epochs,
        checkpoint: checkpoint.clone(),
    }
    .into()
}

/// Writes `metrics.json` into `out` (atomically).
fn write_metrics(out: &Path, metrics: &Metrics) -> Result<()> {
    atomic_write(
        &out.join("metrics.json"),
        serde_json::to_string_pretty(metrics)?.as_bytes(),
    )
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
    if let Some(done) = finished_run(out, &yaml, &config_sha)? {
        return Ok(done);
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
    let cfg_path = out.join("config.yaml");
    if !cfg_path.exists() {
        atomic_write(&cfg_path, yaml.as_bytes())?;
    }
    let (mean, std) = source.mean_std(&cfg.data.dataset);
    let pipeline = Pipeline::new(&cfg.augment, mean, std)?;

    let mut model = SimClrModel::new_on(&cfg.model, cfg.seed, &opts.device)?;
    model.precision = checked_precision(cfg, &opts.device)?;
    if model.precision == crate::ops::Precision::Bf16 && crate::ops::bf16::unit() == "f32" {
        eprintln!(
            "note: `train.precision: bf16` runs the f32 kernels on this CPU (no AMX, and its \
             vdpbf16ps is slower than f32 FMAs); metrics.json records bf16_unit: \"f32\""
        );
    }
    let mut opt = Optimizer::new(&cfg.optim);
    let mut protos = prototypes(cfg, source.num_classes())?;
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
    let smooth = (cfg.loss.max == LossMax::Smooth).then_some(cfg.loss.tau);
    let size = cfg.augment.size;

    let progress = Progress::start(opts.progress, cfg.train.epochs, steps, b, start_epoch);
    let run_start = Instant::now();
    let mut diverged: Option<Diverged> = None;
    'epochs: for epoch in start_epoch..cfg.train.epochs {
        let t_epoch = Instant::now();
        let mut batches = source.epoch(cfg, &pipeline, epoch, steps);
        let mut loss_sum = 0f64;
        let mut stats = diag::EpochStats::default();
        let mut lr = 0.0;
        for step in 0..steps {
            if let Some(signal) = signals::stop_requested() {
                progress.abandon();
                return Err(interrupted(signal, epoch, cfg, &last_ckpt));
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
            let out = model.train_step(&x, |z| match &proto_t {
                None => loss::balanced(z, cfg.loss.tau, alpha, lambda, cfg.loss.decoupled),
                Some(p) => loss::supervised_prototype(z, &labels, p, alpha, lambda, smooth),
            })?;
            let lv = out.loss as f64;
            let at = |what: String| Diverged {
                epoch: epoch + 1,
                step: step + 1,
                what,
            };
            let Some(grads) = out.grads else {
                diverged = Some(at(format!("loss is {lv}")));
                break 'epochs;
            };
            lr = lr_at(cfg.optim.lr, epoch * steps + step, total_steps, warmup);
            if let Err(bad) = opt.step(&model.params.vars, grads, lr)? {
                diverged = Some(at(format!("non-finite gradient in `{}`", bad.0)));
                break 'epochs;
            }
            let zs = out.z.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let mu = protos.as_ref().map(|p| p.mu.as_slice());
            stats.add(diag::view_stats(&zs, cfg.model.proj_dim, &labels, mu));
            if let Some(p) = protos.as_mut() {
                p.update(&out.z, &labels)?;
            }
            loss_sum += lv;
            progress.step(epoch, step, lv, t_epoch);
        }
        let wall = t_epoch.elapsed().as_secs_f64();
        let (mean_direction, proto_train_acc) = stats.means();
        let rec = EpochRecord {
            epoch: epoch + 1,
            loss: loss_sum / steps as f64,
            lr,
            images_per_sec: 2.0 * (b * steps) as f64 / wall,
            wall_s: wall,
            mean_direction,
            proto_train_acc,
        };
        let growth = weight_norm(&model)? / init_norm;
        progress.epoch(&rec, growth);
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
    progress.finish();

    let train_secs: f64 = records.iter().map(|r| r.wall_s).sum();
    let train_views: f64 = records.iter().map(|r| r.images_per_sec * r.wall_s).sum();
    let mut metrics = Metrics {
        schema: 1,
        status: Status::Completed,
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
        dataset: cfg.data.dataset.to_string(),
        dataset_fingerprint: source.fingerprint().to_string(),
        dataset_verified: source.verified(),
        config_sha256: config_sha,
        protoclr_version: env!("CARGO_PKG_VERSION").into(),
        numerics_version: Some(crate::NUMERICS_VERSION),
        bf16_unit: (model.precision == crate::ops::Precision::Bf16).then(|| crate::ops::bf16::unit().into()),
    };
    let outcome = if let Some(d) = diverged {
        metrics.status = Status::Diverged;
        metrics.diverged = Some(d);
        metrics.wall_time_s = prior_wall + run_start.elapsed().as_secs_f64();
        write_metrics(out, &metrics)?;
        Outcome::Diverged(metrics)
    } else {
        let stop_check = || match signals::stop_requested() {
            Some(signal) => Err(interrupted(signal, cfg.train.epochs, cfg, &last_ckpt)),
            None => Ok(()),
        };
        stop_check()?;
        metrics.eval = Some(source.evaluate(&model, cfg, &pipeline, mean, std, progress.mode())?);
        if cfg.eval.random_init_reference {
            stop_check()?;
            progress.event(serde_json::json!({"event": "eval", "what": "reference"}));
            let evaluate_fresh = || -> Result<EvalResult> {
                let fresh = SimClrModel::new_on(&cfg.model, cfg.seed, &opts.device)?;
                source.evaluate(&fresh, cfg, &pipeline, mean, std, ProgressMode::None)
            };
            metrics.reference = Some(match &opts.reference_cache {
                None => evaluate_fresh()?,
                Some(dir) => {
                    let inputs =
                        reference::inputs(cfg, source.fingerprint(), &metrics.device, metrics.threads)?;
                    match reference::load(dir, &reference::key(&inputs)) {
                        Some(r) => r,
                        None => {
                            let r = evaluate_fresh()?;
                            reference::store(dir, &inputs, &r)?;
                            r
                        }
                    }
                }
            });
        }
        metrics.wall_time_s = prior_wall + run_start.elapsed().as_secs_f64();
        write_metrics(out, &metrics)?;
        // The run is finished: only the newest checkpoint is kept (the trained weights).
        if let Some(latest) = checkpoint::list(&ckpt_dir, &metrics.config_sha256).first() {
            checkpoint::prune(&ckpt_dir, &metrics.config_sha256, latest.0)?;
        }
        Outcome::Completed(metrics)
    };
    progress.event(serde_json::json!({"event": "done", "status": outcome.metrics().status.as_str()}));
    Ok(outcome)
}

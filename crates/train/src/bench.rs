//! Throughput benchmarks: one SimCLR training step (two views, NT-Xent, SGD with momentum) and
//! inference, on random 32×32 inputs, timed per phase; peak RSS from `/proc/self/status`.
//! Speed targets live here, never in timed unit tests.

use crate::config::{ModelConfig, OptimConfig, OptimName};
use crate::loss;
use crate::model::SimClrModel;
use crate::optim::Optimizer;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

/// What `protoclr bench step` measures.
#[derive(Debug, Serialize)]
pub struct StepBench {
    pub model: String,
    pub width: usize,
    pub batch: usize,
    pub threads: usize,
    pub ops: String,
    /// Arithmetic of the convolutions (`f32` | `bf16`).
    pub precision: String,
    /// With `bf16`, the unit that multiplied ([`crate::ops::bf16::unit`]: `amx`,
    /// `avx512_bf16`, or `f32` where neither outruns f32 and bf16 falls back to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bf16_unit: Option<String>,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub images_per_sec: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    pub step_ms: f64,
    pub peak_rss_mb: f64,
}

/// What `protoclr bench infer` measures.
#[derive(Debug, Serialize)]
pub struct InferBench {
    pub model: String,
    pub width: usize,
    pub batch: usize,
    pub threads: usize,
    pub ops: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub images_per_sec: f64,
    pub peak_rss_mb: f64,
}

/// Peak resident set size of this process in MB (VmHWM), 0 where unavailable.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The ops actually used: `model.ops`, except `stock` wherever the custom CPU kernels cannot run.
fn ops_label(cfg: &ModelConfig, device: &Device) -> String {
    if crate::model::uses_custom_ops(cfg, device) {
        "custom"
    } else {
        "stock"
    }
    .into()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn random_images(n: usize, side: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * side * side)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    Ok(Tensor::from_vec(v, (n, 3, side, side), device)?)
}

/// Median over `steps` timed steps (forward = encoder and head up to the loss; backward = the
/// loss's value, its backward pass and the encoder's) after `warmup` untimed ones; `batch` images → 2·batch views.
/// On a CUDA device the loss value and the gradients' copy to the host synchronise each phase.
pub fn step(
    model_cfg: &ModelConfig,
    batch: usize,
    steps: usize,
    warmup: usize,
    precision: crate::ops::Precision,
    device: &Device,
) -> Result<StepBench> {
    let mut model = SimClrModel::new_on(model_cfg, 0, device)?;
    if precision == crate::ops::Precision::Bf16 {
        anyhow::ensure!(
            crate::model::uses_custom_ops(model_cfg, device) && crate::ops::bf16::has_bf16(),
            "--precision bf16 needs the custom ops on a CPU with AVX-512 BF16"
        );
    }
    model.precision = precision;
    let ocfg = OptimConfig {
        name: OptimName::Sgd,
        ..OptimConfig::default()
    };
    let mut opt = Optimizer::new(&ocfg);
    let x = random_images(2 * batch, 32, 1, device)?;
    let (mut fw, mut bw, mut op, mut tot) = (vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let mut t1 = t0;
        let out = model.train_step(&x, |z| {
            let l = loss::ntxent(z, 0.5);
            t1 = Instant::now();
            l
        })?;
        let t2 = Instant::now();
        let _ = opt.step(&model.params.vars, out.grads.expect("finite loss"), 0.01)?;
        let t3 = Instant::now();
        if i >= warmup {
            fw.push((t1 - t0).as_secs_f64() * 1e3);
            bw.push((t2 - t1).as_secs_f64() * 1e3);
            op.push((t3 - t2).as_secs_f64() * 1e3);
            tot.push((t3 - t0).as_secs_f64() * 1e3);
        }
    }
    let step_ms = median(tot);
    Ok(StepBench {
        model: model_cfg.arch.to_string(),
        width: model_cfg.width,
        batch,
        threads: rayon::current_num_threads(),
        ops: ops_label(model_cfg, device),
        precision: precision.as_str().into(),
        bf16_unit: (precision == crate::ops::Precision::Bf16).then(|| crate::ops::bf16::unit().into()),
        device: crate::device::label(device),
        images_per_sec: 2.0 * batch as f64 / (step_ms / 1e3),
        forward_ms: median(fw),
        backward_ms: median(bw),
        optimizer_ms: median(op),
        step_ms,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// Inference (eval-mode encoder) throughput.
pub fn infer(
    model_cfg: &ModelConfig,
    batch: usize,
    steps: usize,
    warmup: usize,
    device: &Device,
) -> Result<InferBench> {
    let model = SimClrModel::new_on(model_cfg, 0, device)?;
    let x = random_images(batch, 32, 2, device)?;
    let mut tot = vec![];
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let h = model.encoder.forward(&x, false)?;
        let _ = h.sum_all()?.to_scalar::<f32>()?;
        if i >= warmup {
            tot.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(InferBench {
        model: model_cfg.arch.to_string(),
        width: model_cfg.width,
        batch,
        threads: rayon::current_num_threads(),
        ops: ops_label(model_cfg, device),
        device: crate::device::label(device),
        images_per_sec: batch as f64 / median(tot),
        peak_rss_mb: peak_rss_mb(),
    })
}

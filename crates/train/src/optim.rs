//! Optimisers (SGD with momentum, LARS as in SimCLR, AdamW) and the learning-rate schedule
//! (linear warm-up, then cosine decay to zero), on flat f32 buffers.
//!
//! - SGD (PyTorch semantics): `g ← ∇ + wd·p; b ← μ·b + g; p ← p − lr·b`.
//! - LARS (SimCLR): `g ← ∇ + wd·p`; for adapted parameters `g ← η·‖p‖/‖g‖ · g` (when both norms
//!   are > 0); then momentum as SGD. Batch-norm parameters and biases are neither decayed nor
//!   adapted when `exclude_bn_bias` is set.
//! - AdamW (decoupled decay): `p ← p − lr·wd·p`, then Adam with bias correction, ε = 1e-8.

use crate::config::{OptimConfig, OptimName};
use crate::model::is_bn_or_bias;
use anyhow::Result;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// Learning rate at global step `step` of `total` steps with `warmup` warm-up steps.
pub fn lr_at(base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = (step - warmup) as f64 / span as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
}

/// Optimiser state: per-parameter buffers by name.
pub struct Optimizer {
    cfg: OptimConfig,
    /// Momentum buffer (SGD/LARS) or first moment (AdamW).
    pub m: HashMap<String, Vec<f32>>,
    /// Second moment (AdamW).
    pub v: HashMap<String, Vec<f32>>,
    /// Steps taken.
    pub t: u64,
}

/// A non-finite gradient, named.
#[derive(Debug)]
pub struct NonFinite(pub String);

impl Optimizer {
    pub fn new(cfg: &OptimConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            m: HashMap::new(),
            v: HashMap::new(),
            t: 0,
        }
    }

    /// Applies one update with learning rate `lr`; `grads[i]` is the gradient of `vars[i]`
    /// (None: no gradient). Returns `Err(NonFinite)` (and changes nothing) if any gradient
    /// holds a NaN or an infinity.
    pub fn step(
        &mut self,
        vars: &[(String, Var)],
        gs: Vec<Option<Vec<f32>>>,
        lr: f64,
    ) -> Result<std::result::Result<(), NonFinite>> {
        for ((name, _), g) in vars.iter().zip(&gs) {
            if g.as_ref().is_some_and(|g| g.iter().any(|x| !x.is_finite())) {
                return Ok(Err(NonFinite(name.clone())));
            }
        }
        self.t += 1;
        let c = self.cfg.clone();
        for ((name, var), g) in vars.iter().zip(gs) {
            let Some(mut g) = g else { continue };
            let excluded = c.exclude_bn_bias && is_bn_or_bias(name);
            let mut p = var.flatten_all()?.to_vec1::<f32>()?;
            let wd = if excluded { 0.0 } else { c.weight_decay as f32 };
            match c.name {
                OptimName::Sgd | OptimName::Lars => {
                    g.iter_mut().zip(&p).for_each(|(g, p)| *g += wd * p);
                    if c.name == OptimName::Lars && !excluded {
                        let pn = p.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                        let gn = g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                        if pn > 0.0 && gn > 0.0 {
                            let r = (c.trust_coef * pn / gn) as f32;
                            g.iter_mut().for_each(|v| *v *= r);
                        }
                    }
                    let buf = self.m.entry(name.clone()).or_insert_with(|| vec![0.0; g.len()]);
                    let mu = c.momentum as f32;
                    for ((b, gi), pi) in buf.iter_mut().zip(&g).zip(p.iter_mut()) {
                        *b = mu * *b + gi;
                        *pi -= lr as f32 * *b;
                    }
                }
                OptimName::Adamw => {
                    let (b1, b2) = (c.betas[0], c.betas[1]);
                    let m = self.m.entry(name.clone()).or_insert_with(|| vec![0.0; g.len()]);
                    let v = self.v.entry(name.clone()).or_insert_with(|| vec![0.0; g.len()]);
                    let bc1 = 1.0 - b1.powi(self.t as i32);
                    let bc2 = 1.0 - b2.powi(self.t as i32);
                    for i in 0..g.len() {
                        p[i] -= (lr * wd as f64) as f32 * p[i];
                        m[i] = (b1 as f32) * m[i] + (1.0 - b1 as f32) * g[i];
                        v[i] = (b2 as f32) * v[i] + (1.0 - b2 as f32) * g[i] * g[i];
                        let mh = m[i] as f64 / bc1;
                        let vh = v[i] as f64 / bc2;
                        p[i] -= (lr * mh / (vh.sqrt() + 1e-8)) as f32;
                    }
                }
            }
            var.set(&Tensor::from_vec(p, var.dims(), var.device())?)?;
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::grads_from_store;
    use candle_core::Device;

    fn cfg(name: OptimName) -> OptimConfig {
        OptimConfig {
            name,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            exclude_bn_bias: true,
            warmup_epochs: 0.0,
            betas: [0.9, 0.999],
            trust_coef: 0.001,
        }
    }

    fn one_step(name: OptimName, var_name: &str, steps: usize) -> Vec<f32> {
        let p = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let vars = vec![(var_name.to_string(), p.clone())];
        let mut opt = Optimizer::new(&cfg(name));
        for _ in 0..steps {
            // loss = 3·p₀ + p₁²  → ∇ = [3, 2·p₁]
            let loss = ((p.as_tensor().get(0).unwrap() * 3.0).unwrap()
                + p.as_tensor().get(1).unwrap().sqr().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&vars, grads_from_store(&vars, &grads).unwrap(), 0.1)
                .unwrap()
                .unwrap();
        }
        p.to_vec1::<f32>().unwrap()
    }

    #[test]
    fn sgd_matches_hand_computation() {
        // step 1: g = [3 + 0.01, −4 − 0.02] ; b = g ; p = p − 0.1·b
        let p = one_step(OptimName::Sgd, "w.weight", 1);
        assert!((p[0] - (1.0 - 0.1 * 3.01)).abs() < 1e-6);
        assert!((p[1] - (-2.0 + 0.1 * 4.02)).abs() < 1e-6);
        // excluded parameter: no weight decay
        let p = one_step(OptimName::Sgd, "bn.gamma", 1);
        assert!((p[0] - 0.7).abs() < 1e-6);
        // two steps with momentum: b₂ = 0.9·b₁ + g₂
        let p = one_step(OptimName::Sgd, "bn.gamma", 2);
        let p1 = -2.0f32 + 0.4;
        let b2 = 0.9 * -4.0 + 2.0 * p1;
        assert!((p[1] - (p1 - 0.1 * b2)).abs() < 1e-5);
    }

    #[test]
    fn lars_scales_by_trust_ratio() {
        let p = one_step(OptimName::Lars, "w.weight", 1);
        let g = [3.01f64, -4.02];
        let pn = 5f64.sqrt();
        let gn = (g[0] * g[0] + g[1] * g[1]).sqrt();
        let r = 0.001 * pn / gn;
        assert!((p[0] as f64 - (1.0 - 0.1 * r * g[0])).abs() < 1e-6);
        // excluded from adaptation: plain SGD step without decay
        let p = one_step(OptimName::Lars, "fc.bias", 1);
        assert!((p[0] - 0.7).abs() < 1e-6);
    }

    #[test]
    fn adamw_first_step_is_sign_step() {
        // First Adam step moves each coordinate by lr·sign(g) (bias-corrected), after decay.
        let p = one_step(OptimName::Adamw, "fc.bias", 1);
        assert!((p[0] - 0.9).abs() < 1e-5);
        assert!((p[1] - (-1.9)).abs() < 1e-5);
        let p = one_step(OptimName::Adamw, "w.weight", 1);
        assert!((p[0] - (1.0 - 0.1 * 0.01 - 0.1)).abs() < 1e-5);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((lr_at(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((lr_at(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 55, 100, 10) - 0.5).abs() < 1e-12);
        assert!(lr_at(1.0, 100, 100, 10).abs() < 1e-12);
    }

    #[test]
    fn non_finite_gradient_is_reported_not_applied() {
        let p = Var::from_tensor(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap()).unwrap();
        let vars = vec![("w.weight".to_string(), p.clone())];
        let loss = (p.as_tensor().log().unwrap() * f64::NAN)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = Optimizer::new(&cfg(OptimName::Sgd));
        let r = opt
            .step(&vars, grads_from_store(&vars, &grads).unwrap(), 0.1)
            .unwrap();
        assert!(matches!(r, Err(NonFinite(ref n)) if n == "w.weight"));
        assert_eq!(p.to_vec1::<f32>().unwrap(), vec![1.0]);
    }
}

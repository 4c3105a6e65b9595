//! Batch normalisation over `[N, C, …]` inputs (statistics per channel over N and the trailing
//! dimensions), optionally fused with the ReLU that follows it, as one candle `CustomOp3`
//! `(x, γ, β) → y` in training mode and a `CustomOp1` in evaluation mode.
//!
//! Training forward: `x̂ = (x − μ_B)/√(σ²_B + ε)`, `y = relu?(γ·x̂ + β)` with the biased batch
//! variance; the batch mean and the *unbiased* variance are returned for the running statistics
//! (PyTorch's convention: `r ← (1 − m)·r + m·batch`, m = 0.1).
//! Backward with `g = dy·[y > 0]` (or `dy` without ReLU), M = N·S:
//! `dβ = Σg`, `dγ = Σg·x̂`, `dx = γ/(M·√(σ²+ε)) · (M·g − dβ − x̂·dγ)`.

use super::{cpu_slice, output_vec, simd, with_data, PlaneMoments};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Batch statistics of one forward pass: mean and unbiased variance per channel.
#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub var_unbiased: Vec<f32>,
}

fn dims3(d: &[usize]) -> Result<(usize, usize, usize)> {
    if d.len() < 2 {
        return Err(candle_core::Error::Msg(format!(
            "batch norm: expected [N, C, …], got {d:?}"
        )));
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// Per-channel (mean, 1/√(var+ε), var) from the planes' [`PlaneMoments`] (`[n][c]`, planes of
/// `s` values), merged exactly (Chan et al.): `M2 = Σ_p (M2_p + s·(x̄_p − x̄)²)`.
fn merged_stats(mom: &[PlaneMoments], n: usize, c: usize, s: usize, eps: f64) -> Vec<(f32, f32, f64)> {
    let m = (n * s) as f64;
    (0..c)
        .map(|ch| {
            let planes = || (0..n).map(|img| mom[img * c + ch]);
            let mean = planes().map(|p| p.0).sum::<f64>() / m;
            let m2: f64 = planes()
                .map(|(sum, m2)| m2 + s as f64 * (sum / s as f64 - mean).powi(2))
                .sum();
            let var = m2 / m;
            (mean as f32, (1.0 / (var + eps).sqrt()) as f32, var)
        })
        .collect()
}

/// Per-channel (mean, 1/√(var+ε), var) of a `[n, c, s]` batch: f32 lanes within an image's
/// plane, f64 across planes; two passes (mean, then squared deviations) for accuracy.
fn channel_stats(x: &[f32], n: usize, c: usize, s: usize, eps: f64) -> Vec<(f32, f32, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = simd::Planes { s, stride: c * s, n };
            let xs = &x[(ch * s).min(x.len())..];
            let m = (n * s) as f64;
            let mean = simd::moments(xs, planes, 0.0).0 / m;
            let mf = mean as f32;
            let var = simd::moments(xs, planes, mf).1 / m;
            (mf, (1.0 / (var + eps).sqrt()) as f32, var)
        })
        .collect()
}

/// `y[n][c][·] = relu?(x·scale[c] + shift[c])`, parallel over images.
fn affine(x: &[f32], c: usize, s: usize, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    // SAFETY: the chunks cover `y` and `affine` writes each whole.
    unsafe {
        output_vec(x.len(), |y| {
            y.par_chunks_mut(c * s.max(1))
                .zip(x.par_chunks(c * s.max(1)))
                .for_each(|(yi, xi)| simd::affine(yi, xi, s, scale, shift, relu))
        })
    }
}

/// Training-mode op. Holds the statistics of its forward pass for the backward pass.
struct BnTrain {
    eps: f64,
    relu: bool,
    /// (mean, inv_std) per channel, filled by the forward pass.
    saved: Mutex<Vec<(f32, f32)>>,
    stats: Arc<Mutex<BatchStats>>,
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "protoclr-batchnorm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = dims3(l1.dims())?;
        let x = cpu_slice(s1, l1, self.name())?;
        let gamma = cpu_slice(s2, l2, self.name())?;
        let beta = cpu_slice(s3, l3, self.name())?;
        if gamma.len() != c || beta.len() != c {
            return Err(candle_core::Error::Msg(format!(
                "batch norm: {c} channels but γ has {} and β {}",
                gamma.len(),
                beta.len()
            )));
        }
        let f = train_fold_raw(x, n, c, s, gamma, beta, self.eps, None);
        let y = affine(x, c, s, &f.scale, &f.shift, self.relu);
        *self.stats.lock().unwrap() = f.stats;
        *self.saved.lock().unwrap() = f.saved;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = dims3(x.dims())?;
        let saved = self.saved.lock().unwrap().clone();
        let relu = self.relu;
        let (dx, dgamma, dbeta) = with_data(x, self.name(), |xs| {
            with_data(gamma, self.name(), |gs| {
                with_data(res, self.name(), |ys| {
                    with_data(grad, self.name(), |dys| {
                        let mask = if relu { Mask::Output(ys) } else { Mask::None };
                        backward_raw(xs, gs, mask, dys, &saved, n, c, s)
                    })
                })
            })
        })????;
        Ok((
            Some(Tensor::from_vec(dx, x.dims(), x.device())?),
            Some(Tensor::from_vec(dgamma, gamma.dims(), x.device())?),
            Some(Tensor::from_vec(dbeta, gamma.dims(), x.device())?),
        ))
    }
}

/// The ReLU that the gradient reaching a batch norm went through, if any.
#[derive(Debug, Clone, Copy)]
pub enum Mask<'a> {
    /// None: the gradient is the output gradient.
    None,
    /// A ReLU whose output is given (laid out as x): the gradient passes where it is positive.
    Output(&'a [f32]),
    /// The batch norm's own fused ReLU, recomputed from x and β (`x·scale + shift > 0` with the
    /// forward pass's own scale and shift, so bit-identical to `y > 0`) without reading y.
    Own { beta: &'a [f32] },
}

/// Backward on raw buffers: (dx, dγ, dβ) from the input, γ, the ReLU mask and the output
/// gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward_raw(
    x: &[f32],
    gamma: &[f32],
    mask: Mask,
    dy: &[f32],
    saved: &[(f32, f32)],
    n: usize,
    c: usize,
    s: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // The forward pass's folded scale and shift (same f32 operations), for `Mask::Own`.
    let ab: Vec<(f32, f32)> = match mask {
        Mask::Own { beta } => (0..c)
            .map(|ch| {
                let scale = gamma[ch] * saved[ch].1;
                (scale, beta[ch] - saved[ch].0 * scale)
            })
            .collect(),
        _ => vec![],
    };
    // Per channel: Σg and Σg·x̂, g the masked output gradient (f32 lanes, flushed into f64).
    let planes = simd::Planes { s, stride: c * s, n };
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mean, inv) = saved[ch];
            let o = (ch * s).min(x.len());
            let gate = match mask {
                Mask::None => simd::Gate::Open,
                Mask::Output(y) => simd::Gate::Output(&y[o..]),
                Mask::Own { .. } => simd::Gate::Affine(&ab[ch..ch + 1]),
            };
            let (sg, sgxc) = simd::grad_sums(&x[o..], &dy[o..], gate, planes, mean);
            (sg, sgxc * inv as f64)
        })
        .collect();
    // dx = k·(m·g − Σg − x̂·Σgx̂) = a·g + b·x + c0 with x̂ = (x − mean)·inv, k = γ·inv/m.
    let m = (n * s) as f32;
    let coef: Vec<[f32; 3]> = (0..c)
        .map(|ch| {
            let (mean, inv) = saved[ch];
            let k = gamma[ch] * inv / m;
            let (sg, sgx) = (sums[ch].0 as f32, sums[ch].1 as f32);
            [k * m, -k * sgx * inv, k * (-sg + sgx * inv * mean)]
        })
        .collect();
    let stride = c * s.max(1);
    // SAFETY: the chunks cover `dx` and `input_grad` writes each whole.
    let dx = unsafe {
        output_vec(x.len(), |dx| {
            dx.par_chunks_mut(stride).enumerate().for_each(|(img, dxi)| {
                let r = img * stride..img * stride + dxi.len();
                let gate = match mask {
                    Mask::None => simd::Gate::Open,
                    Mask::Output(y) => simd::Gate::Output(&y[r.clone()]),
                    Mask::Own { .. } => simd::Gate::Affine(&ab),
                };
                simd::input_grad(dxi, &x[r.clone()], &dy[r], gate, s, &coef);
            })
        })
    };
    let dgamma = sums.iter().map(|t| t.1 as f32).collect();
    let dbeta = sums.iter().map(|t| t.0 as f32).collect();
    (dx, dgamma, dbeta)
}

/// The folded per-channel map of a training-mode forward, `y = relu?(x·scale + shift)`.
pub struct Folded {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    /// Per channel (mean, 1/σ), what the backward pass needs.
    pub saved: Vec<(f32, f32)>,
    pub stats: BatchStats,
}

/// `y = relu?(x·scale + shift)` per channel of a raw `[n, c, s]` buffer (`n` is implied by
/// the length): the map a [`Folded`] holds, applied.
pub fn affine_raw(
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    assert_eq!(x.len(), n * c * s, "batch norm: {n}×{c}×{s} input");
    affine(x, c, s, scale, shift, relu)
}

/// Training-mode statistics of raw `[n, c, s]` buffers, folded into the per-channel map
/// ([`Folded`]) that [`affine_raw`] applies; a caller that applies it inside a later pass
/// (`simd::affine_add_relu`) never writes `y`. `planes`: the input planes' [`PlaneMoments`]
/// (`[n][c]`) if the convolution that produced `x` computed them, saving two passes over `x`.
#[allow(clippy::too_many_arguments)]
pub fn train_fold_raw(
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    planes: Option<&[PlaneMoments]>,
) -> Folded {
    let st = match planes {
        Some(mom) => {
            assert_eq!(mom.len(), n * c, "batch norm: plane moments for {n}×{c} planes");
            merged_stats(mom, n, c, s, eps)
        }
        None => channel_stats(x, n, c, s, eps),
    };
    let scale: Vec<f32> = (0..c).map(|i| gamma[i] * st[i].1).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - st[i].0 * scale[i]).collect();
    let m = (n * s) as f64;
    let corr = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
    let stats = BatchStats {
        mean: st.iter().map(|t| t.0).collect(),
        var_unbiased: st.iter().map(|t| (t.2 * corr) as f32).collect(),
    };
    Folded {
        scale,
        shift,
        saved: st.iter().map(|t| (t.0, t.1)).collect(),
        stats,
    }
}

/// Training-mode batch norm (+ReLU). Returns the output and the batch statistics for the
/// running averages.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchStats)> {
    let stats = Arc::new(Mutex::new(BatchStats::default()));
    let op = BnTrain {
        eps,
        relu,
        saved: Mutex::new(vec![]),
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let st = stats.lock().unwrap().clone();
    Ok((y, st))
}

/// Evaluation-mode op: a per-channel affine map (+ReLU) with folded running statistics.
struct BnEval {
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
}

impl CustomOp1 for BnEval {
    fn name(&self) -> &'static str {
        "protoclr-batchnorm-eval"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, sp) = dims3(l.dims())?;
        let x = cpu_slice(s, l, self.name())?;
        Ok((
            CpuStorage::F32(affine(x, c, sp, &self.scale, &self.shift, self.relu)),
            l.shape().clone(),
        ))
    }
}

/// Evaluation-mode batch norm (+ReLU) with running statistics; not differentiable.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let (scale, shift) = eval_fold(gamma, beta, running_mean, running_var, eps);
    x.contiguous()?.apply_op1_no_bwd(&BnEval { scale, shift, relu })
}

/// Evaluation-mode batch norm folded into a per-channel map `y = x·scale + shift`.
pub fn eval_fold(
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = (0..gamma.len())
        .map(|i| gamma[i] / ((running_var[i] as f64 + eps).sqrt() as f32))
        .collect();
    let shift: Vec<f32> = (0..gamma.len())
        .map(|i| beta[i] - running_mean[i] * scale[i])
        .collect();
    (scale, shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{randn, rel_err};
    use candle_core::{Var, D};

    /// Batch norm written with candle's stock ops (the reference).
    fn stock_bn(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, relu: bool) -> Tensor {
        let dims = x.dims().to_vec();
        let (n, c, s) = dims3(&dims).unwrap();
        let x3 = x.reshape((n, c, s)).unwrap();
        let xt = x3.transpose(0, 1).unwrap().reshape((c, n * s)).unwrap();
        let mean = xt.mean_keepdim(D::Minus1).unwrap();
        let xc = xt.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let xhat = xc.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap();
        let y = xhat
            .broadcast_mul(&gamma.reshape((c, 1)).unwrap())
            .unwrap()
            .broadcast_add(&beta.reshape((c, 1)).unwrap())
            .unwrap();
        let y = if relu { y.relu().unwrap() } else { y };
        y.reshape((c, n, s))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .reshape(dims)
            .unwrap()
    }

    fn check(shape: &[usize], relu: bool) {
        let c = shape[1];
        let x = Var::from_tensor(&randn(shape, 11)).unwrap();
        let gamma = Var::from_tensor(&(randn(&[c], 12) + 1.0).unwrap()).unwrap();
        let beta = Var::from_tensor(&randn(&[c], 13)).unwrap();
        let (y, stats) = batch_norm_train(&x, &gamma, &beta, 1e-5, relu).unwrap();
        let y_ref = stock_bn(&x, &gamma, &beta, 1e-5, relu);
        let e = rel_err(&y, &y_ref);
        assert!(e < 1e-4, "forward rel err {e} for {shape:?} relu={relu}");
        let probe = randn(shape, 14);
        let ga = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (y_ref * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [
            ("dx", x.as_tensor()),
            ("dgamma", gamma.as_tensor()),
            ("dbeta", beta.as_tensor()),
        ] {
            let e = rel_err(ga.get(v).unwrap(), gb.get(v).unwrap());
            assert!(e < 1e-4, "{name} rel err {e} for {shape:?} relu={relu}");
        }
        // Unbiased running variance, as PyTorch.
        let (n, _, s) = dims3(shape).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ch0: Vec<f64> = (0..n)
            .flat_map(|i| xs[i * c * s..i * c * s + s].to_vec())
            .map(|v| v as f64)
            .collect();
        let m = ch0.iter().sum::<f64>() / ch0.len() as f64;
        let v = ch0.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (ch0.len() - 1) as f64;
        assert!((stats.mean[0] as f64 - m).abs() < 1e-5);
        assert!((stats.var_unbiased[0] as f64 - v).abs() < 1e-4);
    }

    #[test]
    fn matches_stock_batch_norm() {
        for relu in [false, true] {
            check(&[4, 3, 5, 5], relu);
            check(&[1, 2, 7, 3], relu); // batch 1, odd sizes
            check(&[16, 8], relu); // BatchNorm1d in the projection head
        }
    }

    #[test]
    fn plane_moments_give_the_same_statistics_as_the_passes_over_x() {
        let (n, c, s) = (5, 3, 37);
        // Offset channels (mean ≫ spread) to exercise the merge's cancellation.
        let x: Vec<f32> = randn(&[n, c, s], 31)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, &v)| v + 10.0 * ((i / s) % c) as f32)
            .collect();
        let mom: Vec<PlaneMoments> = x
            .chunks(s)
            .map(|p| {
                let sum: f64 = p.iter().map(|&v| v as f64).sum();
                let mean = sum / s as f64;
                (sum, p.iter().map(|&v| (v as f64 - mean).powi(2)).sum())
            })
            .collect();
        let (g, b) = (vec![1.5f32; c], vec![0.25f32; c]);
        let forward = |planes| {
            let f = train_fold_raw(&x, n, c, s, &g, &b, 1e-5, planes);
            (affine_raw(&x, n, c, s, &f.scale, &f.shift, true), f.stats)
        };
        let (a, m) = (forward(None), forward(Some(&mom)));
        for ch in 0..c {
            assert!((a.1.mean[ch] - m.1.mean[ch]).abs() <= 1e-6 * (1.0 + a.1.mean[ch].abs()));
            let (va, vm) = (a.1.var_unbiased[ch], m.1.var_unbiased[ch]);
            assert!(
                (va - vm).abs() <= 1e-5 * va,
                "channel {ch}: variance {va} vs {vm}"
            );
        }
        let e = a.0.iter().zip(&m.0).fold(0f32, |e, (p, q)| e.max((p - q).abs()));
        assert!(e < 1e-5, "outputs differ by {e}");
    }

    #[test]
    fn eval_mode_uses_running_statistics() {
        let x = randn(&[2, 3, 2, 2], 21);
        let y = batch_norm_eval(
            &x,
            &[2.0, 1.0, 0.5],
            &[0.1, 0.0, -1.0],
            &[0.5, 0.0, 1.0],
            &[4.0, 1.0, 0.25],
            0.0,
            false,
        )
        .unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ys = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // channel 0 of image 0: 2·(x − 0.5)/2 + 0.1
        for i in 0..4 {
            assert!((ys[i] - ((xs[i] - 0.5) + 0.1)).abs() < 1e-6);
        }
    }
}

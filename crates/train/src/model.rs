//! ResNet-18 / ResNet-50 encoders (CIFAR or ImageNet stem, width multiplier) and the
//! projection head Linear–BN–ReLU–Linear, as plain structs holding candle `Var`s.
//!
//! Every layer runs either on our custom CPU ops ([`crate::ops`]) or on candle's stock ops
//! (`model.ops: stock`), so the two can be compared. Initialisation follows torchvision:
//! Kaiming-normal (fan-out, ReLU) convolutions, γ = 1 and β = 0 in batch norm, and PyTorch's
//! default uniform(±1/√fan_in) for linear layers; all drawn from one seeded ChaCha stream.

use crate::config::{Arch, ModelConfig, Ops, Stem};
use crate::ops;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::cell::RefCell;
use std::collections::HashMap;

/// Batch-norm momentum for the running statistics (PyTorch's default).
pub const BN_MOMENTUM: f32 = 0.1;
/// Batch-norm ε.
pub const BN_EPS: f64 = 1e-5;

/// Named trainable parameters and buffers, in creation order.
pub struct ParamStore {
    rng: Option<ChaCha8Rng>,
    /// Where the parameters live (values are drawn on the host, so they do not depend on it).
    pub device: Device,
    pub vars: Vec<(String, Var)>,
}

impl Default for ParamStore {
    fn default() -> Self {
        Self {
            rng: None,
            device: Device::Cpu,
            vars: vec![],
        }
    }
}

impl ParamStore {
    pub fn new(seed: u64) -> Self {
        Self::new_on(seed, &Device::Cpu)
    }

    /// A store whose parameters are created on `device`.
    pub fn new_on(seed: u64, device: &Device) -> Self {
        Self {
            rng: Some(ChaCha8Rng::seed_from_u64(seed)),
            device: device.clone(),
            vars: vec![],
        }
    }

    fn push(&mut self, name: String, t: Tensor) -> Result<Var> {
        let v = Var::from_tensor(&t.to_device(&self.device)?)?;
        self.vars.push((name, v.clone()));
        Ok(v)
    }

    fn normal(&mut self, name: String, dims: &[usize], std: f32) -> Result<Var> {
        let rng = self.rng.as_mut().expect("seeded store");
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let z: f32 = StandardNormal.sample(rng);
                z * std
            })
            .collect();
        self.push(name, Tensor::from_vec(v, dims, &Device::Cpu)?)
    }

    fn uniform(&mut self, name: String, dims: &[usize], bound: f32) -> Result<Var> {
        let rng = self.rng.as_mut().expect("seeded store");
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
        self.push(name, Tensor::from_vec(v, dims, &Device::Cpu)?)
    }

    fn constant(&mut self, name: String, n: usize, value: f32) -> Result<Var> {
        self.push(name, Tensor::from_vec(vec![value; n], n, &Device::Cpu)?)
    }

    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// Whether layers run on our custom ops: `model.ops: custom` on the CPU. The custom ops are
/// CPU kernels; on a CUDA device every layer runs on candle's stock (CUDA) ops, whatever
/// `model.ops` says.
pub fn uses_custom_ops(cfg: &ModelConfig, device: &Device) -> bool {
    cfg.ops == Ops::Custom && device.is_cpu()
}

/// Whether a parameter is a batch-norm parameter or a bias (excluded from weight decay and LARS
/// adaptation when `optim.exclude_bn_bias` is set).
pub fn is_bn_or_bias(name: &str) -> bool {
    name.ends_with(".gamma") || name.ends_with(".beta") || name.ends_with(".bias")
}

/// Convolution without bias.
pub struct Conv {
    /// Name of the weight parameter.
    pub name: String,
    pub w: Var,
    pub stride: usize,
    pub pad: usize,
}

impl Conv {
    fn new(
        ps: &mut ParamStore,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let std = (2.0 / (cout * k * k) as f32).sqrt();
        let w = ps.normal(format!("{name}.weight"), &[cout, cin, k, k], std)?;
        Ok(Self {
            name: format!("{name}.weight"),
            w,
            stride,
            pad,
        })
    }

    /// The raw kernels' shape of this convolution on an `[n, c, h, w]` input.
    pub(crate) fn shape(
        &self,
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        precision: ops::Precision,
    ) -> Result<ops::conv::ConvShape> {
        Ok(ops::conv::ConvShape {
            n,
            c,
            h,
            w,
            co: self.w.dim(0)?,
            k: self.w.dim(2)?,
            stride: self.stride,
            pad: self.pad,
            precision,
        })
    }

    pub fn forward(&self, x: &Tensor, custom: bool) -> Result<Tensor> {
        Ok(if custom {
            ops::conv2d(x, &self.w, self.stride, self.pad)?
        } else {
            x.conv2d(&self.w, self.pad, self.stride, 1, 1)?
        })
    }
}

/// Batch norm over channels of `[N, C, …]` with running statistics.
pub struct BatchNorm {
    pub name: String,
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: RefCell<Vec<f32>>,
    pub running_var: RefCell<Vec<f32>>,
}

impl BatchNorm {
    fn new(ps: &mut ParamStore, name: &str, c: usize) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            gamma: ps.constant(format!("{name}.gamma"), c, 1.0)?,
            beta: ps.constant(format!("{name}.beta"), c, 0.0)?,
            running_mean: RefCell::new(vec![0.0; c]),
            running_var: RefCell::new(vec![1.0; c]),
        })
    }

    pub(crate) fn update_running(&self, mean: &[f32], var_unbiased: &[f32]) {
        let m = BN_MOMENTUM;
        for (r, b) in self.running_mean.borrow_mut().iter_mut().zip(mean) {
            *r = (1.0 - m) * *r + m * b;
        }
        for (r, b) in self.running_var.borrow_mut().iter_mut().zip(var_unbiased) {
            *r = (1.0 - m) * *r + m * b;
        }
    }

    /// Evaluation mode folded into a per-channel map `y = x·scale + shift` (running statistics).
    fn eval_fold(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(ops::batchnorm::eval_fold(
            &self.gamma.to_vec1::<f32>()?,
            &self.beta.to_vec1::<f32>()?,
            &self.running_mean.borrow(),
            &self.running_var.borrow(),
            BN_EPS,
        ))
    }

    /// Normalises `x` (batch statistics when `train`, running statistics otherwise), then ReLU
    /// when `relu`. Training updates the running statistics.
    pub fn forward(&self, x: &Tensor, relu: bool, train: bool, custom: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        if custom {
            if train {
                let (y, st) = ops::batch_norm_train(x, &self.gamma, &self.beta, BN_EPS, relu)?;
                self.update_running(&st.mean, &st.var_unbiased);
                return Ok(y);
            }
            let g = self.gamma.to_vec1::<f32>()?;
            let b = self.beta.to_vec1::<f32>()?;
            return Ok(ops::batch_norm_eval(
                x,
                &g,
                &b,
                &self.running_mean.borrow(),
                &self.running_var.borrow(),
                BN_EPS,
                relu,
            )?);
        }
        // Stock candle ops: channels last in a [C, M] view.
        let dims = x.dims().to_vec();
        let n = dims[0];
        let s: usize = dims[2..].iter().product();
        let xt = x.reshape((n, c, s))?.transpose(0, 1)?.reshape((c, n * s))?;
        let (mean, var) = if train {
            let mean = xt.mean_keepdim(D::Minus1)?;
            let var = xt.broadcast_sub(&mean)?.sqr()?.mean_keepdim(D::Minus1)?;
            let m = (n * s) as f32;
            let corr = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
            let mv = mean.flatten_all()?.to_vec1::<f32>()?;
            let vv: Vec<f32> = var
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|v| v * corr)
                .collect();
            self.update_running(&mv, &vv);
            (mean, var)
        } else {
            (
                Tensor::from_vec(self.running_mean.borrow().clone(), (c, 1), x.device())?,
                Tensor::from_vec(self.running_var.borrow().clone(), (c, 1), x.device())?,
            )
        };
        let xhat = xt.broadcast_sub(&mean)?.broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
        let y = xhat
            .broadcast_mul(&self.gamma.reshape((c, 1))?)?
            .broadcast_add(&self.beta.reshape((c, 1))?)?;
        let y = if relu { y.relu()? } else { y };
        Ok(y.reshape((c, n, s))?.transpose(0, 1)?.reshape(dims)?)
    }
}

/// Fully connected layer `y = x·Wᵀ + b`.
pub struct Linear {
    pub w: Var,
    pub b: Option<Var>,
}

impl Linear {
    fn new(ps: &mut ParamStore, name: &str, din: usize, dout: usize, bias: bool) -> Result<Self> {
        let bound = 1.0 / (din as f32).sqrt();
        let w = ps.uniform(format!("{name}.weight"), &[dout, din], bound)?;
        let b = if bias {
            Some(ps.uniform(format!("{name}.bias"), &[dout], bound)?)
        } else {
            None
        };
        Ok(Self { w, b })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Convolution → batch norm (→ ReLU): the unit every ResNet layer is made of.
pub struct Unit {
    pub conv: Conv,
    pub bn: BatchNorm,
    pub relu: bool,
}

impl Unit {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ps: &mut ParamStore,
        name: &str,
        bn_name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        relu: bool,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv::new(ps, name, cin, cout, k, stride, pad)?,
            bn: BatchNorm::new(ps, bn_name, cout)?,
            relu,
        })
    }

    fn forward(&self, x: &Tensor, train: bool, custom: bool) -> Result<Tensor> {
        if custom && !train {
            return self.forward_eval(x);
        }
        self.bn
            .forward(&self.conv.forward(x, custom)?, self.relu, train, custom)
    }

    /// Evaluation mode with the custom ops: the batch norm (+ReLU), folded into a per-channel
    /// map, is applied by the convolution as it writes its output ([`ops::conv::Epilogue`]),
    /// bit-identical to the convolution followed by the batch-norm pass.
    fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let (n, c, h, w) = x.dims4()?;
        let shape = self.conv.shape(n, c, h, w, ops::Precision::F32)?;
        let (scale, shift) = self.bn.eval_fold()?;
        let epi = ops::conv::Epilogue {
            scale: &scale,
            shift: &shift,
            relu: self.relu,
        };
        let y = ops::with_data(&x, "unit", |xv| {
            ops::with_data(&self.conv.w, "unit", |wv| {
                ops::conv::forward_raw_affine(xv, wv, &shape, &epi)
            })
        })??;
        let (oh, ow) = shape.out_hw();
        Ok(Tensor::from_vec(y, (n, shape.co, oh, ow), x.device())?)
    }
}

/// A residual block: a chain of units (the last without ReLU), a shortcut (a 1×1 unit when the
/// shape changes, else the identity), then `relu(chain + shortcut)`.
/// Basic block: 3×3, 3×3. Bottleneck: 1×1, 3×3 (stride), 1×1 (×4 channels).
pub struct Block {
    pub chain: Vec<Unit>,
    pub down: Option<Unit>,
}

impl Block {
    fn forward(&self, x: &Tensor, train: bool, custom: bool) -> Result<Tensor> {
        if custom && !train {
            if let Some(y) = self.forward_eval_fused(x)? {
                return Ok(y);
            }
        }
        let mut out = x.clone();
        for u in &self.chain {
            out = u.forward(&out, train, custom)?;
        }
        let short = match &self.down {
            Some(u) => u.forward(x, train, custom)?,
            None => x.clone(),
        };
        Ok(if custom {
            ops::add_relu(&out, &short)?
        } else {
            (out + short)?.relu()?
        })
    }

    /// Evaluation mode with the custom ops, where the batch norms ending the chain and the
    /// projection shortcut have no ReLU of their own (ResNet's): those batch norms are applied
    /// inside the final `relu(chain + shortcut)` pass (`ops::residual::affine_add_relu_raw`,
    /// bit-identical to applying them first), so their outputs are never written. `None` for
    /// any other block.
    fn forward_eval_fused(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let (last, head) = self.chain.split_last().expect("a block has at least one unit");
        if last.relu || self.down.as_ref().is_some_and(|u| u.relu) {
            return Ok(None);
        }
        let mut h = x.clone();
        for u in head {
            h = u.forward(&h, false, true)?;
        }
        let t = last.conv.forward(&h, true)?.contiguous()?;
        let (a, b) = last.bn.eval_fold()?;
        let (_, c, oh, ow) = t.dims4()?;
        let down = match &self.down {
            Some(u) => Some((u.conv.forward(x, true)?.contiguous()?, u.bn.eval_fold()?)),
            None => None,
        };
        let x = x.contiguous()?;
        let y = ops::with_data(&t, "block", |tv| -> Result<Vec<f32>> {
            let fused =
                |r: ops::simd::Addend<'_>| ops::residual::affine_add_relu_raw(tv, c, oh * ow, &a, &b, r);
            Ok(match &down {
                Some((d, (da, db))) => ops::with_data(d, "block", |dv| {
                    fused(ops::simd::Addend::Affine { x: dv, a: da, b: db })
                })?,
                None => ops::with_data(&x, "block", |xv| fused(ops::simd::Addend::Plain(xv)))?,
            })
        })??;
        Ok(Some(Tensor::from_vec(y, t.dims(), t.device())?))
    }
}

/// 3×3 stride-2 max-pool with padding 1 as the maximum of nine strided views, so that candle
/// can differentiate it (its own max-pool backward needs kernel = stride). Zero padding is exact
/// here because the input comes out of a ReLU (≥ 0).
fn maxpool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    let p = x.pad_with_zeros(2, 1, 2)?.pad_with_zeros(3, 1, 2)?;
    let mut out: Option<Tensor> = None;
    for dy in 0..3 {
        let rows = p
            .narrow(2, dy, 2 * oh)?
            .reshape((n, c, oh, 2, w + 3))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dx in 0..3 {
            let v = rows
                .narrow(3, dx, 2 * ow)?
                .reshape((n, c, oh, ow, 2))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            out = Some(match out {
                None => v,
                Some(o) => o.maximum(&v)?,
            });
        }
    }
    Ok(out.expect("nine views"))
}

/// A ResNet encoder: stem, four stages, global average pooling.
pub struct ResNet {
    pub stem: Unit,
    pub imagenet_stem: bool,
    pub blocks: Vec<Block>,
    /// Dimension of the pooled representation.
    pub feat_dim: usize,
    pub custom: bool,
    /// The device of the parameters (inputs must be put there).
    pub device: Device,
}

impl ResNet {
    pub fn new(ps: &mut ParamStore, cfg: &ModelConfig) -> Result<Self> {
        let w = cfg.width;
        let (bottleneck, depths) = match cfg.arch {
            Arch::Resnet18 => (false, [2, 2, 2, 2]),
            Arch::Resnet50 => (true, [3, 4, 6, 3]),
        };
        let imagenet_stem = cfg.stem == Stem::Imagenet;
        let (k, s, p) = if imagenet_stem { (7, 2, 3) } else { (3, 1, 1) };
        let stem = Unit::new(ps, "encoder.stem", "encoder.stem_bn", 3, w, k, s, p, true)?;
        let expansion = if bottleneck { 4 } else { 1 };
        let mut cin = w;
        let mut blocks = vec![];
        for (stage, &depth) in depths.iter().enumerate() {
            let planes = w << stage;
            for i in 0..depth {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let name = format!("encoder.layer{}.{}", stage + 1, i);
                let cout = planes * expansion;
                let down = if stride != 1 || cin != cout {
                    let (cn, bn) = (format!("{name}.down"), format!("{name}.down_bn"));
                    Some(Unit::new(ps, &cn, &bn, cin, cout, 1, stride, 0, false)?)
                } else {
                    None
                };
                let u = |ps: &mut ParamStore, j: usize, ci, co, k, s, p, relu| {
                    Unit::new(
                        ps,
                        &format!("{name}.conv{j}"),
                        &format!("{name}.bn{j}"),
                        ci,
                        co,
                        k,
                        s,
                        p,
                        relu,
                    )
                };
                let chain = if bottleneck {
                    vec![
                        u(ps, 1, cin, planes, 1, 1, 0, true)?,
                        u(ps, 2, planes, planes, 3, stride, 1, true)?,
                        u(ps, 3, planes, cout, 1, 1, 0, false)?,
                    ]
                } else {
                    vec![
                        u(ps, 1, cin, planes, 3, stride, 1, true)?,
                        u(ps, 2, planes, planes, 3, 1, 1, false)?,
                    ]
                };
                // Parameters are created (and draw from the seeded RNG) in the order: the
                // shortcut's conv/bn (`down`, above) first, then the conv/bn units of the chain.
                // The order fixes every initial value; changing it changes the numerics
                // (`crate::NUMERICS_VERSION`).
                blocks.push(Block { chain, down });
                cin = cout;
            }
        }
        Ok(Self {
            stem,
            imagenet_stem,
            blocks,
            feat_dim: cin,
            custom: uses_custom_ops(cfg, &ps.device),
            device: ps.device.clone(),
        })
    }

    /// `[N, 3, H, W]` images → `[N, feat_dim]` pooled features.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.custom;
        let mut h = self.stem.forward(x, train, c)?;
        if self.imagenet_stem {
            h = maxpool_3x3_s2(&h)?;
        }
        for b in &self.blocks {
            h = b.forward(&h, train, c)?;
        }
        Ok(h.mean(D::Minus1)?.mean(D::Minus1)?)
    }

    fn batch_norms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.stem.bn];
        for b in &self.blocks {
            v.extend(b.chain.iter().map(|u| &u.bn));
            if let Some(u) = &b.down {
                v.push(&u.bn);
            }
        }
        v
    }
}

/// Projection head Linear(feat, hidden, no bias) – BN – ReLU – Linear(hidden, out).
pub struct Projector {
    l1: Linear,
    bn: BatchNorm,
    l2: Linear,
    custom: bool,
}

impl Projector {
    pub fn new(ps: &mut ParamStore, din: usize, hidden: usize, dout: usize, custom: bool) -> Result<Self> {
        Ok(Self {
            l1: Linear::new(ps, "projector.fc1", din, hidden, false)?,
            bn: BatchNorm::new(ps, "projector.bn", hidden)?,
            l2: Linear::new(ps, "projector.fc2", hidden, dout, true)?,
            custom,
        })
    }

    pub fn forward(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let a = self.bn.forward(&self.l1.forward(h)?, true, train, self.custom)?;
        self.l2.forward(&a)
    }
}

/// Encoder + projection head, with its parameters.
pub struct SimClrModel {
    pub params: ParamStore,
    pub encoder: ResNet,
    pub projector: Projector,
    /// Arithmetic of the encoder's convolutions in [`SimClrModel::train_step`] with custom ops
    /// (`train.precision`; f32 unless set). Evaluation always runs in f32.
    pub precision: crate::ops::Precision,
}

impl SimClrModel {
    /// The model on the CPU.
    pub fn new(cfg: &ModelConfig, seed: u64) -> Result<Self> {
        Self::new_on(cfg, seed, &Device::Cpu)
    }

    /// The model with its parameters on `device`; the same seed gives the same initial values
    /// on every device.
    pub fn new_on(cfg: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut params = ParamStore::new_on(seed, device);
        let encoder = ResNet::new(&mut params, cfg)?;
        let custom = encoder.custom;
        let projector = Projector::new(
            &mut params,
            encoder.feat_dim,
            cfg.proj_hidden,
            cfg.proj_dim,
            custom,
        )?;
        Ok(Self {
            params,
            encoder,
            projector,
            precision: crate::ops::Precision::F32,
        })
    }

    /// Images → (features h, projections z).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.encoder.forward(x, train)?;
        let z = self.projector.forward(&h, train)?;
        Ok((h, z))
    }

    fn all_batch_norms(&self) -> Vec<&BatchNorm> {
        let mut v = self.encoder.batch_norms();
        v.push(&self.projector.bn);
        v
    }

    /// Parameters and running statistics by name, on the host (for checkpoints).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        for (name, v) in &self.params.vars {
            m.insert(name.clone(), v.as_tensor().to_device(&Device::Cpu)?);
        }
        for bn in self.all_batch_norms() {
            let c = bn.running_mean.borrow().len();
            m.insert(
                format!("{}.running_mean", bn.name),
                Tensor::from_vec(bn.running_mean.borrow().clone(), c, &Device::Cpu)?,
            );
            m.insert(
                format!("{}.running_var", bn.name),
                Tensor::from_vec(bn.running_var.borrow().clone(), c, &Device::Cpu)?,
            );
        }
        Ok(m)
    }

    /// Restores what [`Self::state`] saved; every tensor must be present with its shape.
    pub fn load_state(&self, m: &HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str| {
            m.get(k)
                .ok_or_else(|| anyhow::anyhow!("checkpoint lacks tensor `{k}`"))
        };
        for (name, v) in &self.params.vars {
            let t = get(name)?;
            if t.dims() != v.dims() {
                bail!(
                    "checkpoint tensor `{name}` has shape {:?}, model expects {:?}",
                    t.dims(),
                    v.dims()
                );
            }
            v.set(&t.to_device(v.device())?)?;
        }
        for bn in self.all_batch_norms() {
            *bn.running_mean.borrow_mut() = get(&format!("{}.running_mean", bn.name))?.to_vec1::<f32>()?;
            *bn.running_var.borrow_mut() = get(&format!("{}.running_var", bn.name))?.to_vec1::<f32>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ops::testutil::{randn, rel_err};

    /// A small model config for tests (width 4, head 16 → 8); also used by `step`'s tests.
    pub(crate) fn cfg(arch: Arch, stem: Stem, ops: Ops) -> ModelConfig {
        ModelConfig {
            arch,
            width: 4,
            stem,
            proj_hidden: 16,
            proj_dim: 8,
            ops,
        }
    }

    #[test]
    fn shapes_and_parameter_counts() {
        // torchvision's ResNet-18 has 11,689,512 parameters with its 1000-way fc; without the
        // fc (513,000) and with the CIFAR stem's 3×3 conv (1,728) instead of the 7×7 one (9,408):
        // 11,689,512 − 513,000 − 9,408 + 1,728 = 11,168,832.
        let mut ps = ParamStore::new(0);
        let full = ModelConfig {
            width: 64,
            ..cfg(Arch::Resnet18, Stem::Cifar, Ops::Custom)
        };
        let enc = ResNet::new(&mut ps, &full).unwrap();
        assert_eq!(enc.feat_dim, 512);
        assert_eq!(ps.count(), 11_168_832);
        // ResNet-50: 25,557,032 with fc (2048·1000 + 1000 = 2,049,000) → 23,508,032 (ImageNet stem).
        let mut ps = ParamStore::new(0);
        let r50 = ModelConfig {
            width: 64,
            ..cfg(Arch::Resnet50, Stem::Imagenet, Ops::Custom)
        };
        let enc = ResNet::new(&mut ps, &r50).unwrap();
        assert_eq!(enc.feat_dim, 2048);
        assert_eq!(ps.count(), 23_508_032);
    }

    #[test]
    fn a_blocks_shortcut_parameters_are_created_before_its_chain() {
        // The creation order fixes which RNG draws each tensor gets (comment in ResNet::new).
        let mut ps = ParamStore::new(0);
        ResNet::new(&mut ps, &cfg(Arch::Resnet18, Stem::Cifar, Ops::Custom)).unwrap();
        let names: Vec<&str> = ps.vars.iter().map(|(n, _)| n.as_str()).collect();
        let at = |n: &str| {
            names
                .iter()
                .position(|&m| m == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        let b = "encoder.layer2.0";
        assert!(at(&format!("{b}.down.weight")) < at(&format!("{b}.down_bn.gamma")));
        assert!(at(&format!("{b}.down_bn.beta")) < at(&format!("{b}.conv1.weight")));
        assert!(at(&format!("{b}.conv1.weight")) < at(&format!("{b}.conv2.weight")));
        assert!(at(&format!("{b}.conv2.weight")) < at("encoder.layer2.1.conv1.weight"));
    }

    #[test]
    fn custom_and_stock_paths_agree() {
        for (arch, stem) in [(Arch::Resnet18, Stem::Cifar), (Arch::Resnet50, Stem::Imagenet)] {
            let a = SimClrModel::new(&cfg(arch, stem, Ops::Custom), 7).unwrap();
            let b = SimClrModel::new(&cfg(arch, stem, Ops::Stock), 7).unwrap();
            let x = randn(&[4, 3, 32, 32], 1);
            for train in [true, false] {
                let (ha, za) = a.forward(&x, train).unwrap();
                let (hb, zb) = b.forward(&x, train).unwrap();
                let (eh, ez) = (rel_err(&ha, &hb), rel_err(&za, &zb));
                // Each op agrees to 1e-4 (ops tests); through 20–50 layers, with batch-norm
                // statistics over only 4·1·1 values in the last stage, f32 rounding compounds.
                assert!(eh < 1e-3 && ez < 1e-3, "{arch} train={train}: rel err {eh} {ez}");
            }
        }
    }

    #[test]
    fn fused_evaluation_blocks_equal_the_unfused_ops_bit_for_bit() {
        // Evaluation applies the ReLU-free batch norms inside relu(chain + shortcut); every
        // block (identity and projection shortcuts, basic and bottleneck) must give exactly
        // what applying each batch norm and then add_relu gives.
        for (arch, stem) in [(Arch::Resnet18, Stem::Cifar), (Arch::Resnet50, Stem::Imagenet)] {
            let m = SimClrModel::new(&cfg(arch, stem, Ops::Custom), 3).unwrap();
            let x = randn(&[4, 3, 32, 32], 4);
            m.forward(&x, true).unwrap(); // running statistics away from their init
            let enc = &m.encoder;
            let mut h = enc.stem.forward(&x, false, true).unwrap();
            if enc.imagenet_stem {
                h = maxpool_3x3_s2(&h).unwrap();
            }
            let mut projections = 0;
            for b in &enc.blocks {
                let fused = b.forward_eval_fused(&h).unwrap().expect("a ResNet block fuses");
                let mut out = h.clone();
                for u in &b.chain {
                    out = u.forward(&out, false, true).unwrap();
                }
                let short = match &b.down {
                    Some(u) => {
                        projections += 1;
                        u.forward(&h, false, true).unwrap()
                    }
                    None => h.clone(),
                };
                let unfused = ops::add_relu(&out, &short).unwrap();
                let (f, u) = (fused.flatten_all().unwrap(), unfused.flatten_all().unwrap());
                assert_eq!(f.to_vec1::<f32>().unwrap(), u.to_vec1::<f32>().unwrap(), "{arch}");
                assert_eq!(fused.dims(), unfused.dims());
                h = b.forward(&h, false, true).unwrap();
                assert_eq!(
                    h.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    u.to_vec1::<f32>().unwrap()
                );
            }
            assert!(projections >= 3, "{arch}: {projections} projection shortcuts");
        }
    }

    #[test]
    fn evaluation_units_with_the_batch_norm_in_the_convolution_equal_the_two_passes() {
        // Width 16 so that every kernel family runs: direct (32×32 … 8×8 planes, both strides),
        // direct_small (4×4 planes), im2col + gemm (the 1×1 shortcuts); ReLU and ReLU-free units.
        let mc = ModelConfig {
            width: 16,
            ..cfg(Arch::Resnet18, Stem::Cifar, Ops::Custom)
        };
        let m = SimClrModel::new(&mc, 5).unwrap();
        let x = randn(&[3, 3, 32, 32], 6);
        m.forward(&x, true).unwrap(); // running statistics away from their init
        let enc = &m.encoder;
        let mut units: Vec<&Unit> = vec![&enc.stem];
        for b in &enc.blocks {
            units.extend(b.chain.iter().chain(&b.down));
        }
        let mut h = enc.stem.forward(&x, false, true).unwrap();
        let mut inputs = HashMap::new();
        inputs.insert(enc.stem.conv.name.clone(), x.clone());
        for b in &enc.blocks {
            let mut t = h.clone();
            for u in &b.chain {
                inputs.insert(u.conv.name.clone(), t.clone());
                t = u.forward(&t, false, true).unwrap();
            }
            if let Some(u) = &b.down {
                inputs.insert(u.conv.name.clone(), h.clone());
            }
            h = b.forward(&h, false, true).unwrap();
        }
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut relu_units = 0;
        for u in units {
            let xin = &inputs[&u.conv.name];
            let fused = u.forward(xin, false, true).unwrap();
            let two_pass =
                u.bn.forward(&u.conv.forward(xin, true).unwrap(), u.relu, false, true)
                    .unwrap();
            assert_eq!(fused.dims(), two_pass.dims(), "{}", u.conv.name);
            assert_eq!(flat(&fused), flat(&two_pass), "{}", u.conv.name);
            relu_units += u.relu as usize;
        }
        assert!(relu_units >= 9, "{relu_units} units with a ReLU");
    }

    #[test]
    fn state_round_trip() {
        let a = SimClrModel::new(&cfg(Arch::Resnet18, Stem::Cifar, Ops::Custom), 1).unwrap();
        let x = randn(&[4, 3, 8, 8], 2);
        a.forward(&x, true).unwrap(); // moves running stats away from their init
        let b = SimClrModel::new(&cfg(Arch::Resnet18, Stem::Cifar, Ops::Custom), 2).unwrap();
        b.load_state(&a.state().unwrap()).unwrap();
        let (_, za) = a.forward(&x, false).unwrap();
        let (_, zb) = b.forward(&x, false).unwrap();
        assert_eq!(za.to_vec2::<f32>().unwrap(), zb.to_vec2::<f32>().unwrap());
    }
}

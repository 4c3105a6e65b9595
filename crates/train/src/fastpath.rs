//! The encoder's training step without candle's autograd graph.
//!
//! candle's backward pass gives every node its gradient as `zeros_like + add` and runs each
//! elementwise op as its own parallel pass; on this 2-core CPU that bookkeeping cost a fifth of a
//! ResNet step (profile in the README). Here the encoder's forward pass keeps exactly what its
//! backward pass needs (unit inputs, convolution outputs, batch-norm statistics; a ReLU mask is
//! recomputed from the convolution output, and block outputs are kept for theirs) and
//! the backward pass calls the same kernels as the custom ops ([`crate::ops`]) directly, writing
//! parameter gradients by name. The projection head and the loss stay on candle's autograd.
//! Tests check the result against candle's autograd through the stock ops.

use crate::model::{Block, ResNet, Unit, BN_EPS};
use crate::ops::{batchnorm, conv, residual, simd, with_data, Precision};
use anyhow::Result;
use rayon::prelude::*;
use std::collections::HashMap;
use std::rc::Rc;

/// Gradients by parameter name.
pub type Grads = HashMap<String, Vec<f32>>;

/// An activation `[n, c, h, w]`, shared between the tape and the next layer.
#[derive(Clone)]
pub struct Act {
    pub data: Rc<Vec<f32>>,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

struct UnitTape {
    x: Act,
    conv_out: Vec<f32>,
    saved: Vec<(f32, f32)>,
    shape: conv::ConvShape,
}

struct BlockTape {
    chain: Vec<UnitTape>,
    down: Option<UnitTape>,
    out: Rc<Vec<f32>>,
}

/// What the backward pass needs from the forward pass.
pub struct Tape {
    stem: UnitTape,
    /// Max-pool argmax (flat input index per output) and the pooled activation's shape.
    pool: Option<(Vec<u32>, Act)>,
    blocks: Vec<BlockTape>,
    last: Act,
}

fn data_of(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(with_data(t, "fastpath", |d| d.to_vec())?)
}

/// A per-channel map `y = relu?(x·scale + shift)`: (scale, shift).
type Map = (Vec<f32>, Vec<f32>);

/// A unit's convolution and batch-norm statistics, with the batch norm not yet applied: the
/// tape, the folded map `y = relu?(conv_out·scale + shift)` and the output's shape (`data`
/// empty). The running statistics are updated here.
fn unit_fold(u: &Unit, x: Act, precision: Precision) -> Result<(UnitTape, Map, Act)> {
    let shape = u.conv.shape(x.n, x.c, x.h, x.w, precision)?;
    let (conv_out, moments) = with_data(&u.conv.w, "fastpath", |w| {
        conv::forward_raw_moments(&x.data, w, &shape)
    })?;
    let (oh, ow) = shape.out_hw();
    let gamma = data_of(&u.bn.gamma)?;
    let beta = data_of(&u.bn.beta)?;
    let batchnorm::Folded {
        scale,
        shift,
        saved,
        stats,
    } = batchnorm::train_fold_raw(
        &conv_out,
        x.n,
        shape.co,
        oh * ow,
        &gamma,
        &beta,
        BN_EPS,
        moments.as_deref(),
    );
    u.bn.update_running(&stats.mean, &stats.var_unbiased);
    let out = Act {
        data: Rc::new(Vec::new()),
        n: x.n,
        c: shape.co,
        h: oh,
        w: ow,
    };
    let tape = UnitTape {
        x,
        conv_out,
        saved,
        shape,
    };
    Ok((tape, (scale, shift), out))
}

fn unit_forward(u: &Unit, x: Act, precision: Precision) -> Result<(Act, UnitTape)> {
    let (tape, (scale, shift), out) = unit_fold(u, x, precision)?;
    let (n, c, s) = (out.n, out.c, out.h * out.w);
    let y = batchnorm::affine_raw(&tape.conv_out, n, c, s, &scale, &shift, u.relu);
    Ok((
        Act {
            data: Rc::new(y),
            ..out
        },
        tape,
    ))
}

/// Backward through one unit: returns dx and adds dW, dγ, dβ to `grads`.
fn unit_backward(u: &Unit, t: &UnitTape, dy: &[f32], grads: &mut Grads) -> Result<Vec<f32>> {
    unit_backward_opt(u, t, dy, None, grads, true).map(|d| d.expect("dx requested"))
}

/// [`unit_backward`], computing dx only when `want_dx` (the stem's input is the images).
/// `gate = Some(out)`: `dy` is the gradient of `out = relu(y + …)`, the block output this
/// unit's (ReLU-free) batch norm feeds, so the unit's output gradient is `dy·[out > 0]`; the
/// batch-norm backward applies that mask on the fly (its ReLU mask, with `out` for `y`)
/// instead of a separate pass writing the masked gradient.
fn unit_backward_opt(
    u: &Unit,
    t: &UnitTape,
    dy: &[f32],
    gate: Option<&[f32]>,
    grads: &mut Grads,
    want_dx: bool,
) -> Result<Option<Vec<f32>>> {
    let s = &t.shape;
    let (oh, ow) = s.out_hw();
    let gamma = data_of(&u.bn.gamma)?;
    let beta = data_of(&u.bn.beta)?;
    let mask = match gate {
        Some(out) => {
            assert!(!u.relu, "a gated unit's batch norm must not have its own ReLU");
            batchnorm::Mask::Output(out)
        }
        None if u.relu => batchnorm::Mask::Own { beta: &beta },
        None => batchnorm::Mask::None,
    };
    let (dconv, dgamma, dbeta) =
        batchnorm::backward_raw(&t.conv_out, &gamma, mask, dy, &t.saved, s.n, s.co, oh * ow);
    grads.insert(format!("{}.gamma", u.bn.name), dgamma);
    grads.insert(format!("{}.beta", u.bn.name), dbeta);
    let (dx, dw) = with_data(&u.conv.w, "fastpath", |w| {
        if want_dx {
            let (dx, dw) = conv::backward_raw(&t.x.data, w, &dconv, s);
            (Some(dx), dw)
        } else {
            (None, conv::weight_grad_raw(&t.x.data, w, &dconv, s))
        }
    })?;
    grads.insert(u.conv.name.clone(), dw);
    Ok(dx)
}

/// Forward through a block `out = relu(chain(x) + shortcut(x))`. The batch norms ending the
/// chain and the projection shortcut have no ReLU of their own (ResNet's), so their outputs are
/// needed only in that sum: they are applied inside it ([`residual::affine_add_relu_raw`]),
/// bit-identical to applying them first, and never written out.
fn block_forward(b: &Block, x: Act, precision: Precision) -> Result<(Act, BlockTape)> {
    let (last, head) = b.chain.split_last().expect("a block has at least one unit");
    let fused = !last.relu && b.down.as_ref().is_none_or(|u| !u.relu);
    let mut cur = x.clone();
    let mut chain = Vec::with_capacity(b.chain.len());
    let units = if fused { head } else { &b.chain[..] };
    for u in units {
        let (next, tape) = unit_forward(u, cur, precision)?;
        chain.push(tape);
        cur = next;
    }
    if !fused {
        let (short, down) = match &b.down {
            Some(u) => {
                let (s, t) = unit_forward(u, x, precision)?;
                (s, Some(t))
            }
            None => (x, None),
        };
        let out = Rc::new(residual::add_relu_raw(&cur.data, &short.data));
        let act = Act {
            data: out.clone(),
            ..cur
        };
        return Ok((act, BlockTape { chain, down, out }));
    }
    let (lt, lf, shape) = unit_fold(last, cur, precision)?;
    let down = match &b.down {
        Some(u) => Some(unit_fold(u, x.clone(), precision)?),
        None => None,
    };
    let (c, s) = (shape.c, shape.h * shape.w);
    let addend = match &down {
        Some((dt, (da, db), _)) => simd::Addend::Affine {
            x: &dt.conv_out,
            a: da,
            b: db,
        },
        None => simd::Addend::Plain(&x.data),
    };
    let (la, lb) = &lf;
    let out = Rc::new(residual::affine_add_relu_raw(&lt.conv_out, c, s, la, lb, addend));
    chain.push(lt);
    let act = Act {
        data: out.clone(),
        ..shape
    };
    Ok((
        act,
        BlockTape {
            chain,
            down: down.map(|d| d.0),
            out,
        },
    ))
}

/// Backward through a block `out = relu(chain(x) + shortcut(x))` from `dy = ∂L/∂out`. The
/// ReLU's mask `[out > 0]` is applied inside the units' batch-norm backward passes (a unit
/// ending the chain or the shortcut has no ReLU of its own) and, for an identity shortcut, in
/// the final sum; the masked gradient is never written out.
fn block_backward(b: &Block, t: &BlockTape, dy: &[f32], grads: &mut Grads) -> Result<Vec<f32>> {
    let gated = |u: &Unit| !u.relu;
    let last = b.chain.last().expect("a block has at least one unit");
    let g_owned;
    let (g, gate): (&[f32], Option<&[f32]>) = if gated(last) && b.down.as_ref().is_none_or(gated) {
        (dy, Some(&t.out[..]))
    } else {
        g_owned = residual::relu_mask_raw(&t.out, dy);
        (&g_owned[..], None)
    };
    let mut d: Option<Vec<f32>> = None;
    for (u, ut) in b.chain.iter().zip(&t.chain).rev() {
        d = Some(match &d {
            None => unit_backward_opt(u, ut, g, gate, grads, true)?.expect("dx requested"),
            Some(d) => unit_backward(u, ut, d, grads)?,
        });
    }
    let mut d = d.expect("a block has at least one unit");
    let add = |d: &mut [f32], ds: &[f32]| {
        d.par_chunks_mut(1 << 14)
            .zip(ds.par_chunks(1 << 14))
            .for_each(|(a, b)| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
            })
    };
    match (&b.down, &t.down, gate) {
        (Some(u), Some(ut), _) => {
            let ds = unit_backward_opt(u, ut, g, gate, grads, true)?.expect("dx requested");
            add(&mut d, &ds);
        }
        (_, _, Some(out)) => residual::add_relu_masked(&mut d, out, g),
        _ => add(&mut d, g),
    }
    Ok(d)
}

/// 3×3 stride-2 max-pool with padding 1 (inputs ≥ 0 after the ReLU, so padding never wins):
/// the pooled activation and, per output, the flat index of the input that won.
fn maxpool_forward(x: &Act) -> (Act, Vec<u32>) {
    let (oh, ow) = ((x.h + 2 - 3) / 2 + 1, (x.w + 2 - 3) / 2 + 1);
    let planes = x.n * x.c;
    let mut y = vec![0f32; planes * oh * ow];
    let mut arg = vec![0u32; planes * oh * ow];
    let (xd, xh, xw): (&[f32], usize, usize) = (&x.data, x.h, x.w);
    y.par_chunks_mut(oh * ow)
        .zip(arg.par_chunks_mut(oh * ow))
        .enumerate()
        .for_each(|(p, (yp, ap))| {
            let base = p * xh * xw;
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut best, mut bi) = (f32::NEG_INFINITY, 0usize);
                    for dy in 0..3 {
                        let iy = (oy * 2 + dy) as isize - 1;
                        if iy < 0 || iy >= xh as isize {
                            continue;
                        }
                        for dx in 0..3 {
                            let ix = (ox * 2 + dx) as isize - 1;
                            if ix < 0 || ix >= xw as isize {
                                continue;
                            }
                            let i = base + iy as usize * xw + ix as usize;
                            if xd[i] > best {
                                best = xd[i];
                                bi = i;
                            }
                        }
                    }
                    yp[oy * ow + ox] = best.max(0.0);
                    ap[oy * ow + ox] = bi as u32;
                }
            }
        });
    let out = Act {
        data: Rc::new(y),
        n: x.n,
        c: x.c,
        h: oh,
        w: ow,
    };
    (out, arg)
}

/// Training-mode forward pass of the encoder: pooled features `[n, feat_dim]` and the tape.
/// Updates the batch-norm running statistics, as the candle path does.
///
/// `precision`: arithmetic of the convolutions, forward here and backward in
/// [`encoder_backward`] (kept in the tape; see [`crate::ops::bf16`]).
pub fn encoder_forward(
    enc: &ResNet,
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    precision: Precision,
) -> Result<(Vec<f32>, Tape)> {
    let input = Act {
        data: Rc::new(x.to_vec()),
        n,
        c: 3,
        h,
        w,
    };
    let (mut cur, stem) = unit_forward(&enc.stem, input, precision)?;
    let pool = if enc.imagenet_stem {
        let (pooled, arg) = maxpool_forward(&cur);
        let shape = cur.clone();
        cur = pooled;
        Some((arg, shape))
    } else {
        None
    };
    let mut blocks = Vec::with_capacity(enc.blocks.len());
    for b in &enc.blocks {
        let (next, t) = block_forward(b, cur, precision)?;
        blocks.push(t);
        cur = next;
    }
    let s = cur.h * cur.w;
    let feats: Vec<f32> = cur
        .data
        .chunks(s)
        .map(|p| p.iter().sum::<f32>() / s as f32)
        .collect();
    Ok((
        feats,
        Tape {
            stem,
            pool,
            blocks,
            last: cur,
        },
    ))
}

/// Backward pass of the encoder from the gradient of the pooled features; returns the
/// gradients of every encoder parameter by name.
pub fn encoder_backward(enc: &ResNet, tape: &Tape, dfeat: &[f32]) -> Result<Grads> {
    let mut grads = Grads::new();
    let last = &tape.last;
    let s = last.h * last.w;
    let mut d: Vec<f32> = dfeat
        .iter()
        .flat_map(|&g| std::iter::repeat_n(g / s as f32, s))
        .collect();
    for (b, t) in enc.blocks.iter().zip(&tape.blocks).rev() {
        d = block_backward(b, t, &d, &mut grads)?;
    }
    if let Some((arg, shape)) = &tape.pool {
        // Accumulated into: zeros written, not allocated zeroed (see `ops::zeros`).
        let mut dx = crate::ops::zeros(shape.data.len());
        for (i, &g) in d.iter().enumerate() {
            dx[arg[i] as usize] += g;
        }
        d = dx;
    }
    unit_backward_opt(&enc.stem, &tape.stem, &d, None, &mut grads, false)?;
    Ok(grads)
}

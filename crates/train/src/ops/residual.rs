//! The end of a residual block, `relu(a + b)`, as one candle `CustomOp2`: one pass forward, and
//! backward one pass giving the same masked gradient `g·[y > 0]` to both inputs (candle's stock
//! path needs an add, a ReLU, a comparison, a cast and a product).

use super::simd::{self, Addend};
use super::{cpu_slice, output_vec, with_data};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// `relu(a + b)` on raw buffers of equal length.
pub fn add_relu_raw(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len());
    // SAFETY: the chunks cover the output and every element is written.
    unsafe {
        output_vec(a.len(), |y| {
            y.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
                .for_each(|(y, (a, b))| {
                    for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
                        o.write((p + q).max(0.0));
                    }
                })
        })
    }
}

/// `relu((x·a + b) + r)` over `[n, c, s]` buffers (`a`, `b` per channel, `r` the shortcut as
/// it is or its batch norm's map of a buffer): the end of a residual block with the batch norms
/// of both branches applied in the same pass, bit-identical to applying them first
/// ([`simd::affine_add_relu`]).
pub fn affine_add_relu_raw(x: &[f32], c: usize, s: usize, a: &[f32], b: &[f32], r: Addend) -> Vec<f32> {
    let block = (c * s).max(1);
    let part = |i: usize| match r {
        Addend::Plain(q) => Addend::Plain(&q[i * block..(i + 1) * block]),
        Addend::Affine { x, a, b } => Addend::Affine {
            x: &x[i * block..(i + 1) * block],
            a,
            b,
        },
    };
    // SAFETY: the chunks cover the output and `affine_add_relu` writes each whole.
    unsafe {
        output_vec(x.len(), |y| {
            y.par_chunks_mut(block)
                .zip(x.par_chunks(block))
                .enumerate()
                .for_each(|(i, (yi, xi))| simd::affine_add_relu(yi, xi, s, a, b, part(i)))
        })
    }
}

/// `d += g·[y > 0]`: the gradient through the ReLU that produced `y`, added in place.
pub fn add_relu_masked(d: &mut [f32], y: &[f32], g: &[f32]) {
    assert!(d.len() == y.len() && y.len() == g.len());
    d.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(d, (y, g))| {
            for ((d, &y), &g) in d.iter_mut().zip(y).zip(g) {
                *d += if y > 0.0 { g } else { 0.0 };
            }
        });
}

/// The gradient through the ReLU that produced `y`: `g·[y > 0]`.
pub fn relu_mask_raw(y: &[f32], g: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; y.len()];
    out.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(o, (y, g))| {
            for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                *o = if y > 0.0 { g } else { 0.0 };
            }
        });
    out
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "protoclr-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            return Err(candle_core::Error::Msg(format!(
                "add-relu: shapes {:?} and {:?} differ",
                l1.dims(),
                l2.dims()
            )));
        }
        let a = cpu_slice(s1, l1, self.name())?;
        let b = cpu_slice(s2, l2, self.name())?;
        let y = add_relu_raw(a, b);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = with_data(res, self.name(), |ys| {
            with_data(grad, self.name(), |gs| relu_mask_raw(ys, gs))
        })??;
        let g = Tensor::from_vec(g, a.dims(), a.device())?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `relu(a + b)` for two tensors of the same shape.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{randn, rel_err};
    use candle_core::Var;

    #[test]
    fn matches_stock_add_then_relu() {
        let a = Var::from_tensor(&randn(&[3, 4, 5, 5], 1)).unwrap();
        let b = Var::from_tensor(&randn(&[3, 4, 5, 5], 2)).unwrap();
        let ours = add_relu(&a, &b).unwrap();
        let stock = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
        assert_eq!(rel_err(&ours, &stock), 0.0);
        let probe = randn(&[3, 4, 5, 5], 3);
        let ga = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (stock * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [a.as_tensor(), b.as_tensor()] {
            assert!(rel_err(ga.get(v).unwrap(), gb.get(v).unwrap()) < 1e-6);
        }
    }
}

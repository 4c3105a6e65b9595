//! 2-D convolution (NCHW, OIHW weights, no bias, groups = 1) as a candle `CustomOp2`.
//!
//! Forward: for a chunk of `g` images, `col = im2col(x)` is a `K × g·P` matrix
//! (K = C·kh·kw, P = OH·OW) and `y = W · col` one gemm. Backward recomputes `col` chunk by chunk
//! (nothing is kept alive across the graph) and computes `dW += dY · colᵀ` and
//! `dx = col2im(Wᵀ · dY)`. A 1×1, stride-1, unpadded convolution of one image per chunk skips
//! im2col altogether (x already is `col`). 3×3 layers with padding 1 and stride 1 or 2 go to the
//! direct kernels instead where they apply (`Geom::kernels`).

use super::{cpu_slice, sgemm, with_data, with_scratch, zeros, PlaneMoments, Precision};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Convolution geometry.
#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    /// Arithmetic of the direct kernels (im2col + gemm is always f32; see `ops::bf16`).
    prec: Precision,
}

impl Geom {
    fn new(xd: &[usize], wd: &[usize], stride: usize, pad: usize) -> Result<Self> {
        if xd.len() != 4 || wd.len() != 4 || xd[1] != wd[1] {
            return Err(candle_core::Error::Msg(format!(
                "conv2d: expected x [N,C,H,W] and w [Co,C,kh,kw], got {xd:?} and {wd:?}"
            )));
        }
        let (h, w, kh, kw) = (xd[2], xd[3], wd[2], wd[3]);
        if h + 2 * pad < kh || w + 2 * pad < kw || stride == 0 {
            return Err(candle_core::Error::Msg(format!(
                "conv2d: kernel {kh}×{kw} larger than padded input {h}×{w} (pad {pad})"
            )));
        }
        Ok(Self {
            n: xd[0],
            c: xd[1],
            h,
            w,
            co: wd[0],
            kh,
            kw,
            stride,
            pad,
            oh: (h + 2 * pad - kh) / stride + 1,
            ow: (w + 2 * pad - kw) / stride + 1,
            prec: Precision::F32,
        })
    }
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Images per chunk: enough columns for an efficient gemm; independent of the thread count.
    /// A 1×1 convolution (the stride-2 shortcuts) has a short K = C, so its chunks take more
    /// columns: one 32 × 256 × 16 gemm per image was mostly call overhead.
    fn chunk(&self) -> usize {
        let cols: usize = if self.kh * self.kw == 1 { 2048 } else { 256 };
        cols.div_ceil(self.p()).clamp(1, self.n.max(1))
    }
}

/// `col[(c·kh + i)·kw + j][img·P + oy·OW + ox] = x[img][c][oy·s − pad + i][ox·s − pad + j]` (0
/// outside), for the `g` images of `x` (a chunk), `col` of row length `ld = g·P`.
fn im2col(x: &[f32], g: usize, geo: &Geom, col: &mut [f32]) {
    if geo.stride == 1 && geo.oh == geo.h && geo.ow == geo.w {
        im2col_same(x, g, geo, col);
    } else {
        im2col_rows(x, g, geo, col);
    }
}

/// [`im2col`] of a stride-1 "same" convolution (output as large as the input, e.g. 3×3 with
/// padding 1). Tap (i, j) reads the plane shifted by `off = (i − pad)·w + (j − pad)`, so each
/// row of `col` is one contiguous copy of the plane, then zeros where the shift left the image:
/// whole output rows at the top or bottom, and the columns that wrapped around into the
/// neighbouring row. Per plane and tap that is one `memcpy` and a few stores, instead of the
/// three short `memcpy`/`memset` calls per output row of [`im2col_rows`] (which dominated it
/// at CIFAR sizes).
fn im2col_same(x: &[f32], g: usize, geo: &Geom, col: &mut [f32]) {
    let (h, w, pad) = (geo.h, geo.w, geo.pad as isize);
    let p = geo.p();
    let ld = g * p;
    for c in 0..geo.c {
        for i in 0..geo.kh {
            for j in 0..geo.kw {
                let row = (c * geo.kh + i) * geo.kw + j;
                let (dy, dx) = (i as isize - pad, j as isize - pad);
                let off = dy * w as isize + dx;
                // Output rows whose input row exists, and within them the flat range whose
                // source index is inside the plane.
                let oy0 = (-dy).clamp(0, h as isize) as usize;
                let oy1 = (h as isize - dy).clamp(oy0 as isize, h as isize) as usize;
                let q0 = ((oy0 * w) as isize).max(-off).min(p as isize) as usize;
                let q1 = ((oy1 * w) as isize).min(p as isize - off).max(q0 as isize) as usize;
                for img in 0..g {
                    let src = &x[(img * geo.c + c) * p..(img * geo.c + c + 1) * p];
                    let dst = &mut col[row * ld + img * p..row * ld + (img + 1) * p];
                    dst[..q0].fill(0.0);
                    dst[q1..].fill(0.0);
                    if q1 > q0 {
                        let s0 = (q0 as isize + off) as usize;
                        dst[q0..q1].copy_from_slice(&src[s0..s0 + (q1 - q0)]);
                    }
                    // Columns whose source wrapped into the previous or next row.
                    let (c0, c1) = if dx > 0 {
                        (w - (dx as usize).min(w), w)
                    } else {
                        (0, ((-dx) as usize).min(w))
                    };
                    if c1 > c0 {
                        for oy in oy0..oy1 {
                            for v in &mut dst[oy * w + c0..oy * w + c1] {
                                *v = 0.0;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] row by row: any stride and padding.
fn im2col_rows(x: &[f32], g: usize, geo: &Geom, col: &mut [f32]) {
    let (h, w, oh, ow, s, pad) = (geo.h, geo.w, geo.oh, geo.ow, geo.stride, geo.pad);
    let p = geo.p();
    let ld = g * p;
    for c in 0..geo.c {
        for i in 0..geo.kh {
            for j in 0..geo.kw {
                let row = (c * geo.kh + i) * geo.kw + j;
                let dst_row = &mut col[row * ld..(row + 1) * ld];
                for img in 0..g {
                    let src = &x[(img * geo.c + c) * h * w..(img * geo.c + c + 1) * h * w];
                    let dst = &mut dst_row[img * p..(img + 1) * p];
                    for oy in 0..oh {
                        let iy = (oy * s + i) as isize - pad as isize;
                        let drow = &mut dst[oy * ow..(oy + 1) * ow];
                        if iy < 0 || iy >= h as isize {
                            drow.fill(0.0);
                            continue;
                        }
                        let srow = &src[iy as usize * w..(iy as usize + 1) * w];
                        // Valid ox: 0 ≤ ox·s + j − pad < w.
                        let lo = if pad > j { (pad - j).div_ceil(s) } else { 0 };
                        let hi = if w + pad > j {
                            ((w + pad - j - 1) / s + 1).min(ow)
                        } else {
                            0
                        };
                        let lo = lo.min(hi);
                        drow[..lo].fill(0.0);
                        drow[hi..].fill(0.0);
                        if s == 1 {
                            let start = lo + j - pad;
                            drow[lo..hi].copy_from_slice(&srow[start..start + (hi - lo)]);
                        } else if hi > lo {
                            // Strided reads by iterator: no bounds check per element.
                            let src = srow[lo * s + j - pad..].iter().step_by(s);
                            for (d, &v) in drow[lo..hi].iter_mut().zip(src) {
                                *d = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col`]: `dx[img][c][iy][ix] += col[…]` for every position that read it.
/// `dx` must be zeroed by the caller.
fn col2im(col: &[f32], g: usize, geo: &Geom, dx: &mut [f32]) {
    let (h, w, oh, ow, s, pad) = (geo.h, geo.w, geo.oh, geo.ow, geo.stride, geo.pad);
    let p = geo.p();
    let ld = g * p;
    for img in 0..g {
        for c in 0..geo.c {
            let dst = &mut dx[(img * geo.c + c) * h * w..(img * geo.c + c + 1) * h * w];
            for i in 0..geo.kh {
                for j in 0..geo.kw {
                    let row = (c * geo.kh + i) * geo.kw + j;
                    let src = &col[row * ld + img * p..row * ld + (img + 1) * p];
                    let lo = if pad > j { (pad - j).div_ceil(s) } else { 0 };
                    let hi = if w + pad > j {
                        ((w + pad - j - 1) / s + 1).min(ow)
                    } else {
                        0
                    };
                    let lo = lo.min(hi);
                    for oy in 0..oh {
                        let iy = (oy * s + i) as isize - pad as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let drow = &mut dst[iy as usize * w..(iy as usize + 1) * w];
                        let srow = &src[oy * ow..(oy + 1) * ow];
                        if s == 1 {
                            let start = lo + j - pad;
                            for (d, v) in drow[start..start + (hi - lo)].iter_mut().zip(&srow[lo..hi]) {
                                *d += v;
                            }
                        } else if hi > lo {
                            let dst = drow[lo * s + j - pad..].iter_mut().step_by(s);
                            for (d, &v) in dst.zip(&srow[lo..hi]) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Threads for the gemm inside one task: all of them when there are fewer tasks than threads.
fn inner_threads(tasks: usize) -> usize {
    let t = rayon::current_num_threads();
    if tasks < t {
        t
    } else {
        1
    }
}

/// The kernels that compute a convolution and its weight gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernels {
    /// [`super::direct_small`]: 3×3 stride 1 or 2 on small planes, vectorised over channels.
    DirectSmall,
    /// [`super::direct`]: 3×3 stride 1 or 2 on large planes, vectorised over positions.
    Direct,
    /// im2col + gemm: any geometry.
    Gemm,
}

impl Geom {
    /// The fastest kernels that handle this geometry on this CPU.
    fn kernels(&self) -> Kernels {
        let (c, co, h, w, k, s, p) = (self.c, self.co, self.h, self.w, self.kh, self.stride, self.pad);
        if self.kh != self.kw {
            Kernels::Gemm
        } else if super::direct_small::applies(c, co, h, w, k, s, p) {
            Kernels::DirectSmall
        } else if super::direct::applies(c, co, h, w, k, s, p) {
            Kernels::Direct
        } else {
            Kernels::Gemm
        }
    }
}

fn conv_forward(x: &[f32], wt: &[f32], geo: &Geom) -> Vec<f32> {
    conv_forward_moments(x, wt, geo, false).0
}

/// [`conv_forward`], and with `moments` the output planes' [`PlaneMoments`] where the kernel
/// computes them on the way (the direct kernels; `None` from im2col + gemm).
fn conv_forward_moments(
    x: &[f32],
    wt: &[f32],
    geo: &Geom,
    moments: bool,
) -> (Vec<f32>, Option<Vec<PlaneMoments>>) {
    let (n, c, h, w, co) = (geo.n, geo.c, geo.h, geo.w, geo.co);
    let some = |(y, m): (Vec<f32>, Vec<PlaneMoments>)| (y, moments.then_some(m));
    match geo.kernels() {
        Kernels::DirectSmall => some(super::direct_small::forward_moments(
            x, wt, n, c, h, w, co, geo.stride, moments, geo.prec,
        )),
        Kernels::Direct => some(super::direct::forward_moments(
            x, wt, n, c, h, w, co, geo.stride, moments, geo.prec,
        )),
        Kernels::Gemm => (conv_forward_gemm(x, wt, geo), None),
    }
}

/// [`conv_forward`] as im2col + gemm (any geometry).
fn conv_forward_gemm(x: &[f32], wt: &[f32], geo: &Geom) -> Vec<f32> {
    let (k, p, co) = (geo.k(), geo.p(), geo.co);
    let g = geo.chunk();
    let chunks = geo.n.div_ceil(g);
    let inner = inner_threads(chunks);
    let mut y = vec![0f32; geo.n * co * p];
    let x_img = geo.c * geo.h * geo.w;
    y.par_chunks_mut(g * co * p).enumerate().for_each(|(ci, ychunk)| {
        let gi = ychunk.len() / (co * p);
        let xs = &x[ci * g * x_img..(ci * g + gi) * x_img];
        if gi == 1 && geo.is_pointwise() {
            sgemm(co, p, k, ychunk, p, false, wt, k, 1, xs, p, 1, inner);
            return;
        }
        let ld = gi * p;
        with_scratch(k * ld, |col| {
            im2col(xs, gi, geo, col);
            if gi == 1 {
                sgemm(co, p, k, ychunk, p, false, wt, k, 1, col, ld, 1, inner);
            } else {
                with_scratch(co * ld, |tmp| {
                    sgemm(co, ld, k, tmp, ld, false, wt, k, 1, col, ld, 1, inner);
                    for img in 0..gi {
                        for o in 0..co {
                            ychunk[(img * co + o) * p..(img * co + o + 1) * p]
                                .copy_from_slice(&tmp[o * ld + img * p..o * ld + (img + 1) * p]);
                        }
                    }
                });
            }
        });
    });
    y
}

/// `Wᵀ` with the spatial taps flipped: `[C, Co, kh, kw]`, the weights of the convolution that
/// maps dY back to dx when the stride is 1.
fn flipped_transposed(wt: &[f32], geo: &Geom) -> Vec<f32> {
    let (co, c, kh, kw) = (geo.co, geo.c, geo.kh, geo.kw);
    let mut out = vec![0f32; wt.len()];
    for o in 0..co {
        for i in 0..c {
            for a in 0..kh {
                for b in 0..kw {
                    out[((i * co + o) * kh + (kh - 1 - a)) * kw + (kw - 1 - b)] =
                        wt[((o * c + i) * kh + a) * kw + b];
                }
            }
        }
    }
    out
}

/// Gradients of the convolution: (dx, dw).
///
/// Stride 1: dx is itself a convolution of dY with the flipped, transposed kernel and padding
/// k − 1 − pad, computed by the forward path (a gemm with k = Co·kh·kw instead of a thin
/// Wᵀ·dY followed by a scatter-add); dw as below. 3×3 stride 2, padding 1: dx by the direct
/// kernels' polyphase path where it applies (`direct::dx_phases`). Otherwise, per chunk,
/// `dW += dY·colᵀ` and `dx = col2im(Wᵀ·dY)`.
fn conv_backward(x: &[f32], wt: &[f32], dy: &[f32], geo: &Geom) -> (Vec<f32>, Vec<f32>) {
    if geo.stride == 1 && !geo.is_pointwise() && geo.pad < geo.kh && geo.pad < geo.kw && geo.kh == geo.kw {
        let g2 = Geom {
            prec: geo.prec,
            ..Geom::new(
                &[geo.n, geo.co, geo.oh, geo.ow],
                &[geo.c, geo.co, geo.kh, geo.kw],
                1,
                geo.kh - 1 - geo.pad,
            )
            .expect("transposed geometry is valid")
        };
        debug_assert_eq!((g2.oh, g2.ow), (geo.h, geo.w));
        let dx = conv_forward(dy, &flipped_transposed(wt, geo), &g2);
        return (dx, conv_weight_grad(x, wt, dy, geo));
    }
    let (n, c, h, w, co) = (geo.n, geo.c, geo.h, geo.w, geo.co);
    if geo.stride == 2 && geo.kh == 3 && geo.kw == 3 && geo.pad == 1 {
        // Polyphase input gradient (see direct::dx_phases).
        let dx = if super::direct_small::dx_applies(c, co, h, w, geo.prec) {
            Some(super::direct_small::input_grad_stride2(
                dy, wt, n, c, h, w, co, geo.prec,
            ))
        } else if super::direct::dx_applies(c, co, h, w) {
            Some(super::direct::input_grad_stride2(
                dy, wt, n, c, h, w, co, geo.prec,
            ))
        } else {
            None
        };
        if let Some(dx) = dx {
            return (dx, conv_weight_grad(x, wt, dy, geo));
        }
    }
    if geo.kernels() != Kernels::Gemm {
        // dW on the direct kernels, dx = col2im(Wᵀ·dY) without the im2col.
        let dx = conv_backward_impl(x, wt, dy, geo, true, false).0;
        return (dx, conv_weight_grad(x, wt, dy, geo));
    }
    conv_backward_impl(x, wt, dy, geo, true, true)
}

/// [`conv_backward`]'s dW alone (no dx).
fn conv_weight_grad(x: &[f32], wt: &[f32], dy: &[f32], geo: &Geom) -> Vec<f32> {
    let (n, c, h, w, co) = (geo.n, geo.c, geo.h, geo.w, geo.co);
    match geo.kernels() {
        Kernels::DirectSmall => super::direct_small::weight_grad(x, dy, n, c, h, w, co, geo.stride, geo.prec),
        Kernels::Direct => super::direct::weight_grad(x, dy, n, c, h, w, co, geo.stride, geo.prec),
        Kernels::Gemm => conv_backward_impl(x, wt, dy, geo, false, true).1,
    }
}

/// dx (if `want_dx`) and dW (if `want_dw`, else zeros) by im2col + gemm, chunk by chunk.
fn conv_backward_impl(
    x: &[f32],
    wt: &[f32],
    dy: &[f32],
    geo: &Geom,
    want_dx: bool,
    want_dw: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (k, p, co) = (geo.k(), geo.p(), geo.co);
    let g = geo.chunk();
    let chunks = geo.n.div_ceil(g);
    // Fixed number of accumulation groups (contiguous runs of chunks), reduced in order.
    let groups = chunks.min(8);
    let per_group = chunks.div_ceil(groups);
    let inner = inner_threads(groups);
    let x_img = geo.c * geo.h * geo.w;
    let y_img = co * p;
    // Accumulated into by col2im: zeros written, not allocated zeroed (see `zeros`).
    let mut dx = zeros(if want_dx { geo.n * x_img } else { geo.n });
    let dx_per_img = dx.len() / geo.n;
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(per_group * g * dx_per_img)
        .enumerate()
        .map(|(gi, dx_group)| {
            let mut dw = vec![0f32; co * k];
            let first_img = gi * per_group * g;
            let imgs = dx_group.len() / dx_per_img;
            let mut done = 0;
            let mut first = true;
            while done < imgs {
                let n_img = g.min(imgs - done);
                let img0 = first_img + done;
                let xs = &x[img0 * x_img..(img0 + n_img) * x_img];
                let dys = &dy[img0 * y_img..(img0 + n_img) * y_img];
                let dxs = &mut dx_group[done * dx_per_img..(done + n_img) * dx_per_img];
                let ld = n_img * p;
                // dY chunk as a Co × (g·P) matrix (gathered when the chunk has several images).
                let mut step = |dyc: &[f32], dw: &mut [f32]| {
                    if n_img == 1 && geo.is_pointwise() {
                        // dW += dY · xᵀ ; dx = Wᵀ · dY
                        if want_dw {
                            sgemm(co, k, p, dw, k, !first, dyc, p, 1, xs, 1, p, inner);
                        }
                        if want_dx {
                            sgemm(k, p, co, dxs, p, false, wt, 1, k, dyc, p, 1, inner);
                        }
                    } else {
                        with_scratch(k * ld, |col| {
                            if want_dw {
                                im2col(xs, n_img, geo, col);
                                sgemm(co, k, ld, dw, k, !first, dyc, ld, 1, col, 1, ld, inner);
                            }
                            if want_dx {
                                // Reuse col as dcol = Wᵀ · dY (written, not read).
                                sgemm(k, ld, co, col, ld, false, wt, 1, k, dyc, ld, 1, inner);
                                col2im(col, n_img, geo, dxs);
                            }
                        });
                    }
                };
                if n_img == 1 {
                    step(dys, &mut dw);
                } else {
                    with_scratch(co * ld, |t| {
                        for img in 0..n_img {
                            for o in 0..co {
                                t[o * ld + img * p..o * ld + (img + 1) * p]
                                    .copy_from_slice(&dys[(img * co + o) * p..(img * co + o + 1) * p]);
                            }
                        }
                        step(t, &mut dw);
                    });
                }
                first = false;
                done += n_img;
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; co * k];
    for part in &partials {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    (dx, dw)
}

/// The custom op; `stride` and `pad` apply to both spatial dimensions.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dOp {
    pub stride: usize,
    pub pad: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "protoclr-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let geo = Geom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let x = cpu_slice(s1, l1, self.name())?;
        let w = cpu_slice(s2, l2, self.name())?;
        let y = conv_forward(x, w, &geo);
        Ok((CpuStorage::F32(y), Shape::from((geo.n, geo.co, geo.oh, geo.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let geo = Geom::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let (dx, dw) = with_data(x, self.name(), |xs| {
            with_data(w, self.name(), |ws| {
                with_data(grad, self.name(), |gs| conv_backward(xs, ws, gs, &geo))
            })
        })???;
        let dx = Tensor::from_vec(dx, x.dims(), x.device())?;
        let dw = Tensor::from_vec(dw, w.dims(), w.device())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Shape of a convolution on raw buffers: input `[n, c, h, w]`, weights `[co, c, k, k]`.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// Arithmetic of the 3×3 direct kernels, forward and backward (`train.precision`).
    pub precision: Precision,
}

impl ConvShape {
    fn geom(&self) -> Geom {
        Geom {
            prec: self.precision,
            ..Geom::new(
                &[self.n, self.c, self.h, self.w],
                &[self.co, self.c, self.k, self.k],
                self.stride,
                self.pad,
            )
            .expect("valid convolution shape")
        }
    }
    /// Output side lengths (oh, ow).
    pub fn out_hw(&self) -> (usize, usize) {
        let g = self.geom();
        (g.oh, g.ow)
    }
}

/// Forward convolution on raw buffers (the kernel behind [`conv2d`]).
pub fn forward_raw(x: &[f32], wt: &[f32], s: &ConvShape) -> Vec<f32> {
    conv_forward(x, wt, &s.geom())
}

/// [`forward_raw`], also returning the output planes' [`PlaneMoments`] (`[n][co]`) when the
/// kernel that ran computes them (for the batch norm that follows).
pub fn forward_raw_moments(x: &[f32], wt: &[f32], s: &ConvShape) -> (Vec<f32>, Option<Vec<PlaneMoments>>) {
    conv_forward_moments(x, wt, &s.geom(), true)
}

/// A per-output-channel map applied to a convolution's output as it is written,
/// `y = relu?(conv·scale + shift)`: evaluation-mode batch norm (+ReLU) folded in
/// ([`super::batchnorm::eval_fold`]). The same f32 operations as the separate pass
/// ([`super::simd::affine`]), so bit-identical to it, without writing the raw output.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
}

impl Epilogue<'_> {
    /// The map as a separate pass over `[n, co, p]` outputs `y` (where a kernel cannot fuse it),
    /// or `y` itself without one.
    pub(crate) fn apply(epi: Option<&Self>, y: Vec<f32>, n: usize, co: usize, p: usize) -> Vec<f32> {
        match epi {
            Some(e) => super::batchnorm::affine_raw(&y, n, co, p, e.scale, e.shift, e.relu),
            None => y,
        }
    }
}

/// [`forward_raw`] followed by the [`Epilogue`], fused into the output write of the direct
/// kernels (f32 arithmetic; im2col + gemm layers get the map as a separate pass).
pub fn forward_raw_affine(x: &[f32], wt: &[f32], s: &ConvShape, epi: &Epilogue) -> Vec<f32> {
    let geo = Geom {
        prec: Precision::F32,
        ..s.geom()
    };
    assert!(
        epi.scale.len() == geo.co && epi.shift.len() == geo.co,
        "epilogue: {} channels",
        geo.co
    );
    let (n, c, h, w, co) = (geo.n, geo.c, geo.h, geo.w, geo.co);
    match geo.kernels() {
        Kernels::DirectSmall => super::direct_small::forward_affine(x, wt, n, c, h, w, co, geo.stride, epi),
        Kernels::Direct => super::direct::forward_affine(x, wt, n, c, h, w, co, geo.stride, epi),
        Kernels::Gemm => Epilogue::apply(Some(epi), conv_forward_gemm(x, wt, &geo), n, co, geo.p()),
    }
}

/// Gradients (dx, dw) on raw buffers (the kernel behind [`conv2d`]'s backward).
pub fn backward_raw(x: &[f32], wt: &[f32], dy: &[f32], s: &ConvShape) -> (Vec<f32>, Vec<f32>) {
    conv_backward(x, wt, dy, &s.geom())
}

/// The weight gradient alone, for a layer whose input needs none (the stem: its input is the
/// images). Same values as `backward_raw(…).1`.
pub fn weight_grad_raw(x: &[f32], wt: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    conv_weight_grad(x, wt, dy, &s.geom())
}

/// Convolution through the custom op (CPU, f32). Non-contiguous inputs are made contiguous.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    x.apply_op2(&w, Conv2dOp { stride, pad })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{randn, rel_err};
    use candle_core::Var;

    #[allow(clippy::too_many_arguments)]
    fn check(n: usize, c: usize, h: usize, w: usize, co: usize, k: usize, stride: usize, pad: usize) {
        let x = Var::from_tensor(&randn(&[n, c, h, w], 1)).unwrap();
        let wt = Var::from_tensor(&randn(&[co, c, k, k], 2)).unwrap();
        // A random linear functional of the output, so gradients are not all ones.
        let y_ours = conv2d(&x, &wt, stride, pad).unwrap();
        let y_ref = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
        let e = rel_err(&y_ours, &y_ref);
        assert!(
            e < 1e-4,
            "forward rel err {e} for {n}x{c}x{h}x{w} co={co} k={k} s={stride} p={pad}"
        );
        let probe = randn(y_ref.dims(), 3);
        let g_ours = (y_ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (y_ref * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("dx", x.as_tensor()), ("dw", wt.as_tensor())] {
            let a = g_ours.get(v).unwrap();
            let b = g_ref.get(v).unwrap();
            let e = rel_err(a, b);
            assert!(
                e < 1e-4,
                "{name} rel err {e} for {n}x{c}x{h}x{w} co={co} k={k} s={stride} p={pad}"
            );
        }
    }

    #[test]
    fn matches_candle_conv2d_forward_and_backward() {
        // (n, c, h, w, co, k, stride, pad)
        let cases = [
            (2, 3, 8, 8, 4, 3, 1, 1),
            (1, 3, 7, 9, 5, 3, 1, 1),    // batch 1, odd sizes
            (3, 4, 9, 7, 6, 3, 2, 1),    // stride 2, odd sizes
            (2, 5, 8, 8, 7, 1, 1, 0),    // pointwise
            (3, 6, 9, 9, 4, 1, 2, 0),    // 1×1 stride 2 (shortcut)
            (2, 2, 6, 6, 3, 3, 1, 0),    // no padding
            (20, 3, 4, 4, 8, 3, 1, 1),   // several images per chunk, ragged last chunk
            (17, 4, 5, 5, 3, 3, 2, 1),   // stride 2 with chunks
            (1, 2, 11, 11, 3, 7, 2, 3),  // ImageNet-style stem
            (2, 3, 1, 6, 4, 3, 1, 1),    // one-row images
            (2, 2, 7, 6, 3, 5, 1, 2),    // 5×5 "same"
            (2, 8, 9, 8, 16, 3, 1, 1),   // direct kernel forward and dx (AVX-512 machines)
            (2, 64, 4, 4, 64, 3, 1, 1),  // small-plane direct kernels
            (2, 8, 16, 16, 16, 3, 2, 1), // stride-2 direct kernels, polyphase dx
            (2, 4, 16, 16, 16, 3, 2, 1), // stride-2 direct kernels, dx by col2im (c % 8 ≠ 0)
            (3, 8, 8, 8, 64, 3, 2, 1),   // stride-2 small-plane direct kernels
        ];
        for (n, c, h, w, co, k, s, p) in cases {
            check(n, c, h, w, co, k, s, p);
        }
    }

    #[test]
    fn same_convolution_im2col_matches_the_row_by_row_one() {
        // (n, c, h, w, k, pad): 3×3/5×5/7×7 "same" convolutions, odd and degenerate sizes.
        for (n, c, h, w, k, pad) in [
            (2, 3, 8, 8, 3, 1),
            (3, 2, 7, 5, 3, 1),
            (1, 2, 1, 6, 3, 1),
            (2, 1, 6, 1, 3, 1),
            (1, 1, 1, 1, 3, 1),
            (2, 2, 9, 6, 5, 2),
            (1, 2, 2, 3, 5, 2),
            (1, 1, 4, 4, 7, 3),
        ] {
            let geo = Geom::new(&[n, c, h, w], &[1, c, k, k], 1, pad).unwrap();
            assert_eq!((geo.oh, geo.ow), (h, w));
            let x: Vec<f32> = (0..n * c * h * w).map(|v| v as f32 + 1.0).collect();
            let len = c * k * k * n * h * w;
            let (mut a, mut b) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            im2col_same(&x, n, &geo, &mut a);
            im2col_rows(&x, n, &geo, &mut b);
            assert_eq!(a, b, "{n}x{c}x{h}x{w} k={k} pad={pad}");
        }
    }

    /// Where a width-16 ResNet-18 step spends its convolution time, layer by layer (forward and
    /// backward of each distinct shape at batch 256; `LAYER_WIDTH=64` for the full width at
    /// 128; `LAYER_PRECISION=bf16` for the bf16 kernels). A measurement, not a test:
    /// `cargo test -p protoclr-train --lib layer_timings -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn layer_timings() {
        // (c, co, h, k, stride, pad, layers of this shape in the network)
        // First-stage width (LAYER_WIDTH=64: the full ResNet-18, at its bench batch of 2×64);
        // LAYER_ONLY=i times the i-th shape alone (e.g. under perf).
        let wd: usize = std::env::var("LAYER_WIDTH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        let only: Option<usize> = std::env::var("LAYER_ONLY").ok().and_then(|v| v.parse().ok());
        // LAYER_PRECISION=bf16: the bf16 kernels (ops::bf16).
        let precision: Precision = std::env::var("LAYER_PRECISION")
            .ok()
            .map(|v| v.parse().unwrap())
            .unwrap_or_default();
        let shapes = [
            (3, wd, 32, 3, 1, 1, 1),
            (wd, wd, 32, 3, 1, 1, 4),
            (wd, 2 * wd, 32, 3, 2, 1, 1),
            (wd, 2 * wd, 32, 1, 2, 0, 1),
            (2 * wd, 2 * wd, 16, 3, 1, 1, 3),
            (2 * wd, 4 * wd, 16, 3, 2, 1, 1),
            (2 * wd, 4 * wd, 16, 1, 2, 0, 1),
            (4 * wd, 4 * wd, 8, 3, 1, 1, 3),
            (4 * wd, 8 * wd, 8, 3, 2, 1, 1),
            (4 * wd, 8 * wd, 8, 1, 2, 0, 1),
            (8 * wd, 8 * wd, 4, 3, 1, 1, 3),
        ];
        let n = if wd > 16 { 128 } else { 256 };
        let mut total = 0.0;
        for (i, (c, co, h, k, stride, pad, count)) in shapes.into_iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let s = ConvShape {
                n,
                c,
                h,
                w: h,
                co,
                k,
                stride,
                pad,
                precision,
            };
            let x: Vec<f32> = (0..n * c * h * h).map(|v| (v % 7) as f32 - 3.0).collect();
            let wt: Vec<f32> = (0..co * c * k * k).map(|v| (v % 5) as f32 - 2.0).collect();
            let (oh, ow) = s.out_hw();
            let dy: Vec<f32> = (0..n * co * oh * ow).map(|v| (v % 3) as f32 - 1.0).collect();
            // Fastest of 5 (this machine's speed drifts; the minimum is the stable statistic).
            let time = |f: &dyn Fn()| {
                f();
                (0..5)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let fw = time(&|| drop(forward_raw(&x, &wt, &s)));
            let bw = time(&|| drop(backward_raw(&x, &wt, &dy, &s)));
            let dw = time(&|| drop(weight_grad_raw(&x, &wt, &dy, &s)));
            total += (fw + bw) * count as f64;
            println!(
                "{c:>3}→{co:<3} {h:>2}×{h:<2} k{k} s{stride} ×{count}: forward {fw:6.1} ms  backward {bw:6.1} ms (dW alone {dw:5.1})"
            );
        }
        println!("all convolutions of one step: {total:.0} ms");
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let x = randn(&[37, 4, 6, 6], 5);
        let w = randn(&[8, 4, 3, 3], 6);
        let dy = randn(&[37, 8, 6, 6], 7);
        let geo = Geom::new(x.dims(), w.dims(), 1, 1).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ws = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gs = dy.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| (conv_forward(&xs, &ws, &geo), conv_backward(&xs, &ws, &gs, &geo)))
        };
        let a = run(1);
        let b = run(2);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1 .0, b.1 .0);
        assert_eq!(a.1 .1, b.1 .1);
    }
}

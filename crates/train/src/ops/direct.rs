//! Direct 3×3, padding-1 convolution (stride 1, or 2 by polyphase planes: see `Padded`) with
//! AVX-512 micro-kernels (no im2col, no gemm packing), for the large planes of the CIFAR ResNets
//! where im2col + gemm spent most of its time copying.
//!
//! Each image's channels are copied once into zero-padded planes `xp[c][(h + 2)·(w + 1)]` (one
//! pad column per row serves as the right pad of a row and the left pad of the next). On the
//! padded grid, output position `q = y·wp + x` (wp = w + 1) is
//! `Σ_c Σ_{i,j} W[o][c][i][j] · xp[c][q + i·wp + j]`: every tap is a contiguous, unaligned load at
//! a fixed offset, and positions with `x ≥ w` are computed and thrown away (1 of every `wp`). The
//! micro-kernel keeps 8 output channels × 48 positions in 24 zmm accumulators and, per input
//! channel and tap, does 3 loads, 8 broadcasts and 24 FMAs. The weight gradient
//! ([`weight_grad`]) is the same sum read the other way (a reduction over positions). The
//! stride-1 input gradient is itself such a convolution (of dY with the flipped, transposed
//! kernel; see `conv.rs`), so all three products of a 3×3 layer run here. Work is split by
//! image (forward) or into a fixed number of image groups reduced in order (weight gradient),
//! so results do not depend on the thread count.
//!
//! Measured on the 2-core AVX-512 (AMD EPYC) development machine: about 70 GFLOP/s on one thread
//! for the forward kernel on 32×32 planes, 16 → 16 channels (a standalone timing); in place of
//! im2col + `gemm` for these layers it took the width-16 training step from about 280 to 350
//! images/s (README, Performance).
//!
//! bf16 (`Precision::Bf16`; `Arith::of` chooses): on AMX ([`super::amx`]) the forward, the
//! stride-2 input gradient and the weight gradient are the tile gemms of `direct_small`
//! (`forward_amx`, `input_grad_stride2_amx`, `weight_grad_amx`), which work on this module's
//! padded grid and channel-pair planes; 16-channel layers use 16-row A tiles (forward, dx) and
//! three taps at a time on 16 × 16 tiles (weight gradient). The stride-1 input gradient is the
//! forward of dY (conv.rs), so it runs there too. Shapes the tiles do not take (the 3-channel
//! stem, tile rows not a multiple of 16) run in f32 on an AMX CPU, where `vdpbf16ps` is slower
//! than f32 FMAs; without AMX the `vdpbf16ps` kernels here (`kernel_bf16`,
//! `wgrad_kernel_bf16`, `phase_kernel_bf16`) run. Batch 256, loaded 2-core Sapphire Rapids
//! guest, best of 3 interleaved runs (`layer_timings`), f32 → bf16: 16→16 32×32 forward 10.4 →
//! 7.8 ms, backward 36.7 → 15.3; 32→32 16×16 forward 10.5 → 1.9, backward 28.1 → 6.9 (all
//! convolutions of a width-16 step 691 → 307 ms). Width-16 step, 2×128 images, best of 8
//! interleaved runs: f32 299 img/s, bf16 316 before (`vdpbf16ps` here), 450 with the tiles;
//! width 64, 2×64, best of 2: f32 21.2, bf16 17.8 → 39.0.

use super::bf16::{as_u16, as_u32, convert, convert_pairs, to_bf16};
use super::conv::Epilogue;
use super::{output_vec, simd, sum_over_image_groups, with_scratch, PlaneMoments, Precision};
use rayon::prelude::*;

/// Output channels per micro-kernel call.
const OB: usize = 8;
/// Output positions per micro-kernel step (three 16-float vectors).
const QB: usize = 48;

/// Whether [`forward`] handles this convolution: 3×3, stride 1 or 2, padding 1, output
/// channels a multiple of 8, output planes of at least 64 positions (smaller ones waste most of
/// each vector on padding; see `direct_small`), on a CPU with AVX-512F.
pub fn applies(c: usize, co: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> bool {
    k == 3
        && (stride == 1 || stride == 2)
        && pad == 1
        && co.is_multiple_of(OB)
        && c > 0
        && h.div_ceil(stride) * w.div_ceil(stride) >= 64
        && has_avx512()
}

/// How a product multiplies: f32 FMAs, bf16 `vdpbf16ps` (AVX-512 BF16) or bf16 AMX tiles
/// ([`super::amx`], through the tile gemms of `direct_small`, whose padded-grid and pair-plane
/// layout is this module's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    F32,
    Dp,
    Amx,
}

impl Arith {
    /// The fastest arithmetic of a precision here. bf16: on AMX where it is available, the tile
    /// rows come in multiples of 16 (`rows`: output channels of the forward and the weight
    /// gradient, dx channels of the stride-2 input gradient) and at least
    /// [`AMX_MIN_CHANNELS`] channels are reduced (`red`; the tiles pad them to 32). Other
    /// shapes on an AMX CPU run in f32: there (Sapphire Rapids class) `vdpbf16ps` runs at a
    /// quarter of the FMA rate, so the f32 kernel is the faster one (the 3-channel stem:
    /// forward 3.8–6.8 ms f32, 5.5–6.0 `vdpbf16ps`, 5.8–9.0 on AMX tiles; weight gradient
    /// 4.9–6.2 f32, 5.6–6.2 `vdpbf16ps`, 7.6–12 on the tiles; batch 256, loaded machine, the
    /// tiles 3/16 full with 3 channels and the layout passes as for 16). Without AMX,
    /// `vdpbf16ps` where it outruns f32 (AMD Zen 4, twice the FMA rate), else f32
    /// ([`super::bf16::dp_pays`]).
    fn of(prec: Precision, rows: usize, red: usize) -> Self {
        let amx = super::amx::available();
        match prec {
            Precision::F32 => Arith::F32,
            Precision::Bf16 if amx && rows.is_multiple_of(16) && red >= AMX_MIN_CHANNELS => Arith::Amx,
            Precision::Bf16 if amx || !super::bf16::dp_pays() => Arith::F32,
            Precision::Bf16 => Arith::Dp,
        }
    }
}

/// Fewest reduced channels for which the AMX tiles, padded to 32 channels, pay.
const AMX_MIN_CHANNELS: usize = 8;

#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn has_avx512() -> bool {
    false
}

/// Geometry of the zero-padded input planes and of the output grid (3×3 kernel, padding 1).
///
/// Stride 1: one plane per channel, `xp[(y + 1)·wp + x + 1] = x[y][x]`, `wp = w + 1` (the pad
/// column after a row is the next row's left pad); tap (i, j)
/// of output grid position `q = y·wp + x` reads `xp[q + i·wp + j]`.
///
/// Stride 2 (polyphase): four planes per channel, one per (row, column) parity (r, s), with
/// `P_rs[(a + 1)·wp + b + 1] = x[2a + r][2b + s]` (zero outside the image), `wp = ⌈w/2⌉ + 1`.
/// Tap (i, j) of output (y, x) reads input row `2y + i − 1`: parity `(i + 1) mod 2`, phase row
/// `y − 1` for i = 0 and `y` otherwise, so it reads `P_rs[q + min(i, 1)·wp + min(j, 1)]` at
/// `q = y·wp + x` — again one contiguous, unaligned load per tap, and only the 9 taps' worth of
/// multiply-adds (an im2col of a stride-2 layer copies every input value 2.25 times instead).
pub(super) struct Padded {
    pub(super) stride: usize,
    /// Output plane.
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// Row length of the padded planes and of the output grid.
    pub(super) wp: usize,
    /// Output grid positions computed per image and channel (`oh·wp`, rounded up to `QB`).
    pub(super) nq: usize,
    /// Floats per padded (phase) plane: the grid plus slack for the last block's reads,
    /// rounded up to 16.
    pub(super) plane: usize,
}

impl Padded {
    pub(super) fn new(h: usize, w: usize, stride: usize) -> Self {
        assert!(stride == 1 || stride == 2, "direct kernels: stride {stride}");
        let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
        // One pad column per row: a row's right neighbour column is the next row's left one.
        let wp = if stride == 1 { w + 1 } else { ow + 1 };
        let nq = (oh * wp).div_ceil(QB) * QB;
        let rows = if stride == 1 { h + 2 } else { oh + 1 };
        let plane = (rows * wp + 1).max(nq + Self::max_reach(stride, wp)).div_ceil(16) * 16;
        Self {
            stride,
            oh,
            ow,
            wp,
            nq,
            plane,
        }
    }
    /// Largest tap offset within one (phase) plane.
    fn max_reach(stride: usize, wp: usize) -> usize {
        if stride == 1 {
            2 * wp + 2
        } else {
            wp + 1
        }
    }
    /// Floats per image in the weight gradient's batched layout: stride 1, exactly the padded
    /// grid's `(h + 2)·wp` (the reads past it, from thrown-away positions or the last row's
    /// corner tap, land on the next image's zero top row or the zeroed tail); stride 2, a phase
    /// plane.
    fn packed(&self) -> usize {
        if self.stride == 1 {
            (self.oh + 2) * self.wp
        } else {
            self.plane
        }
    }
    /// Planes per channel (1, or 4 phases).
    pub(super) fn phases(&self) -> usize {
        self.stride * self.stride
    }
    /// Floats per channel of one image.
    pub(super) fn block(&self) -> usize {
        self.phases() * self.plane
    }
    /// Output positions per plane.
    pub(super) fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Offset of tap `t = 3i + j` from output grid position `q`, within a channel whose phase
    /// planes lie `phase_stride` floats apart.
    pub(super) fn offs(&self, phase_stride: usize) -> [usize; 9] {
        std::array::from_fn(|t| {
            let (i, j) = (t / 3, t % 3);
            if self.stride == 1 {
                i * self.wp + j
            } else {
                ((i + 1) % 2 * 2 + (j + 1) % 2) * phase_stride + i.min(1) * self.wp + j.min(1)
            }
        })
    }
    /// Copies one image's `c` channels `x [c, h, w]` into padded planes: channel `ci` at
    /// `xp[ci·cstride..]`, its phase planes `phase_stride` apart.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill(
        &self,
        x: &[f32],
        c: usize,
        h: usize,
        w: usize,
        xp: &mut [f32],
        cstride: usize,
        phase_stride: usize,
    ) {
        if self.stride == 1 {
            pad_planes(x, c, h, w, self, xp, cstride, self.plane);
        } else {
            phase_planes(x, c, h, w, self, xp, cstride, phase_stride);
        }
    }
}

/// The stride-2 [`Padded::fill`]: four parity planes per channel.
#[allow(clippy::too_many_arguments)]
fn phase_planes(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    pd: &Padded,
    xp: &mut [f32],
    cstride: usize,
    phase_stride: usize,
) {
    let wp = pd.wp;
    for ci in 0..c {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        for r in 0..2 {
            for s in 0..2 {
                let base = ci * cstride + (r * 2 + s) * phase_stride;
                let dst = &mut xp[base..base + pd.plane];
                dst.fill(0.0);
                for a in 0..pd.oh {
                    let y = 2 * a + r;
                    if y >= h || s >= w {
                        continue;
                    }
                    let row = &mut dst[(a + 1) * wp + 1..(a + 1) * wp + 1 + pd.ow];
                    for (d, &v) in row.iter_mut().zip(src[y * w + s..(y + 1) * w].iter().step_by(2)) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// `y = conv(x, wt)` for `x [n, c, h, w]`, `wt [co, c, 3, 3]`; only where [`applies`] is true.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    wt: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
) -> Vec<f32> {
    forward_moments(x, wt, n, c, h, w, co, stride, false, Precision::F32).0
}

/// Weights as bf16 pairs of input channels for [`kernel_bf16`], `[nout/8][⌈nin/2⌉][taps][8]`:
/// lane `bf16(w(o, 2k, t)) | bf16(w(o, 2k + 1, t)) << 16` (zero past the last input channel),
/// the 8 output channels of a block side by side per tap — the f32 kernel's layout, in pairs.
/// `w(o, i, t)` is the weight of output channel o, input channel i, tap t (of `taps`).
pub(super) fn pair_weights(
    nout: usize,
    nin: usize,
    taps: &[usize],
    w: impl Fn(usize, usize, usize) -> f32,
) -> Vec<u32> {
    let (cp, nt) = (nin.div_ceil(2), taps.len());
    let mut v = vec![0u32; nout * cp * nt];
    for o in 0..nout {
        for k in 0..cp {
            for (ti, &t) in taps.iter().enumerate() {
                let lo = to_bf16(w(o, 2 * k, t)) as u32;
                let hi = if 2 * k + 1 < nin {
                    to_bf16(w(o, 2 * k + 1, t)) as u32
                } else {
                    0
                };
                v[((o / OB * cp + k) * nt + ti) * OB + o % OB] = lo | hi << 16;
            }
        }
    }
    v
}

/// Interleaves the `c` f32 planes of `xp` (`cstride` apart) into `⌈c/2⌉` planes of bf16 pairs
/// (channels 2k and 2k + 1, the last one's partner zero when `c` is odd), `cstride` lanes apart.
pub(super) fn pair_planes(xp: &[f32], c: usize, cstride: usize, out: &mut [u32]) {
    for k in 0..c.div_ceil(2) {
        let a = &xp[2 * k * cstride..(2 * k + 1) * cstride];
        let b = (2 * k + 1 < c).then(|| &xp[(2 * k + 1) * cstride..(2 * k + 2) * cstride]);
        convert_pairs(a, b, &mut out[k * cstride..(k + 1) * cstride]);
    }
}

/// [`forward`], and with `moments` the [`PlaneMoments`] of every output plane (`[n][co]`,
/// computed from the output rows while they are in L1; empty without). `prec`: bf16 on AMX
/// tiles, the bf16 micro-kernel (`kernel_bf16`, on pairs of input channels) or the f32 one
/// (see `Arith::of`).
#[allow(clippy::too_many_arguments)]
pub fn forward_moments(
    x: &[f32],
    wt: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
    moments: bool,
    prec: Precision,
) -> (Vec<f32>, Vec<PlaneMoments>) {
    forward_moments_as(
        x,
        wt,
        n,
        c,
        h,
        w,
        co,
        stride,
        moments,
        Arith::of(prec, co, c),
        None,
    )
}

/// [`forward`] with an [`Epilogue`] applied to each output row as it is written (f32).
#[allow(clippy::too_many_arguments)]
pub fn forward_affine(
    x: &[f32],
    wt: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
    epi: &Epilogue,
) -> Vec<f32> {
    forward_moments_as(x, wt, n, c, h, w, co, stride, false, Arith::F32, Some(epi)).0
}

/// [`forward_moments`] with the arithmetic chosen, the output written through `epi` when given
/// (moments, if asked for, are those of the raw output).
#[allow(clippy::too_many_arguments)]
fn forward_moments_as(
    x: &[f32],
    wt: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
    moments: bool,
    arith: Arith,
    epi: Option<&Epilogue>,
) -> (Vec<f32>, Vec<PlaneMoments>) {
    assert!(
        applies(c, co, h, w, 3, stride, 1),
        "direct::forward on an unsupported convolution"
    );
    if arith == Arith::Amx {
        let (y, m) = super::direct_small::forward_amx(x, wt, n, c, h, w, co, stride, moments);
        let p = h.div_ceil(stride) * w.div_ceil(stride);
        return (Epilogue::apply(epi, y, n, co, p), m);
    }
    let bf16 = arith == Arith::Dp;
    assert!(
        !bf16 || super::bf16::has_bf16(),
        "direct::forward: bf16 needs AVX-512 BF16"
    );
    let pd = Padded::new(h, w, stride);
    let (cstride, offs) = (pd.block(), pd.offs(pd.plane));
    // Weights as [co/8][c][9][8]: the 8 output channels of a block side by side per tap.
    let mut wk = vec![0f32; if bf16 { 0 } else { co * c * 9 }];
    if !bf16 {
        for o in 0..co {
            for ci in 0..c {
                for t in 0..9 {
                    wk[((o / OB * c + ci) * 9 + t) * OB + o % OB] = wt[(o * c + ci) * 9 + t];
                }
            }
        }
    }
    let taps: Vec<usize> = (0..9).collect();
    let wk2 = if bf16 {
        pair_weights(co, c, &taps, |o, i, t| wt[(o * c + i) * 9 + t])
    } else {
        Vec::new()
    };
    let cp = c.div_ceil(2);
    let (p, pin) = (pd.p(), h * w);
    // Writes every image's block whole: all `co / OB` channel blocks (co is a
    // multiple of OB, `applies`), every row of each plane.
    let mut mom = vec![(0f64, 0f64); if moments { n * co } else { 0 }];
    let rows = simd::Planes {
        s: pd.ow,
        stride: pd.wp,
        n: pd.oh,
    };
    let fill = |y: &mut [std::mem::MaybeUninit<f32>]| {
        let mom_chunks: Vec<&mut [PlaneMoments]> = if moments {
            mom.chunks_mut(co).collect()
        } else {
            (0..n).map(|_| <&mut [PlaneMoments]>::default()).collect()
        };
        y.par_chunks_mut(co * p)
            .zip(mom_chunks)
            .enumerate()
            .for_each(|(img, (yimg, mimg))| {
                let ximg = &x[img * c * pin..(img + 1) * c * pin];
                with_scratch(c * cstride, |xp| {
                    pd.fill(ximg, c, h, w, xp, cstride, pd.plane);
                    with_scratch(if bf16 { cp * cstride } else { 0 }, |xp2| {
                        let xp2 = as_u32(xp2);
                        if bf16 {
                            pair_planes(xp, c, cstride, xp2);
                        }
                        with_scratch(OB * pd.nq, |tmp| {
                            for ob in 0..co / OB {
                                if bf16 {
                                    let wb = &wk2[ob * cp * 9 * OB..(ob + 1) * cp * 9 * OB];
                                    // SAFETY: as below, in pairs of channels: xp2 holds cp blocks of
                                    // `cstride` lanes, wb cp·9·OB; AVX-512 BF16 asserted above.
                                    unsafe { kernel_bf16(xp2, cp, cstride, &offs, pd.nq, wb, tmp) };
                                } else {
                                    let wb = &wk[ob * c * 9 * OB..(ob + 1) * c * 9 * OB];
                                    // SAFETY: `applies` checked AVX-512F; xp holds c blocks of `cstride`
                                    // floats, and every read of the nq positions stays in its (phase) plane
                                    // (Padded::new); tmp holds OB rows of nq; wb holds c·9·OB weights.
                                    unsafe { kernel(xp, c, cstride, &offs, pd.nq, wb, tmp) };
                                }
                                for o in 0..OB {
                                    let dst = &mut yimg[(ob * OB + o) * p..(ob * OB + o + 1) * p];
                                    let src = &tmp[o * pd.nq..(o + 1) * pd.nq];
                                    match epi {
                                        // The sum pass unpads the rows as it reads them.
                                        None if moments => {
                                            mimg[ob * OB + o] =
                                                simd::plane_moments(src, rows, Some((dst, pd.ow)))
                                        }
                                        None => simd::copy_rows_uninit(dst, pd.ow, src, pd.wp, pd.oh, pd.ow),
                                        Some(e) => {
                                            let ch = ob * OB + o..ob * OB + o + 1;
                                            let (a, b) = (&e.scale[ch.clone()], &e.shift[ch]);
                                            for (r, row) in dst.chunks_exact_mut(pd.ow).enumerate() {
                                                let s = &src[r * pd.wp..r * pd.wp + pd.ow];
                                                simd::affine(row, s, pd.ow, a, b, e.relu);
                                            }
                                            if moments {
                                                mimg[ob * OB + o] = simd::plane_moments(src, rows, None);
                                            }
                                        }
                                    }
                                }
                            }
                        });
                    });
                });
            })
    };
    // SAFETY: see `fill`.
    let y = unsafe { output_vec(n * co * p, fill) };
    (y, mom)
}

/// `dW = ∂L/∂W` (`[co, c, 3, 3]`) of the convolution [`forward`] computes, from its input `x`
/// and the output gradient `dy`, only where [`applies`] is true. On the padded grid,
/// `dW[o][c][i][j] = Σ_img Σ_q dyg[o][q] · xp[c][q + i·wp + j]`, where `dyg` is `dy` laid out
/// on the grid with zeros in the thrown-away columns (and up to the plane's end), so they add
/// nothing. A batch of images is laid out back to back in both `xp` and `dyg`, each image in
/// exactly its padded grid (`Padded::packed`: with no rounding, 8×8 planes waste 29 % of the
/// positions instead of 50 %), so one pass of the kernel sums over all of them and its
/// horizontal reductions are paid once a batch (they dominated on 8×8 planes otherwise). Images are split
/// into at most 8 groups (a fixed split, whatever the thread count); each group sums its images
/// in its own buffer and the groups are added in order, so results are deterministic.
/// `prec`: bf16 rounds both operands (after the layout copies) and sums on AMX tiles or on
/// `wgrad_kernel_bf16` (see `Arith::of`).
#[allow(clippy::too_many_arguments)]
pub fn weight_grad(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
    prec: Precision,
) -> Vec<f32> {
    weight_grad_as(x, dy, n, c, h, w, co, stride, Arith::of(prec, co, c))
}

/// [`weight_grad`] with the arithmetic chosen.
#[allow(clippy::too_many_arguments)]
fn weight_grad_as(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
    arith: Arith,
) -> Vec<f32> {
    assert!(
        applies(c, co, h, w, 3, stride, 1),
        "direct::weight_grad on an unsupported convolution"
    );
    if arith == Arith::Amx {
        return super::direct_small::weight_grad_amx(x, dy, n, c, h, w, co, stride);
    }
    let bf16 = arith == Arith::Dp;
    assert!(
        !bf16 || super::bf16::has_bf16(),
        "direct::weight_grad: bf16 needs AVX-512 BF16"
    );
    // Positions a vector step of the kernel: 16 f32, or 16 pairs of bf16.
    let lanes = if bf16 { 32 } else { 16 };
    let pd = Padded::new(h, w, stride);
    let (p, pin) = (pd.p(), h * w);
    sum_over_image_groups(n, co * c * 9, |imgs| {
        let mut dw = vec![0f32; co * c * 9];
        let (first, last) = (imgs.start, imgs.end);
        // Images a batch: about 8k grid positions (a few hundred KB of planes).
        let pk = pd.packed();
        let batch = (8192 / (pd.phases() * pk)).max(1);
        let mut img = first;
        while img < last {
            let b = batch.min(last - img);
            // Per channel (and phase): b images `pk` apart, rounded up to whole vectors.
            let len = (b * pk).div_ceil(lanes) * lanes;
            // Per channel and phase: b planes (phase regions `len` apart), then the slack the
            // last plane's shifted reads need.
            let cstride = pd.phases() * len + Padded::max_reach(stride, pd.wp) + lanes;
            let offs = pd.offs(len);
            with_scratch(c * cstride, |xp| {
                with_scratch(co * len, |dyg| {
                    for k in 0..b {
                        let i = img + k;
                        let xk = &x[i * c * pin..(i + 1) * c * pin];
                        if stride == 1 {
                            pad_planes(xk, c, h, w, &pd, &mut xp[k * pk..], cstride, pk);
                        } else {
                            pd.fill(xk, c, h, w, &mut xp[k * pk..], cstride, len);
                        }
                        let dk = &dy[i * co * p..(i + 1) * co * p];
                        grid_planes(dk, co, &pd, &mut dyg[k * pk..], len, pk);
                    }
                    // Zero what no image covers (read by thrown-away positions only, but
                    // scratch may hold NaNs, and 0·NaN is not 0).
                    for ci in 0..c {
                        let ch = &mut xp[ci * cstride..(ci + 1) * cstride];
                        for r in 0..pd.phases() {
                            ch[r * len + b * pk..(r + 1) * len].fill(0.0);
                        }
                        ch[pd.phases() * len..].fill(0.0);
                    }
                    for o in 0..co {
                        dyg[o * len + b * pk..(o + 1) * len].fill(0.0);
                    }
                    if bf16 {
                        with_scratch((c * cstride).div_ceil(2), |xh| {
                            let xh = as_u16(xh);
                            convert(&xp[..c * cstride], xh);
                            with_scratch((co * len).div_ceil(2), |dh| {
                                let dh = as_u16(dh);
                                convert(&dyg[..co * len], dh);
                                // SAFETY: as below with 32-position steps (len and the slack
                                // are multiples of 32); AVX-512 BF16 asserted above.
                                unsafe { wgrad_kernel_bf16(xh, cstride, dh, len, c, co, &offs, &mut dw) };
                            });
                        });
                    } else {
                        // SAFETY: `applies` checked AVX-512F; every read of the kernel, at
                        // q + offset + 15 < (phases − 1)·len + len + max_reach + 16, is inside a
                        // channel's `cstride`; dyg holds co rows of `len`; dw holds co·c·9; co is a
                        // multiple of 8.
                        unsafe { wgrad_kernel(xp, cstride, dyg, len, c, co, &offs, &mut dw, WGRAD_BLOCK) };
                    }
                });
            });
            img += b;
        }
        dw
    })
}

/// One phase of a stride-2 input gradient: row parity, column parity, `(tap, offset)` pairs.
pub(super) type Phase = (usize, usize, Vec<(usize, usize)>);

/// The four phases of a stride-2 input gradient: for input parity (r, s) — input pixels
/// `(2a + r, 2b + s)` — the taps `t = 3i + j` that read them and where each finds its output
/// gradient on the grid [`grid_planes`] lays out (row length `wp`, `dy[y][x]` at `y·wp + x`).
/// Tap i reads input row `2y + i − 1`, so row parity r = 0 comes from tap 1 at `y = a`, and
/// r = 1 from tap 0 at `y = a + 1` and tap 2 at `y = a`; columns likewise. Each phase is thus a
/// small forward convolution of dY (1, 2, 2 and 4 taps: 9 in all, no multiply by a zero).
pub(super) fn dx_phases(wp: usize) -> [Phase; 4] {
    let side = |r: usize| {
        if r == 0 {
            vec![(1, 0)]
        } else {
            vec![(0, 1), (2, 0)]
        }
    };
    std::array::from_fn(|ph| {
        let (r, s) = (ph / 2, ph % 2);
        let taps = side(r)
            .into_iter()
            .flat_map(|(i, di)| side(s).into_iter().map(move |(j, dj)| (3 * i + j, di * wp + dj)))
            .collect();
        (r, s, taps)
    })
}

/// Whether [`input_grad_stride2`] handles the input gradient of a 3×3, stride-2, padding-1
/// convolution: input channels `c` a multiple of 8, output planes of at least 64 positions,
/// AVX-512F.
pub fn dx_applies(c: usize, co: usize, h: usize, w: usize) -> bool {
    c.is_multiple_of(OB) && c > 0 && co > 0 && h.div_ceil(2) * w.div_ceil(2) >= 64 && has_avx512()
}

/// dx (`[n, c, h, w]`) of a 3×3, stride-2, padding-1 convolution from its output gradient
/// `dy [n, co, ⌈h/2⌉, ⌈w/2⌉]`: per image, dY goes onto the grid once and each phase of
/// `dx_phases` runs the forward micro-kernel with its own taps (dY's channels as the inputs,
/// dx's as the outputs), its results written to every other row and column of dx. Replaces
/// `col2im(Wᵀ·dY)`. Only where [`dx_applies`] is true. `prec`: bf16 on AMX tiles or on
/// `phase_kernel_bf16` (see `Arith::of`).
#[allow(clippy::too_many_arguments)]
pub fn input_grad_stride2(
    dy: &[f32],
    wt: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    prec: Precision,
) -> Vec<f32> {
    input_grad_stride2_as(dy, wt, n, c, h, w, co, Arith::of(prec, c, co))
}

/// [`input_grad_stride2`] with the arithmetic chosen.
#[allow(clippy::too_many_arguments)]
fn input_grad_stride2_as(
    dy: &[f32],
    wt: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    arith: Arith,
) -> Vec<f32> {
    assert!(
        dx_applies(c, co, h, w),
        "direct::input_grad_stride2 on an unsupported convolution"
    );
    if arith == Arith::Amx {
        return super::direct_small::input_grad_stride2_amx(dy, wt, n, c, h, w, co);
    }
    let bf16 = arith == Arith::Dp;
    assert!(
        !bf16 || super::bf16::has_bf16(),
        "direct::input_grad_stride2: bf16 needs AVX-512 BF16"
    );
    let pd = Padded::new(h, w, 2);
    let phases = dx_phases(pd.wp);
    // bf16: per phase, the pair weights of dY's channel pairs ([`pair_weights`] with dx's
    // channels as the outputs).
    let cop = co.div_ceil(2);
    let wph2: Vec<Vec<u32>> = if bf16 {
        phases
            .iter()
            .map(|(_, _, taps)| {
                let t: Vec<usize> = taps.iter().map(|&(t, _)| t).collect();
                pair_weights(c, co, &t, |l, o, t| wt[(o * c + l) * 9 + t])
            })
            .collect()
    } else {
        Vec::new()
    };
    // Per phase, weights as [c/8][co][taps][8]: dx's 8 channels of a block side by side.
    let wph: Vec<Vec<f32>> = phases
        .iter()
        .map(|(_, _, taps)| {
            let nt = taps.len();
            let mut v = vec![0f32; c * co * nt];
            for cb in 0..c / OB {
                for o in 0..co {
                    for (k, &(t, _)) in taps.iter().enumerate() {
                        for l in 0..OB {
                            v[((cb * co + o) * nt + k) * OB + l] = wt[(o * c + cb * OB + l) * 9 + t];
                        }
                    }
                }
            }
            v
        })
        .collect();
    let (p, pin) = (pd.p(), h * w);
    // Writes every element: each input pixel has exactly one parity phase, and each phase
    // writes all its ⌈(h − r)/2⌉ × ⌈(w − s)/2⌉ pixels for every channel block.
    let fill = |dx: &mut [std::mem::MaybeUninit<f32>]| {
        dx.par_chunks_mut(c * pin).enumerate().for_each(|(img, dximg)| {
            with_scratch(co * pd.plane, |dyp| {
                grid_planes(
                    &dy[img * co * p..(img + 1) * co * p],
                    co,
                    &pd,
                    dyp,
                    pd.plane,
                    pd.plane,
                );
                with_scratch(if bf16 { cop * pd.plane } else { 0 }, |dyp2| {
                    let dyp2 = as_u32(dyp2);
                    if bf16 {
                        pair_planes(dyp, co, pd.plane, dyp2);
                    }
                    with_scratch(OB * pd.nq, |tmp| {
                        for (ph, ((r, s, taps), wp_)) in phases.iter().zip(&wph).enumerate() {
                            let (hr, ws) = ((h - r).div_ceil(2), (w - s).div_ceil(2));
                            let nq = (hr * pd.wp).div_ceil(QB) * QB;
                            let nt = taps.len();
                            for cb in 0..c / OB {
                                if bf16 {
                                    let wb = &wph2[ph][cb * cop * nt * OB..(cb + 1) * cop * nt * OB];
                                    // SAFETY: as below, in channel pairs: dyp2 holds cop planes of
                                    // `pd.plane` lanes, wb cop·nt·OB; AVX-512 BF16 asserted above.
                                    unsafe { phase_kernel_bf16(dyp2, cop, pd.plane, taps, nq, wb, tmp) };
                                } else {
                                    let wb = &wp_[cb * co * nt * OB..(cb + 1) * co * nt * OB];
                                    // SAFETY: `dx_applies` checked AVX-512F; dyp holds co planes of
                                    // `pd.plane` ≥ pd.nq + wp + 1 ≥ nq + max offset floats; tmp holds
                                    // OB rows of nq ≤ pd.nq; wb holds co·nt·OB weights.
                                    unsafe { phase_kernel(dyp, co, pd.plane, taps, nq, wb, tmp) };
                                }
                                for l in 0..OB {
                                    let plane = &mut dximg[(cb * OB + l) * pin..(cb * OB + l + 1) * pin];
                                    let src = &tmp[l * nq..(l + 1) * nq];
                                    for a in 0..hr {
                                        let row = &mut plane[(2 * a + r) * w..(2 * a + r + 1) * w];
                                        let vals = &src[a * pd.wp..a * pd.wp + ws];
                                        for (d, &v) in row[*s..].iter_mut().step_by(2).zip(vals) {
                                            d.write(v);
                                        }
                                    }
                                }
                            }
                        }
                    });
                });
            });
        })
    };
    // SAFETY: see `fill`.
    unsafe { output_vec(n * c * pin, fill) }
}

/// [`kernel`] with a phase's taps (1, 2 or 4; offsets from the `(tap, offset)` pairs).
///
/// # Safety
/// As [`kernel`].
#[allow(clippy::too_many_arguments)]
unsafe fn phase_kernel(
    xp: &[f32],
    c: usize,
    cstride: usize,
    taps: &[(usize, usize)],
    nq: usize,
    wb: &[f32],
    tmp: &mut [f32],
) {
    fn offs<const N: usize>(taps: &[(usize, usize)]) -> [usize; N] {
        std::array::from_fn(|k| taps[k].1)
    }
    match taps.len() {
        1 => kernel::<1>(xp, c, cstride, &offs(taps), nq, wb, tmp),
        2 => kernel::<2>(xp, c, cstride, &offs(taps), nq, wb, tmp),
        4 => kernel::<4>(xp, c, cstride, &offs(taps), nq, wb, tmp),
        k => unreachable!("a stride-2 phase has 1, 2 or 4 taps, not {k}"),
    }
}

/// [`phase_kernel`] in bf16 ([`kernel_bf16`] with a phase's taps).
///
/// # Safety
/// As [`kernel_bf16`].
#[allow(clippy::too_many_arguments)]
unsafe fn phase_kernel_bf16(
    xp: &[u32],
    cp: usize,
    cstride: usize,
    taps: &[(usize, usize)],
    nq: usize,
    wb: &[u32],
    tmp: &mut [f32],
) {
    fn offs<const N: usize>(taps: &[(usize, usize)]) -> [usize; N] {
        std::array::from_fn(|k| taps[k].1)
    }
    match taps.len() {
        1 => kernel_bf16::<1>(xp, cp, cstride, &offs(taps), nq, wb, tmp),
        2 => kernel_bf16::<2>(xp, cp, cstride, &offs(taps), nq, wb, tmp),
        4 => kernel_bf16::<4>(xp, cp, cstride, &offs(taps), nq, wb, tmp),
        k => unreachable!("a stride-2 phase has 1, 2 or 4 taps, not {k}"),
    }
}

/// Zeroes a row's pad column, one float in every layout here, with a plain store: `fill` (and
/// any loop, which LLVM turns back into it) compiled to a `memset` call per row, 2 % of a
/// training step spent calling it for single floats.
#[inline]
fn zero_short(v: &mut [f32]) {
    match v {
        [x] => *x = 0.0,
        _ => v.fill(0.0),
    }
}

/// Lays the `co` output-gradient planes `dy [co, oh, ow]` out on the output grid, plane `o` at
/// `dyg[o·stride..]`: `[y·wp + x] = dy[o][y][x]` for `x < ow`, zero elsewhere (the thrown-away
/// columns and the rest of the plane's `len ≥ oh·wp` floats).
pub(super) fn grid_planes(dy: &[f32], co: usize, pd: &Padded, dyg: &mut [f32], stride: usize, len: usize) {
    let (h, w) = (pd.oh, pd.ow);
    for o in 0..co {
        let dst = &mut dyg[o * stride..o * stride + len];
        let src = &dy[o * h * w..(o + 1) * h * w];
        simd::copy_rows(dst, pd.wp, src, w, h, w);
        for yy in 0..h {
            let row = yy * pd.wp;
            zero_short(&mut dst[row + w..row + pd.wp]);
        }
        dst[h * pd.wp..].fill(0.0);
    }
}

/// Grid positions [`wgrad_kernel`] runs through for all its channel and tap combinations before
/// it moves on: eight rows of `dyg` (16 KB) stay in L1 through the `c × 3` passes that read them.
const WGRAD_BLOCK: usize = 512;

/// `dw[o][c][t] += Σ_{q < len} dyg[o·len + q] · xp[c·cstride + q + (t / 3)·wp + t % 3]`, for
/// eight output channels and one row of three taps at a time (24 accumulators): per 16
/// positions, 3 unaligned loads of `xp`, 8 aligned loads of `dyg` and 24 FMAs, so the FMAs and
/// not the (line-crossing) loads set the pace — provided the loads hit L1. A batch's `len` runs
/// to ~8k positions, whose eight `dyg` rows (256 KB) came from L2 on every one of the `c × 3`
/// passes, so the positions are taken in blocks of [`WGRAD_BLOCK`], the 24 accumulators of
/// every (channel, tap row) of the current block of output channels kept in `part` between
/// blocks. Each lane still sums its positions in order and is reduced once at the end: the same
/// sums as one pass over `len`, bit for bit. `block` (a multiple of 16) is [`WGRAD_BLOCK`] but
/// in the tests.
///
/// # Safety
/// AVX-512F must be available; `len` a multiple of 16; `xp.len() ≥ c·cstride` with
/// `cstride ≥ len + 2·wp + 2 + 16`; `dyg.len() ≥ co·len`; `dw.len() ≥ co·c·9`; `co` a multiple
/// of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad_kernel(
    xp: &[f32],
    cstride: usize,
    dyg: &[f32],
    len: usize,
    c: usize,
    co: usize,
    offs: &[usize; 9],
    dw: &mut [f32],
    block: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(block > 0 && block.is_multiple_of(16));
    debug_assert!(len.is_multiple_of(16) && cstride >= len + offs.iter().max().unwrap() + 16);
    debug_assert!(xp.len() >= c * cstride && dyg.len() >= co * len && dw.len() >= co * c * 9);
    debug_assert!(co.is_multiple_of(OB));
    // Per (channel, tap row) of one block of OB output channels: OB × 3 vectors of lane
    // partial sums (c · 1.5 KB, in L2).
    const V: usize = OB * 3 * 16;
    with_scratch(c * 3 * V, |part| {
        for ob in (0..co).step_by(OB) {
            part.fill(0.0);
            let d = dyg.as_ptr().add(ob * len);
            let mut q0 = 0;
            while q0 < len {
                let q1 = (q0 + block).min(len);
                for ci in 0..c {
                    let xb = xp.as_ptr().add(ci * cstride);
                    for i in 0..3 {
                        let pv = part.as_mut_ptr().add((ci * 3 + i) * V);
                        let (o0, o1, o2) = (offs[3 * i], offs[3 * i + 1], offs[3 * i + 2]);
                        let mut acc = [[_mm512_setzero_ps(); 3]; OB];
                        for (o, a) in acc.iter_mut().enumerate() {
                            for (j, v) in a.iter_mut().enumerate() {
                                *v = _mm512_loadu_ps(pv.add((o * 3 + j) * 16));
                            }
                        }
                        let mut q = q0;
                        while q < q1 {
                            let x0 = _mm512_loadu_ps(xb.add(q + o0));
                            let x1 = _mm512_loadu_ps(xb.add(q + o1));
                            let x2 = _mm512_loadu_ps(xb.add(q + o2));
                            for (o, a) in acc.iter_mut().enumerate() {
                                let g = _mm512_loadu_ps(d.add(o * len + q));
                                a[0] = _mm512_fmadd_ps(g, x0, a[0]);
                                a[1] = _mm512_fmadd_ps(g, x1, a[1]);
                                a[2] = _mm512_fmadd_ps(g, x2, a[2]);
                            }
                            q += 16;
                        }
                        for (o, a) in acc.iter().enumerate() {
                            for (j, v) in a.iter().enumerate() {
                                _mm512_storeu_ps(pv.add((o * 3 + j) * 16), *v);
                            }
                        }
                    }
                }
                q0 = q1;
            }
            for ci in 0..c {
                for i in 0..3 {
                    let pv = part.as_ptr().add((ci * 3 + i) * V);
                    for o in 0..OB {
                        let base = ((ob + o) * c + ci) * 9 + i * 3;
                        for j in 0..3 {
                            dw[base + j] += _mm512_reduce_add_ps(_mm512_loadu_ps(pv.add((o * 3 + j) * 16)));
                        }
                    }
                }
            }
        }
    })
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad_kernel(
    _: &[f32],
    _: usize,
    _: &[f32],
    _: usize,
    _: usize,
    _: usize,
    _: &[usize; 9],
    _: &mut [f32],
    _: usize,
) {
    unreachable!("direct::applies is false off x86_64")
}

/// Copies the `c` planes of one image into zero-padded planes of `len` floats (at least
/// `(h + 2)·wp`), plane `ci` at `xp[ci·stride..]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn pad_planes(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    pd: &Padded,
    xp: &mut [f32],
    stride: usize,
    len: usize,
) {
    let wp = pd.wp;
    for ci in 0..c {
        let dst = &mut xp[ci * stride..ci * stride + len];
        let src = &x[ci * h * w..(ci + 1) * h * w];
        dst[..wp + 1].fill(0.0);
        simd::copy_rows(&mut dst[wp + 1..], wp, src, w, h, w);
        for yy in 0..h {
            // From the end of this row to the start of the next: the pad column.
            let row = (yy + 1) * wp + 1;
            zero_short(&mut dst[row + w..row + wp]);
        }
        dst[(h + 1) * wp + 1..].fill(0.0);
    }
}

/// `tmp[o][q] = Σ_c Σ_t wb[c][t][o] · xp[c·cstride + q + offs[t]]` for `q < nq`, over `NT`
/// taps (9 for a 3×3 convolution; 1, 2 or 4 for a phase of a stride-2 input gradient).
///
/// # Safety
/// AVX-512F must be available; `xp.len() ≥ c·cstride` and `cstride ≥ nq + max(offs)`,
/// `tmp.len() ≥ OB·nq`, `wb.len() ≥ c·NT·OB`, `nq` a multiple of 48.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const NT: usize>(
    xp: &[f32],
    c: usize,
    cstride: usize,
    offs: &[usize; NT],
    nq: usize,
    wb: &[f32],
    tmp: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(xp.len() >= c * cstride && tmp.len() >= OB * nq && wb.len() >= c * NT * OB);
    debug_assert!(nq.is_multiple_of(QB) && cstride >= nq + offs.iter().max().unwrap());
    let (xp, wb, out) = (xp.as_ptr(), wb.as_ptr(), tmp.as_mut_ptr());
    let mut q = 0;
    while q < nq {
        let mut acc = [[_mm512_setzero_ps(); 3]; OB];
        for ci in 0..c {
            let xb = xp.add(ci * cstride + q);
            let wc = wb.add(ci * NT * OB);
            for (t, &off) in offs.iter().enumerate() {
                let x0 = _mm512_loadu_ps(xb.add(off));
                let x1 = _mm512_loadu_ps(xb.add(off + 16));
                let x2 = _mm512_loadu_ps(xb.add(off + 32));
                let wt = wc.add(t * OB);
                for (o, a) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wt.add(o));
                    a[0] = _mm512_fmadd_ps(wv, x0, a[0]);
                    a[1] = _mm512_fmadd_ps(wv, x1, a[1]);
                    a[2] = _mm512_fmadd_ps(wv, x2, a[2]);
                }
            }
        }
        for (o, a) in acc.iter().enumerate() {
            let dst = out.add(o * nq + q);
            _mm512_storeu_ps(dst, a[0]);
            _mm512_storeu_ps(dst.add(16), a[1]);
            _mm512_storeu_ps(dst.add(32), a[2]);
        }
        q += QB;
    }
}

/// [`kernel`] in bf16: `xp` holds `cp` planes of channel pairs (lane = two bf16, see
/// [`pair_planes`]) and `wb` the pair weights `[cp][NT][OB]` ([`pair_weights`]); per channel
/// pair and tap, 3 loads, 8 broadcasts and 24 `vdpbf16ps` (two multiply-adds a lane each),
/// accumulated in f32.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 must be available; `xp.len() ≥ cp·cstride` and
/// `cstride ≥ nq + max(offs)`, `tmp.len() ≥ OB·nq`, `wb.len() ≥ cp·NT·OB`, `nq` a multiple of 48.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel_bf16<const NT: usize>(
    xp: &[u32],
    cp: usize,
    cstride: usize,
    offs: &[usize; NT],
    nq: usize,
    wb: &[u32],
    tmp: &mut [f32],
) {
    use std::arch::x86_64::*;
    use std::mem::transmute;
    debug_assert!(xp.len() >= cp * cstride && tmp.len() >= OB * nq && wb.len() >= cp * NT * OB);
    debug_assert!(nq.is_multiple_of(QB) && cstride >= nq + offs.iter().max().unwrap());
    let (xp, wb, out) = (xp.as_ptr(), wb.as_ptr(), tmp.as_mut_ptr());
    let mut q = 0;
    while q < nq {
        let mut acc = [[_mm512_setzero_ps(); 3]; OB];
        for ci in 0..cp {
            let xb = xp.add(ci * cstride + q);
            let wc = wb.add(ci * NT * OB);
            for (t, &off) in offs.iter().enumerate() {
                let x0: __m512bh = transmute(_mm512_loadu_si512(xb.add(off).cast()));
                let x1: __m512bh = transmute(_mm512_loadu_si512(xb.add(off + 16).cast()));
                let x2: __m512bh = transmute(_mm512_loadu_si512(xb.add(off + 32).cast()));
                let wt = wc.add(t * OB);
                for (o, a) in acc.iter_mut().enumerate() {
                    let wv: __m512bh = transmute(_mm512_set1_epi32(*wt.add(o) as i32));
                    a[0] = _mm512_dpbf16_ps(a[0], wv, x0);
                    a[1] = _mm512_dpbf16_ps(a[1], wv, x1);
                    a[2] = _mm512_dpbf16_ps(a[2], wv, x2);
                }
            }
        }
        for (o, a) in acc.iter().enumerate() {
            let dst = out.add(o * nq + q);
            _mm512_storeu_ps(dst, a[0]);
            _mm512_storeu_ps(dst.add(16), a[1]);
            _mm512_storeu_ps(dst.add(32), a[2]);
        }
        q += QB;
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel_bf16<const NT: usize>(
    _: &[u32],
    _: usize,
    _: usize,
    _: &[usize; NT],
    _: usize,
    _: &[u32],
    _: &mut [f32],
) {
    unreachable!("bf16::has_bf16 is false off x86_64")
}

/// [`wgrad_kernel`] in bf16 on plain bf16 planes (`xp`: `c` planes `cstride` apart; `dyg`: `co`
/// rows of `len`): the sum over positions pairs adjacent positions, so per 32 positions 3
/// unaligned loads of `xp`, 8 loads of `dyg` and 24 `vdpbf16ps`, accumulated in f32.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 must be available; `len` a multiple of 32; `xp.len() ≥ c·cstride`
/// with `cstride ≥ len + max(offs) + 32`; `dyg.len() ≥ co·len`; `dw.len() ≥ co·c·9`; `co` a
/// multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad_kernel_bf16(
    xp: &[u16],
    cstride: usize,
    dyg: &[u16],
    len: usize,
    c: usize,
    co: usize,
    offs: &[usize; 9],
    dw: &mut [f32],
) {
    use std::arch::x86_64::*;
    use std::mem::transmute;
    debug_assert!(len.is_multiple_of(32) && cstride >= len + offs.iter().max().unwrap() + 32);
    debug_assert!(xp.len() >= c * cstride && dyg.len() >= co * len && dw.len() >= co * c * 9);
    debug_assert!(co.is_multiple_of(OB));
    for ob in (0..co).step_by(OB) {
        let d = dyg.as_ptr().add(ob * len);
        for ci in 0..c {
            for i in 0..3 {
                let xb = xp.as_ptr().add(ci * cstride);
                let (o0, o1, o2) = (offs[3 * i], offs[3 * i + 1], offs[3 * i + 2]);
                let mut acc = [[_mm512_setzero_ps(); 3]; OB];
                let mut q = 0;
                while q < len {
                    let x0: __m512bh = transmute(_mm512_loadu_si512(xb.add(q + o0).cast()));
                    let x1: __m512bh = transmute(_mm512_loadu_si512(xb.add(q + o1).cast()));
                    let x2: __m512bh = transmute(_mm512_loadu_si512(xb.add(q + o2).cast()));
                    for (o, a) in acc.iter_mut().enumerate() {
                        let g: __m512bh = transmute(_mm512_loadu_si512(d.add(o * len + q).cast()));
                        a[0] = _mm512_dpbf16_ps(a[0], g, x0);
                        a[1] = _mm512_dpbf16_ps(a[1], g, x1);
                        a[2] = _mm512_dpbf16_ps(a[2], g, x2);
                    }
                    q += 32;
                }
                for (o, a) in acc.iter().enumerate() {
                    let base = ((ob + o) * c + ci) * 9 + i * 3;
                    for (j, v) in a.iter().enumerate() {
                        dw[base + j] += _mm512_reduce_add_ps(*v);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad_kernel_bf16(
    _: &[u16],
    _: usize,
    _: &[u16],
    _: usize,
    _: usize,
    _: usize,
    _: &[usize; 9],
    _: &mut [f32],
) {
    unreachable!("bf16::has_bf16 is false off x86_64")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const NT: usize>(
    _: &[f32],
    _: usize,
    _: usize,
    _: &[usize; NT],
    _: usize,
    _: &[f32],
    _: &mut [f32],
) {
    unreachable!("direct::applies is false off x86_64")
}

/// Nested-loop f64 references for the tests of the direct kernels (3×3, padding 1, stride 1
/// or 2).
#[cfg(test)]
pub(super) mod reference {
    /// Output side of a 3×3, padding-1 convolution.
    fn out(h: usize, s: usize) -> usize {
        (h - 1) / s + 1
    }

    /// Input value under tap (i, j) of output (yy, xx), or None in the padding.
    #[allow(clippy::too_many_arguments)]
    fn at(
        x: &[f32],
        c: usize,
        h: usize,
        w: usize,
        s: usize,
        (img, ci): (usize, usize),
        (yy, xx): (usize, usize),
        (i, j): (usize, usize),
    ) -> Option<f64> {
        let (iy, ix) = ((yy * s + i) as isize - 1, (xx * s + j) as isize - 1);
        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
            return None;
        }
        Some(x[((img * c + ci) * h + iy as usize) * w + ix as usize] as f64)
    }

    /// Plain nested-loop reference convolution in f64.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        x: &[f32],
        wt: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f32> {
        let (oh, ow) = (out(h, s), out(w, s));
        let mut y = vec![0f32; n * co * oh * ow];
        for img in 0..n {
            for o in 0..co {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let mut sum = 0f64;
                        for ci in 0..c {
                            for t in 0..9 {
                                if let Some(v) = at(x, c, h, w, s, (img, ci), (yy, xx), (t / 3, t % 3)) {
                                    sum += v * wt[(o * c + ci) * 9 + t] as f64;
                                }
                            }
                        }
                        y[((img * co + o) * oh + yy) * ow + xx] = sum as f32;
                    }
                }
            }
        }
        y
    }

    /// Plain nested-loop reference weight gradient in f64, `[co, c, 3, 3]`.
    #[allow(clippy::too_many_arguments)]
    pub fn weight_grad(
        x: &[f32],
        dy: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f64> {
        let (oh, ow) = (out(h, s), out(w, s));
        let mut want = vec![0f64; co * c * 9];
        for img in 0..n {
            for o in 0..co {
                for ci in 0..c {
                    for t in 0..9 {
                        for yy in 0..oh {
                            for xx in 0..ow {
                                if let Some(v) = at(x, c, h, w, s, (img, ci), (yy, xx), (t / 3, t % 3)) {
                                    want[(o * c + ci) * 9 + t] +=
                                        dy[((img * co + o) * oh + yy) * ow + xx] as f64 * v;
                                }
                            }
                        }
                    }
                }
            }
        }
        want
    }

    /// Plain nested-loop reference input gradient in f64, `[n, c, h, w]`.
    #[allow(clippy::too_many_arguments)]
    pub fn input_grad(
        dy: &[f32],
        wt: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f64> {
        let (oh, ow) = (out(h, s), out(w, s));
        let mut dx = vec![0f64; n * c * h * w];
        for img in 0..n {
            for o in 0..co {
                for ci in 0..c {
                    for t in 0..9 {
                        let (i, j) = (t / 3, t % 3);
                        for yy in 0..oh {
                            for xx in 0..ow {
                                let (iy, ix) = ((yy * s + i) as isize - 1, (xx * s + j) as isize - 1);
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                dx[((img * c + ci) * h + iy as usize) * w + ix as usize] +=
                                    wt[(o * c + ci) * 9 + t] as f64
                                        * dy[((img * co + o) * oh + yy) * ow + xx] as f64;
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    /// Asserts that a stride-2 input gradient `f(dy, wt, n, c, h, w, co)` matches
    /// [`input_grad`] to 1e-5 relative error on the shape.
    pub fn check_input_grad_stride2(f: DxKernel, shape: (usize, usize, usize, usize, usize)) {
        check_input_grad_stride2_as(f, shape, false)
    }

    /// [`check_input_grad_stride2`] for a bf16 kernel (see `check_bf16`).
    pub fn check_input_grad_stride2_bf16(f: DxKernel, shape: (usize, usize, usize, usize, usize)) {
        check_input_grad_stride2_as(f, shape, true)
    }

    fn check_input_grad_stride2_as(
        f: DxKernel,
        (n, c, h, w, co): (usize, usize, usize, usize, usize),
        bf16: bool,
    ) {
        let p = out(h, 2) * out(w, 2);
        let (dy, wt) = (data(n * co * p, 29, 89), data(co * c * 9, 53, 97));
        let want = input_grad(&dy, &wt, n, c, h, w, co, 2);
        let got = f(&dy, &wt, n, c, h, w, co);
        let name = format!("stride-2 dx {n}x{c}x{h}x{w} co={co}");
        if bf16 {
            let rounded = input_grad(&bf16_rounded(&dy), &bf16_rounded(&wt), n, c, h, w, co, 2);
            return check_bf16(&name, &got, &rounded, &want);
        }
        let err = rel_err(&got, want.iter().copied());
        assert!(err < 1e-5, "{name}: relative error {err}");
    }

    /// A forward entry point that also returns plane moments.
    pub type MomentsKernel = fn(
        &[f32],
        &[f32],
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
    ) -> (Vec<f32>, Vec<crate::ops::PlaneMoments>);

    /// Asserts that `f`'s plane moments are those of its own output planes (f64 reference) and
    /// that its output is the plain forward's.
    pub fn check_moments(
        f: MomentsKernel,
        plain: Kernel,
        (n, c, h, w, co): (usize, usize, usize, usize, usize),
        s: usize,
    ) {
        let (x, wt) = (data(n * c * h * w, 37, 101), data(co * c * 9, 53, 97));
        let (y, mom) = f(&x, &wt, n, c, h, w, co, s, true);
        assert_eq!(y, plain(&x, &wt, n, c, h, w, co, s));
        let p = out(h, s) * out(w, s);
        assert_eq!(mom.len(), n * co);
        for (plane, &(sum, m2)) in y.chunks(p).zip(&mom) {
            let want: f64 = plane.iter().map(|&v| v as f64).sum();
            let mean = want / p as f64;
            let want_m2: f64 = plane.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
            assert!(
                (sum - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "sum {sum} vs {want}"
            );
            assert!(
                (m2 - want_m2).abs() <= 1e-4 * (1.0 + want_m2),
                "M2 {m2} vs {want_m2}"
            );
        }
        assert!(f(&x, &wt, n, c, h, w, co, s, false).1.is_empty());
    }

    /// A stride-2 input-gradient entry point: (dy, wt, n, c, h, w, co).
    pub type DxKernel = fn(&[f32], &[f32], usize, usize, usize, usize, usize) -> Vec<f32>;

    /// A convolution kernel's forward or weight-gradient entry point:
    /// (x, wt or dy, n, c, h, w, co, stride).
    pub type Kernel = fn(&[f32], &[f32], usize, usize, usize, usize, usize, usize) -> Vec<f32>;

    /// Deterministic test values in about ±1.7: `((v·a mod b) − b/2) / 30`.
    pub fn data(len: usize, a: usize, b: usize) -> Vec<f32> {
        (0..len)
            .map(|v| ((v * a % b) as f32 - (b / 2) as f32) / 30.0)
            .collect()
    }

    /// Largest |got − want| over the largest |want| (at least 1e-6).
    fn rel_err(got: &[f32], want: impl Iterator<Item = f64> + Clone) -> f64 {
        assert_eq!(got.len(), want.clone().count());
        let scale = want.clone().fold(1e-6f64, |m, v| m.max(v.abs()));
        got.iter()
            .zip(want)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()))
            / scale
    }

    /// Asserts that `forward` matches [`forward`] to 1e-5 relative error on shape
    /// (n, c, h, w, co) with stride `s`.
    pub fn check_forward(forward: Kernel, shape: (usize, usize, usize, usize, usize), s: usize) {
        check_forward_as(forward, shape, s, false)
    }

    /// The operands as the bf16 kernels see them: each value rounded to bf16.
    pub fn bf16_rounded(v: &[f32]) -> Vec<f32> {
        use crate::ops::bf16::{from_bf16, to_bf16};
        v.iter().map(|&x| from_bf16(to_bf16(x))).collect()
    }

    /// Asserts that a bf16 kernel's result is the exact convolution of the bf16-rounded
    /// operands up to f32 accumulation (1e-5 relative, as the f32 kernels against theirs), and
    /// that this differs from the unrounded result (so the test would catch an f32 kernel) by
    /// no more than bf16 rounding explains (1 %).
    fn check_bf16(name: &str, got: &[f32], rounded: &[f64], exact: &[f64]) {
        let err = rel_err(got, rounded.iter().copied());
        assert!(
            err < 1e-5,
            "{name} (bf16): relative error {err} against the rounded operands"
        );
        let gap = rel_err(got, exact.iter().copied());
        assert!(
            gap > 1e-4 && gap < 1e-2,
            "{name} (bf16): {gap} from the f32 result (bf16 rounding gives 1e-4..1e-2)"
        );
    }

    fn check_forward_as(
        forward: Kernel,
        (n, c, h, w, co): (usize, usize, usize, usize, usize),
        s: usize,
        bf16: bool,
    ) {
        let (x, wt) = (data(n * c * h * w, 37, 101), data(co * c * 9, 53, 97));
        let want = self::forward(&x, &wt, n, c, h, w, co, s);
        let got = forward(&x, &wt, n, c, h, w, co, s);
        let name = format!("forward {n}x{c}x{h}x{w} co={co} stride {s}");
        if bf16 {
            let rounded = self::forward(&bf16_rounded(&x), &bf16_rounded(&wt), n, c, h, w, co, s);
            let f = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
            return check_bf16(&name, &got, &f(&rounded), &f(&want));
        }
        let err = rel_err(&got, want.iter().map(|&v| v as f64));
        assert!(err < 1e-5, "{name}: relative error {err}");
    }

    /// [`check_forward`] for a bf16 kernel (see `check_bf16`).
    pub fn check_forward_bf16(forward: Kernel, shape: (usize, usize, usize, usize, usize), s: usize) {
        check_forward_as(forward, shape, s, true)
    }

    /// Asserts that `weight_grad` matches [`weight_grad`] to 1e-5 relative error on the shape.
    pub fn check_weight_grad(weight_grad: Kernel, shape: (usize, usize, usize, usize, usize), s: usize) {
        check_weight_grad_as(weight_grad, shape, s, false)
    }

    /// [`check_weight_grad`] for a bf16 kernel (see `check_bf16`).
    pub fn check_weight_grad_bf16(weight_grad: Kernel, shape: (usize, usize, usize, usize, usize), s: usize) {
        check_weight_grad_as(weight_grad, shape, s, true)
    }

    fn check_weight_grad_as(
        weight_grad: Kernel,
        (n, c, h, w, co): (usize, usize, usize, usize, usize),
        s: usize,
        bf16: bool,
    ) {
        let p = out(h, s) * out(w, s);
        let (x, dy) = (data(n * c * h * w, 37, 101), data(n * co * p, 29, 89));
        let want = self::weight_grad(&x, &dy, n, c, h, w, co, s);
        let got = weight_grad(&x, &dy, n, c, h, w, co, s);
        let name = format!("weight grad {n}x{c}x{h}x{w} co={co} stride {s}");
        if bf16 {
            let rounded = self::weight_grad(&bf16_rounded(&x), &bf16_rounded(&dy), n, c, h, w, co, s);
            return check_bf16(&name, &got, &rounded, &want);
        }
        let err = rel_err(&got, want.iter().copied());
        assert!(err < 1e-5, "{name}: relative error {err}");
    }

    /// Asserts that both entry points give bit-equal results with one and with two threads.
    pub fn check_thread_independence(
        forward: Kernel,
        weight_grad: Kernel,
        (n, c, h, w, co): (usize, usize, usize, usize, usize),
        s: usize,
    ) {
        let p = out(h, s) * out(w, s);
        let (x, wt, dy) = (
            data(n * c * h * w, 37, 101),
            data(co * c * 9, 53, 97),
            data(n * co * p, 29, 89),
        );
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| {
                    (
                        forward(&x, &wt, n, c, h, w, co, s),
                        weight_grad(&x, &dy, n, c, h, w, co, s),
                    )
                })
        };
        assert_eq!(run(1), run(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::direct::reference;
    use crate::ops::Precision::{Bf16, F32};

    // The entry points at one precision, as the reference checks' plain function types.
    #[allow(clippy::too_many_arguments)]
    fn wgrad_f32(
        x: &[f32],
        dy: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f32> {
        weight_grad(x, dy, n, c, h, w, co, s, F32)
    }
    #[allow(clippy::too_many_arguments)]
    fn wgrad_bf16(
        x: &[f32],
        dy: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f32> {
        weight_grad(x, dy, n, c, h, w, co, s, Bf16)
    }
    #[allow(clippy::too_many_arguments)]
    fn moments_f32(
        x: &[f32],
        wt: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
        m: bool,
    ) -> (Vec<f32>, Vec<crate::ops::PlaneMoments>) {
        forward_moments(x, wt, n, c, h, w, co, s, m, F32)
    }
    #[allow(clippy::too_many_arguments)]
    fn forward_bf16(
        x: &[f32],
        wt: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f32> {
        forward_moments(x, wt, n, c, h, w, co, s, false, Bf16).0
    }
    fn dx_f32(dy: &[f32], wt: &[f32], n: usize, c: usize, h: usize, w: usize, co: usize) -> Vec<f32> {
        input_grad_stride2(dy, wt, n, c, h, w, co, F32)
    }
    fn dx_bf16(dy: &[f32], wt: &[f32], n: usize, c: usize, h: usize, w: usize, co: usize) -> Vec<f32> {
        input_grad_stride2(dy, wt, n, c, h, w, co, Bf16)
    }
    // The bf16 entry points with the arithmetic forced: `vdpbf16ps` (Dp) or AMX tiles.
    #[allow(clippy::too_many_arguments)]
    fn forward_dp(
        x: &[f32],
        wt: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f32> {
        forward_moments_as(x, wt, n, c, h, w, co, s, false, Arith::Dp, None).0
    }
    #[allow(clippy::too_many_arguments)]
    fn forward_amx(
        x: &[f32],
        wt: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f32> {
        forward_moments_as(x, wt, n, c, h, w, co, s, false, Arith::Amx, None).0
    }
    #[allow(clippy::too_many_arguments)]
    fn moments_amx(
        x: &[f32],
        wt: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
        m: bool,
    ) -> (Vec<f32>, Vec<crate::ops::PlaneMoments>) {
        forward_moments_as(x, wt, n, c, h, w, co, s, m, Arith::Amx, None)
    }
    #[allow(clippy::too_many_arguments)]
    fn wgrad_dp(
        x: &[f32],
        dy: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f32> {
        weight_grad_as(x, dy, n, c, h, w, co, s, Arith::Dp)
    }
    #[allow(clippy::too_many_arguments)]
    fn wgrad_amx(
        x: &[f32],
        dy: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
    ) -> Vec<f32> {
        weight_grad_as(x, dy, n, c, h, w, co, s, Arith::Amx)
    }
    fn dx_dp(dy: &[f32], wt: &[f32], n: usize, c: usize, h: usize, w: usize, co: usize) -> Vec<f32> {
        input_grad_stride2_as(dy, wt, n, c, h, w, co, Arith::Dp)
    }
    fn dx_amx(dy: &[f32], wt: &[f32], n: usize, c: usize, h: usize, w: usize, co: usize) -> Vec<f32> {
        input_grad_stride2_as(dy, wt, n, c, h, w, co, Arith::Amx)
    }

    #[test]
    fn bf16_kernels_are_the_convolution_of_the_rounded_operands() {
        if !crate::ops::bf16::has_bf16() {
            eprintln!("no AVX-512 BF16 here: the bf16 kernels are never used, nothing to test");
            return;
        }
        // The vdpbf16ps kernels (the fallback where AMX is not available, and the choice for
        // fewer than AMX_MIN_CHANNELS reduced channels or tile rows not a multiple of 16).
        // Odd channel counts (a half-empty last pair), several channel blocks, odd planes.
        for shape in [
            (2, 3, 8, 8, 8),
            (1, 5, 9, 9, 16),
            (3, 2, 13, 11, 8),
            (2, 16, 32, 32, 16),
        ] {
            reference::check_forward_bf16(forward_dp, shape, 1);
        }
        for shape in [(2, 3, 16, 16, 8), (1, 5, 17, 15, 16), (1, 1, 31, 16, 8)] {
            reference::check_forward_bf16(forward_dp, shape, 2);
        }
        for shape in [
            (3, 3, 8, 8, 8),
            (11, 2, 9, 9, 16),
            (2, 16, 32, 32, 16),
            (40, 3, 8, 8, 8),
        ] {
            reference::check_weight_grad_bf16(wgrad_dp, shape, 1);
        }
        for shape in [(3, 3, 16, 16, 8), (11, 2, 17, 17, 16), (40, 2, 16, 16, 8)] {
            reference::check_weight_grad_bf16(wgrad_dp, shape, 2);
        }
        for shape in [(2, 8, 16, 16, 4), (1, 16, 17, 15, 8), (1, 8, 31, 16, 3)] {
            reference::check_input_grad_stride2_bf16(dx_dp, shape);
        }
        reference::check_thread_independence(forward_dp, wgrad_dp, (21, 4, 17, 16, 16), 2);
    }

    #[test]
    fn amx_kernels_are_the_convolution_of_the_rounded_operands() {
        if !crate::ops::amx::available() {
            eprintln!("no AMX here: the AMX paths are never used, nothing to test");
            return;
        }
        // (n, c, h, w, co). check_*_bf16 asserts 1e-5 from the f64 convolution of the bf16-rounded
        // operands and 1e-4..1e-2 from the unrounded one, so an f32 kernel fails it. Odd channel
        // counts (padded to 32), co = 16 (the 16-row tiles), 48 (32-row tiles and a 16-row
        // rest), two 32-channel blocks, odd planes, and the width-16 ResNet's layers.
        for shape in [
            (1, 5, 9, 9, 16),
            (2, 40, 13, 11, 48),
            (2, 3, 32, 32, 16),
            (2, 16, 32, 32, 16),
            (2, 32, 16, 16, 32),
        ] {
            reference::check_forward_bf16(forward_amx, shape, 1);
        }
        for shape in [(1, 5, 17, 15, 16), (1, 24, 31, 16, 48), (2, 16, 32, 32, 32)] {
            reference::check_forward_bf16(forward_amx, shape, 2);
        }
        for shape in [
            (11, 2, 9, 9, 16),
            (3, 40, 13, 11, 48),
            (40, 3, 8, 8, 16),
            (2, 3, 32, 32, 16),
            (2, 16, 32, 32, 16),
            (2, 32, 16, 16, 32),
        ] {
            reference::check_weight_grad_bf16(wgrad_amx, shape, 1);
        }
        for shape in [(11, 2, 17, 17, 16), (3, 24, 31, 16, 48), (2, 16, 32, 32, 32)] {
            reference::check_weight_grad_bf16(wgrad_amx, shape, 2);
        }
        for shape in [
            (2, 16, 16, 16, 4),
            (1, 48, 17, 15, 40),
            (1, 16, 31, 16, 3),
            (2, 16, 32, 32, 32),
        ] {
            reference::check_input_grad_stride2_bf16(dx_amx, shape);
        }
        reference::check_moments(moments_amx, forward_amx, (3, 5, 9, 11, 16), 1);
        reference::check_moments(moments_amx, forward_amx, (2, 40, 17, 16, 48), 2);
        reference::check_thread_independence(forward_amx, wgrad_amx, (21, 16, 10, 9, 16), 1);
        reference::check_thread_independence(forward_amx, wgrad_amx, (21, 24, 17, 16, 48), 2);
    }

    #[test]
    fn bf16_runs_on_amx_where_it_pays() {
        let amx = crate::ops::amx::available();
        let dp = crate::ops::bf16::dp_pays();
        let no_tiles = if dp { Arith::Dp } else { Arith::F32 };
        let tiles = if amx { Arith::Amx } else { no_tiles };
        // Where AMX is, vdpbf16ps is slower than f32 (see Arith::of); on Intel without AMX too.
        let other = if amx { Arith::F32 } else { no_tiles };
        // The width-16 ResNet's large-plane layers: forward and dW (rows co, reducing c), the
        // stride-2 dx (rows c, reducing co), the stride-1 dx (a forward with c, co swapped).
        assert_eq!(Arith::of(Bf16, 16, 16), tiles, "16 → 16");
        assert_eq!(Arith::of(Bf16, 32, 16), tiles, "16 → 32 stride 2");
        assert_eq!(Arith::of(Bf16, 16, 32), tiles, "16 → 32 stride-2 dx");
        assert_eq!(Arith::of(Bf16, 32, 32), tiles, "32 → 32");
        assert_eq!(Arith::of(Bf16, 16, 3), other, "the 3-channel stem");
        assert_eq!(Arith::of(Bf16, 8, 16), other, "8 tile rows");
        assert_eq!(Arith::of(Bf16, 24, 16), other, "24 tile rows");
        assert_eq!(Arith::of(F32, 16, 16), Arith::F32);
        if crate::ops::bf16::has_bf16() {
            // The public entry points follow that choice: bit-equal to the chosen arithmetic.
            let (n, c, h, w, co) = (2, 16, 32, 32, 32);
            let x = reference::data(n * c * h * w, 37, 101);
            let wt = reference::data(co * c * 9, 53, 97);
            let dy = reference::data(n * co * 256, 29, 89);
            let fwd = |a| forward_moments_as(&x, &wt, n, c, h, w, co, 2, false, a, None).0;
            assert_eq!(forward_bf16(&x, &wt, n, c, h, w, co, 2), fwd(tiles));
            let dw = |a| weight_grad_as(&x, &dy, n, c, h, w, co, 2, a);
            assert_eq!(wgrad_bf16(&x, &dy, n, c, h, w, co, 2), dw(tiles));
            let dx = |a| input_grad_stride2_as(&dy, &wt, n, c, h, w, co, a);
            assert_eq!(dx_bf16(&dy, &wt, n, c, h, w, co), dx(tiles));
        }
    }

    #[test]
    fn matches_a_nested_loop_reference() {
        if !has_avx512() {
            eprintln!("no AVX-512F here: the direct convolution is never used, nothing to test");
            return;
        }
        // (n, c, h, w, co): CIFAR-like planes, odd and non-square sizes, several channel blocks.
        for shape in [
            (2, 3, 8, 8, 8),
            (1, 5, 9, 9, 16),
            (3, 2, 13, 11, 8),
            (2, 4, 32, 32, 16),
            (1, 1, 8, 17, 24),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(applies(c, co, h, w, 3, 1, 1));
            reference::check_forward(forward, shape, 1);
        }
        // Stride 2 (polyphase): even, odd and non-square inputs with ≥ 64 output positions.
        for shape in [
            (2, 3, 16, 16, 8),
            (1, 5, 17, 15, 16),
            (2, 2, 32, 32, 8),
            (1, 1, 31, 16, 8),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(applies(c, co, h, w, 3, 2, 1));
            reference::check_forward(forward, shape, 2);
        }
    }

    #[test]
    fn weight_gradient_matches_a_nested_loop_reference() {
        if !has_avx512() {
            eprintln!("no AVX-512F here: the direct convolution is never used, nothing to test");
            return;
        }
        // (n, c, h, w, co): more images than groups (ragged), odd and non-square planes.
        for shape in [
            (3, 3, 8, 8, 8),
            (11, 2, 9, 9, 16),
            (1, 4, 13, 7, 8),
            (2, 16, 32, 32, 16),
            (40, 3, 8, 8, 8),
            (17, 2, 17, 15, 8),
        ] {
            reference::check_weight_grad(wgrad_f32, shape, 1);
        }
        for shape in [
            (3, 3, 16, 16, 8),
            (11, 2, 17, 17, 16),
            (1, 4, 31, 15, 8),
            (40, 2, 16, 16, 8),
        ] {
            reference::check_weight_grad(wgrad_f32, shape, 2);
        }
    }

    #[test]
    fn plane_moments_are_those_of_the_output() {
        if has_avx512() {
            reference::check_moments(moments_f32, forward, (3, 4, 9, 11, 16), 1);
            reference::check_moments(moments_f32, forward, (2, 3, 17, 16, 8), 2);
        }
    }

    #[test]
    fn stride_2_input_gradient_matches_a_nested_loop_reference() {
        if !has_avx512() {
            return;
        }
        // (n, c, h, w, co): even, odd and non-square inputs; one and several channel blocks.
        for shape in [
            (2, 8, 16, 16, 4),
            (1, 16, 17, 15, 8),
            (2, 8, 32, 32, 16),
            (1, 8, 31, 16, 3),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(dx_applies(c, co, h, w));
            reference::check_input_grad_stride2(dx_f32, shape);
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn weight_gradient_blocks_do_not_change_a_bit() {
        // The blocked position loop keeps each lane's sum in position order, so any block size
        // must give exactly one pass over all positions (block ≥ len).
        if !has_avx512() {
            return;
        }
        let (c, co, wp, len) = (5, 16, 13, 1040);
        let offs: [usize; 9] = std::array::from_fn(|t| t / 3 * wp + t % 3);
        let cstride = len + 2 * wp + 2 + 16;
        // Values of full 24-bit mantissas, so that the order of a sum shows in its last bits.
        let rand = |n: usize, seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) >> 8) as f32)
                .map(|v| v / (1u32 << 24) as f32 * 4.0 - 2.0)
                .collect()
        };
        let (xp, dyg) = (rand(c * cstride, 1), rand(co * len, 2));
        let run = |block: usize| {
            let mut dw = reference::data(co * c * 9, 7, 11);
            // SAFETY: AVX-512F checked; the buffers have the sizes the kernel's contract asks.
            unsafe { wgrad_kernel(&xp, cstride, &dyg, len, c, co, &offs, &mut dw, block) };
            dw
        };
        let whole = run(len);
        for block in [16, 48, 512, 1024] {
            assert_eq!(run(block), whole, "block {block}");
        }
        // The same sums in another order (backwards, one f32 accumulator) differ in the last
        // bits somewhere (so the equalities above can fail) and agree to f32 rounding.
        let before = reference::data(co * c * 9, 7, 11);
        let mut reordered = 0;
        for o in 0..co {
            for ci in 0..c {
                for t in 0..9 {
                    let k = (o * c + ci) * 9 + t;
                    let sum = (0..len)
                        .rev()
                        .fold(0f32, |a, q| a + dyg[o * len + q] * xp[ci * cstride + q + offs[t]]);
                    let want = before[k] + sum;
                    assert!(
                        (whole[k] - want).abs() < 1e-3 * want.abs().max(1.0),
                        "{k}: {} vs {want}",
                        whole[k]
                    );
                    reordered += (whole[k] != want) as usize;
                }
            }
        }
        assert!(
            reordered > 0,
            "the data must be sensitive to the order of summation"
        );
    }

    #[test]
    fn same_results_with_one_or_two_threads() {
        if has_avx512() {
            reference::check_thread_independence(forward, wgrad_f32, (21, 4, 10, 9, 16), 1);
            reference::check_thread_independence(forward, wgrad_f32, (21, 4, 17, 16, 16), 2);
        }
    }

    #[test]
    fn applies_only_where_it_is_correct_and_worth_it() {
        let avx = has_avx512();
        assert_eq!(applies(16, 16, 32, 32, 3, 1, 1), avx);
        assert_eq!(applies(16, 32, 32, 32, 3, 2, 1), avx, "stride 2");
        assert!(!applies(16, 32, 16, 14, 3, 2, 1), "stride 2 to 8×7 positions");
        assert!(!applies(16, 32, 32, 32, 3, 3, 1), "stride 3");
        assert!(!applies(16, 16, 32, 32, 3, 1, 0), "no padding");
        assert!(!applies(16, 16, 32, 32, 1, 1, 0), "1×1");
        assert!(!applies(16, 12, 32, 32, 3, 1, 1), "co not a multiple of 8");
        assert!(!applies(128, 128, 4, 4, 3, 1, 1), "4×4 planes");
    }
}

//! Direct 3×3, padding-1 convolution (stride 1 or 2) for small planes (8×8 and 4×4 in the CIFAR
//! ResNets' last stages), vectorised over output channels instead of positions.
//!
//! On a plane of 4×4 positions a 16-float vector along the positions of [`super::direct`]
//! wastes half or more of its lanes on padding, and im2col + gemm spends its time copying; the
//! channels, though, come in multiples of 64 there. Here a register tile holds 6 output
//! positions × 64 output channels (24 zmm): per input channel and tap, 4 loads of
//! channel-contiguous weights, 6 broadcasts of input values and 24 FMAs, with no wasted lane.
//! The weight gradient vectorises over output channels too, with the output gradient transposed
//! to channels-last: per position, 4 loads, 6 broadcasts (6 (input channel, tap) pairs) and 24
//! FMAs, summed in registers over the positions of an image. Work is split by image (forward)
//! or into a fixed number of image groups reduced in order (weight gradient), so results do not
//! depend on the thread count.
//!
//! bf16 (`Precision::Bf16`): on AMX ([`super::amx`], where the CPU and OS allow it) the three
//! products are tile gemms on the padded grid — forward and stride-2 input gradient over
//! channel-pair planes (`forward_amx`, `input_grad_stride2_amx`), the weight gradient per tap
//! over the bf16 planes and dY in position pairs (`weight_grad_amx`); elsewhere the register
//! tiles above with `vdpbf16ps` on channel pairs (forward, `fwd_kernel_bf16`) or position
//! pairs (weight gradient, `weight_grad_bf16`). Width-16 step, 256 images, best of 3
//! interleaved runs on the 2-core development machine (AMX): 64→64 8×8 forward 7.3 → 1.9 ms,
//! backward 15.3 → 4.0 ms; 128→128 4×4 forward 6.0 → 2.4 ms, backward 24.3 → 4.4 ms.

use super::bf16::{as_u16, as_u32, convert, has_bf16, to_bf16};
use super::conv::Epilogue;
use super::direct::{dx_phases, grid_planes, has_avx512, pair_planes, Padded};
use super::{amx, output_vec, sum_over_image_groups, with_scratch, PlaneMoments, Precision};
use rayon::prelude::*;

/// Output channels a tile (four 16-float vectors).
const OC: usize = 64;
/// Output positions a forward tile; (input channel, tap) pairs a weight-gradient tile.
const T: usize = 6;

/// Whether this module handles the convolution: 3×3, stride 1 or 2 (polyphase, see
/// `Padded`), padding 1, output channels a multiple of 64, output planes of at most 64
/// positions, on a CPU with AVX-512F — and at most 128
/// input and output channels: a tile streams 9·c·64 weights (and the weight gradient sums into
/// 9·c·co floats), which past 128 channels no longer stay in L2, and im2col + gemm, blocked for
/// the cache, was faster there (full-width ResNet-18: 30–31 against 37–42 img/s).
pub fn applies(c: usize, co: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> bool {
    k == 3
        && (stride == 1 || stride == 2)
        && pad == 1
        && (1..=128).contains(&c)
        && co.is_multiple_of(OC)
        && co <= 128
        && h.div_ceil(stride) * w.div_ceil(stride) <= 64
        && has_avx512()
}

/// Padded-plane address of each output position (row-major over the `h × w` plane), with the
/// last one repeated up to a multiple of [`T`] (those results are computed and dropped).
fn addresses(h: usize, w: usize, wp: usize) -> Vec<usize> {
    let p = h * w;
    (0..p.div_ceil(T) * T)
        .map(|q| {
            let q = q.min(p - 1);
            (q / w) * wp + q % w
        })
        .collect()
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

/// Weights as bf16 pairs of the reduced (input) channels, channels-last for the kernels here:
/// `[⌈nin/2⌉][taps][nout]`, lane `bf16(w(o, 2k, t)) | bf16(w(o, 2k + 1, t)) << 16` (zero past
/// the last input channel). `w(o, i, t)` is the weight of output channel o, input channel i,
/// tap t (of `taps`).
fn pair_weights(nout: usize, nin: usize, taps: &[usize], w: impl Fn(usize, usize, usize) -> f32) -> Vec<u32> {
    let (cp, nt) = (nin.div_ceil(2), taps.len());
    let mut v = vec![0u32; cp * nt * nout];
    for k in 0..cp {
        for (ti, &t) in taps.iter().enumerate() {
            for o in 0..nout {
                let lo = to_bf16(w(o, 2 * k, t)) as u32;
                let hi = if 2 * k + 1 < nin {
                    to_bf16(w(o, 2 * k + 1, t)) as u32
                } else {
                    0
                };
                v[(k * nt + ti) * nout + o] = lo | hi << 16;
            }
        }
    }
    v
}

/// [`forward`], and with `moments` the [`PlaneMoments`] of every output plane (`[n][co]`,
/// from the channels-last tile buffer while it is in cache; empty without). `prec`: bf16 runs
/// on AMX where [`amx::available`] (`forward_amx`), else on the AVX-512 BF16 kernel
/// (`fwd_kernel_bf16`, on pairs of input channels); f32 on the f32 one.
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
    forward_moments_as(x, wt, n, c, h, w, co, stride, moments, Arith::of(prec), None)
}

/// How a kernel multiplies: f32 FMAs, bf16 `vdpbf16ps` (AVX-512 BF16) or bf16 AMX tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    F32,
    Dp,
    Amx,
}

impl Arith {
    /// The fastest arithmetic of a precision on this CPU: bf16 on AMX tiles, else on
    /// `vdpbf16ps` where it outruns f32 ([`super::bf16::dp_pays`]), else f32.
    fn of(prec: Precision) -> Self {
        match prec {
            Precision::F32 => Arith::F32,
            Precision::Bf16 if amx::available() => Arith::Amx,
            Precision::Bf16 if super::bf16::dp_pays() => Arith::Dp,
            Precision::Bf16 => Arith::F32,
        }
    }
}

/// [`forward`] with an [`Epilogue`] applied to each output image as it is written (f32).
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
        "direct_small::forward on an unsupported convolution"
    );
    if arith == Arith::Amx {
        let (y, m) = forward_amx(x, wt, n, c, h, w, co, stride, moments);
        let p = h.div_ceil(stride) * w.div_ceil(stride);
        return (Epilogue::apply(epi, y, n, co, p), m);
    }
    let bf16 = arith == Arith::Dp;
    assert!(
        !bf16 || has_bf16(),
        "direct_small::forward: bf16 needs AVX-512 BF16"
    );
    let pd = Padded::new(h, w, stride);
    let addr = addresses(pd.oh, pd.ow, pd.wp);
    let (cstride, offs) = (pd.block(), pd.offs(pd.plane));
    // Weights channels-last: wk[c][t][co] (f32), or wk2[c/2][t][co] in channel pairs (bf16).
    let mut wk = vec![0f32; if bf16 { 0 } else { c * 9 * co }];
    if !bf16 {
        for o in 0..co {
            for ci in 0..c {
                for t in 0..9 {
                    wk[(ci * 9 + t) * co + o] = wt[(o * c + ci) * 9 + t];
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
    // Writes every element of every image's block (the transposition below).
    let mut mom = vec![(0f64, 0f64); if moments { n * co } else { 0 }];
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
                with_scratch(c * cstride, |xp| {
                    pd.fill(
                        &x[img * c * pin..(img + 1) * c * pin],
                        c,
                        h,
                        w,
                        xp,
                        cstride,
                        pd.plane,
                    );
                    with_scratch(if bf16 { cp * cstride } else { 0 }, |xp2| {
                        let xp2 = as_u32(xp2);
                        if bf16 {
                            pair_planes(xp, c, cstride, xp2);
                        }
                        with_scratch(addr.len() * co, |ycl| {
                            for ob in (0..co).step_by(OC) {
                                for (ti, tile) in addr.chunks_exact(T).enumerate() {
                                    let q0 = ti * T;
                                    if bf16 {
                                        // SAFETY: as below, in channel pairs: xp2 holds cp blocks of
                                        // `cstride` lanes, wk2 cp·9·co; AVX-512 BF16 asserted above.
                                        unsafe {
                                            fwd_kernel_bf16(
                                                xp2,
                                                cp,
                                                cstride,
                                                &offs,
                                                &wk2,
                                                co,
                                                ob,
                                                tile,
                                                &mut ycl[q0 * co..],
                                            )
                                        };
                                    } else {
                                        // SAFETY: `applies` checked AVX-512F; every address + tap offset lies in
                                        // its padded plane (addresses() and Padded::new); wk holds c·9·co and
                                        // ycl addr.len()·co floats; ob + 64 ≤ co.
                                        unsafe {
                                            fwd_kernel(
                                                xp,
                                                c,
                                                cstride,
                                                &offs,
                                                &wk,
                                                co,
                                                ob,
                                                tile,
                                                &mut ycl[q0 * co..],
                                            )
                                        };
                                    }
                                }
                            }
                            // Channels-last tile rows → NCHW (through the epilogue, if any).
                            match epi {
                                None => {
                                    for q in 0..p {
                                        for o in 0..co {
                                            yimg[o * p + q].write(ycl[q * co + o]);
                                        }
                                    }
                                }
                                Some(e) => with_scratch(co * p, |raw| {
                                    for q in 0..p {
                                        for o in 0..co {
                                            raw[o * p + q] = ycl[q * co + o];
                                        }
                                    }
                                    super::simd::affine(yimg, raw, p, e.scale, e.shift, e.relu);
                                }),
                            }
                            if moments {
                                channels_last_moments(&ycl[..p * co], co, mimg);
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

/// Weights for [`amx::gemm_taps`]' A operand, `[taps][⌈nin/32⌉][nout][16]`: lane j of row o in
/// block k is the bf16 pair of input channels `2(16k + j)`, `+ 1` (zero past `nin`), the weight
/// of output channel o, input channel i, tap t being `wt[at(o, i, t)]` (one vector conversion
/// of `wt` to bf16 first, then only moves).
fn amx_weights(
    nout: usize,
    nin: usize,
    taps: &[usize],
    wt: &[f32],
    at: impl Fn(usize, usize, usize) -> usize,
) -> Vec<u32> {
    let nk = nin.div_ceil(32);
    let mut v = vec![0u32; taps.len() * nk * nout * 16];
    with_scratch(wt.len().div_ceil(2), |buf| {
        let wb = as_u16(buf);
        convert(wt, wb);
        for (ti, &t) in taps.iter().enumerate() {
            for k in 0..nk {
                for o in 0..nout {
                    let row = &mut v[((ti * nk + k) * nout + o) * 16..][..16];
                    for (j, lane) in row.iter_mut().enumerate() {
                        let i = 2 * (16 * k + j);
                        let half = |i: usize| if i < nin { wb[at(o, i, t)] as u32 } else { 0 };
                        *lane = half(i) | half(i + 1) << 16;
                    }
                }
            }
        }
    });
    v
}

/// Whether [`amx::gemm_taps`] reduces `c` channels on its half tiles (8 pairs, one block).
fn half_tiles(c: usize) -> bool {
    c <= 16
}

/// Pair planes [`amx::gemm_taps`] reads for `c` channels: 8 on [`half_tiles`], else whole
/// 32-channel blocks of 16.
fn tile_planes(c: usize) -> usize {
    if half_tiles(c) {
        8
    } else {
        c.div_ceil(32) * 16
    }
}

/// Pair planes for [`amx::gemm_taps`]' B operand: the `c` f32 planes of `xp` (`cstride` apart)
/// as [`tile_planes`] planes of channel pairs ([`pair_planes`]; the planes past `⌈c/2⌉` zero),
/// then `tail` zero lanes for the tiles' reads past the last plane.
fn amx_planes(xp: &[f32], c: usize, cstride: usize, tail: usize, out: &mut [u32]) {
    let (cp, np) = (c.div_ceil(2), tile_planes(c));
    pair_planes(xp, c, cstride, out);
    out[cp * cstride..np * cstride + tail].fill(0);
}

/// [`forward_moments`] on AMX: per image, `Y[o][q] = Σ_t Σ_k W_t[o][k] ⋅ X2[k][q + offs[t]]` on
/// the padded grid as in [`super::direct`] (positions `y·wp + x`, the `x ≥ ow` ones computed and
/// dropped), `X2` the image's planes in channel pairs, so the tiles load straight from them: per
/// 32 channels and tap, 2 weight tiles, 2 input tiles, 4 `tdpbf16ps`.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_amx(
    x: &[f32],
    wt: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
    moments: bool,
) -> (Vec<f32>, Vec<PlaneMoments>) {
    assert!(
        amx::available() && co.is_multiple_of(16),
        "direct_small::forward_amx needs AMX and output channels in multiples of 16"
    );
    let pd = Padded::new(h, w, stride);
    let (cstride, offs) = (pd.block(), pd.offs(pd.plane));
    let taps: Vec<usize> = (0..9).collect();
    let wa = amx_weights(co, c, &taps, wt, |o, i, t| (o * c + i) * 9 + t);
    let nk = c.div_ceil(32);
    // Grid positions, in whole 32-column tile pairs; the tiles read up to nm + max(offs) past a
    // plane's start.
    let nm = (pd.oh * pd.wp).div_ceil(32) * 32;
    let tail = nm + offs.iter().max().unwrap();
    let (p, pin) = (pd.p(), h * w);
    let rows = super::simd::Planes {
        s: pd.ow,
        stride: pd.wp,
        n: pd.oh,
    };
    let mut mom = vec![(0f64, 0f64); if moments { n * co } else { 0 }];
    // Writes every image's block: all co planes, every row.
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
                {
                    with_scratch(nk * 16 * cstride + tail, |xp2| {
                        let xp2 = as_u32(xp2);
                        let ximg = &x[img * c * pin..(img + 1) * c * pin];
                        image_pair_planes(ximg, c, h, w, &pd, cstride, tail, xp2);
                        with_scratch(co * nm, |tmp| {
                            // SAFETY: AMX available (Arith::of); wa holds 9·nk·co·16 lanes; the
                            // B tiles read below (nk·16 − 1)·cstride + max(offs) + nm ≤ the
                            // planes' length; tmp holds co rows of nm; co is a multiple of 16
                            // (applies: of 64; direct: checked there) and nm of 32.
                            unsafe {
                                amx::gemm_taps(
                                    wa.as_ptr(),
                                    co * 16,
                                    xp2.as_ptr(),
                                    cstride,
                                    &offs,
                                    nk,
                                    co,
                                    nm,
                                    tmp.as_mut_ptr(),
                                    nm,
                                    half_tiles(c),
                                )
                            };
                            for o in 0..co {
                                let src = &tmp[o * nm..(o + 1) * nm];
                                let dst = &mut yimg[o * p..(o + 1) * p];
                                if moments {
                                    // The sum pass unpads the rows as it reads them.
                                    mimg[o] = super::simd::plane_moments(src, rows, Some((dst, pd.ow)));
                                } else {
                                    super::simd::copy_rows_uninit(dst, pd.ow, src, pd.wp, pd.oh, pd.ow);
                                }
                            }
                        });
                    });
                }
            })
    };
    // SAFETY: see `fill`.
    let y = unsafe { output_vec(n * co * p, fill) };
    (y, mom)
}

/// One image `x [c][h][w]` as [`amx_planes`] lays it out (padded planes of channel pairs,
/// `cstride` apart, zero pairs up to the tile multiple, `tail` zero lanes). Stride 1 converts
/// the rows straight into place ([`rows_to_bf16_pairs`]); stride 2 goes through f32 phase planes.
#[allow(clippy::too_many_arguments)]
fn image_pair_planes(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    pd: &Padded,
    cstride: usize,
    tail: usize,
    out: &mut [u32],
) {
    if pd.stride != 1 {
        with_scratch(c * cstride, |xp| {
            pd.fill(x, c, h, w, xp, cstride, pd.plane);
            amx_planes(xp, c, cstride, tail, out);
        });
        return;
    }
    let (pin, wp, cp, np) = (h * w, pd.wp, c.div_ceil(2), tile_planes(c));
    for k in 0..cp {
        let plane = &mut out[k * cstride..];
        plane[..wp + 1].fill(0);
        let a = &x[2 * k * pin..(2 * k + 1) * pin];
        let b = (2 * k + 1 < c).then(|| &x[(2 * k + 1) * pin..(2 * k + 2) * pin]);
        // SAFETY: AVX-512 BF16 (AMX was chosen, which needs it); the rows' 16-lane blocks end
        // before wp + 1 + h·wp + 16 ≤ cstride + tail lanes from the plane's start.
        unsafe { rows_to_bf16_pairs(a, b, w, h, &mut plane[wp + 1..], wp) };
        for y in 0..h {
            plane[(y + 2) * wp] = 0;
        }
        plane[(h + 1) * wp..cstride].fill(0);
    }
    out[cp * cstride..np * cstride + tail].fill(0);
}

/// [`rows_to_bf16`] for two planes interleaved as bf16 pairs (`lane = bf16(a) | bf16(b) << 16`,
/// `b` zero when absent), 16-lane blocks stored whole (spilling up to 15 lanes past a row).
///
/// # Safety
/// AVX-512F and AVX-512 BF16 must be available; `a` (and `b`) hold `h·w` floats;
/// `dst.len() ≥ (h − 1)·wp + ⌈w/16⌉·16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn rows_to_bf16_pairs(a: &[f32], b: Option<&[f32]>, w: usize, h: usize, dst: &mut [u32], wp: usize) {
    use std::arch::x86_64::*;
    use std::mem::transmute;
    debug_assert!(a.len() >= h * w && dst.len() >= (h - 1) * wp + w.div_ceil(16) * 16);
    for y in 0..h {
        for k in (0..w).step_by(16) {
            let m: __mmask16 = if w - k >= 16 {
                0xffff
            } else {
                (1u16 << (w - k)) - 1
            };
            let lo = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, a.as_ptr().add(y * w + k)));
            let mut v = _mm512_cvtepu16_epi32(transmute::<__m256bh, __m256i>(lo));
            if let Some(b) = b {
                let hi = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, b.as_ptr().add(y * w + k)));
                let hi = _mm512_cvtepu16_epi32(transmute::<__m256bh, __m256i>(hi));
                v = _mm512_or_si512(v, _mm512_slli_epi32::<16>(hi));
            }
            _mm512_storeu_si512(dst.as_mut_ptr().add(y * wp + k).cast(), v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn rows_to_bf16_pairs(_: &[f32], _: Option<&[f32]>, _: usize, _: usize, _: &mut [u32], _: usize) {
    unreachable!("bf16::has_bf16 is false off x86_64")
}

/// [`PlaneMoments`] per channel of a channels-last `[p][co]` block: f32 sums over the ≤ 64
/// positions (vectorised across channels), then the squared deviations from each channel's
/// mean.
fn channels_last_moments(ycl: &[f32], co: usize, out: &mut [PlaneMoments]) {
    let p = ycl.len() / co;
    let mut sum = vec![0f32; co];
    for row in ycl.chunks_exact(co) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|&s| s / p as f32).collect();
    let mut m2 = vec![0f32; co];
    for row in ycl.chunks_exact(co) {
        for ((q, &v), &m) in m2.iter_mut().zip(row).zip(&mean) {
            *q += (v - m) * (v - m);
        }
    }
    for (o, slot) in out.iter_mut().enumerate() {
        *slot = (sum[o] as f64, m2[o] as f64);
    }
}

/// Whether [`input_grad_stride2`] handles the input gradient of a 3×3, stride-2, padding-1
/// convolution at precision `prec`: input channels `c` a multiple of 64 (32 for bf16 on AMX,
/// whose tiles hold 32 × 32 blocks) and at most 128, at most 256 output channels, output planes
/// of at most 64 positions, AVX-512F.
pub fn dx_applies(c: usize, co: usize, h: usize, w: usize, prec: Precision) -> bool {
    let block = if Arith::of(prec) == Arith::Amx { 32 } else { OC };
    c.is_multiple_of(block)
        && (1..=128).contains(&c)
        && (1..=256).contains(&co)
        && h.div_ceil(2) * w.div_ceil(2) <= 64
        && has_avx512()
}

/// dx (`[n, c, h, w]`) of a 3×3, stride-2, padding-1 convolution from its output gradient, the
/// small-plane twin of [`super::direct::input_grad_stride2`]: the same four phases, each a small
/// forward convolution of dY computed with `fwd_kernel` (tiles of 6 positions × 64 of dx's
/// channels), its results written to every other row and column of dx. Only where
/// [`dx_applies`] is true. `prec`: bf16 pairs dY's channels (`fwd_kernel_bf16`).
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
    assert!(
        dx_applies(c, co, h, w, prec),
        "direct_small::input_grad_stride2 on an unsupported convolution"
    );
    input_grad_stride2_as(dy, wt, n, c, h, w, co, Arith::of(prec))
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
    if arith == Arith::Amx {
        return input_grad_stride2_amx(dy, wt, n, c, h, w, co);
    }
    let bf16 = arith == Arith::Dp;
    assert!(
        !bf16 || has_bf16(),
        "direct_small::input_grad_stride2: bf16 needs AVX-512 BF16"
    );
    let pd = Padded::new(h, w, 2);
    let phases = dx_phases(pd.wp);
    // bf16: per phase, weights as pairs of dY's channels, [co/2][taps][c].
    let cop = co.div_ceil(2);
    let wk2: Vec<Vec<u32>> = if bf16 {
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
    // Per phase: weights channels-last [co][taps][c]; the grid address of each of its pixels
    // (a, b), repeated up to a multiple of T.
    let plan: Vec<(Vec<f32>, Vec<usize>)> = phases
        .iter()
        .map(|(r, s, taps)| {
            let nt = taps.len();
            let mut wk = vec![0f32; if bf16 { 0 } else { co * nt * c }];
            for o in 0..if bf16 { 0 } else { co } {
                for (k, &(t, _)) in taps.iter().enumerate() {
                    for ci in 0..c {
                        wk[(o * nt + k) * c + ci] = wt[(o * c + ci) * 9 + t];
                    }
                }
            }
            let (hr, ws) = ((h - r).div_ceil(2), (w - s).div_ceil(2));
            let m = hr * ws;
            let addr = (0..m.div_ceil(T) * T)
                .map(|q| {
                    let q = q.min(m.max(1) - 1);
                    (q / ws.max(1)) * pd.wp + q % ws.max(1)
                })
                .collect();
            (wk, addr)
        })
        .collect();
    let (p, pin) = (pd.p(), h * w);
    // Writes every element: each input pixel has exactly one parity phase, and each phase
    // writes all its pixels for all c channels.
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
                    for (ph, ((r, s, taps), (wk, addr))) in phases.iter().zip(&plan).enumerate() {
                        let ws = (w - s).div_ceil(2);
                        let m = (h - r).div_ceil(2) * ws;
                        if m == 0 {
                            continue;
                        }
                        with_scratch(addr.len() * c, |ycl| {
                            for ob in (0..c).step_by(OC) {
                                for (ti, tile) in addr.chunks_exact(T).enumerate() {
                                    if bf16 {
                                        // SAFETY: as below, in pairs of dY's channels: dyp2 holds cop
                                        // planes of `pd.plane` lanes, wk2[ph] cop·taps·c; AVX-512 BF16
                                        // asserted above.
                                        unsafe {
                                            phase_kernel_bf16(
                                                dyp2,
                                                cop,
                                                pd.plane,
                                                taps,
                                                &wk2[ph],
                                                c,
                                                ob,
                                                tile,
                                                &mut ycl[ti * T * c..],
                                            )
                                        };
                                        continue;
                                    }
                                    // SAFETY: `dx_applies` checked AVX-512F; every address plus tap
                                    // offset (≤ wp + 1) lies in a plane of `pd.plane` floats; wk
                                    // holds co·taps·c, ycl addr.len()·c floats; ob + 64 ≤ c.
                                    unsafe {
                                        phase_kernel(
                                            dyp,
                                            co,
                                            pd.plane,
                                            taps,
                                            wk,
                                            c,
                                            ob,
                                            tile,
                                            &mut ycl[ti * T * c..],
                                        )
                                    };
                                }
                            }
                            for q in 0..m {
                                let (a, b) = (q / ws, q % ws);
                                let at = (2 * a + r) * w + 2 * b + s;
                                for ci in 0..c {
                                    dximg[ci * pin + at].write(ycl[q * c + ci]);
                                }
                            }
                        });
                    }
                });
            });
        })
    };
    // SAFETY: see `fill`.
    unsafe { output_vec(n * c * pin, fill) }
}

/// [`input_grad_stride2`] on AMX: each phase of `dx_phases` as [`amx::gemm_taps`] over dY's
/// channel-pair planes on the grid (dx's channels as the tile rows), its results written to
/// every other row and column of dx.
#[allow(clippy::too_many_arguments)]
pub(super) fn input_grad_stride2_amx(
    dy: &[f32],
    wt: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
) -> Vec<f32> {
    assert!(
        amx::available() && c.is_multiple_of(16),
        "direct_small::input_grad_stride2_amx needs AMX and input channels in multiples of 16"
    );
    let pd = Padded::new(h, w, 2);
    let phases = dx_phases(pd.wp);
    let nk = co.div_ceil(32);
    // Per phase: weights with dx's channels as the rows, the taps' grid offsets.
    let plan: Vec<(Vec<u32>, Vec<usize>)> = phases
        .iter()
        .map(|(_, _, taps)| {
            let t: Vec<usize> = taps.iter().map(|&(t, _)| t).collect();
            let wa = amx_weights(c, co, &t, wt, |l, o, t| (o * c + l) * 9 + t);
            (wa, taps.iter().map(|&(_, off)| off).collect())
        })
        .collect();
    let nm_max = (pd.oh * pd.wp).div_ceil(32) * 32;
    let tail = nm_max + pd.wp + 1;
    let (p, pin) = (pd.p(), h * w);
    // Writes every element: each input pixel has exactly one parity phase, and each phase
    // writes all its pixels for all c channels.
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
                with_scratch(nk * 16 * pd.plane + tail, |dyp2| {
                    let dyp2 = as_u32(dyp2);
                    amx_planes(dyp, co, pd.plane, tail, dyp2);
                    with_scratch(c * nm_max, |tmp| {
                        for ((r, s, _), (wa, offs)) in phases.iter().zip(&plan) {
                            let (hr, ws) = ((h - r).div_ceil(2), (w - s).div_ceil(2));
                            if hr * ws == 0 {
                                continue;
                            }
                            let nm = (hr * pd.wp).div_ceil(32) * 32;
                            // SAFETY: AMX available (Arith::of); wa holds taps·nk·c·16 lanes;
                            // the B tiles read below (nk·16 − 1)·plane + wp + 1 + nm ≤ the
                            // planes' length; tmp holds c rows of nm ≤ nm_max; c is a multiple
                            // of 16 (dx_applies; direct: checked there), nm of 32.
                            unsafe {
                                amx::gemm_taps(
                                    wa.as_ptr(),
                                    c * 16,
                                    dyp2.as_ptr(),
                                    pd.plane,
                                    offs,
                                    nk,
                                    c,
                                    nm,
                                    tmp.as_mut_ptr(),
                                    nm,
                                    half_tiles(co),
                                )
                            };
                            for l in 0..c {
                                let plane = &mut dximg[l * pin..(l + 1) * pin];
                                let src = &tmp[l * nm..(l + 1) * nm];
                                for a in 0..hr {
                                    let row = &mut plane[(2 * a + r) * w..(2 * a + r + 1) * w];
                                    let vals = &src[a * pd.wp..a * pd.wp + ws];
                                    for (d, &v) in row[*s..].iter_mut().step_by(2).zip(vals) {
                                        d.write(v);
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

/// [`fwd_kernel`] with a phase's taps (1, 2 or 4; offsets from the `(tap, offset)` pairs).
///
/// # Safety
/// As [`fwd_kernel`].
#[allow(clippy::too_many_arguments)]
unsafe fn phase_kernel(
    xp: &[f32],
    c: usize,
    cstride: usize,
    taps: &[(usize, usize)],
    wk: &[f32],
    co: usize,
    ob: usize,
    tile: &[usize],
    out: &mut [f32],
) {
    fn offs<const N: usize>(taps: &[(usize, usize)]) -> [usize; N] {
        std::array::from_fn(|k| taps[k].1)
    }
    match taps.len() {
        1 => fwd_kernel::<1>(xp, c, cstride, &offs(taps), wk, co, ob, tile, out),
        2 => fwd_kernel::<2>(xp, c, cstride, &offs(taps), wk, co, ob, tile, out),
        4 => fwd_kernel::<4>(xp, c, cstride, &offs(taps), wk, co, ob, tile, out),
        k => unreachable!("a stride-2 phase has 1, 2 or 4 taps, not {k}"),
    }
}

/// `out[k·co + ob + o] = Σ_c Σ_t wk[(c·NT + t)·co + ob + o] · xp[c·cstride + tile[k] + offs[t]]`
/// for the [`T`] positions of `tile` and 64 channels from `ob`, over `NT` taps.
///
/// # Safety
/// AVX-512F must be available; `tile[k] + offs[t] < cstride`; `xp.len() ≥ c·cstride`;
/// `wk.len() ≥ c·NT·co`; `ob + 64 ≤ co`; `out.len() ≥ (T − 1)·co + ob + 64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_kernel<const NT: usize>(
    xp: &[f32],
    c: usize,
    cstride: usize,
    offs: &[usize; NT],
    wk: &[f32],
    co: usize,
    ob: usize,
    tile: &[usize],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(tile.len() == T && ob + OC <= co && out.len() >= (T - 1) * co + ob + OC);
    let mut acc = [[_mm512_setzero_ps(); 4]; T];
    for ci in 0..c {
        let xb = xp.as_ptr().add(ci * cstride);
        let wc = wk.as_ptr().add(ci * NT * co + ob);
        for (t, &off) in offs.iter().enumerate() {
            let wt = wc.add(t * co);
            let wv = [
                _mm512_loadu_ps(wt),
                _mm512_loadu_ps(wt.add(16)),
                _mm512_loadu_ps(wt.add(32)),
                _mm512_loadu_ps(wt.add(48)),
            ];
            for (k, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*xb.add(tile[k] + off));
                for v in 0..4 {
                    a[v] = _mm512_fmadd_ps(wv[v], xv, a[v]);
                }
            }
        }
    }
    for (k, a) in acc.iter().enumerate() {
        let dst = out.as_mut_ptr().add(k * co + ob);
        for (v, r) in a.iter().enumerate() {
            _mm512_storeu_ps(dst.add(16 * v), *r);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_kernel<const NT: usize>(
    _: &[f32],
    _: usize,
    _: usize,
    _: &[usize; NT],
    _: &[f32],
    _: usize,
    _: usize,
    _: &[usize],
    _: &mut [f32],
) {
    unreachable!("direct_small::applies is false off x86_64")
}

/// [`fwd_kernel_bf16`] with a phase's taps (1, 2 or 4; offsets from the `(tap, offset)` pairs).
///
/// # Safety
/// As [`fwd_kernel_bf16`].
#[allow(clippy::too_many_arguments)]
unsafe fn phase_kernel_bf16(
    xp: &[u32],
    cp: usize,
    cstride: usize,
    taps: &[(usize, usize)],
    wk: &[u32],
    co: usize,
    ob: usize,
    tile: &[usize],
    out: &mut [f32],
) {
    fn offs<const N: usize>(taps: &[(usize, usize)]) -> [usize; N] {
        std::array::from_fn(|k| taps[k].1)
    }
    match taps.len() {
        1 => fwd_kernel_bf16::<1>(xp, cp, cstride, &offs(taps), wk, co, ob, tile, out),
        2 => fwd_kernel_bf16::<2>(xp, cp, cstride, &offs(taps), wk, co, ob, tile, out),
        4 => fwd_kernel_bf16::<4>(xp, cp, cstride, &offs(taps), wk, co, ob, tile, out),
        k => unreachable!("a stride-2 phase has 1, 2 or 4 taps, not {k}"),
    }
}

/// [`fwd_kernel`] in bf16: `xp` holds `cp` padded planes of channel pairs (lane = two bf16,
/// [`pair_planes`]) and `wk` the pair weights `[cp][NT][co]` ([`pair_weights`]). Per channel
/// pair and tap: 4 loads of 64 output channels' weight pairs, 6 broadcasts of an input pair and
/// 24 `vdpbf16ps` (two multiply-adds a lane each), accumulated in f32.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 must be available; `tile[k] + offs[t] < cstride`;
/// `xp.len() ≥ cp·cstride`; `wk.len() ≥ cp·NT·co`; `ob + 64 ≤ co`;
/// `out.len() ≥ (T − 1)·co + ob + 64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_kernel_bf16<const NT: usize>(
    xp: &[u32],
    cp: usize,
    cstride: usize,
    offs: &[usize; NT],
    wk: &[u32],
    co: usize,
    ob: usize,
    tile: &[usize],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    use std::mem::transmute;
    debug_assert!(tile.len() == T && ob + OC <= co && out.len() >= (T - 1) * co + ob + OC);
    debug_assert!(xp.len() >= cp * cstride && wk.len() >= cp * NT * co);
    let mut acc = [[_mm512_setzero_ps(); 4]; T];
    for ci in 0..cp {
        let xb = xp.as_ptr().add(ci * cstride);
        let wc = wk.as_ptr().add(ci * NT * co + ob);
        for (t, &off) in offs.iter().enumerate() {
            let wt = wc.add(t * co);
            let wv: [__m512bh; 4] = [
                transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wt.cast())),
                transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wt.add(16).cast())),
                transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wt.add(32).cast())),
                transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wt.add(48).cast())),
            ];
            for (k, a) in acc.iter_mut().enumerate() {
                let xv: __m512bh = transmute(_mm512_set1_epi32(*xb.add(tile[k] + off) as i32));
                for v in 0..4 {
                    a[v] = _mm512_dpbf16_ps(a[v], wv[v], xv);
                }
            }
        }
    }
    for (k, a) in acc.iter().enumerate() {
        let dst = out.as_mut_ptr().add(k * co + ob);
        for (v, r) in a.iter().enumerate() {
            _mm512_storeu_ps(dst.add(16 * v), *r);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_kernel_bf16<const NT: usize>(
    _: &[u32],
    _: usize,
    _: usize,
    _: &[usize; NT],
    _: &[u32],
    _: usize,
    _: usize,
    _: &[usize],
    _: &mut [f32],
) {
    unreachable!("bf16::has_bf16 is false off x86_64")
}

/// `dW` (`[co, c, 3, 3]`) of [`forward`] from its input `x` and output gradient `dy`; only where
/// [`applies`] is true. Images are split into at most 8 groups (fixed, whatever the thread
/// count), summed per group in a channels-last buffer `[c·9][co]` and added in order. `prec`:
/// bf16 sums over pairs of positions (`weight_grad_bf16`).
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
    assert!(
        applies(c, co, h, w, 3, stride, 1),
        "direct_small::weight_grad on an unsupported convolution"
    );
    match Arith::of(prec) {
        Arith::Amx => return weight_grad_amx(x, dy, n, c, h, w, co, stride),
        Arith::Dp => return weight_grad_bf16(x, dy, n, c, h, w, co, stride),
        Arith::F32 => {}
    }
    let pd = Padded::new(h, w, stride);
    let (p, pin) = (pd.p(), h * w);
    let addr = addresses(pd.oh, pd.ow, pd.wp);
    let (cstride, tap) = (pd.block(), pd.offs(pd.plane));
    // (input channel, tap) pairs as plane offsets, padded to a multiple of T with a dummy pair
    // whose results land in the spare rows of the accumulator.
    let pairs = c * 9;
    let offs: Vec<usize> = (0..pairs.div_ceil(T) * T)
        .map(|k| {
            let k = k.min(pairs - 1);
            let (ci, t) = (k / 9, k % 9);
            ci * cstride + tap[t]
        })
        .collect();
    // Summed channels-last, [pair][co], with the dummy pairs' rows at the end.
    let acc = sum_over_image_groups(n, offs.len() * co, |imgs| {
        let mut acc = vec![0f32; offs.len() * co];
        for img in imgs {
            with_scratch(c * cstride, |xp| {
                pd.fill(
                    &x[img * c * pin..(img + 1) * c * pin],
                    c,
                    h,
                    w,
                    xp,
                    cstride,
                    pd.plane,
                );
                with_scratch(p * co, |dycl| {
                    let d = &dy[img * co * p..(img + 1) * co * p];
                    for o in 0..co {
                        for q in 0..p {
                            dycl[q * co + o] = d[o * p + q];
                        }
                    }
                    for ob in (0..co).step_by(OC) {
                        for (k, chunk) in offs.chunks_exact(T).enumerate() {
                            // SAFETY: `applies` checked AVX-512F; each pair offset plus a
                            // position address stays inside the padded planes of xp; dycl
                            // holds p·co, acc offs.len()·co floats; ob + 64 ≤ co.
                            unsafe {
                                wgrad_kernel(xp, dycl, &addr[..p], chunk, co, ob, &mut acc[k * T * co..])
                            };
                        }
                    }
                });
            });
        }
        acc
    });
    let mut dw = vec![0f32; co * c * 9];
    for o in 0..co {
        for k in 0..pairs {
            dw[o * pairs + k] = acc[k * co + o];
        }
    }
    dw
}

/// `acc[k·co + ob + o] += Σ_q dycl[q·co + ob + o] · xp[addr[q] + pair[k]]` for the [`T`] pairs
/// and 64 output channels from `ob`.
///
/// # Safety
/// AVX-512F must be available; every `addr[q] + pair[k]` indexes `xp`; `dycl.len() ≥
/// addr.len()·co`; `ob + 64 ≤ co`; `acc.len() ≥ (T − 1)·co + ob + 64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn wgrad_kernel(
    xp: &[f32],
    dycl: &[f32],
    addr: &[usize],
    pair: &[usize],
    co: usize,
    ob: usize,
    acc: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(pair.len() == T && ob + OC <= co && acc.len() >= (T - 1) * co + ob + OC);
    debug_assert!(dycl.len() >= addr.len() * co);
    let mut a = [[_mm512_setzero_ps(); 4]; T];
    for (q, &base) in addr.iter().enumerate() {
        let g = dycl.as_ptr().add(q * co + ob);
        let gv = [
            _mm512_loadu_ps(g),
            _mm512_loadu_ps(g.add(16)),
            _mm512_loadu_ps(g.add(32)),
            _mm512_loadu_ps(g.add(48)),
        ];
        for (k, r) in a.iter_mut().enumerate() {
            let xv = _mm512_set1_ps(*xp.as_ptr().add(base + pair[k]));
            for v in 0..4 {
                r[v] = _mm512_fmadd_ps(gv[v], xv, r[v]);
            }
        }
    }
    for (k, r) in a.iter().enumerate() {
        let dst = acc.as_mut_ptr().add(k * co + ob);
        for (v, x) in r.iter().enumerate() {
            let d = dst.add(16 * v);
            _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), *x));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn wgrad_kernel(_: &[f32], _: &[f32], _: &[usize], _: &[usize], _: usize, _: usize, _: &mut [f32]) {
    unreachable!("direct_small::applies is false off x86_64")
}

/// [`weight_grad`] on AMX: `dW_t[ci][o] = Σ_q X[ci][q + offs[t]] · dY[o][q]` over the grid
/// positions q of a batch of images laid out back to back on the padded grid as in
/// [`super::direct::weight_grad`] (dY zero at the dropped columns and between images, so they
/// add nothing). A tile of X is 16 channels × 32 positions straight from the bf16 planes; dY
/// goes channels-last in position pairs (`dyp[q/2][o]`, the tiles' VNNI layout). Per tap, the
/// 32 × 32 (channel, output channel) blocks accumulate in tiles over a whole batch; where `c`
/// or `co` is not a multiple of 32 (`direct`'s 16-channel layers), 16 × 16 blocks of three taps
/// at a time ([`amx::gemm_acc_taps`]). Also [`super::direct`]'s bf16 weight gradient on AMX.
#[allow(clippy::too_many_arguments)]
pub(super) fn weight_grad_amx(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
) -> Vec<f32> {
    assert!(
        amx::available() && co.is_multiple_of(16),
        "direct_small::weight_grad_amx needs AMX and output channels in multiples of 16"
    );
    let pd = Padded::new(h, w, stride);
    let (p, pin, phases) = (pd.p(), h * w, pd.phases());
    // Floats per image a channel (and phase), the images overlapping in their zero borders:
    // stride 1, the padded grid less one pad row (an image's bottom pad row is the next one's
    // top row); stride 2, the phase plane's rows (its tail past them, all zero, is the next
    // image's start). Each image's fill writes `span` floats, zeros past `pk`, before the next
    // image's fill overwrites them with the same zeros and its own values.
    let (pk, span) = if stride == 1 {
        ((pd.oh + 1) * pd.wp, (pd.oh + 2) * pd.wp)
    } else {
        ((pd.oh + 1) * pd.wp, pd.plane)
    };
    let batch = (4096 / (phases * pk)).max(1);
    // 16-channel blocks (c or co not in multiples of 32, as in direct's 16-channel layers):
    // three taps at a time on 16 × 16 tiles (amx::gemm_acc_taps) instead of 32-row tiles half
    // of padding.
    let narrow = !c.div_ceil(16).is_multiple_of(2) || !co.is_multiple_of(32);
    let cpad = if narrow {
        c.div_ceil(16) * 16
    } else {
        c.div_ceil(32) * 32
    };
    let acc = sum_over_image_groups(n, 9 * cpad * co, |imgs| {
        let mut acc = vec![0f32; 9 * cpad * co];
        let mut img = imgs.start;
        while img < imgs.end {
            let b = batch.min(imgs.end - img);
            let len = ((b - 1) * pk + span).div_ceil(32) * 32;
            let offs = pd.offs(len);
            let reach = offs.iter().max().unwrap() + 32;
            let cstride = phases * len + reach;
            with_scratch((cpad * cstride).div_ceil(2), |xh| {
                let xh = as_u16(xh);
                let xs = &x[img * c * pin..(img + b) * c * pin];
                batch_planes_bf16(
                    xs,
                    b,
                    c,
                    h,
                    w,
                    &pd,
                    (pk, span, len, cstride),
                    &mut xh[..cpad * cstride],
                );
                {
                    with_scratch(len / 2 * co, |dyp| {
                        let dyp = as_u32(dyp);
                        grid_pairs(&dy[img * co * p..(img + b) * co * p], b, co, &pd, pk, len, dyp);
                        if narrow {
                            // SAFETY: AMX available (asserted); the A tiles read rows ci < cpad
                            // of xh from each tap's offset, up to len + off < cstride elements
                            // each; dyp holds len/2 rows of co lanes; acc holds 9 tap blocks of
                            // cpad × co; cpad and co are multiples of 16, len of 32.
                            unsafe {
                                amx::gemm_acc_taps(
                                    xh.as_ptr(),
                                    cstride,
                                    &offs,
                                    dyp.as_ptr(),
                                    co,
                                    cpad,
                                    co,
                                    len,
                                    acc.as_mut_ptr(),
                                    co,
                                    cpad * co,
                                )
                            };
                        } else {
                            for (t, &off) in offs.iter().enumerate() {
                                // SAFETY: AMX available (Arith::of); the A tiles read rows ci < cpad
                                // of xh from `off`, up to len + off < cstride elements each; dyp
                                // holds len/2 rows of co lanes; acc's tap block holds cpad × co;
                                // cpad, co and len are multiples of 32 (not `narrow`).
                                unsafe {
                                    amx::gemm_acc(
                                        xh.as_ptr().add(off),
                                        cstride,
                                        dyp.as_ptr(),
                                        co,
                                        cpad,
                                        co,
                                        len,
                                        acc.as_mut_ptr().add(t * cpad * co),
                                        co,
                                    )
                                };
                            }
                        }
                    });
                }
            });
            img += b;
        }
        acc
    });
    let mut dw = vec![0f32; co * c * 9];
    for o in 0..co {
        for ci in 0..c {
            for t in 0..9 {
                dw[(o * c + ci) * 9 + t] = acc[(t * cpad + ci) * co + o];
            }
        }
    }
    dw
}

/// The `b` images `xs` (`[b][c][h][w]`) as [`weight_grad_amx`]'s bf16 planes: per channel
/// (`cstride` apart; `xh` may hold more, zero, channels), per phase (`len` apart), image k's
/// padded (phase) plane at `k·pk`, and zeros everywhere no image writes. Stride 1 converts the
/// rows straight into place ([`rows_to_bf16`]); stride 2 goes through f32 phase planes.
#[allow(clippy::too_many_arguments)]
fn batch_planes_bf16(
    xs: &[f32],
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    pd: &Padded,
    (pk, span, len, cstride): (usize, usize, usize, usize),
    xh: &mut [u16],
) {
    let (pin, wp, phases) = (h * w, pd.wp, pd.phases());
    if pd.stride == 1 {
        for ci in 0..c {
            let ch = &mut xh[ci * cstride..(ci + 1) * cstride];
            for k in 0..b {
                let base = k * pk;
                ch[base..base + wp + 1].fill(0);
                let src = &xs[(k * c + ci) * pin..(k * c + ci + 1) * pin];
                // SAFETY: AVX-512 BF16 (Arith::of chose AMX, which needs it); the rows' writes
                // (16-element blocks) end before base + h·wp + w + 16 ≤ cstride (reach ≥ 32 past
                // the last image's span).
                unsafe { rows_to_bf16(src, w, h, &mut ch[base + wp + 1..], wp) };
                // The pad column after each row (over what the row's last block spilled), then
                // the bottom pad row (the next image's top row).
                for y in 0..h {
                    ch[base + (y + 2) * wp] = 0;
                }
                ch[base + (h + 1) * wp..base + span].fill(0);
            }
            ch[(b - 1) * pk + span..].fill(0);
        }
    } else {
        with_scratch(c * cstride, |xp| {
            for k in 0..b {
                pd.fill(
                    &xs[k * c * pin..(k + 1) * c * pin],
                    c,
                    h,
                    w,
                    &mut xp[k * pk..],
                    cstride,
                    len,
                );
            }
            for ci in 0..c {
                let ch = &mut xp[ci * cstride..(ci + 1) * cstride];
                for r in 0..phases {
                    ch[r * len + (b - 1) * pk + span..(r + 1) * len].fill(0.0);
                }
                ch[phases * len..].fill(0.0);
            }
            convert(xp, xh);
        });
    }
    xh[c * cstride..].fill(0);
}

/// Rows of `w` floats (`src`, `h` rows back to back) to bf16 at `dst[y·wp..]`, in 16-element
/// blocks stored whole: each row's last block spills up to 15 elements past it, which the next
/// row (or the caller) overwrites.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 must be available; `src.len() ≥ h·w`; `dst.len() ≥ (h − 1)·wp +
/// ⌈w/16⌉·16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn rows_to_bf16(src: &[f32], w: usize, h: usize, dst: &mut [u16], wp: usize) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= h * w && dst.len() >= (h - 1) * wp + w.div_ceil(16) * 16);
    for y in 0..h {
        for k in (0..w).step_by(16) {
            let m: __mmask16 = if w - k >= 16 {
                0xffff
            } else {
                (1u16 << (w - k)) - 1
            };
            let v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src.as_ptr().add(y * w + k)));
            _mm256_storeu_si256(
                dst.as_mut_ptr().add(y * wp + k).cast(),
                std::mem::transmute::<__m256bh, __m256i>(v),
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn rows_to_bf16(_: &[f32], _: usize, _: usize, _: &mut [u16], _: usize) {
    unreachable!("bf16::has_bf16 is false off x86_64")
}

/// `dy` (`b` images `[co][oh·ow]`) on the weight gradient's batched grid (image k at `k·pk`,
/// position `y·wp + x`, zero elsewhere up to `len`), in bf16 position pairs channels-last:
/// `dyp[m·co + o] = bf16(g[o][2m]) | bf16(g[o][2m + 1]) << 16`. Each channel's grid goes to
/// bf16 row by row (one masked vector conversion a row), and read as `len/2` lanes it is
/// already that channel's pairs; they are transposed to channels-last in 16 × 16 blocks.
fn grid_pairs(dy: &[f32], b: usize, co: usize, pd: &Padded, pk: usize, len: usize, dyp: &mut [u32]) {
    let (p, oh, ow, wp, np) = (pd.p(), pd.oh, pd.ow, pd.wp, len / 2);
    debug_assert!(co.is_multiple_of(16) && len.is_multiple_of(32));
    // 8 lanes past the grids for the last row's 16-element store.
    with_scratch(co * np + 8, |buf| {
        let rows = as_u16(buf);
        rows[..co * len].fill(0);
        for o in 0..co {
            for k in 0..b {
                let src = &dy[(k * co + o) * p..(k * co + o + 1) * p];
                // SAFETY: AVX-512 BF16 (AMX was chosen, which needs it). A row's store writes
                // 16-element blocks, zero past the row's `ow` values; the blocks of the last row
                // end before 16 elements past its start, inside `rows` (the 8-lane slack). Rows
                // are written in increasing position, and the zeros a row's store spills fall
                // on pad positions or on rows (of this or the next channel) written after it.
                unsafe { rows_to_bf16(src, ow, oh, &mut rows[o * len + k * pk..], wp) };
            }
        }
        transpose_lanes(&as_u32(buf)[..co * np], co, np, &mut dyp[..np * co]);
    });
}

/// `dst[j·r + i] = src[i·cols + j]` for `i < r`, `j < cols`: a lane matrix transposed, on
/// AVX-512 in 16 × 16 blocks (`r` and `cols` multiples of 16).
fn transpose_lanes(src: &[u32], r: usize, cols: usize, dst: &mut [u32]) {
    assert!(
        r.is_multiple_of(16) && cols.is_multiple_of(16) && src.len() >= r * cols && dst.len() >= r * cols
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        for j0 in (0..cols).step_by(16) {
            for i0 in (0..r).step_by(16) {
                // SAFETY: AVX-512F checked; the block's 16 rows of 16 lanes lie inside `src`
                // (i0 + 16 ≤ r, j0 + 16 ≤ cols) and its transpose inside `dst` (asserted sizes).
                unsafe {
                    transpose16(
                        src.as_ptr().add(i0 * cols + j0),
                        cols,
                        dst.as_mut_ptr().add(j0 * r + i0),
                        r,
                    )
                };
            }
        }
        return;
    }
    for i in 0..r {
        for j in 0..cols {
            dst[j * r + i] = src[i * cols + j];
        }
    }
}

/// One 16 × 16 block of 32-bit lanes transposed: row `i` of `src` (`ss` lanes apart) becomes
/// column `i` of `dst` (rows `ds` apart), by 32-bit and 64-bit interleaves within 128-bit
/// lanes and two rounds of 128-bit lane shuffles.
///
/// # Safety
/// AVX-512F; `src` readable and `dst` writable for 16 rows of 16 lanes at their strides.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(src: *const u32, ss: usize, dst: *mut u32, ds: usize) {
    use std::arch::x86_64::*;
    let r: [__m512i; 16] = std::array::from_fn(|i| _mm512_loadu_si512(src.add(i * ss).cast()));
    // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved (columns 4L, 4L + 1 and 4L + 2, 4L + 3 of
    // each 128-bit lane L).
    let t: [__m512i; 16] = std::array::from_fn(|k| {
        let (a, b) = (r[k & !1], r[k | 1]);
        if k % 2 == 0 {
            _mm512_unpacklo_epi32(a, b)
        } else {
            _mm512_unpackhi_epi32(a, b)
        }
    });
    // u[4g + e], lane L: rows 4g..4g + 4 at column 4L + e.
    let u: [__m512i; 16] = std::array::from_fn(|k| {
        let (g, e) = (k / 4, k % 4);
        let (a, b) = (t[4 * g + e / 2], t[4 * g + 2 + e / 2]);
        if e % 2 == 0 {
            _mm512_unpacklo_epi64(a, b)
        } else {
            _mm512_unpackhi_epi64(a, b)
        }
    });
    for e in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x88>(u[e], u[4 + e]);
        let v1 = _mm512_shuffle_i32x4::<0xdd>(u[e], u[4 + e]);
        let w0 = _mm512_shuffle_i32x4::<0x88>(u[8 + e], u[12 + e]);
        let w1 = _mm512_shuffle_i32x4::<0xdd>(u[8 + e], u[12 + e]);
        let out = [
            (e, _mm512_shuffle_i32x4::<0x88>(v0, w0)),
            (4 + e, _mm512_shuffle_i32x4::<0x88>(v1, w1)),
            (8 + e, _mm512_shuffle_i32x4::<0xdd>(v0, w0)),
            (12 + e, _mm512_shuffle_i32x4::<0xdd>(v1, w1)),
        ];
        for (j, v) in out {
            _mm512_storeu_si512(dst.add(j * ds).cast(), v);
        }
    }
}

/// Positions a batch of [`weight_grad_bf16`] (whole images): the output gradient's pairs for
/// 64 output channels then take 16 KB, so they stay in L1 across the kernel's passes.
const BATCH_POSITIONS: usize = 128;

/// [`weight_grad`] in bf16. `vdpbf16ps` sums pairs of adjacent elements, so the reduction over
/// positions runs over position pairs: the images of a batch ([`BATCH_POSITIONS`]) are
/// flattened to one sequence of (image, position) items and items `2m`, `2m + 1` form pair m
/// (a zero item pads an odd count). The output gradient goes channels-last in pairs,
/// `dyp[m][o]` = two bf16 in a u32 lane; the input values under (channel, tap) k for pair m are
/// one 32-bit broadcast at `xs[base[m] + koff[k]]`: where the output rows have even length
/// (every ResNet layer here), the two positions of a pair are neighbours in a row, hence in the
/// bf16 padded planes themselves; otherwise a table `[m][k]` of the pairs is built per batch.
/// Batches are fixed by the shape and groups as in [`weight_grad`], so results do not depend
/// on the thread count.
#[allow(clippy::too_many_arguments)]
fn weight_grad_bf16(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    stride: usize,
) -> Vec<f32> {
    assert!(has_bf16(), "direct_small::weight_grad: bf16 needs AVX-512 BF16");
    let pd = Padded::new(h, w, stride);
    let (p, pin) = (pd.p(), h * w);
    let addr = addresses(pd.oh, pd.ow, pd.wp);
    let (cstride, tap) = (pd.block(), pd.offs(pd.plane));
    let pairs = c * 9;
    // (input channel, tap) pairs as offsets in an image's planes, padded to a multiple of T
    // (the dummies' results land in spare rows of the accumulator).
    let offs: Vec<usize> = (0..pairs.div_ceil(T) * T)
        .map(|k| {
            let k = k.min(pairs - 1);
            (k / 9) * cstride + tap[k % 9]
        })
        .collect();
    let kn = offs.len();
    // Row pairs: a pair never straddles a row (nor an image: p = oh·ow is then even).
    let rows_paired = pd.ow.is_multiple_of(2);
    let batch = (BATCH_POSITIONS / p).max(1);
    let block = c * cstride;
    let acc = sum_over_image_groups(n, kn * co, |imgs| {
        let mut acc = vec![0f32; kn * co];
        let mut img = imgs.start;
        while img < imgs.end {
            let b = batch.min(imgs.end - img);
            let (items, mp) = (b * p, (b * p).div_ceil(2));
            with_scratch((b * block).div_ceil(2) + 1, |xh| {
                let xh = as_u16(xh);
                with_scratch(block, |xp| {
                    for i in 0..b {
                        let xi = &x[(img + i) * c * pin..(img + i + 1) * c * pin];
                        pd.fill(xi, c, h, w, xp, cstride, pd.plane);
                        convert(xp, &mut xh[i * block..(i + 1) * block]);
                    }
                });
                with_scratch(mp * co, |dyp| {
                    let dyp = as_u32(dyp);
                    pair_positions(&dy[img * co * p..(img + b) * co * p], b, co, p, dyp);
                    // Where item (image i, position q) begins in `xh`.
                    let at = |g: usize| (g / p) * block + addr[g % p];
                    let run = |xs: &[u16], base: &[usize], koff: &[usize], acc: &mut [f32]| {
                        for ob in (0..co).step_by(OC) {
                            for (k, chunk) in koff.chunks_exact(T).enumerate() {
                                // SAFETY: AVX-512 BF16 asserted above; every base + koff + 1
                                // indexes xs (a real position, or the table); dyp holds mp·co
                                // lanes, acc kn·co floats; ob + 64 ≤ co.
                                unsafe {
                                    wgrad_kernel_bf16(xs, base, chunk, dyp, co, ob, &mut acc[k * T * co..])
                                };
                            }
                        }
                    };
                    if rows_paired {
                        let base: Vec<usize> = (0..mp).map(|m| at(2 * m)).collect();
                        run(xh, &base, &offs, &mut acc);
                    } else {
                        with_scratch(mp * kn, |tab| {
                            let tab = as_u32(tab);
                            for m in 0..mp {
                                let (g0, g1) = (2 * m, 2 * m + 1);
                                for (k, &off) in offs.iter().enumerate() {
                                    let lo = xh[at(g0) + off] as u32;
                                    let hi = if g1 < items { xh[at(g1) + off] as u32 } else { 0 };
                                    tab[m * kn + k] = lo | hi << 16;
                                }
                            }
                            let base: Vec<usize> = (0..mp).map(|m| 2 * m * kn).collect();
                            let koff: Vec<usize> = (0..kn).map(|k| 2 * k).collect();
                            run(as_u16_ro(tab), &base, &koff, &mut acc);
                        });
                    }
                });
            });
            img += b;
        }
        acc
    });
    let mut dw = vec![0f32; co * c * 9];
    for o in 0..co {
        for k in 0..pairs {
            dw[o * pairs + k] = acc[k * co + o];
        }
    }
    dw
}

/// A u32 buffer viewed as bf16 (u16) elements, twice as many (little-endian: lane = lo | hi << 16).
fn as_u16_ro(v: &[u32]) -> &[u16] {
    // SAFETY: u16's alignment divides u32's; 2·len u16 cover exactly the same bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u16>(), v.len() * 2) }
}

/// [`as_u16_ro`], writable.
fn u16_view_mut(v: &mut [u32]) -> &mut [u16] {
    // SAFETY: as `as_u16_ro`; every bit pattern is a valid u16 and u32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u16>(), v.len() * 2) }
}

/// `acc[k·co + ob + o] += Σ_m dyp[m·co + ob + o] ⋅ xs[base[m] + koff[k] ..][..2]` for the [`T`]
/// (channel, tap) pairs of `koff` and 64 output channels from `ob`, `⋅` the two-element bf16
/// dot product of `vdpbf16ps` (a u32 lane of `dyp` against the two bf16 at `xs[base + koff]`,
/// broadcast): per position pair 4 loads, 6 broadcasts and 24 `vdpbf16ps`.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 must be available; `base[m] + koff[k] + 1 < xs.len()`;
/// `dyp.len() ≥ base.len()·co`; `ob + 64 ≤ co`; `acc.len() ≥ (T − 1)·co + ob + 64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn wgrad_kernel_bf16(
    xs: &[u16],
    base: &[usize],
    koff: &[usize],
    dyp: &[u32],
    co: usize,
    ob: usize,
    acc: &mut [f32],
) {
    use std::arch::x86_64::*;
    use std::mem::transmute;
    debug_assert!(koff.len() == T && ob + OC <= co && acc.len() >= (T - 1) * co + ob + OC);
    debug_assert!(dyp.len() >= base.len() * co);
    let koff: [usize; T] = std::array::from_fn(|k| koff[k]);
    let mut a = [[_mm512_setzero_ps(); 4]; T];
    for (m, &b0) in base.iter().enumerate() {
        let g = dyp.as_ptr().add(m * co + ob);
        let gv: [__m512bh; 4] = [
            transmute::<__m512i, __m512bh>(_mm512_loadu_si512(g.cast())),
            transmute::<__m512i, __m512bh>(_mm512_loadu_si512(g.add(16).cast())),
            transmute::<__m512i, __m512bh>(_mm512_loadu_si512(g.add(32).cast())),
            transmute::<__m512i, __m512bh>(_mm512_loadu_si512(g.add(48).cast())),
        ];
        let xb = xs.as_ptr().add(b0);
        for (k, r) in a.iter_mut().enumerate() {
            let pair = std::ptr::read_unaligned(xb.add(koff[k]).cast::<i32>());
            let xv: __m512bh = transmute(_mm512_set1_epi32(pair));
            for v in 0..4 {
                r[v] = _mm512_dpbf16_ps(r[v], gv[v], xv);
            }
        }
    }
    for (k, r) in a.iter().enumerate() {
        let dst = acc.as_mut_ptr().add(k * co + ob);
        for (v, x) in r.iter().enumerate() {
            let d = dst.add(16 * v);
            _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), *x));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn wgrad_kernel_bf16(
    _: &[u16],
    _: &[usize],
    _: &[usize],
    _: &[u32],
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("bf16::has_bf16 is false off x86_64")
}

/// `dy` (`b` images `[co][p]`) as bf16 position pairs channels-last: item g = (image g / p,
/// position g % p), `dyp[m·co + o] = bf16(dy(2m, o)) | bf16(dy(2m + 1, o)) << 16`, the partner
/// of an odd count's last item zero.
fn pair_positions(dy: &[f32], b: usize, co: usize, p: usize, dyp: &mut [u32]) {
    let items = b * p;
    let mp = items.div_ceil(2);
    with_scratch(items * co / 2 + 1, |buf| {
        convert(dy, as_u16(buf));
        if p.is_multiple_of(2) {
            // A pair is two neighbours of one plane: move u32 lanes.
            let dh = as_u32(buf);
            let half = p / 2;
            for i in 0..b {
                for o in 0..co {
                    let src = &dh[(i * co + o) * half..(i * co + o + 1) * half];
                    for (mq, &v) in src.iter().enumerate() {
                        dyp[(i * half + mq) * co + o] = v;
                    }
                }
            }
        } else {
            let (dh, out) = (as_u16(buf), u16_view_mut(dyp));
            for i in 0..b {
                for o in 0..co {
                    for q in 0..p {
                        let g = i * p + q;
                        out[2 * ((g / 2) * co + o) + g % 2] = dh[(i * co + o) * p + q];
                    }
                }
            }
            if items % 2 == 1 {
                for o in 0..co {
                    out[2 * ((mp - 1) * co + o) + 1] = 0;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::direct::reference;
    use crate::ops::Precision::F32;

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
        weight_grad_bf16(x, dy, n, c, h, w, co, s)
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
        weight_grad_amx(x, dy, n, c, h, w, co, s)
    }
    /// The bf16 weight-gradient kernels this CPU runs.
    fn wgrad_kernels() -> Vec<reference::Kernel> {
        let mut v: Vec<reference::Kernel> = vec![wgrad_bf16];
        if amx::available() {
            v.push(wgrad_amx);
        }
        v
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
    ) -> (Vec<f32>, Vec<PlaneMoments>) {
        forward_moments(x, wt, n, c, h, w, co, s, m, F32)
    }
    #[allow(clippy::too_many_arguments)]
    fn moments_bf16(
        x: &[f32],
        wt: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        co: usize,
        s: usize,
        m: bool,
    ) -> (Vec<f32>, Vec<PlaneMoments>) {
        forward_moments_as(x, wt, n, c, h, w, co, s, m, Arith::Dp, None)
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
    ) -> (Vec<f32>, Vec<PlaneMoments>) {
        forward_moments_as(x, wt, n, c, h, w, co, s, m, Arith::Amx, None)
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
        forward_moments_as(x, wt, n, c, h, w, co, s, false, Arith::Dp, None).0
    }
    #[allow(clippy::too_many_arguments)]
    fn forward_amx_k(
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
    /// The bf16 forward kernels this CPU runs: AVX-512 BF16, and AMX where available.
    fn forward_kernels() -> Vec<reference::Kernel> {
        let mut v: Vec<reference::Kernel> = vec![forward_bf16];
        if amx::available() {
            v.push(forward_amx_k);
        } else {
            eprintln!("no AMX here: the AMX kernels are not exercised");
        }
        v
    }
    fn dx_f32(dy: &[f32], wt: &[f32], n: usize, c: usize, h: usize, w: usize, co: usize) -> Vec<f32> {
        input_grad_stride2(dy, wt, n, c, h, w, co, F32)
    }
    fn dx_bf16(dy: &[f32], wt: &[f32], n: usize, c: usize, h: usize, w: usize, co: usize) -> Vec<f32> {
        input_grad_stride2_as(dy, wt, n, c, h, w, co, Arith::Dp)
    }
    fn dx_amx(dy: &[f32], wt: &[f32], n: usize, c: usize, h: usize, w: usize, co: usize) -> Vec<f32> {
        input_grad_stride2_as(dy, wt, n, c, h, w, co, Arith::Amx)
    }

    #[test]
    fn bf16_kernels_are_the_convolution_of_the_rounded_operands() {
        if !has_bf16() {
            eprintln!("no AVX-512 BF16 here: the bf16 kernels are never used, nothing to test");
            return;
        }
        // (n, c, h, w, co). Odd input channel counts (a half-empty last channel pair), one and
        // two output-channel blocks, the ResNets' 8×8 and 4×4 planes, odd planes whose rows
        // have odd length (the weight gradient's pair table, pairs straddling rows and images,
        // an odd number of positions a batch), more images than groups and batches.
        for shape in [
            (2, 3, 4, 4, 64),
            (3, 8, 8, 8, 128),
            (2, 64, 8, 8, 64),
            (2, 128, 4, 4, 128),
            (11, 5, 3, 5, 64),
            (2, 2, 7, 9, 64),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(applies(c, co, h, w, 3, 1, 1));
            for f in forward_kernels() {
                reference::check_forward_bf16(f, shape, 1);
            }
            for f in wgrad_kernels() {
                reference::check_weight_grad_bf16(f, shape, 1);
            }
        }
        for shape in [(40, 3, 4, 4, 64), (19, 5, 3, 3, 64), (9, 7, 8, 8, 128)] {
            for f in wgrad_kernels() {
                reference::check_weight_grad_bf16(f, shape, 1);
            }
        }
        // Stride 2: 8×8 → 4×4 and 16×16 → 8×8 as in the ResNets, odd inputs (odd output rows).
        for shape in [
            (2, 3, 8, 8, 64),
            (3, 8, 16, 16, 128),
            (2, 64, 8, 8, 128),
            (5, 4, 7, 9, 64),
            (2, 3, 5, 6, 64),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(applies(c, co, h, w, 3, 2, 1));
            for f in forward_kernels() {
                reference::check_forward_bf16(f, shape, 2);
            }
            for f in wgrad_kernels() {
                reference::check_weight_grad_bf16(f, shape, 2);
            }
        }
        for f in wgrad_kernels() {
            reference::check_weight_grad_bf16(f, (21, 3, 9, 7, 64), 2);
        }
        // Stride-2 input gradient: odd dY channel counts (a half-empty pair), odd inputs.
        for shape in [
            (2, 64, 8, 8, 128),
            (1, 128, 9, 7, 17),
            (1, 64, 2, 3, 5),
            (3, 64, 16, 16, 8),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(dx_applies(c, co, h, w, F32));
            reference::check_input_grad_stride2_bf16(dx_bf16, shape);
            if amx::available() {
                reference::check_input_grad_stride2_bf16(dx_amx, shape);
            }
        }
        // AMX also takes dx channels in multiples of 32 (16×16 → 8×8 at width 16).
        if amx::available() {
            assert!(dx_applies(32, 64, 16, 16, Precision::Bf16));
            assert!(!dx_applies(32, 64, 16, 16, F32));
            for shape in [(2, 32, 16, 16, 64), (1, 96, 9, 7, 17)] {
                reference::check_input_grad_stride2_bf16(dx_amx, shape);
            }
        }
        reference::check_moments(moments_bf16, forward_bf16, (3, 5, 4, 4, 64), 1);
        reference::check_moments(moments_bf16, forward_bf16, (2, 8, 7, 8, 128), 2);
        if amx::available() {
            reference::check_moments(moments_amx, forward_amx_k, (3, 5, 4, 4, 64), 1);
            reference::check_moments(moments_amx, forward_amx_k, (2, 40, 7, 8, 128), 2);
            reference::check_thread_independence(forward_amx_k, wgrad_amx, (19, 6, 4, 4, 64), 1);
            reference::check_thread_independence(forward_amx_k, wgrad_amx, (19, 5, 8, 7, 64), 2);
        }
        reference::check_thread_independence(forward_bf16, wgrad_bf16, (19, 6, 4, 4, 64), 1);
        reference::check_thread_independence(forward_bf16, wgrad_bf16, (19, 5, 8, 7, 64), 2);
        reference::check_thread_independence(forward_bf16, wgrad_bf16, (23, 3, 5, 5, 64), 1);
    }

    #[test]
    fn position_pairs_are_laid_out_channels_last_with_a_zero_last_partner() {
        // (images, channels, positions): odd and even positions a plane, an odd item count.
        for (b, co, p) in [(3, 5, 9), (2, 3, 16), (1, 64, 15)] {
            let dy = reference::data(b * co * p, 29, 89);
            let mp = (b * p).div_ceil(2);
            // NaN bit patterns in both halves: whatever is not written shows.
            let mut dyp = vec![0x7fc0_7fc0u32; mp * co];
            pair_positions(&dy, b, co, p, &mut dyp);
            for m in 0..mp {
                for o in 0..co {
                    let half = |g: usize| {
                        if g < b * p {
                            to_bf16(dy[((g / p) * co + o) * p + g % p]) as u32
                        } else {
                            0
                        }
                    };
                    assert_eq!(
                        dyp[m * co + o],
                        half(2 * m) | half(2 * m + 1) << 16,
                        "{b}x{co}x{p} m {m} o {o}"
                    );
                }
            }
        }
    }

    #[test]
    fn forward_and_weight_gradient_match_nested_loop_references() {
        if !has_avx512() {
            eprintln!("no AVX-512F here: these kernels are never used, nothing to test");
            return;
        }
        // (n, c, h, w, co): 4×4 and 8×8 planes, odd and degenerate ones, 1–2 channel blocks,
        // pair counts that are and are not multiples of 6, ragged image groups.
        for shape in [
            (2, 3, 4, 4, 64),
            (3, 8, 8, 8, 128),
            (1, 1, 1, 1, 64),
            (11, 5, 3, 5, 64),
            (2, 2, 7, 9, 64),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(applies(c, co, h, w, 3, 1, 1));
            reference::check_forward(forward, shape, 1);
            reference::check_weight_grad(wgrad_f32, shape, 1);
        }
        // Stride 2 (polyphase): 8×8 → 4×4 and 16×16 → 8×8 as in the ResNets, odd and tiny inputs.
        for shape in [
            (2, 3, 8, 8, 64),
            (3, 8, 16, 16, 128),
            (1, 1, 1, 1, 64),
            (5, 4, 7, 9, 64),
            (2, 2, 2, 3, 64),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(applies(c, co, h, w, 3, 2, 1));
            reference::check_forward(forward, shape, 2);
            reference::check_weight_grad(wgrad_f32, shape, 2);
        }
    }

    #[test]
    fn plane_moments_are_those_of_the_output() {
        if has_avx512() {
            reference::check_moments(moments_f32, forward, (3, 5, 4, 4, 64), 1);
            reference::check_moments(moments_f32, forward, (2, 8, 7, 8, 128), 2);
        }
    }

    #[test]
    fn stride_2_input_gradient_matches_a_nested_loop_reference() {
        if !has_avx512() {
            return;
        }
        // (n, c, h, w, co): 8×8 → 4×4 as in the ResNets, odd, tiny and one-pixel inputs.
        for shape in [
            (2, 64, 8, 8, 128),
            (1, 128, 9, 7, 16),
            (2, 64, 1, 1, 3),
            (1, 64, 2, 3, 64),
            (3, 64, 16, 16, 8),
        ] {
            let (_, c, h, w, co) = shape;
            assert!(dx_applies(c, co, h, w, F32));
            reference::check_input_grad_stride2(dx_f32, shape);
        }
    }

    #[test]
    fn same_results_with_one_or_two_threads() {
        if has_avx512() {
            reference::check_thread_independence(forward, wgrad_f32, (19, 6, 4, 4, 64), 1);
            reference::check_thread_independence(forward, wgrad_f32, (19, 6, 8, 7, 64), 2);
        }
    }

    #[test]
    fn applies_only_where_it_is_correct() {
        let avx = has_avx512();
        assert_eq!(applies(128, 128, 4, 4, 3, 1, 1), avx);
        assert_eq!(applies(64, 64, 8, 8, 3, 1, 1), avx);
        assert!(!applies(64, 64, 9, 8, 3, 1, 1), "plane over 64 positions");
        assert!(!applies(64, 32, 4, 4, 3, 1, 1), "co not a multiple of 64");
        assert_eq!(applies(64, 128, 8, 8, 3, 2, 1), avx, "stride 2");
        assert!(!applies(64, 128, 17, 16, 3, 2, 1), "stride 2 to 9×8 positions");
        assert!(!applies(256, 256, 8, 8, 3, 1, 1), "more than 128 channels");
    }

    #[test]
    fn transposed_lanes_are_the_transpose() {
        for (r, cols) in [(16, 16), (32, 48), (64, 16), (16, 80)] {
            let src: Vec<u32> = (0..r * cols)
                .map(|i| (i as u32).wrapping_mul(2654435761))
                .collect();
            let mut dst = vec![7u32; r * cols];
            transpose_lanes(&src, r, cols, &mut dst);
            for i in 0..r {
                for j in 0..cols {
                    assert_eq!(
                        dst[j * r + i],
                        src[i * cols + j],
                        "r {r} cols {cols} at ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn grid_pairs_are_the_bf16_pairs_of_the_grid_channels_last() {
        // The weight gradient's real plane sizes at both strides, an odd one, 1 to 3 images.
        if !has_bf16() {
            return;
        }
        for (h, w, stride, co, b) in [
            (32, 32, 1, 16, 3),
            (16, 16, 1, 32, 2),
            (8, 8, 1, 64, 2),
            (4, 4, 1, 16, 3),
            (9, 7, 1, 16, 2),
            (32, 32, 2, 32, 1),
            (16, 16, 2, 64, 2),
            (8, 8, 2, 16, 3),
        ] {
            let pd = Padded::new(h, w, stride);
            let (p, wp) = (pd.p(), pd.wp);
            let (pk, span) = if stride == 1 {
                ((pd.oh + 1) * wp, (pd.oh + 2) * wp)
            } else {
                ((pd.oh + 1) * wp, pd.plane)
            };
            let len = ((b - 1) * pk + span).div_ceil(32) * 32;
            let dy = reference::data(b * co * p, 7919, 10007);
            let mut dyp = vec![0xdead_beef; len / 2 * co];
            grid_pairs(&dy, b, co, &pd, pk, len, &mut dyp);
            let mut g = vec![0u16; co * len];
            for k in 0..b {
                for o in 0..co {
                    for q in 0..p {
                        g[o * len + k * pk + q / pd.ow * wp + q % pd.ow] = to_bf16(dy[(k * co + o) * p + q]);
                    }
                }
            }
            for m in 0..len / 2 {
                for o in 0..co {
                    let want = g[o * len + 2 * m] as u32 | (g[o * len + 2 * m + 1] as u32) << 16;
                    assert_eq!(
                        dyp[m * co + o],
                        want,
                        "{h}×{w} s{stride} co {co} b {b}: pair {m}, channel {o}"
                    );
                }
            }
        }
    }

    #[test]
    fn amx_kernels_take_wide_layers_on_small_planes() {
        // The width-64 ResNet's 256→512 (stride 2, 8×8 in) and 512→512 (4×4) layers, which
        // `applies` does not route here yet (more than 128 channels): the AMX forward and weight
        // gradient are already the convolution of the rounded operands at these shapes, the
        // ground for routing bf16 there (see README, Performance).
        if !amx::available() {
            return;
        }
        let fwd: reference::Kernel =
            |x, wt, n, c, h, w, co, s| forward_amx(x, wt, n, c, h, w, co, s, false).0;
        reference::check_forward_bf16(fwd, (2, 512, 4, 4, 512), 1);
        reference::check_forward_bf16(fwd, (2, 256, 8, 8, 512), 2);
        reference::check_weight_grad_bf16(weight_grad_amx, (2, 512, 4, 4, 512), 1);
        reference::check_weight_grad_bf16(weight_grad_amx, (2, 256, 8, 8, 512), 2);
    }
}

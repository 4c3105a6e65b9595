//! The per-channel loops of batch norm (statistics, affine + ReLU, gradient sums and input
//! gradient) with AVX-512 versions picked at run time.
//!
//! The crate is compiled for baseline x86-64 (SSE2), where these loops were scalar or 4-wide
//! with bounds checks and spills: the batch-norm backward sums alone were 14 % of a width-16
//! training step. Sums run over one channel's planes (one per image) in 16 f32 lanes — a
//! plane's remainder goes to lanes 0, 1, … — flushed into f64 every `FLUSH` (1024) values per lane
//! and at the end, so 4×4 planes do not pay a 16-lane reduction each. Each AVX-512 function
//! computes exactly what its portable twin computes, in the same order, without fused
//! multiply-adds, so results are bit-identical whichever runs (tested).

use std::mem::MaybeUninit;

const L: usize = 16;
/// Plane elements summed in f32 lanes before the lanes are added into the f64 totals.
const FLUSH: usize = 1024;

/// `n` planes of `s` floats, plane `i` starting at `i·stride` (one channel across a batch).
#[derive(Debug, Clone, Copy)]
pub struct Planes {
    pub s: usize,
    pub stride: usize,
    pub n: usize,
}

impl Planes {
    /// Elements the slices passed with these planes must have at least.
    fn extent(&self) -> usize {
        if self.n == 0 {
            0
        } else {
            (self.n - 1) * self.stride + self.s
        }
    }
    /// Planes summed in f32 between two flushes into f64.
    fn per_flush(&self) -> usize {
        (FLUSH / self.s.max(1)).max(1)
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    #[cfg(test)]
    if tests::FORCE_PORTABLE.with(|p| p.get()) {
        return false;
    }
    std::is_x86_feature_detected!("avx512f")
}

fn lanes_f64(v: &[f32; L]) -> f64 {
    v.iter().map(|&t| t as f64).sum()
}

/// Portable driver of the planewise sums: `plane(offset, len, a, b)` adds one plane into the
/// lane accumulators `a` and `b`, flushed into f64 as described in the module doc.
fn fold_planes(p: Planes, mut plane: impl FnMut(usize, &mut [f32; L], &mut [f32; L])) -> (f64, f64) {
    let (mut ta, mut tb) = (0f64, 0f64);
    let (mut a, mut b) = ([0f32; L], [0f32; L]);
    for i in 0..p.n {
        plane(i * p.stride, &mut a, &mut b);
        if (i + 1) % p.per_flush() == 0 || i + 1 == p.n {
            ta += lanes_f64(&a);
            tb += lanes_f64(&b);
            (a, b) = ([0f32; L], [0f32; L]);
        }
    }
    (ta, tb)
}

/// `(Σ x, Σ (x − mean)²)` over the planes; pass `mean = 0` and ignore the second for a sum.
pub fn moments(xs: &[f32], p: Planes, mean: f32) -> (f64, f64) {
    moments_into(xs, p, mean, None)
}

/// One output plane's [`super::PlaneMoments`], `(Σ v, Σ (v − v̄)²)` with v̄ its own mean: a sum
/// pass, then the deviations, each a [`moments`] pass over the plane's rows `p`. With
/// `copy_to = Some((dst, stride))` the sum pass also copies row `i` to `i·stride` of `dst`, as
/// [`copy_rows`] would: the convolutions' tile outputs are unpadded into their output while
/// their statistics are read, one pass over the tile buffer instead of two.
pub fn plane_moments(xs: &[f32], p: Planes, copy_to: Option<(&mut [MaybeUninit<f32>], usize)>) -> (f64, f64) {
    let sum = moments_into(xs, p, 0.0, copy_to).0;
    let mean = (sum / (p.n * p.s) as f64) as f32;
    (sum, moments(xs, p, mean).1)
}

/// [`moments`], and with `dst = Some((out, stride))` plane `i` (at `i·p.stride` of `xs`) copied
/// to `i·stride` of `out` as it is read.
fn moments_into(
    xs: &[f32],
    p: Planes,
    mean: f32,
    mut dst: Option<(&mut [MaybeUninit<f32>], usize)>,
) -> (f64, f64) {
    assert!(xs.len() >= p.extent());
    if let Some((out, stride)) = &dst {
        assert!(p.n == 0 || out.len() >= (p.n - 1) * stride + p.s);
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        let dst = dst.map(|(out, stride)| (out.as_mut_ptr() as *mut f32, stride));
        // SAFETY: the CPU supports AVX-512F (checked above); the slices cover the planes
        // (asserted above).
        return unsafe { avx512::moments_into(xs, p, mean, dst) };
    }
    let mut plane = 0;
    fold_planes(p, |o, s, q| {
        for (k, &v) in xs[o..o + p.s].iter().enumerate() {
            if let Some((out, stride)) = &mut dst {
                out[plane * *stride + k].write(v);
            }
            let l = k % L;
            s[l] += v;
            let d = v - mean;
            q[l] += d * d;
        }
        plane += 1;
    })
}

/// Which ReLU mask gates batch norm's output gradient: `g = dy·[…]`.
#[derive(Debug, Clone, Copy)]
pub enum Gate<'a> {
    /// No ReLU: `g = dy`.
    Open,
    /// `g = dy·[y > 0]` for a ReLU output `y`, laid out as `dy`.
    Output(&'a [f32]),
    /// `g = dy·[x·a + b > 0]`: the ReLU's input recomputed from `x` with the batch norm's
    /// folded per-channel scale and shift `(a, b)` (one pair per channel of the block; one
    /// pair in all for [`grad_sums`]). Computed as the forward [`affine`] does (a product, then
    /// a sum), so the mask is bit-identical to `y > 0` — and `y` need not be read.
    Affine(&'a [(f32, f32)]),
}

impl Gate<'_> {
    /// The portable gate of element `i` (channel `ch`, input `x`, gradient `d`).
    #[inline]
    fn apply(&self, i: usize, ch: usize, x: f32, d: f32) -> f32 {
        let open = match self {
            Gate::Open => true,
            Gate::Output(y) => y[i] > 0.0,
            Gate::Affine(ab) => x * ab[ch].0 + ab[ch].1 > 0.0,
        };
        if open {
            d
        } else {
            0.0
        }
    }
}

/// `(Σ g, Σ g·(x − mean))` over one channel's planes, `g` as `gate` says (an `Output` slice
/// indexed as `xs`).
pub fn grad_sums(xs: &[f32], ds: &[f32], gate: Gate, p: Planes, mean: f32) -> (f64, f64) {
    assert!(xs.len() >= p.extent() && ds.len() >= p.extent());
    match gate {
        Gate::Output(y) => assert!(y.len() >= p.extent()),
        Gate::Affine(ab) => assert!(!ab.is_empty()),
        Gate::Open => {}
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; the slices cover the planes.
        return unsafe { avx512::grad_sums(xs, ds, gate, p, mean) };
    }
    fold_planes(p, |o, a, b| {
        for k in 0..p.s {
            let (x, d) = (xs[o + k], ds[o + k]);
            let g = gate.apply(o + k, 0, x, d);
            a[k % L] += g;
            b[k % L] += g * (x - mean);
        }
    })
}

/// One image's `[c, s]` block: `out[ch] = relu?(x[ch]·a[ch] + b[ch])`.
pub fn affine(out: &mut [MaybeUninit<f32>], xs: &[f32], s: usize, a: &[f32], b: &[f32], relu: bool) {
    assert!(out.len() == xs.len() && xs.len() == a.len() * s && a.len() == b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; lengths checked.
        return unsafe { avx512::affine(out, xs, s, a, b, relu) };
    }
    for (ch, (o, x)) in out.chunks_mut(s.max(1)).zip(xs.chunks(s.max(1))).enumerate() {
        for (o, &v) in o.iter_mut().zip(x) {
            let t = v * a[ch] + b[ch];
            o.write(if relu { t.max(0.0) } else { t });
        }
    }
}

/// The second term of [`affine_add_relu`]: a block's shortcut as it is (the identity), or the
/// output of its own ReLU-free batch norm, `x·a[ch] + b[ch]` (a projection shortcut).
#[derive(Clone, Copy)]
pub enum Addend<'a> {
    Plain(&'a [f32]),
    Affine {
        x: &'a [f32],
        a: &'a [f32],
        b: &'a [f32],
    },
}

/// One image's `[c, s]` block of a residual block's end with the batch norms before it folded
/// in: `out[ch] = relu((x[ch]·a[ch] + b[ch]) + r[ch])`, `r` the [`Addend`]. The same f32
/// operations, in the same order, as [`affine`] of each branch and then `relu(p + q)`, so
/// bit-identical to them, in one pass that never writes the batch norms' outputs.
pub fn affine_add_relu(out: &mut [MaybeUninit<f32>], xs: &[f32], s: usize, a: &[f32], b: &[f32], r: Addend) {
    assert!(out.len() == xs.len() && xs.len() == a.len() * s && a.len() == b.len());
    match r {
        Addend::Plain(q) => assert_eq!(q.len(), xs.len()),
        Addend::Affine { x, a: ra, b: rb } => {
            assert!(x.len() == xs.len() && ra.len() == a.len() && rb.len() == a.len())
        }
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; lengths checked.
        return unsafe { avx512::affine_add_relu(out, xs, s, a, b, r) };
    }
    for (ch, (o, x)) in out.chunks_mut(s.max(1)).zip(xs.chunks(s.max(1))).enumerate() {
        for (k, (o, &v)) in o.iter_mut().zip(x).enumerate() {
            let i = ch * s + k;
            let q = match r {
                Addend::Plain(q) => q[i],
                Addend::Affine { x, a, b } => x[i] * a[ch] + b[ch],
            };
            o.write(((v * a[ch] + b[ch]) + q).max(0.0));
        }
    }
}

/// One image's `[c, s]` block of batch norm's input gradient:
/// `out[ch] = (a[ch]·g + bx[ch]·x) + c0[ch]`, `g` as `gate` says (per block: an `Output` slice
/// of the block, or one `Affine` pair per channel).
pub fn input_grad(
    out: &mut [MaybeUninit<f32>],
    xs: &[f32],
    ds: &[f32],
    gate: Gate,
    s: usize,
    coef: &[[f32; 3]],
) {
    let len = coef.len() * s;
    assert!(out.len() == len && xs.len() == len && ds.len() == len);
    match gate {
        Gate::Output(y) => assert_eq!(y.len(), len),
        Gate::Affine(ab) => assert_eq!(ab.len(), coef.len()),
        Gate::Open => {}
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; lengths checked.
        return unsafe { avx512::input_grad(out, xs, ds, gate, s, coef) };
    }
    for (ch, &[a, bx, c0]) in coef.iter().enumerate() {
        for k in ch * s..(ch + 1) * s {
            let g = gate.apply(k, ch, xs[k], ds[k]);
            out[k].write((a * g + bx * xs[k]) + c0);
        }
    }
}

/// Copies `rows` rows of `w` floats: row `r` of `src` (at `r·src_stride`) to `r·dst_stride`
/// of `dst`. The convolution kernels' padding and unpadding copies rows of 4 to 32 floats, where
/// a `memcpy` call per row cost more than the copy (5 % of a training step).
pub fn copy_rows(dst: &mut [f32], dst_stride: usize, src: &[f32], src_stride: usize, rows: usize, w: usize) {
    // SAFETY: an f32 slice is a valid MaybeUninit<f32> slice, and `copy_rows_uninit` only writes.
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
    copy_rows_uninit(dst, dst_stride, src, src_stride, rows, w);
}

/// [`copy_rows`] into memory not yet initialised.
pub fn copy_rows_uninit(
    dst: &mut [MaybeUninit<f32>],
    dst_stride: usize,
    src: &[f32],
    src_stride: usize,
    rows: usize,
    w: usize,
) {
    if rows == 0 || w == 0 {
        return;
    }
    assert!(dst.len() >= (rows - 1) * dst_stride + w && src.len() >= (rows - 1) * src_stride + w);
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; the slices cover every row (asserted above).
        return unsafe { avx512::copy_rows(dst, dst_stride, src, src_stride, rows, w) };
    }
    for r in 0..rows {
        dst[r * dst_stride..r * dst_stride + w].write_copy_of_slice(&src[r * src_stride..r * src_stride + w]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{lanes_f64, Addend, Gate, Planes, L};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn lanes(v: __m512) -> [f32; L] {
        let mut out = [0f32; L];
        _mm512_storeu_ps(out.as_mut_ptr(), v);
        out
    }

    /// Mask of the first `r < 16` lanes.
    #[inline]
    fn head(r: usize) -> __mmask16 {
        ((1u32 << r) - 1) as __mmask16
    }

    /// The AVX-512 twin of `super::fold_planes`: `plane(offset, a, b)` adds one plane into the
    /// vector accumulators.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fold_planes(p: Planes, mut plane: impl FnMut(usize, &mut __m512, &mut __m512)) -> (f64, f64) {
        let (mut ta, mut tb) = (0f64, 0f64);
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in 0..p.n {
            plane(i * p.stride, &mut a, &mut b);
            if (i + 1) % p.per_flush() == 0 || i + 1 == p.n {
                ta += lanes_f64(&lanes(a));
                tb += lanes_f64(&lanes(b));
                (a, b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            }
        }
        (ta, tb)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn copy_rows(
        dst: &mut [MaybeUninit<f32>],
        dst_stride: usize,
        src: &[f32],
        src_stride: usize,
        rows: usize,
        w: usize,
    ) {
        // Masked loads and stores throughout: LLVM turns a loop of plain ones back into a
        // `memcpy` call per row, which is what this function is meant to avoid.
        let (pd, ps) = (dst.as_mut_ptr() as *mut f32, src.as_ptr());
        for r in 0..rows {
            let (d, s) = (pd.add(r * dst_stride), ps.add(r * src_stride));
            for k in (0..w).step_by(L) {
                let h = if w - k >= L { 0xffff } else { head(w - k) };
                _mm512_mask_storeu_ps(d.add(k), h, _mm512_maskz_loadu_ps(h, s.add(k)));
            }
        }
    }

    /// `super::moments_into`: `dst`, when given, receives plane `i` at `i·stride` floats.
    ///
    /// # Safety
    /// AVX-512F; `xs` covers the planes, and `dst` is writable for `(p.n − 1)·stride + p.s`
    /// floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn moments_into(
        xs: &[f32],
        p: Planes,
        mean: f32,
        dst: Option<(*mut f32, usize)>,
    ) -> (f64, f64) {
        let m = _mm512_set1_ps(mean);
        let full = p.s / L * L;
        let px = xs.as_ptr();
        let mut plane = 0;
        fold_planes(p, |o, s, q| {
            let row = dst.map(|(out, stride)| out.add(plane * stride));
            let mut add = |v: __m512, d: __m512| {
                *s = _mm512_add_ps(*s, v);
                *q = _mm512_add_ps(*q, _mm512_mul_ps(d, d));
            };
            for k in (0..full).step_by(L) {
                let v = _mm512_loadu_ps(px.add(o + k));
                if let Some(row) = row {
                    _mm512_storeu_ps(row.add(k), v);
                }
                add(v, _mm512_sub_ps(v, m));
            }
            if full < p.s {
                let h = head(p.s - full);
                let v = _mm512_maskz_loadu_ps(h, px.add(o + full));
                if let Some(row) = row {
                    _mm512_mask_storeu_ps(row.add(full), h, v);
                }
                add(v, _mm512_maskz_sub_ps(h, v, m));
            }
            plane += 1;
        })
    }

    /// `dy` in the lanes of `h` that `gate` opens (element `i` of the block, channel `ch`,
    /// inputs `x` loaded), 0 elsewhere.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gated(h: __mmask16, gate: Gate, i: usize, ch: usize, x: __m512, d: *const f32) -> __m512 {
        let z = _mm512_setzero_ps();
        let open = match gate {
            Gate::Open => h,
            Gate::Output(y) => {
                _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(h, _mm512_maskz_loadu_ps(h, y.as_ptr().add(i)), z)
            }
            Gate::Affine(ab) => {
                let (a, b) = *ab.get_unchecked(ch);
                let t = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(a)), _mm512_set1_ps(b));
                _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(h, t, z)
            }
        };
        _mm512_maskz_loadu_ps(open, d)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn grad_sums(xs: &[f32], ds: &[f32], gate: Gate, p: Planes, mean: f32) -> (f64, f64) {
        let m = _mm512_set1_ps(mean);
        let full = p.s / L * L;
        let (px, pd) = (xs.as_ptr(), ds.as_ptr());
        fold_planes(p, |o, a, b| {
            let mut add = |h: __mmask16, k: usize| {
                let x = _mm512_maskz_loadu_ps(h, px.add(o + k));
                let g = gated(h, gate, o + k, 0, x, pd.add(o + k));
                *a = _mm512_add_ps(*a, g);
                let xc = _mm512_maskz_sub_ps(h, x, m);
                *b = _mm512_add_ps(*b, _mm512_mul_ps(g, xc));
            };
            for k in (0..full).step_by(L) {
                add(0xffff, k);
            }
            if full < p.s {
                add(head(p.s - full), full);
            }
        })
    }

    /// Calls `one(mask, k)` over channel `ch`'s plane of an image block (`s` values from
    /// `ch·s`): 16 lanes at a time, the last step masked to the plane's remainder.
    #[inline(always)]
    fn plane_steps(ch: usize, s: usize, mut one: impl FnMut(__mmask16, usize)) {
        let full = s / L * L;
        for k in (ch * s..ch * s + full).step_by(L) {
            one(0xffff, k);
        }
        if full < s {
            one(head(s - full), ch * s + full);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn affine(
        out: &mut [MaybeUninit<f32>],
        xs: &[f32],
        s: usize,
        a: &[f32],
        b: &[f32],
        relu: bool,
    ) {
        let (px, po) = (xs.as_ptr(), out.as_mut_ptr() as *mut f32);
        let z = _mm512_setzero_ps();
        for ch in 0..a.len() {
            let (va, vb) = (_mm512_set1_ps(a[ch]), _mm512_set1_ps(b[ch]));
            plane_steps(ch, s, |h, k| {
                let mut t = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(h, px.add(k)), va), vb);
                if relu {
                    t = _mm512_max_ps(t, z);
                }
                _mm512_mask_storeu_ps(po.add(k), h, t);
            });
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn affine_add_relu(
        out: &mut [MaybeUninit<f32>],
        xs: &[f32],
        s: usize,
        a: &[f32],
        b: &[f32],
        r: Addend,
    ) {
        let (px, po) = (xs.as_ptr(), out.as_mut_ptr() as *mut f32);
        let z = _mm512_setzero_ps();
        for ch in 0..a.len() {
            let (va, vb) = (_mm512_set1_ps(a[ch]), _mm512_set1_ps(b[ch]));
            // The projection shortcut's map of this channel (unused for the identity).
            let (ra, rb) = match r {
                Addend::Affine { a, b, .. } => (_mm512_set1_ps(a[ch]), _mm512_set1_ps(b[ch])),
                Addend::Plain(_) => (z, z),
            };
            plane_steps(ch, s, |h, k| {
                let p = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(h, px.add(k)), va), vb);
                let q = match r {
                    Addend::Plain(q) => _mm512_maskz_loadu_ps(h, q.as_ptr().add(k)),
                    Addend::Affine { x, .. } => {
                        _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(h, x.as_ptr().add(k)), ra), rb)
                    }
                };
                _mm512_mask_storeu_ps(po.add(k), h, _mm512_max_ps(_mm512_add_ps(p, q), z));
            });
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn input_grad(
        out: &mut [MaybeUninit<f32>],
        xs: &[f32],
        ds: &[f32],
        gate: Gate,
        s: usize,
        coef: &[[f32; 3]],
    ) {
        let (px, pd, po) = (xs.as_ptr(), ds.as_ptr(), out.as_mut_ptr() as *mut f32);
        for (ch, &[a, bx, c0]) in coef.iter().enumerate() {
            let (va, vb, vc) = (_mm512_set1_ps(a), _mm512_set1_ps(bx), _mm512_set1_ps(c0));
            plane_steps(ch, s, |h, k| {
                let x = _mm512_maskz_loadu_ps(h, px.add(k));
                let g = gated(h, gate, k, ch, x, pd.add(k));
                let t = _mm512_add_ps(_mm512_mul_ps(va, g), _mm512_mul_ps(vb, x));
                _mm512_mask_storeu_ps(po.add(k), h, _mm512_add_ps(t, vc));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        pub(super) static FORCE_PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `f` with the portable loops forced (the public functions take the AVX-512 path
    /// where the CPU has it).
    fn portable<R>(f: impl FnOnce() -> R) -> R {
        FORCE_PORTABLE.with(|p| p.set(true));
        let r = f();
        FORCE_PORTABLE.with(|p| p.set(false));
        r
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                (v >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    /// A vector of `n` image blocks of `len` floats, each written whole by `f(block, range)`.
    fn per_image(n: usize, len: usize, f: Block) -> Vec<f32> {
        // SAFETY: the blocks cover the vector and `f` writes each whole.
        unsafe {
            crate::ops::output_vec(n * len, |o| {
                for img in 0..n {
                    let r = img * len..(img + 1) * len;
                    f(&mut o[r.clone()], r);
                }
            })
        }
    }

    type Outputs = ((f64, f64), (f64, f64), Vec<f32>, Vec<f32>);
    /// Writes one image's block (given as the output block and its index range).
    type Block<'a> = &'a dyn Fn(&mut [MaybeUninit<f32>], std::ops::Range<usize>);

    /// Every function on `n` images of `c` channels of `s` values, channel 1 for the sums.
    fn all(n: usize, c: usize, s: usize, relu: bool) -> Outputs {
        let len = n * c * s;
        let (x, y, d) = (data(len, 1), data(len, 2), data(len, 3));
        let p = Planes { s, stride: c * s, n };
        let ch1 = if n == 0 { 0..0 } else { s..len };
        let (a, b): (Vec<f32>, Vec<f32>) = (0..c).map(|i| (1.5 - i as f32, i as f32 - 0.5)).unzip();
        let coef: Vec<[f32; 3]> = (0..c).map(|i| [0.7, -0.3 * i as f32, 0.1]).collect();
        let per_image = |f: Block| per_image(n, c * s, f);
        let gate = |r: std::ops::Range<usize>| if relu { Gate::Output(&y[r]) } else { Gate::Open };
        let aff = per_image(&|o, r| affine(o, &x[r], s, &a, &b, relu));
        let dx = per_image(&|o, r| input_grad(o, &x[r.clone()], &d[r.clone()], gate(r), s, &coef));
        (
            moments(&x[ch1.clone()], p, 0.25),
            grad_sums(&x[ch1.clone()], &d[ch1.clone()], gate(ch1), p, 0.25),
            aff,
            dx,
        )
    }

    #[test]
    fn the_affine_gate_is_the_relu_output_mask() {
        // (n, c, s) as below; the gate from (x, a, b) must equal the one from y = relu(x·a + b)
        // element for element, on both code paths.
        for (n, c, s) in [(3, 2, 16), (2, 3, 37), (4, 2, 5)] {
            let len = n * c * s;
            let (x, d) = (data(len, 1), data(len, 3));
            let ab: Vec<(f32, f32)> = (0..c).map(|i| (1.5 - i as f32, 0.3 * i as f32 - 0.2)).collect();
            let (a, b): (Vec<f32>, Vec<f32>) = ab.iter().copied().unzip();
            let coef: Vec<[f32; 3]> = (0..c).map(|i| [0.7, -0.3 * i as f32, 0.1]).collect();
            let run = || {
                let block = |f: Block| per_image(n, c * s, f);
                let y = block(&|o, r| affine(o, &x[r], s, &a, &b, true));
                let by_y =
                    block(&|o, r| input_grad(o, &x[r.clone()], &d[r.clone()], Gate::Output(&y[r]), s, &coef));
                let by_ab = block(&|o, r| input_grad(o, &x[r.clone()], &d[r], Gate::Affine(&ab), s, &coef));
                assert_eq!(by_y, by_ab, "input gradient, n {n} c {c} s {s}");
                let p = Planes { s, stride: c * s, n };
                let ch1 = s..len;
                let sy = grad_sums(
                    &x[ch1.clone()],
                    &d[ch1.clone()],
                    Gate::Output(&y[ch1.clone()]),
                    p,
                    0.1,
                );
                let sab = grad_sums(&x[ch1.clone()], &d[ch1], Gate::Affine(&ab[1..2]), p, 0.1);
                assert_eq!(sy, sab, "gradient sums, n {n} c {c} s {s}");
                (by_ab, sab)
            };
            assert_eq!(run(), portable(run));
        }
    }

    #[test]
    fn the_fused_block_end_is_affine_then_add_then_relu() {
        // relu((x·a + b) + r), r the identity shortcut or its own affine map, must equal the
        // unfused passes (affine of each branch, then the sum and the ReLU) bit for bit, on both
        // code paths, with plane lengths off and on the vector width.
        for (n, c, s) in [(3, 2, 16), (2, 3, 37), (4, 2, 5)] {
            let len = n * c * s;
            let (x, r, rx) = (data(len, 1), data(len, 4), data(len, 5));
            let (a, b): (Vec<f32>, Vec<f32>) = (0..c).map(|i| (1.5 - i as f32, 0.3 * i as f32 - 0.2)).unzip();
            let (ra, rb): (Vec<f32>, Vec<f32>) = (0..c).map(|i| (0.5 + i as f32, -0.1 * i as f32)).unzip();
            let run = || {
                let block = |f: Block| per_image(n, c * s, f);
                let p = block(&|o, i| affine(o, &x[i], s, &a, &b, false));
                let q = block(&|o, i| affine(o, &rx[i], s, &ra, &rb, false));
                let want =
                    |q: &[f32]| -> Vec<f32> { p.iter().zip(q).map(|(p, q)| (p + q).max(0.0)).collect() };
                let plain = block(&|o, i| affine_add_relu(o, &x[i.clone()], s, &a, &b, Addend::Plain(&r[i])));
                assert_eq!(plain, want(&r), "identity shortcut, n {n} c {c} s {s}");
                let proj = block(&|o, i| {
                    let r = Addend::Affine {
                        x: &rx[i.clone()],
                        a: &ra,
                        b: &rb,
                    };
                    affine_add_relu(o, &x[i], s, &a, &b, r)
                });
                assert_eq!(proj, want(&q), "projection shortcut, n {n} c {c} s {s}");
                assert!(plain.contains(&0.0) && plain.iter().any(|&v| v > 0.0));
                (plain, proj)
            };
            assert_eq!(run(), portable(run));
        }
    }

    #[test]
    fn copy_rows_copies_exactly_the_rows() {
        for (rows, w, ss, ds) in [
            (3, 5, 7, 6),
            (2, 16, 16, 18),
            (4, 33, 40, 35),
            (1, 1, 1, 1),
            (0, 4, 4, 4),
        ] {
            let src = data(rows.max(1) * ss, 9);
            let run = || {
                let mut dst = vec![-7f32; rows.max(1) * ds];
                copy_rows(&mut dst, ds, &src, ss, rows, w);
                dst
            };
            let (fast, slow) = (run(), portable(run));
            assert_eq!(fast, slow);
            for (i, &v) in fast.iter().enumerate() {
                let (r, k) = (i / ds, i % ds);
                let want = if r < rows && k < w { src[r * ss + k] } else { -7.0 };
                assert_eq!(v, want, "rows {rows} w {w} at {i}");
            }
        }
    }

    #[test]
    fn copying_moments_are_moments_and_copy_rows() {
        // Rows on and off the vector width, several flushes (1024 / 5 rows of 5 a flush).
        for (rows, w, ss, ds) in [(3, 5, 7, 6), (2, 16, 16, 18), (4, 33, 40, 33), (700, 5, 6, 5)] {
            let src = data(rows * ss, 11);
            let p = Planes {
                s: w,
                stride: ss,
                n: rows,
            };
            let run = |plane: bool| {
                let mut dst = vec![-7f32; rows * ds];
                // SAFETY: an f32 slice is a valid MaybeUninit<f32> slice.
                let out = unsafe { &mut *(dst.as_mut_slice() as *mut [f32] as *mut [MaybeUninit<f32>]) };
                let m = if plane {
                    plane_moments(&src, p, Some((out, ds)))
                } else {
                    moments_into(&src, p, 0.3, Some((out, ds)))
                };
                (m, dst)
            };
            let mut want = vec![-7f32; rows * ds];
            copy_rows(&mut want, ds, &src, ss, rows, w);
            for plane in [false, true] {
                let ((m, dst), slow) = (run(plane), portable(|| run(plane)));
                assert_eq!((m, &dst), (slow.0, &slow.1), "rows {rows} w {w}");
                assert_eq!(dst, want, "rows {rows} w {w}");
                let sum = moments(&src, p, 0.0).0;
                let want_m = if plane {
                    (sum, moments(&src, p, (sum / (rows * w) as f64) as f32).1)
                } else {
                    moments(&src, p, 0.3)
                };
                assert_eq!(m, want_m, "rows {rows} w {w}");
                if plane {
                    assert_eq!(
                        plane_moments(&src, p, None),
                        m,
                        "rows {rows} w {w}: without the copy"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_and_portable_loops_agree_bit_for_bit_and_with_f64() {
        // (n, c, s): 4×4 and 32×32 planes, remainders, many planes per flush, empty.
        for (n, c, s) in [
            (3, 2, 16),
            (5, 3, 1024),
            (2, 2, 17),
            (70, 2, 16),
            (9, 3, 5),
            (1, 2, 1),
            (0, 2, 4),
            (4, 2, 0),
        ] {
            for relu in [false, true] {
                let fast = all(n, c, s, relu);
                let slow = portable(|| all(n, c, s, relu));
                assert_eq!(fast, slow, "n {n} c {c} s {s} relu {relu}");
                // Against f64 references.
                let len = n * c * s;
                let (x, y, d) = (data(len, 1), data(len, 2), data(len, 3));
                let idx: Vec<usize> = (0..n).flat_map(|i| (i * c + 1) * s..(i * c + 2) * s).collect();
                let g = |i: usize| if relu && y[i] <= 0.0 { 0.0 } else { d[i] as f64 };
                let sx: f64 = idx.iter().map(|&i| x[i] as f64).sum();
                let sq: f64 = idx.iter().map(|&i| (x[i] as f64 - 0.25).powi(2)).sum();
                let sg: f64 = idx.iter().map(|&i| g(i)).sum();
                let sgx: f64 = idx.iter().map(|&i| g(i) * (x[i] as f64 - 0.25)).sum();
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
                assert!(
                    close(fast.0 .0, sx) && close(fast.0 .1, sq),
                    "moments {n} {c} {s}"
                );
                assert!(
                    close(fast.1 .0, sg) && close(fast.1 .1, sgx),
                    "grad sums {n} {c} {s}"
                );
                for (i, &xi) in x.iter().enumerate() {
                    let ch = (i / s.max(1)) % c;
                    let t = xi * (1.5 - ch as f32) + (ch as f32 - 0.5);
                    assert_eq!(fast.2[i], if relu { t.max(0.0) } else { t });
                    let gi = g(i) as f32;
                    assert_eq!(fast.3[i], (0.7 * gi + (-0.3 * ch as f32) * xi) + 0.1);
                }
            }
        }
    }
}

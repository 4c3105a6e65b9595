//! CPU kernels as candle `CustomOp`s: convolution (im2col + gemm, forward and backward, with
//! direct AVX-512 kernels for 3×3 stride-1 and stride-2 layers: [`direct`] for large planes,
//! [`direct_small`] for small ones) and batch norm fused with an optional ReLU (forward and
//! backward as one op each, its per-channel loops in [`simd`], AVX-512 chosen at run time).
//!
//! candle's stock conv2d differentiates through conv_transpose2d and its batch norm is a chain
//! of small ops that each allocate; these ops compute the same values (checked against the stock
//! ops in the tests below) with a handful of large gemm calls and two passes over memory.
//!
//! Determinism: work is split into a fixed number of chunks that does not depend on the thread
//! count, and partial sums are reduced in chunk order, so results are bit-identical across runs.

pub mod amx;
pub mod batchnorm;
pub mod bf16;
pub mod conv;
pub mod direct;
pub mod direct_small;
pub mod peak;
pub mod residual;
pub mod simd;

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};

pub use batchnorm::{batch_norm_eval, batch_norm_train, BatchStats};
pub use bf16::Precision;
pub use conv::conv2d;
pub use residual::add_relu;

/// The contiguous f32 slice of a CPU storage, or an error naming the op.
pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => Err(candle_core::Error::Msg(format!("{op}: input must be contiguous"))),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub(crate) fn with_data<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(cs) => Ok(f(cpu_slice(cs, l, op)?)),
        _ => Err(candle_core::Error::Msg(format!("{op}: CPU tensors only"))),
    }
}

thread_local! {
    /// Per-thread pool of scratch buffers for [`with_scratch`].
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` floats from a per-thread pool, with **unspecified
/// contents** (whatever an earlier user left): for buffers that `f` overwrites entirely, such as
/// im2col matrices and gemm outputs written without reading. Saves the allocation and the
/// zeroing of `vec![0.0; len]` (a `memset` of every im2col matrix, a few % of a step). Reentrant:
/// a nested call (e.g. a task rayon steals while `f` waits) takes another buffer.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|s| s.borrow_mut().push(buf));
    r
}

/// `(Σ v, Σ (v − v̄)²)` over one (image, channel) plane of a convolution's output, v̄ the plane's
/// own mean: what the direct convolution kernels hand batch norm so that it need not read the
/// output twice more for its statistics (merged per channel with Chan's formula, exactly).
pub type PlaneMoments = (f64, f64);

/// A vector of `len` floats initialised by `fill`, without zeroing it first: outputs that a
/// kernel overwrites entirely paid a `memset` each (5 % of a training step). `fill` sees the
/// elements as `MaybeUninit`, so it can only write them.
///
/// # Safety
/// `fill` must write every element.
pub(crate) unsafe fn output_vec(
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's contract: `fill` wrote all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// `len` zeros, written explicitly (in parallel) rather than allocated zeroed, for buffers that
/// are then accumulated into (`+=`). Zeroed allocations map the kernel's shared zero page, so
/// the first `+=` into each page reads it and then takes a copy-on-write fault whose TLB
/// shootdown interrupts the other worker's CPU (a VM exit each on this machine): a 32 MiB
/// col2im target cost 50 ms that way, against a few ms for writing it.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let fill = |v: &mut [std::mem::MaybeUninit<f32>]| {
        v.par_chunks_mut(1 << 16)
            .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    };
    // SAFETY: `fill` writes every element.
    unsafe { output_vec(len, fill) }
}

/// A sum over `n` images computed deterministically in parallel: the images are split into at
/// most 8 contiguous groups (a fixed split, whatever the thread count), `group` returns the sum
/// (`len` floats) over one group's images, and the group sums are added in group order.
pub(crate) fn sum_over_image_groups(
    n: usize,
    len: usize,
    group: impl Fn(std::ops::Range<usize>) -> Vec<f32> + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let groups = n.clamp(1, 8);
    let per = n.div_ceil(groups);
    let partials: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|g| group(g * per..((g + 1) * per).min(n)))
        .collect();
    let mut sum = vec![0f32; len];
    for part in &partials {
        for (a, b) in sum.iter_mut().zip(part) {
            *a += b;
        }
    }
    sum
}

/// Row-major single-precision matrix product `dst (m×n) [+]= lhs (m×k) · rhs (k×n)` with
/// arbitrary row/column strides for the operands (so transposes are free).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    debug_assert!(dst.len() >= (m - 1) * dst_rs + n);
    debug_assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices cover every element addressed by the strides (checked above in debug
    // builds, guaranteed by the callers' shape arithmetic), and dst does not alias lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    pub fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Max |a−b| / max(1, max|b|): relative error at the tensor's scale.
    pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(&b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        diff / scale
    }
}

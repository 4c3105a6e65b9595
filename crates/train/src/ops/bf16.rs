//! bf16 mixed precision for the training step's convolutions (`train.precision: bf16`).
//!
//! The contract is PyTorch's CPU autocast: weights stay f32 (the optimiser's master copy);
//! a convolution rounds its two operands to bf16 (round to nearest even, the `vcvtneps2bf16`
//! instruction) and multiplies them with `vdpbf16ps`, which adds the exact products of two bf16
//! pairs into an f32 accumulator per lane — twice the multiply-adds per instruction of an f32
//! FMA. Outputs, batch-norm statistics, the loss and the optimiser stay f32. The direct 3×3
//! kernels ([`super::direct`], [`super::direct_small`]) have bf16 variants for the forward
//! pass, the input gradient and the weight gradient; layers on im2col + gemm (the 1×1
//! shortcuts) and the projection head stay f32 (under 2 % of a step's multiply-adds at width 16).
//!
//! The pair layout: `vdpbf16ps` multiplies element pairs `(2l, 2l + 1)` of its operands, so one
//! operand holds two adjacent values of the reduced dimension per 32-bit lane. Where the
//! reduction runs over input channels (the forward kernels), [`convert_pairs`] interleaves two
//! channel planes, `lane = bf16(a) | bf16(b) << 16`; where it runs over positions (the weight
//! gradients), adjacent positions already are adjacent elements and [`convert`] suffices.

use serde::{Deserialize, Serialize};

/// Arithmetic of the training step's convolutions (`train.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 operands and accumulation (the default; bit-identical to earlier versions).
    #[default]
    F32,
    /// bf16 operands, f32 accumulation, on CPUs with AVX-512 BF16 ([`has_bf16`]).
    Bf16,
}

impl Precision {
    /// The spelling in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("precision must be f32 or bf16, not {other:?}")),
        }
    }
}

/// Whether this CPU runs the bf16 kernels: AVX-512F and AVX-512 BF16 (`avx512_bf16` in
/// /proc/cpuinfo), detected at run time.
#[cfg(target_arch = "x86_64")]
pub fn has_bf16() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn has_bf16() -> bool {
    false
}

/// Whether `vdpbf16ps` outruns the f32 FMAs here, so that the AVX-512 BF16 kernels pay where
/// AMX tiles are not available: on AMD CPUs (Zen 4 and later run it at the FMA's instruction
/// rate, two multiply-adds a lane, so twice its arithmetic). Intel's cores run it at about half
/// the f32 FMA's GFLOP/s (`protoclr bench peak` on the Sapphire-Rapids-class guests here: 123
/// against 233 a thread with AMX exposed, 88 against 166 without), so there the f32 kernels are
/// the faster ones: a width-16 step measured 446 images/s with `vdpbf16ps` against 584 in f32
/// (median of 5 interleaved rounds, AMX not exposed to the guest). A fixed rule on the CPU's vendor, not a timing, so that the choice
/// (and with it the numerics) is the same on every run of a machine.
pub fn dp_pays() -> bool {
    static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMD.get_or_init(|| has_bf16() && vendor_is_amd())
}

#[cfg(target_arch = "x86_64")]
fn vendor_is_amd() -> bool {
    // CPUID leaf 0: the vendor string in EBX, EDX, ECX ("Auth", "enti", "cAMD").
    let r = std::arch::x86_64::__cpuid(0);
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    &v == b"AuthenticAMD"
}

#[cfg(not(target_arch = "x86_64"))]
fn vendor_is_amd() -> bool {
    false
}

/// The unit the bf16 kernels multiply on here: `amx` (AMX-BF16 tiles, where the CPU and the
/// kernel allow them, [`super::amx::available`]), `avx512_bf16` (`vdpbf16ps`, where it outruns
/// f32: [`dp_pays`]), or `f32` where neither is faster than f32 FMAs: there `precision: bf16`
/// falls back to the f32 kernels (the fallback issue 14 allows), bit-identical to f32. AMX and
/// `vdpbf16ps` sum in different orders, so bf16 results are bit-identical only between machines
/// with the same unit (recorded in metrics.json as `bf16_unit`).
pub fn unit() -> &'static str {
    if super::amx::available() {
        "amx"
    } else if dp_pays() {
        "avx512_bf16"
    } else {
        "f32"
    }
}

/// `v` rounded to bf16 as `vcvtneps2bf16` does: to nearest, ties to even; denormal inputs are
/// treated as zero (keeping the sign), NaNs stay (quiet) NaNs. The scalar reference of the
/// vector conversions, and their tail loop.
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if b & 0x7f80_0000 == 0 {
        return ((b >> 16) & 0x8000) as u16;
    }
    if v.is_nan() {
        return ((b >> 16) | 0x0040) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// The f32 a bf16 value stands for (exact).
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `dst[i] = bf16(src[i])` over `src.len()` elements (`dst` at least as long).
pub fn convert(src: &[f32], dst: &mut [u16]) {
    assert!(dst.len() >= src.len(), "bf16::convert: destination too short");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_bf16() {
        // SAFETY: AVX-512F and BF16 checked; the vector loop stays below src.len() ≤ dst.len().
        done = unsafe { avx512::convert(src, dst) };
    }
    for (d, &s) in dst[done..src.len()].iter_mut().zip(&src[done..]) {
        *d = to_bf16(s);
    }
}

/// `dst[i] = bf16(a[i]) | bf16(b[i]) << 16` — two planes interleaved as bf16 pairs, the second
/// plane zero when `b` is `None` (an odd channel count's last pair).
pub fn convert_pairs(a: &[f32], b: Option<&[f32]>, dst: &mut [u32]) {
    let n = a.len();
    assert!(dst.len() >= n, "bf16::convert_pairs: destination too short");
    if let Some(b) = b {
        assert_eq!(b.len(), n, "bf16::convert_pairs: planes of different lengths");
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_bf16() {
        // SAFETY: AVX-512F and BF16 checked; the vector loop stays below n ≤ dst.len().
        done = unsafe { avx512::convert_pairs(a, b, dst) };
    }
    for i in done..n {
        let hi = b.map_or(0, |b| to_bf16(b[i]) as u32);
        dst[i] = to_bf16(a[i]) as u32 | hi << 16;
    }
}

/// A scratch buffer of f32 viewed as `u32` lanes (same size and alignment; every bit pattern is
/// valid in both), for the pair-interleaved bf16 operands.
pub(crate) fn as_u32(buf: &mut [f32]) -> &mut [u32] {
    // SAFETY: f32 and u32 have the same size and alignment and no invalid bit patterns.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u32>(), buf.len()) }
}

/// A scratch buffer of f32 viewed as twice as many `u16` (bf16) elements.
pub(crate) fn as_u16(buf: &mut [f32]) -> &mut [u16] {
    // SAFETY: u16's alignment divides f32's, 2·len u16 cover exactly the same bytes, and every
    // bit pattern is a valid u16.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u16>(), buf.len() * 2) }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Whole 16-float blocks of [`super::convert`]; returns how many elements it converted.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn convert(src: &[f32], dst: &mut [u16]) -> usize {
        let n = src.len() / 16 * 16;
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        while i < n {
            let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.add(i)));
            _mm256_storeu_si256(d.add(i).cast(), std::mem::transmute::<__m256bh, __m256i>(h));
            i += 16;
        }
        n
    }

    /// Whole 16-float blocks of [`super::convert_pairs`]; returns how many it converted.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn convert_pairs(a: &[f32], b: Option<&[f32]>, dst: &mut [u32]) -> usize {
        let n = a.len() / 16 * 16;
        let d = dst.as_mut_ptr();
        let mut i = 0;
        while i < n {
            let lo = _mm512_cvtneps_pbh(_mm512_loadu_ps(a.as_ptr().add(i)));
            let mut v = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(lo));
            if let Some(b) = b {
                let hi = _mm512_cvtneps_pbh(_mm512_loadu_ps(b.as_ptr().add(i)));
                let hi = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(hi));
                v = _mm512_or_si512(v, _mm512_slli_epi32::<16>(hi));
            }
            _mm512_storeu_si512(d.add(i).cast(), v);
            i += 16;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_rounding_matches_known_values() {
        // 1 + 2⁻⁸ is halfway between bf16 neighbours 1 and 1 + 2⁻⁷: ties to even (1).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd mantissa) and 1 + 2·2⁻⁷: rounds up to even.
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        // Just above a tie rounds up.
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert_eq!(from_bf16(to_bf16(3.140625)), 3.140625);
        // Denormals flush to signed zero; overflow past the largest bf16 rounds to infinity.
        assert_eq!(to_bf16(f32::from_bits(0x0000_0001)), 0x0000);
        assert_eq!(to_bf16(-f32::from_bits(0x007f_ffff)), 0x8000);
        assert_eq!(to_bf16(f32::MAX), 0x7f80);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        // The relative rounding error is at most half an ulp, 2⁻⁸ (8 significant bits).
        for i in 0..10_000 {
            let v = (i as f32 * 0.7371).sin() * 10f32.powi(i % 7 - 3);
            if v != 0.0 {
                assert!(((from_bf16(to_bf16(v)) - v) / v).abs() <= 2f32.powi(-8), "{v}");
            }
        }
    }

    #[test]
    fn vector_conversions_match_the_scalar_reference() {
        if !has_bf16() {
            eprintln!("no AVX-512 BF16 on this CPU: the vector path is not exercised");
        }
        // Values spanning ties, denormals, large and negative numbers; odd length for the tail.
        let a: Vec<f32> = (0..1001)
            .map(|i| match i % 5 {
                0 => f32::from_bits(0x3f80_8000 + (i as u32 % 3) * 0x1_0000),
                1 => f32::from_bits(i as u32),
                _ => (i as f32 * 0.913).cos() * 1e3f32.powf((i % 3) as f32 - 1.0),
            })
            .collect();
        let b: Vec<f32> = a.iter().map(|v| -v * 1.37).collect();
        let mut h = vec![0u16; a.len()];
        convert(&a, &mut h);
        for (x, &y) in a.iter().zip(&h) {
            assert_eq!(y, to_bf16(*x), "{x}");
        }
        let mut p = vec![0u32; a.len()];
        convert_pairs(&a, Some(&b), &mut p);
        for i in 0..a.len() {
            assert_eq!(
                p[i],
                to_bf16(a[i]) as u32 | (to_bf16(b[i]) as u32) << 16,
                "pair {i}"
            );
        }
        convert_pairs(&a, None, &mut p);
        for i in 0..a.len() {
            assert_eq!(p[i], to_bf16(a[i]) as u32, "half pair {i}");
        }
    }

    #[test]
    fn the_vendor_rule_reads_the_vendor_linux_reports() {
        // /proc/cpuinfo's vendor_id is the same CPUID string, read by the kernel.
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        let Some(line) = info.lines().find(|l| l.starts_with("vendor_id")) else {
            return;
        };
        let vendor = line.split(':').nth(1).unwrap().trim();
        assert_eq!(vendor_is_amd(), vendor == "AuthenticAMD", "vendor_id {vendor}");
        assert_eq!(dp_pays(), has_bf16() && vendor == "AuthenticAMD");
        let want = if super::super::amx::available() {
            "amx"
        } else if dp_pays() {
            "avx512_bf16"
        } else {
            "f32"
        };
        assert_eq!(unit(), want);
    }

    #[test]
    fn precision_spellings_round_trip() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
            let y = serde_norway::to_string(&p).unwrap();
            assert_eq!(y.trim(), p.as_str());
        }
        assert!("fp16".parse::<Precision>().is_err());
    }
}

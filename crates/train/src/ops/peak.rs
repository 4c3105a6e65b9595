//! The arithmetic peak this CPU gives one thread, measured: register-only loops of 24
//! independent accumulators (enough to hide every latency) of the instructions the kernels are
//! built on — the f32 FMA (`vfmadd231ps zmm`) and the bf16 pair dot product (`vdpbf16ps zmm`).
//! `protoclr bench peak` prints them; per-layer GFLOP/s are read against these numbers. On the
//! AMD Zen 4 machines of earlier sessions `vdpbf16ps` ran at the FMA's instruction rate (twice
//! its FLOPs); on an Intel Sapphire-Rapids-class VM (AMX, AVX-512 FP16) it ran at a third of the
//! FMA's rate, so bf16 through it was slower than f32 there.

use std::time::Instant;

/// GFLOP/s of one thread (`None` where the instruction is missing).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Peak {
    pub fma_f32_gflops: Option<f64>,
    pub dpbf16_gflops: Option<f64>,
}

/// Measures both loops (about 0.2 s each; the best of `rounds`).
pub fn measure(rounds: usize) -> Peak {
    let iters = 2_000_000usize;
    let best = |f: &dyn Fn(usize) -> f32, flops_per_iter: f64| {
        (0..rounds.max(1))
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f(iters));
                iters as f64 * flops_per_iter / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0f64, f64::max)
    };
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::is_x86_feature_detected!("avx512f").then(|| {
            // SAFETY: AVX-512F checked.
            best(&|n| unsafe { avx512::fma(n) }, 24.0 * 16.0 * 2.0)
        });
        let dp = super::bf16::has_bf16().then(|| {
            // SAFETY: AVX-512F and BF16 checked.
            best(&|n| unsafe { avx512::dpbf16(n) }, 24.0 * 32.0 * 2.0)
        });
        Peak {
            fma_f32_gflops: fma,
            dpbf16_gflops: dp,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = best;
        Peak {
            fma_f32_gflops: None,
            dpbf16_gflops: None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma(n: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 24];
        let b = _mm512_set1_ps(0.5);
        for _ in 0..n {
            let a = black_box(_mm512_set1_ps(0.999));
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let acc = black_box(acc);
        _mm512_reduce_add_ps(acc[0])
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dpbf16(n: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 24];
        let b = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3f80_3f80));
        for _ in 0..n {
            let a: __m512bh = black_box(std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                0x3c00_3c00,
            )));
            for v in acc.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        let acc = black_box(acc);
        _mm512_reduce_add_ps(acc[0])
    }
}

//! Intel AMX (`amx_tile`, `amx_bf16`) for the bf16 convolutions: `tdpbf16ps` multiplies a
//! 16 × 32 bf16 tile by a 32 × 16 one into a 16 × 16 f32 tile, 8192 multiply-adds an
//! instruction. Measured on the development machine (a KVM guest on a Xeon with AMX): about
//! 850 G multiply-adds/s on one core in a register-only loop, against about 60 G for zmm FMAs
//! and 27 G for `vdpbf16ps` (which this CPU runs at a quarter of the FMA rate, so the AVX-512
//! BF16 kernels are slower than f32 there).
//!
//! The instructions are emitted with `asm!` (Rust's AMX intrinsics are not stable). Linux hands
//! a process the tile data state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which
//! [`available`] makes once; a kernel configures the tiles (`ldtilecfg`) on entry and releases
//! them (`tilerelease`) on exit, so no tile state outlives a call.

/// Whether AMX-BF16 is usable: the CPU reports AMX-TILE and AMX-BF16, and the kernel granted
/// this process the tile data state. Checked once.
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID.(EAX=7, ECX=0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 || !super::bf16::has_bf16() {
        return false;
    }
    // arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18).
    let ret: i64;
    // SAFETY: the arch_prctl system call (158) reads two integer arguments and returns a
    // status; rcx and r11 are clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") 158i64 => ret,
            in("rdi") 0x1023i64,
            in("rsi") 18i64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Tile configuration: palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut b = [0u8; 64];
    b[0] = 1;
    let mut t = 0;
    while t < 8 {
        b[16 + 2 * t] = 64;
        b[48 + t] = 16;
        t += 1;
    }
    Config(b)
};

/// [`CONFIG`] with the operand tiles of a half reduction: A (`tmm4`, `tmm5`) 16 rows of 32
/// bytes (8 bf16 pairs), B (`tmm6`, `tmm7`) 8 rows. A 16-channel layer's 8 channel pairs then
/// fill the tiles' reduction instead of half of it, with no zero planes loaded or multiplied.
const CONFIG_HALF: Config = {
    let mut b = CONFIG.0;
    b[16 + 2 * 4] = 32;
    b[16 + 2 * 5] = 32;
    b[48 + 6] = 8;
    b[48 + 7] = 8;
    Config(b)
};

/// `out[o·ldo + m] = Σ_t Σ_k a(t, k)[o] ⋅ b(t, k)[m]` for `o < no` (a multiple of 16),
/// `m < nm` (a multiple of 32): a sum of 16 × 16-pair tile products, `⋅` the bf16 pair dot
/// product. The A operand of step
/// (t, k) for output rows o0..o0 + 16 is the 16 × 16 u32 tile at `a + (t·nk + k)·a_step + o0·16`
/// (rows 64 bytes apart, so `a` is laid out `[t][k][o][16]`); the B operand for columns
/// m0..m0 + 16 is the tile at `b + k·16·b_row + offs[t] + m0` with rows `b_row` lanes apart.
/// Tiles of 2 × 2 (32 rows × 32 columns of `out`) accumulate over all (t, k) before one store;
/// a last 16 rows (`no` an odd multiple of 16, e.g. a 16-channel layer) run as 1 × 2 tiles.
/// With `half` (`nk` = 1 and at most 16 input channels) only the first 8 pairs of each A row
/// and the first 8 rows of each B tile are read ([`CONFIG_HALF`]): the same sums as the full
/// tiles over zero pairs 8..16, which add exact zeros (tested bit for bit).
///
/// # Safety
/// AMX must be [`available`]; every tile read must lie inside its buffer
/// (`a`: `offs.len()·nk·a_step` lanes with `a_step ≥ no·16`; `b`: up to
/// `(nk·16 − 1)·b_row + max(offs) + nm` lanes); `out` holds `(no − 1)·ldo + nm` floats.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_taps(
    a: *const u32,
    a_step: usize,
    b: *const u32,
    b_row: usize,
    offs: &[usize],
    nk: usize,
    no: usize,
    nm: usize,
    out: *mut f32,
    ldo: usize,
    half: bool,
) {
    use std::arch::asm;
    debug_assert!(no.is_multiple_of(16) && nm.is_multiple_of(32) && (!half || nk == 1));
    let config = if half { &CONFIG_HALF } else { &CONFIG };
    asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
    let (sa, sb, so) = (64usize, b_row * 4, ldo * 4);
    let no32 = no / 32 * 32;
    if no32 < no {
        let o0 = no32;
        for m0 in (0..nm).step_by(32) {
            asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
            for (t, &off) in offs.iter().enumerate() {
                for k in 0..nk {
                    let a0 = a.add((t * nk + k) * a_step + o0 * 16);
                    let b0 = b.add(k * 16 * b_row + off + m0);
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        a0 = in(reg) a0,
                        b0 = in(reg) b0,
                        b1 = in(reg) b0.add(16),
                        sa = in(reg) sa,
                        sb = in(reg) sb,
                        options(nostack, readonly)
                    );
                }
            }
            let c0 = out.add(o0 * ldo + m0);
            asm!(
                "tilestored [{c0} + {so}*1], tmm0",
                "tilestored [{c1} + {so}*1], tmm1",
                c0 = in(reg) c0,
                c1 = in(reg) c0.add(16),
                so = in(reg) so,
                options(nostack)
            );
        }
    }
    for o0 in (0..no32).step_by(32) {
        for m0 in (0..nm).step_by(32) {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for (t, &off) in offs.iter().enumerate() {
                for k in 0..nk {
                    let a0 = a.add((t * nk + k) * a_step + o0 * 16);
                    let b0 = b.add(k * 16 * b_row + off + m0);
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0,
                        a1 = in(reg) a0.add(16 * 16),
                        b0 = in(reg) b0,
                        b1 = in(reg) b0.add(16),
                        sa = in(reg) sa,
                        sb = in(reg) sb,
                        options(nostack, readonly)
                    );
                }
            }
            let c0 = out.add(o0 * ldo + m0);
            asm!(
                "tilestored [{c0} + {so}*1], tmm0",
                "tilestored [{c1} + {so}*1], tmm1",
                "tilestored [{c2} + {so}*1], tmm2",
                "tilestored [{c3} + {so}*1], tmm3",
                c0 = in(reg) c0,
                c1 = in(reg) c0.add(16),
                c2 = in(reg) c0.add(16 * ldo),
                c3 = in(reg) c0.add(16 * ldo + 16),
                so = in(reg) so,
                options(nostack)
            );
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// `c[r·ldc + j] += Σ_{m < nm} a[r·a_row + m] · b[(m / 2)·b_row + j][m % 2]` for `r < nr`,
/// `j < nc`: a reduction over `nm` bf16 elements (multiples of 32 each), `a` rows of bf16 `a_row`
/// elements apart (any alignment), `b` the VNNI layout (row = a pair of reduced elements, lane =
/// their two bf16 for one column), rows `b_row` lanes apart. Tiles of 2 × 2 (32 × 32 of `c`)
/// are loaded from `c`, accumulate over all of `nm` and are stored back.
///
/// # Safety
/// AMX must be [`available`]; `a` readable for `(nr − 1)·a_row + nm` elements, `b` for
/// `(nm/2 − 1)·b_row + nc` lanes, `c` writable for `(nr − 1)·ldc + nc` floats; `nr`, `nc`, `nm`
/// multiples of 32.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_acc(
    a: *const u16,
    a_row: usize,
    b: *const u32,
    b_row: usize,
    nr: usize,
    nc: usize,
    nm: usize,
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::asm;
    debug_assert!(nr.is_multiple_of(32) && nc.is_multiple_of(32) && nm.is_multiple_of(32));
    asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    let (sa, sb, sc) = (a_row * 2, b_row * 4, ldc * 4);
    for r0 in (0..nr).step_by(32) {
        for j0 in (0..nc).step_by(32) {
            let c0 = c.add(r0 * ldc + j0);
            asm!(
                "tileloadd tmm0, [{c0} + {sc}*1]",
                "tileloadd tmm1, [{c1} + {sc}*1]",
                "tileloadd tmm2, [{c2} + {sc}*1]",
                "tileloadd tmm3, [{c3} + {sc}*1]",
                c0 = in(reg) c0,
                c1 = in(reg) c0.add(16),
                c2 = in(reg) c0.add(16 * ldc),
                c3 = in(reg) c0.add(16 * ldc + 16),
                sc = in(reg) sc,
                options(nostack, readonly)
            );
            for m0 in (0..nm).step_by(32) {
                let a0 = a.add(r0 * a_row + m0);
                let b0 = b.add(m0 / 2 * b_row + j0);
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0,
                    a1 = in(reg) a0.add(16 * a_row),
                    b0 = in(reg) b0,
                    b1 = in(reg) b0.add(16),
                    sa = in(reg) sa,
                    sb = in(reg) sb,
                    options(nostack, readonly)
                );
            }
            asm!(
                "tilestored [{c0} + {sc}*1], tmm0",
                "tilestored [{c1} + {sc}*1], tmm1",
                "tilestored [{c2} + {sc}*1], tmm2",
                "tilestored [{c3} + {sc}*1], tmm3",
                c0 = in(reg) c0,
                c1 = in(reg) c0.add(16),
                c2 = in(reg) c0.add(16 * ldc),
                c3 = in(reg) c0.add(16 * ldc + 16),
                sc = in(reg) sc,
                options(nostack)
            );
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// [`gemm_acc`] for several shifts of `a` at once, in 16 × 16 tiles:
/// `c[t·c_tap + r·ldc + j] += Σ_{m < nm} a[r·a_row + offs[t] + m] · b[(m / 2)·b_row + j][m % 2]`
/// for each `t < offs.len()` (a multiple of 3), `r < nr`, `j < nc`. Three shifts share each
/// tile of `b`: per 32 reduced elements, 1 B tile and 3 A tiles load for 3 `tdpbf16ps`, with
/// no rows or columns padded past multiples of 16 (a 16-channel layer's weight gradient, taps
/// as the shifts, would otherwise run half-empty 32-row tiles, one tap at a time).
///
/// # Safety
/// AMX must be [`available`]; `a` readable for `(nr − 1)·a_row + max(offs) + nm` elements, `b`
/// for `(nm/2 − 1)·b_row + nc` lanes, `c` writable for `(offs.len() − 1)·c_tap + (nr − 1)·ldc +
/// nc` floats; `nr`, `nc` multiples of 16, `nm` of 32.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_acc_taps(
    a: *const u16,
    a_row: usize,
    offs: &[usize],
    b: *const u32,
    b_row: usize,
    nr: usize,
    nc: usize,
    nm: usize,
    c: *mut f32,
    ldc: usize,
    c_tap: usize,
) {
    use std::arch::asm;
    debug_assert!(nr.is_multiple_of(16) && nc.is_multiple_of(16) && nm.is_multiple_of(32));
    debug_assert!(offs.len().is_multiple_of(3));
    asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    let (sa, sb, sc) = (a_row * 2, b_row * 4, ldc * 4);
    for (g, three) in offs.chunks_exact(3).enumerate() {
        let t0 = 3 * g;
        let (o0, o1, o2) = (three[0], three[1], three[2]);
        for r0 in (0..nr).step_by(16) {
            for j0 in (0..nc).step_by(16) {
                let c0 = c.add(t0 * c_tap + r0 * ldc + j0);
                asm!(
                    "tileloadd tmm0, [{c0} + {sc}*1]",
                    "tileloadd tmm1, [{c1} + {sc}*1]",
                    "tileloadd tmm2, [{c2} + {sc}*1]",
                    c0 = in(reg) c0,
                    c1 = in(reg) c0.add(c_tap),
                    c2 = in(reg) c0.add(2 * c_tap),
                    sc = in(reg) sc,
                    options(nostack, readonly)
                );
                let ar = a.add(r0 * a_row);
                for m0 in (0..nm).step_by(32) {
                    asm!(
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm3, [{a0} + {sa}*1]",
                        "tileloadd tmm4, [{a1} + {sa}*1]",
                        "tileloadd tmm5, [{a2} + {sa}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm6",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        b0 = in(reg) b.add(m0 / 2 * b_row + j0),
                        a0 = in(reg) ar.add(o0 + m0),
                        a1 = in(reg) ar.add(o1 + m0),
                        a2 = in(reg) ar.add(o2 + m0),
                        sa = in(reg) sa,
                        sb = in(reg) sb,
                        options(nostack, readonly)
                    );
                }
                asm!(
                    "tilestored [{c0} + {sc}*1], tmm0",
                    "tilestored [{c1} + {sc}*1], tmm1",
                    "tilestored [{c2} + {sc}*1], tmm2",
                    c0 = in(reg) c0,
                    c1 = in(reg) c0.add(c_tap),
                    c2 = in(reg) c0.add(2 * c_tap),
                    sc = in(reg) sc,
                    options(nostack)
                );
            }
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_acc_taps(
    _: *const u16,
    _: usize,
    _: &[usize],
    _: *const u32,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: *mut f32,
    _: usize,
    _: usize,
) {
    unreachable!("amx::available is false off x86_64")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_acc(
    _: *const u16,
    _: usize,
    _: *const u32,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: *mut f32,
    _: usize,
) {
    unreachable!("amx::available is false off x86_64")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_taps(
    _: *const u32,
    _: usize,
    _: *const u32,
    _: usize,
    _: &[usize],
    _: usize,
    _: usize,
    _: usize,
    _: *mut f32,
    _: usize,
    _: bool,
) {
    unreachable!("amx::available is false off x86_64")
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// bf16 of pseudo-random values over several binades, so that the products' sums round.
    fn bf16s(len: usize, seed: u64) -> Vec<u16> {
        let mut v = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                v = v
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (v >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let e = ((v >> 20) % 7) as i32 - 3;
                crate::ops::bf16::to_bf16(u * 2f32.powi(e))
            })
            .collect()
    }

    #[test]
    fn a_half_reduction_is_the_full_one_over_zero_pairs() {
        // 16 input channels (8 pairs): gemm_taps with half tiles against full tiles whose
        // pairs 8..16 of A and planes 8..16 of B are zero, bit for bit, for 16 and 48 output
        // rows (the 1 × 2 and 2 × 2 tile paths) and 9 taps.
        if !available() {
            return;
        }
        let (nm, b_row) = (64usize, 160usize);
        let offs: Vec<usize> = (0..9).map(|t| t / 3 * 10 + t % 3).collect();
        for no in [16usize, 48] {
            let mut a = vec![0u32; 9 * no * 16];
            let av = bf16s(9 * no * 16, no as u64);
            for (i, lane) in a.iter_mut().enumerate() {
                if i % 16 < 8 {
                    *lane = av[i] as u32 | (av[(i + 7) % av.len()] as u32) << 16;
                }
            }
            let mut b = vec![0u32; 16 * b_row + 64];
            let bv = bf16s(16 * b_row, 7);
            for (i, lane) in b[..8 * b_row].iter_mut().enumerate() {
                *lane = bv[i] as u32 | (bv[(i + 11) % bv.len()] as u32) << 16;
            }
            let run = |half: bool| {
                let mut out = vec![0f32; no * nm];
                // SAFETY: AMX available (checked); a holds 9·no·16 lanes (nk = 1), b reads reach
                // 15·b_row + 22 + 64 lanes < b.len(), out holds no rows of nm.
                unsafe {
                    gemm_taps(
                        a.as_ptr(),
                        no * 16,
                        b.as_ptr(),
                        b_row,
                        &offs,
                        1,
                        no,
                        nm,
                        out.as_mut_ptr(),
                        nm,
                        half,
                    )
                };
                out
            };
            let (full, half) = (run(false), run(true));
            assert!(full.iter().filter(|v| **v != 0.0).count() > full.len() / 2);
            let same = full.iter().zip(&half).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{no} output rows: half and full tiles differ");
        }
    }
}

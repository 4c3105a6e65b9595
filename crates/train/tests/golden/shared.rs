//! What the golden numerics test (`crates/train/tests/golden_numerics.rs`) and the CLI
//! determinism test (`crates/cli/tests/determinism.rs`) share, through `#[path]`: the synthetic
//! CIFAR-10 of the golden run, the CPU path label and the golden file.
//!
//! The data: the official binary layout, 8 records in each of the five training files and 10 in
//! the test file, pixels a fixed function of (file, record, channel, row, column). Changing
//! anything here changes the golden numbers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The command that regenerates the golden file.
pub const BLESS: &str = "PROTOCLR_BLESS=1 cargo test -p protoclr-train --test golden_numerics";

/// `crates/train/tests/golden/` (from either crate's manifest folder).
pub fn golden_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = if here.ends_with("train") {
        here.join("tests/golden")
    } else {
        here.join("../train/tests/golden")
    };
    assert!(
        dir.join("config.yaml").is_file(),
        "{} has no config.yaml",
        dir.display()
    );
    dir
}

/// What the numbers of a run depend on besides the numerics version: the CPU features that
/// select kernels at run time (the direct convolution kernels run only with AVX-512F, elsewhere
/// im2col + gemm sums in another order; the `gemm` crate picks its FMA or scalar micro-kernels)
/// and the cache sizes from which `gemm` derives its blocking (hence its summation order).
pub fn cpu_path() -> String {
    let mut parts = vec![std::env::consts::ARCH.to_string()];
    #[cfg(target_arch = "x86_64")]
    {
        parts.push(format!("avx512f={}", std::is_x86_feature_detected!("avx512f")));
        parts.push(format!("fma={}", std::is_x86_feature_detected!("fma")));
    }
    let base = Path::new("/sys/devices/system/cpu/cpu0/cache");
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let mut caches = vec![];
    for i in 0..8 {
        let d = base.join(format!("index{i}"));
        if let (Some(level), Some(kind), Some(size)) =
            (read(d.join("level")), read(d.join("type")), read(d.join("size")))
        {
            if kind != "Instruction" {
                caches.push(format!("L{level}={size}"));
            }
        }
    }
    parts.push(if caches.is_empty() {
        "caches=unknown".into()
    } else {
        caches.join(",")
    });
    parts.join(" ")
}

/// Records per training file and in the test file.
pub const TRAIN_RECORDS: usize = 8;
pub const TEST_RECORDS: usize = 10;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Label of record `r` of file `f` (every class occurs 4 times in the training files).
pub fn label(f: usize, r: usize) -> u8 {
    ((r + 3 * f) % 10) as u8
}

/// One record: the label, then 3×32×32 bytes (CHW): a class-dependent colour gradient, a
/// record-dependent diagonal stripe and hashed noise.
pub fn record(f: usize, r: usize) -> Vec<u8> {
    let l = label(f, r) as usize;
    let mut out = Vec::with_capacity(3073);
    out.push(l as u8);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let grad = (x * (2 + l) + y * (3 + c) + 40 * c + 17 * l) % 200;
                let stripe = if (x + y + r) % 8 < 3 { 40 } else { 0 };
                let noise = (mix(((f * 64 + r) * 4096 + c * 1024 + y * 32 + x) as u64) % 16) as usize;
                out.push((grad + stripe + noise).min(255) as u8);
            }
        }
    }
    out
}

/// Writes `cifar-10-batches-bin/` (the five training files, the test file and
/// `batches.meta.txt`) under `root`.
pub fn write_cifar10(root: &Path) {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for f in 0..6 {
        let (name, n) = if f < 5 {
            (format!("data_batch_{}.bin", f + 1), TRAIN_RECORDS)
        } else {
            ("test_batch.bin".to_string(), TEST_RECORDS)
        };
        let bytes: Vec<u8> = (0..n).flat_map(|r| record(f, r)).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    std::fs::write(dir.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
}

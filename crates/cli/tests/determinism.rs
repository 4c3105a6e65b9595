//! Determinism where it is promised: the same cell trained twice by the same binary gives a
//! byte-identical `metrics.json` apart from the timing fields, on 1 and on 2 threads, and the
//! real `protoclr train` loop computes the pinned golden numbers.
//!
//! The cell is the golden run of `crates/train/tests/golden_numerics.rs` (its config and
//! synthetic CIFAR-10 are shared through `#[path]`), trained to the end, evaluation included.
//!
//! Excluded from the byte comparison, because they measure the machine's speed, not what was
//! computed: the top-level `wall_time_s` and `train_images_per_sec`, and each epoch's `wall_s`
//! and `images_per_sec`. Between the 1- and the 2-thread run also `threads`, which records the
//! thread count itself. Everything else (losses, learning rates, every evaluation number,
//! provenance fields, the key order and the number formatting) must be the same bytes.

#[path = "../../train/tests/golden/shared.rs"]
mod shared;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The timing fields (see the module doc).
const TIMING: &[&str] = &["wall_time_s", "train_images_per_sec", "wall_s", "images_per_sec"];

/// Trains the golden cell into `out` with `threads` threads; returns the per-step losses it
/// logged (`--progress jsonl`).
fn train(data_root: &Path, out: &Path, threads: usize) -> Vec<f64> {
    let o = Command::new(env!("CARGO_BIN_EXE_protoclr"))
        .args(["--threads", &threads.to_string(), "train", "--progress", "jsonl"])
        .arg("--config")
        .arg(shared::golden_dir().join("config.yaml"))
        .arg("--out")
        .arg(out)
        .arg("--data-root")
        .arg(data_root)
        .env("PROTOCLR_GIT_COMMIT", "determinism-test")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "protoclr train failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == "step"))
        .map(step_loss)
        .collect()
}

/// The `loss` of a step line, read from its text with the standard library's correctly rounded
/// parser (serde_json's default float parser may be one ulp off).
fn step_loss(line: &str) -> f64 {
    let at = line.find("\"loss\":").expect("a step line has a loss") + "\"loss\":".len();
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().unwrap()
}

/// `metrics.json` with the value of every line holding one of `keys` replaced by a marker, and
/// the number of lines replaced. (The file is pretty-printed JSON: one key a line.)
fn masked(dir: &Path, keys: &[&str]) -> (String, usize) {
    let text = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
    let mut hits = 0;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let body = line.trim_start();
            let key = keys.iter().find(|k| body.starts_with(&format!("\"{k}\": ")));
            match key {
                Some(k) => {
                    hits += 1;
                    let indent = &line[..line.len() - body.len()];
                    let comma = if body.ends_with(',') { "," } else { "" };
                    format!("{indent}\"{k}\": \"<masked>\"{comma}")
                }
                None => line.to_string(),
            }
        })
        .collect();
    (lines.join("\n"), hits)
}

/// The golden per-step losses (f32 bits) recorded for this CPU path, else those of every
/// recorded path (a machine with another label may still compute the same numbers).
fn golden_loss_bits() -> Vec<Vec<u32>> {
    let path = shared::golden_dir().join("numerics.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        g["numerics_version"].as_u64(),
        Some(u64::from(protoclr_train::NUMERICS_VERSION)),
        "{} is not for this NUMERICS_VERSION (the golden test says what to do)",
        path.display()
    );
    let records = g["records"].as_array().unwrap();
    let bits = |r: &Value| -> Vec<u32> {
        r["loss_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| u32::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect()
    };
    let label = shared::cpu_path();
    match records.iter().find(|r| r["cpu_path"] == label.as_str()) {
        Some(r) => vec![bits(r)],
        None => records.iter().map(bits).collect(),
    }
}

#[test]
fn same_cell_twice_gives_byte_identical_metrics_apart_from_timings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    shared::write_cifar10(&root);
    let dir = |name: &str| -> PathBuf { tmp.path().join(name) };
    let la = train(&root, &dir("a"), 1);
    let lb = train(&root, &dir("b"), 1);
    let lc = train(&root, &dir("c"), 2);

    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir("a").join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "completed");
    assert_eq!(m["numerics_version"], protoclr_train::NUMERICS_VERSION);
    let epochs = m["epochs"].as_array().unwrap().len();
    assert_eq!(epochs, 3);
    assert!(m["eval"]["linear_top1"].is_number(), "{m}");

    // Same binary, same thread count: the same bytes but for the timing values.
    let (a, hits) = masked(&dir("a"), TIMING);
    assert_eq!(hits, 2 + 2 * epochs, "timing fields masked in\n{a}");
    let (b, _) = masked(&dir("b"), TIMING);
    assert!(
        a == b,
        "two runs of one cell differ beyond timings:\n{a}\n---\n{b}"
    );
    // Two threads: also the thread count differs.
    let with_threads: Vec<&str> = TIMING.iter().copied().chain(["threads"]).collect();
    let (a2, _) = masked(&dir("a"), &with_threads);
    let (c2, hits) = masked(&dir("c"), &with_threads);
    assert_eq!(hits, 3 + 2 * epochs);
    assert!(
        a2 == c2,
        "1- and 2-thread runs differ beyond timings and `threads`:\n{a2}\n---\n{c2}"
    );

    // The per-step losses: identical, and those of the golden run (the real loop computes
    // what the golden test's copy of it computes).
    assert_eq!(la, lb);
    assert_eq!(la, lc);
    let bits: Vec<u32> = la.iter().map(|&l| (l as f32).to_bits()).collect();
    assert!(
        la.iter().all(|&l| l == f64::from(l as f32)),
        "losses are f32 values: {la:?}"
    );
    let golden = golden_loss_bits();
    assert!(
        golden.contains(&bits),
        "`protoclr train` logs the per-step losses {bits:x?}, the golden run of \
         crates/train/tests/golden_numerics.rs recorded {golden:x?} (CPU path `{}`): if run.rs \
         changed what a step computes, bump NUMERICS_VERSION, update the golden test's loop to \
         match run::train and regenerate with `{}`; if this machine's path is not recorded, the \
         golden test says so",
        shared::cpu_path(),
        shared::BLESS
    );
}

//! `protoclr bench step|infer|input|table`: training-step, inference and JPEG input-pipeline
//! throughput, and the side-by-side table against the PyTorch reference
//! (`benches/torch_reference.py`).

use anyhow::{Context, Result};
use clap::Subcommand;
use protoclr_train::{bench, config::ModelConfig};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// One SimCLR step: two views, NT-Xent τ = 0.5, SGD with momentum; median of timed steps.
    Step {
        #[arg(long, default_value = "resnet18")]
        model: String,
        /// First-stage width (16 → widths 16-32-64-128; 64 is the full ResNet).
        #[arg(long, default_value_t = 16)]
        width: usize,
        /// Images per step (2·batch views go through the network).
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// custom (our kernels) or stock (candle's ops).
        #[arg(long, default_value = "custom")]
        ops: String,
        /// Arithmetic of the convolutions: f32, or bf16 (bf16 operands, f32 accumulation, as
        /// `train.precision: bf16`; custom ops on a CPU with AVX-512 BF16).
        #[arg(long, default_value = "f32")]
        precision: protoclr_train::ops::Precision,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Eval-mode encoder forward pass on one batch.
    Infer {
        #[arg(long, default_value = "resnet18")]
        model: String,
        #[arg(long, default_value_t = 16)]
        width: usize,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value = "custom")]
        ops: String,
        #[arg(long)]
        json: bool,
    },
    /// JPEG input pipeline: decode + two SimCLR views per image on the decoding threads.
    Input {
        /// A class-per-folder tree (`D/<class>/*.JPEG`), or the root of the paths in `--list`.
        #[arg(long)]
        dir: PathBuf,
        /// A list file (`relative/path.JPEG label` per line), paths relative to `--dir`.
        #[arg(long)]
        list: Option<PathBuf>,
        /// Output side of the augmented views.
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Timed batches (after one warm-up batch).
        #[arg(long, default_value_t = 10)]
        batches: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Decoding threads (default: --threads).
        #[arg(long)]
        decode_threads: Option<usize>,
        /// Resize each decoded image to this shorter side first (`data.resize_short`).
        #[arg(long)]
        resize_short: Option<usize>,
        /// Keep decoded images in memory (`data.cache_images`); an untimed pass fills the cache.
        #[arg(long)]
        cache_images: bool,
        #[arg(long)]
        json: bool,
    },
    /// Side-by-side table of JSON lines written by `bench … --json` and the PyTorch reference.
    Table {
        /// JSON-lines files (each line one measurement with a "framework" key or a candle one).
        files: Vec<PathBuf>,
    },
}

fn model_cfg(model: &str, width: usize, ops: &str) -> ModelConfig {
    ModelConfig {
        arch: model.into(),
        width,
        ops: ops.into(),
        ..ModelConfig::default()
    }
}

/// Runs a bench subcommand; `device` is the global `--device` (step and infer use it).
pub fn run(cmd: BenchCommand, device: &candle_core::Device) -> Result<()> {
    match cmd {
        BenchCommand::Step {
            model,
            width,
            batch,
            steps,
            warmup,
            ops,
            precision,
            json,
        } => {
            let r = bench::step(&model_cfg(&model, width, &ops), batch, steps, warmup, precision, device)?;
            if json {
                let mut v = serde_json::to_value(&r)?;
                v["framework"] = "protoclr".into();
                v["kind"] = "step".into();
                println!("{v}");
            } else {
                println!(
                    "{model} width {width} batch 2×{batch} ({} ops, {}, on {}, {} threads): {:.1} img/s · forward {:.0} ms · backward {:.0} ms · optimizer {:.0} ms · peak RSS {:.0} MB",
                    r.ops, r.precision, r.device, r.threads, r.images_per_sec, r.forward_ms, r.backward_ms, r.optimizer_ms, r.peak_rss_mb
                );
            }
        }
        BenchCommand::Infer {
            model,
            width,
            batch,
            steps,
            warmup,
            ops,
            json,
        } => {
            let r = bench::infer(&model_cfg(&model, width, &ops), batch, steps, warmup, device)?;
            if json {
                let mut v = serde_json::to_value(&r)?;
                v["framework"] = "protoclr".into();
                v["kind"] = "infer".into();
                println!("{v}");
            } else {
                println!(
                    "{model} width {width} inference batch {batch} ({} ops on {}, {} threads): {:.1} img/s · peak RSS {:.0} MB",
                    r.ops, r.device, r.threads, r.images_per_sec, r.peak_rss_mb
                );
            }
        }
        BenchCommand::Input {
            dir,
            list,
            size,
            batches,
            batch,
            decode_threads,
            resize_short,
            cache_images,
            json,
        } => {
            use protoclr_train::data::folder::{scan_part, PartSource};
            let part = match list {
                Some(file) => PartSource::List { file, root: dir },
                None => PartSource::Folder(dir),
            };
            let (images, bad) = scan_part(&part, false)?;
            if !bad.is_empty() {
                eprintln!("warning: {} bad entries left out; first: {}", bad.len(), bad[0]);
            }
            let r = protoclr_train::input::bench(
                std::sync::Arc::new(images),
                size,
                batch,
                batches,
                decode_threads,
                resize_short,
                cache_images,
            )?;
            if json {
                let mut v = serde_json::to_value(&r)?;
                v["framework"] = "protoclr".into();
                v["kind"] = "input".into();
                v["decoder"] = "zune-jpeg".into();
                println!("{v}");
            } else {
                let mut prep: Vec<String> = Vec::new();
                if let Some(side) = resize_short {
                    prep.push(format!("resized to a {side} px shorter side"));
                }
                if cache_images {
                    prep.push("cached".into());
                }
                let prep: String = prep.iter().map(|p| format!(", {p}")).collect();
                println!(
                    "input pipeline ({} decoding threads, zune-jpeg{prep}, 2 views of {size}×{size}): {:.1} images/s \
                     ({} images in {:.1} s)",
                    r.threads, r.images_per_sec, r.images, r.seconds
                );
            }
        }
        BenchCommand::Table { files } => {
            let mut rows: Vec<serde_json::Value> = vec![];
            for f in &files {
                let text =
                    std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
                for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    rows.push(
                        serde_json::from_str(line)
                            .with_context(|| format!("{}:{}: not a JSON object", f.display(), i + 1))?,
                    );
                }
            }
            print!("{}", bench_table(&rows));
        }
    }
    Ok(())
}

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Markdown table pairing the protoclr measurements of each setting with the PyTorch ones.
/// A setting measured in several rounds (`benches/run.sh` interleaves them, because this
/// machine's speed drifts by ±20 % over minutes) shows the median img/s with the range, the
/// ratio of the medians, and the largest peak RSS.
pub fn bench_table(rows: &[serde_json::Value]) -> String {
    let key = |r: &serde_json::Value| {
        format!(
            "{} {} w{} b{} t{}",
            r["kind"].as_str().unwrap_or("?"),
            r["model"].as_str().unwrap_or("?"),
            r["width"],
            r["batch"],
            r["threads"]
        )
    };
    let of = |fw: &str, k: &str| -> Vec<&serde_json::Value> {
        rows.iter()
            .filter(|r| r["framework"] == fw && key(r) == k)
            .collect()
    };
    let ips = |v: &[&serde_json::Value]| -> Vec<f64> {
        v.iter().filter_map(|r| r["images_per_sec"].as_f64()).collect()
    };
    let rss = |v: &[&serde_json::Value]| {
        v.iter()
            .filter_map(|r| r["peak_rss_mb"].as_f64())
            .fold(f64::NAN, f64::max)
    };
    let cell = |v: &[f64]| match v.len() {
        0 => "–".to_string(),
        1 => format!("{:.1}", v[0]),
        _ => {
            let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
            format!("{:.1} ({lo:.1}–{hi:.1})", median(v.to_vec()))
        }
    };
    let mut out = String::from(
        "| setting | threads | rounds | PyTorch img/s | protoclr img/s | ratio | PyTorch peak RSS MB | protoclr peak RSS MB |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut seen = std::collections::HashSet::new();
    for first in rows.iter().filter(|r| r["framework"] == "protoclr") {
        let k = key(first);
        if !seen.insert(k.clone()) {
            continue;
        }
        let (ours, theirs) = (of("protoclr", &k), of("pytorch", &k));
        let (a, b) = (ips(&ours), ips(&theirs));
        let ratio = if a.is_empty() || b.is_empty() {
            f64::NAN
        } else {
            median(a.clone()) / median(b.clone())
        };
        let desc = if first["kind"] == "step" {
            format!(
                "train step {} width {} batch 2×{}",
                first["model"].as_str().unwrap_or("?"),
                first["width"],
                first["batch"]
            )
        } else {
            format!(
                "inference {} width {} batch {}",
                first["model"].as_str().unwrap_or("?"),
                first["width"],
                first["batch"]
            )
        };
        out.push_str(&format!(
            "| {desc} | {} | {} | {} | {} | {ratio:.2}× | {:.0} | {:.0} |\n",
            first["threads"],
            a.len().max(b.len()),
            cell(&b),
            cell(&a),
            rss(&theirs),
            rss(&ours)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pairs_measurements_by_setting() {
        let rows: Vec<serde_json::Value> = [
            r#"{"framework":"pytorch","kind":"step","model":"resnet18","width":16,"batch":128,"threads":2,"images_per_sec":200.0,"peak_rss_mb":1400}"#,
            r#"{"framework":"protoclr","kind":"step","model":"resnet18","width":16,"batch":128,"threads":2,"images_per_sec":300.0,"peak_rss_mb":700}"#,
        ]
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
        let t = bench_table(&rows);
        assert!(t.contains("| 1 | 200.0 | 300.0 | 1.50× | 1400 | 700 |"), "{t}");
    }

    #[test]
    fn rounds_are_summarised_by_their_medians() {
        let line = |fw: &str, ips: f64, rss: f64| {
            serde_json::json!({"framework": fw, "kind": "step", "model": "resnet18", "width": 16,
                "batch": 128, "threads": 2, "images_per_sec": ips, "peak_rss_mb": rss})
        };
        let rows = vec![
            line("protoclr", 500.0, 500.0),
            line("pytorch", 400.0, 1300.0),
            line("protoclr", 420.0, 510.0),
            line("pytorch", 350.0, 1290.0),
            line("protoclr", 480.0, 505.0),
            line("pytorch", 410.0, 1280.0),
        ];
        let t = bench_table(&rows);
        // Medians 480 and 400: ratio 1.20; one row for the setting; largest RSS.
        assert!(
            t.contains("| 3 | 400.0 (350.0–410.0) | 480.0 (420.0–500.0) | 1.20× | 1300 | 510 |"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 3, "{t}");
    }
}

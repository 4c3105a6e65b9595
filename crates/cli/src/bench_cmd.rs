//! `protoclr bench step|infer|input|table`: training-step, inference and JPEG input-pipeline
//! throughput, and the side-by-side table against the PyTorch reference
//! (`benches/torch_reference.py`).

use anyhow::Result;
use clap::Subcommand;
use protoclr_train::bench;
use protoclr_train::config::{Arch, ModelConfig, Ops};
use std::path::PathBuf;

mod table;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// One SimCLR step: two views, NT-Xent τ = 0.5, SGD with momentum; median of timed steps.
    Step {
        #[arg(long, default_value = "resnet18")]
        model: Arch,
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
        ops: Ops,
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
        model: Arch,
        #[arg(long, default_value_t = 16)]
        width: usize,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value = "custom")]
        ops: Ops,
        #[arg(long)]
        json: bool,
    },
    /// One thread's arithmetic peak: f32 FMA and bf16 dot-product (vdpbf16ps) GFLOP/s.
    Peak {
        /// Print one JSON object instead of text.
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
    /// Markdown tables of JSON lines written by `bench … --json` and the PyTorch reference
    /// (`benches/run.sh`): one column per framework and variant, median over the rounds, and
    /// protoclr against the best PyTorch column at equal precision.
    Table {
        /// JSON-lines files (each line one measurement with a "framework" key, or a
        /// "skipped" one); lines of kinds other than step and infer are left out.
        files: Vec<PathBuf>,
    },
}

fn model_cfg(model: Arch, width: usize, ops: Ops) -> ModelConfig {
    ModelConfig {
        arch: model,
        width,
        ops,
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
            let r = bench::step(
                &model_cfg(model, width, ops),
                batch,
                steps,
                warmup,
                precision,
                device,
            )?;
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
            let r = bench::infer(&model_cfg(model, width, ops), batch, steps, warmup, device)?;
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
        BenchCommand::Peak { json } => {
            let p = protoclr_train::ops::peak::measure(5);
            if json {
                println!("{}", serde_json::to_value(p)?);
            } else {
                let show =
                    |v: Option<f64>| v.map_or("not available".to_string(), |g| format!("{g:.1} GFLOP/s"));
                println!(
                    "one thread: f32 FMA (zmm) {} · bf16 dot product vdpbf16ps (zmm) {}",
                    show(p.fma_f32_gflops),
                    show(p.dpbf16_gflops)
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
            print!("{}", table::Grid::new(&table::load(&files)?).markdown());
        }
    }
    Ok(())
}

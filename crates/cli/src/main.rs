//! `protoclr`: the command line over the three libraries — `train` (one run), `data` (fetch and
//! verify datasets), `bench` (speed), `grid` (experiment grids) and `report` (figures, tables).

mod bench_cmd;
mod grid_cmd;
mod report_cmd;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use protoclr_train::{config, data, run};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "protoclr",
    version,
    about = "Self-supervised contrastive learning through supervised objectives: training, grids, figures"
)]
struct Cli {
    /// Worker threads for training and evaluation (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Compute device: `cpu` (default), or `cuda` / `cuda:N` in a build with the `cuda` feature
    /// (README, "GPU build"). `grid` passes it on to the training processes it starts.
    #[arg(long, global = true, env = "PROTOCLR_DEVICE")]
    device: Option<String>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one run (or resume it) and evaluate it.
    Train(TrainArgs),
    /// Download or verify datasets.
    Data {
        #[command(subcommand)]
        cmd: DataCommand,
    },
    /// Measure training and inference speed.
    Bench {
        #[command(subcommand)]
        cmd: bench_cmd::BenchCommand,
    },
    /// Experiment grids: plan, run (local workers or Slurm), status, clean.
    Grid {
        #[command(subcommand)]
        cmd: grid_cmd::GridCommand,
    },
    /// Figures, tables and claim verdicts from cached results.
    Report(report_cmd::ReportArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Progress {
    Bar,
    Jsonl,
    None,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// YAML config (defaults are used for every key it leaves out).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set loss.alpha=1.25` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run folder: config.yaml, metrics.json (rerunning resumes).
    #[arg(long)]
    out: PathBuf,
    /// Checkpoint folder (default OUT/checkpoints).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Folder of random-init reference evaluations shared between runs that would compute the
    /// same one (`grid` passes RESULTS/checkpoints/references); default: computed in each run.
    #[arg(long)]
    reference_cache: Option<PathBuf>,
    /// Folder holding cifar-10-batches-bin/ (default: $PROTOCLR_DATA).
    #[arg(long, env = "PROTOCLR_DATA")]
    data_root: Option<PathBuf>,
    /// Accept dataset files whose MD5 differs from the official release (recorded in metrics).
    #[arg(long)]
    allow_unverified: bool,
    /// Image-folder datasets: leave out bad entries (missing file, label out of range, …) and
    /// replace images that do not decode, counting them, instead of stopping (`data.skip_bad`).
    #[arg(long)]
    skip_bad: bool,
    #[arg(long, value_enum, default_value = "bar")]
    progress: Progress,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download the official archive, check its MD5, unpack and verify it.
    Fetch {
        /// cifar10 or cifar100.
        dataset: String,
        /// Data root to unpack into.
        #[arg(long)]
        dir: PathBuf,
        /// Mirror to download from instead of the official host (also $PROTOCLR_DATA_URL).
        #[arg(long)]
        base_url: Option<String>,
        /// Seconds without receiving a byte after which the download fails (its partial file
        /// is removed).
        #[arg(long, default_value_t = data::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
        timeout: f64,
    },
    /// Check a CIFAR folder against the published MD5s (`--dir`), or list an image-folder
    /// dataset and decode every JPEG (`--config`), reporting each bad entry with its file and line.
    Verify {
        /// A CIFAR dataset folder, or a data root holding them.
        #[arg(long, required_unless_present = "config", conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// A run config whose `data.dataset` is `imagefolder`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override a config key (repeatable), as for `train`.
        #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
        sets: Vec<String>,
        /// Root of the config's data paths (default: $PROTOCLR_DATA).
        #[arg(long, env = "PROTOCLR_DATA")]
        data_root: Option<PathBuf>,
    },
    /// Write an ImageNet-LT-style long-tailed version of a class-per-folder dataset: list files
    /// `train.txt` (class c keeps floor(n_max·ρ^(−c/(C−1))) images), a balanced `val.txt` and
    /// `classes.txt`, deterministic for a given --seed (docs/formats.md, "make-lt").
    MakeLt {
        /// The dataset folder holding `train/<class>/*.JPEG` and `val/<class>/*.JPEG`.
        #[arg(long)]
        from: PathBuf,
        /// ρ: the largest class over the smallest (≥ 1).
        #[arg(long)]
        imbalance: f64,
        /// Folder to create with the three list files.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the choice of images within each class.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Validation images per class (default: the smallest validation class).
        #[arg(long)]
        val_per_class: Option<usize>,
        /// Training folder under --from.
        #[arg(long, default_value = "train")]
        train: String,
        /// Validation folder under --from.
        #[arg(long, default_value = "val")]
        val: String,
    },
}

/// The data root from the flag or `PROTOCLR_DATA`, or an error saying how to set it.
pub fn data_root(flag: Option<PathBuf>) -> Result<PathBuf> {
    flag.context(
        "no dataset root: pass --data-root DIR or set PROTOCLR_DATA to the folder holding cifar-10-batches-bin/",
    )
}

fn train(args: TrainArgs, device: Option<&str>) -> Result<ExitCode> {
    let mut sets = args.sets.clone();
    if args.allow_unverified {
        sets.push("data.allow_unverified=true".into());
    }
    if args.skip_bad {
        sets.push("data.skip_bad=true".into());
    }
    let cfg = config::load(args.config.as_deref(), &sets)?;
    let opts = run::RunOptions {
        out_dir: args.out.clone(),
        checkpoint_dir: args.checkpoint_dir,
        reference_cache: args.reference_cache,
        data_root: data_root(args.data_root)?,
        progress: match args.progress {
            Progress::Bar => run::ProgressMode::Bar,
            Progress::Jsonl => run::ProgressMode::Jsonl,
            Progress::None => run::ProgressMode::None,
        },
        device: protoclr_train::device::parse(device.unwrap_or("cpu"))?,
    };
    protoclr_train::signals::install_stop_handler()?;
    let outcome = run::train(&cfg, &opts)?;
    let m = outcome.metrics();
    if args.progress != Progress::Jsonl {
        print_summary(m, &args.out);
    }
    Ok(match outcome {
        run::Outcome::Completed(_) => ExitCode::SUCCESS,
        run::Outcome::Diverged(_) => ExitCode::from(3),
    })
}

/// `data verify --config`: every entry of an image-folder dataset listed, checked and decoded.
fn verify_folder(config: &std::path::Path, sets: &[String], root: PathBuf) -> Result<()> {
    let cfg = config::load(Some(config), sets)?;
    if !cfg.data.is_folder() {
        anyhow::bail!(
            "{}: `data.dataset` is `{}`; --config verifies image-folder datasets (use --dir for CIFAR)",
            config.display(),
            cfg.data.dataset
        );
    }
    let layout = data::folder::FolderLayout::from_config(&cfg.data, &root)?;
    let scan = data::folder::scan_with_progress(&layout, true, true)?;
    println!("{}", scan.summary());
    println!("fingerprint {}", scan.fingerprint);
    for b in &scan.bad {
        println!("bad: {b}");
    }
    if !scan.bad.is_empty() {
        anyhow::bail!(
            "{}: {} bad entr{} (training with --skip-bad leaves them out)",
            config.display(),
            scan.bad.len(),
            if scan.bad.len() == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

fn print_summary(m: &run::Metrics, out: &std::path::Path) {
    eprintln!("run folder: {}", out.display());
    eprintln!(
        "status: {} · {} epochs · {:.0} s · {:.0} train img/s · {} threads",
        m.status.as_str(),
        m.epochs.len(),
        m.wall_time_s,
        m.train_images_per_sec,
        m.threads
    );
    if let Some(d) = &m.diverged {
        eprintln!("diverged at epoch {} step {}: {}", d.epoch, d.step, d.what);
    }
    let line = |name: &str, e: &run::EvalResult| {
        let opt =
            |v: Option<f64>, digits: usize| v.map(|b| format!("{b:.digits$}")).unwrap_or_else(|| "—".into());
        protoclr_train::signals::stdout_line(&format!(
            "{name:<16} linear top-1 {:6.2} % (val {})   kNN top-1 {:6.2} %   prototype bias {} (rel {})",
            e.linear_top1,
            opt(e.val_linear_top1, 2),
            e.knn_top1,
            opt(e.bias_l2, 4),
            opt(e.bias_rel, 3)
        ));
    };
    if let Some(e) = &m.eval {
        line("trained encoder", e);
    }
    if let Some(e) = &m.reference {
        line("random init", e);
    }
}

fn run_cli() -> Result<ExitCode> {
    let cli = Cli::parse();
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    protoclr_train::runtime::init(threads);
    // Commands that train keep going when stdout closes (their progress lines stop); the others
    // only print and end quietly when their reader goes away (`grid status | head`).
    let trains = matches!(
        &cli.cmd,
        Command::Train(_)
            | Command::Grid {
                cmd: grid_cmd::GridCommand::Run { .. } | grid_cmd::GridCommand::RunCell { .. }
            }
    );
    if !trains {
        protoclr_train::signals::default_sigpipe();
    }
    match cli.cmd {
        Command::Train(a) => train(a, cli.device.as_deref()),
        Command::Data { cmd } => {
            match cmd {
                DataCommand::Fetch {
                    dataset,
                    dir,
                    base_url,
                    timeout,
                } => {
                    if !(timeout.is_finite() && timeout > 0.0 && timeout < 1e9) {
                        anyhow::bail!("--timeout must be a number of seconds > 0, got {timeout}");
                    }
                    let idle = std::time::Duration::from_secs_f64(timeout);
                    let path = data::fetch(&dataset, &dir, base_url.as_deref(), true, idle)?;
                    println!("{} ready at {}", dataset, path.display());
                }
                DataCommand::Verify {
                    dir,
                    config,
                    sets,
                    data_root: root,
                } => match (dir, config) {
                    (Some(dir), _) => {
                        let report = data::verify(&dir)?;
                        println!("{report}");
                        if !report.all_verified() {
                            anyhow::bail!("{}: not every file matches the official release", dir.display());
                        }
                    }
                    (None, Some(config)) => verify_folder(&config, &sets, data_root(root)?)?,
                    (None, None) => unreachable!("clap requires --dir or --config"),
                },
                DataCommand::MakeLt {
                    from,
                    imbalance,
                    out,
                    seed,
                    val_per_class,
                    train,
                    val,
                } => {
                    let opts = data::LtOptions {
                        imbalance,
                        seed,
                        val_per_class,
                        train,
                        val,
                    };
                    let lists = data::make_lt(&from, &opts)?;
                    let wrote = data::write_lt(&lists, &out)?;
                    println!(
                        "{} {} (ρ = {imbalance}, seed {seed}): train {:?} = {} images, val {} per class",
                        if wrote { "wrote" } else { "already up to date:" },
                        out.display(),
                        lists.train_counts,
                        lists.train_counts.iter().sum::<usize>(),
                        lists.val_per_class
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { cmd } => {
            let device = protoclr_train::device::parse(cli.device.as_deref().unwrap_or("cpu"))?;
            bench_cmd::run(cmd, &device).map(|_| ExitCode::SUCCESS)
        }
        Command::Grid { cmd } => grid_cmd::run(cmd, cli.device).map(|_| ExitCode::SUCCESS),
        Command::Report(args) => {
            let dev = protoclr_train::loss::ntxent_max_deviation(42, 40)?;
            report_cmd::run(args, dev).map(|_| ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run_cli() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<protoclr_train::signals::Interrupted>() {
                Some(i) => ExitCode::from(i.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

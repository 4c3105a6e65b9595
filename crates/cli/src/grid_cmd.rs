//! `protoclr grid …`: experiment grids over `protoclr train` (see the `protoclr_grid` crate).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use protoclr_grid::cache::{CellState, Results};
use protoclr_grid::confirm::{self, Made, StageState};
use protoclr_grid::runner::{self, RunOptions};
use protoclr_grid::slurm::{self, SlurmOptions};
use protoclr_grid::spec::Experiment;
use protoclr_grid::{display, Backend, Plan, Stage};
use serde_norway::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// `--profile`: a plain name (it becomes part of file names in the results folder), checked with
/// the rule experiment files use (`protoclr_formats::check_plain_name`).
pub fn profile_name(s: &str) -> std::result::Result<String, String> {
    protoclr_formats::check_plain_name("profile", s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// Where results and data are.
#[derive(Args, Debug, Clone)]
pub struct Folders {
    /// Results folder (cells/, checkpoints/, locks/, index CSVs).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Folder holding cifar-10-batches-bin/ and/or cifar-100-binary/ (default: $PROTOCLR_DATA);
    /// its files enter the cell ids through the dataset fingerprint.
    #[arg(long, env = "PROTOCLR_DATA")]
    pub data_root: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum GridCommand {
    /// List the cells of an experiment: cached or new, and an estimate of the time left.
    Plan {
        /// Experiment file (experiments/*.yaml).
        file: PathBuf,
        #[arg(long, default_value = "cpu", value_parser = profile_name)]
        profile: String,
        /// Workers the estimate assumes.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[command(flatten)]
        folders: Folders,
    },
    /// Run the pending cells on local workers (rerun to resume after a stop or a crash).
    Run {
        file: PathBuf,
        #[arg(long, default_value = "cpu", value_parser = profile_name)]
        profile: String,
        /// Cells trained at the same time.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Threads of each cell's training process (default: cores / workers).
        #[arg(long)]
        cell_threads: Option<usize>,
        /// Run failed and diverged cells again.
        #[arg(long)]
        retry_failed: bool,
        /// Plain log lines instead of progress bars.
        #[arg(long)]
        no_progress: bool,
        #[command(flatten)]
        folders: Folders,
    },
    /// Run one cell (what a Slurm array task runs).
    RunCell {
        file: PathBuf,
        #[arg(long, default_value = "cpu", value_parser = profile_name)]
        profile: String,
        /// Index into --list (a Slurm job's frozen list of pending cells), else into the
        /// experiment's cells in plan order.
        #[arg(long)]
        index: usize,
        /// The job's list of cell ids, one a line (written by `grid slurm`).
        #[arg(long)]
        list: Option<PathBuf>,
        /// Threads of the training process (default: $SLURM_CPUS_PER_TASK, else all cores).
        #[arg(long)]
        cell_threads: Option<usize>,
        #[arg(long)]
        retry_failed: bool,
        #[command(flatten)]
        folders: Folders,
    },
    /// Cell counts per profile; with --profile the cell table. Rewrites the index CSVs.
    Status {
        file: PathBuf,
        /// One profile (default: every profile of the file).
        #[arg(long, value_parser = profile_name)]
        profile: Option<String>,
        #[command(flatten)]
        folders: Folders,
    },
    /// Remove cache entries of an experiment's cells (cells being run are left alone).
    Clean {
        file: PathBuf,
        /// One profile (default: every profile of the file).
        #[arg(long, value_parser = profile_name)]
        profile: Option<String>,
        /// Failed cells (entry and checkpoints).
        #[arg(long)]
        failed: bool,
        /// Diverged cells (entry and checkpoints).
        #[arg(long)]
        diverged: bool,
        /// Checkpoints of done cells.
        #[arg(long)]
        checkpoints: bool,
        /// Every cell of the experiment (entries and checkpoints; shared cells included).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        folders: Folders,
    },
    /// Write an sbatch job-array script with one task per pending cell, and optionally submit it.
    Slurm {
        file: PathBuf,
        #[arg(long, default_value = "cpu", value_parser = profile_name)]
        profile: String,
        #[arg(long)]
        partition: Option<String>,
        /// GPUs per task (`--gres=gpu:N`; 0: none).
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        /// CPUs per task (also the training threads).
        #[arg(long, default_value_t = 4)]
        cpus: u32,
        /// Time limit per task.
        #[arg(long, default_value = "24:00:00")]
        time: String,
        /// Memory per task.
        #[arg(long, default_value = "16G")]
        mem: String,
        /// At most this many tasks at once.
        #[arg(long)]
        max_parallel: Option<usize>,
        /// Extra `#SBATCH` option, e.g. `--sbatch-arg=--account=abc` (repeatable).
        #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
        sbatch_args: Vec<String>,
        /// Include failed and diverged cells.
        #[arg(long)]
        retry_failed: bool,
        /// Submit the script with sbatch.
        #[arg(long)]
        submit: bool,
        /// The sbatch command.
        #[arg(long, default_value = "sbatch")]
        sbatch: String,
        #[command(flatten)]
        folders: Folders,
    },
}

/// The real backend: `protoclr_train`'s config resolution and dataset fingerprint, and this
/// binary's `train` subcommand for each cell.
pub struct TrainBackend {
    exe: PathBuf,
    data_root: Option<PathBuf>,
    /// `--device` for the training processes (None: theirs, i.e. `$PROTOCLR_DEVICE` or cpu).
    device: Option<String>,
    fingerprints: Mutex<HashMap<String, String>>,
}

impl TrainBackend {
    pub fn new(data_root: Option<PathBuf>, device: Option<String>) -> Result<TrainBackend> {
        if let Some(d) = &device {
            protoclr_train::device::check(d)?;
        }
        // The running image, so that every cell of this grid runs the binary the grid started
        // with, even after the file is replaced (see `running_executable`).
        let exe =
            protoclr_formats::fsutil::running_executable().context("cannot find the protoclr binary")?;
        let data_root = data_root.map(|d| absolute(&d));
        Ok(TrainBackend {
            exe,
            data_root,
            device,
            fingerprints: Mutex::new(HashMap::new()),
        })
    }
}

impl Backend for TrainBackend {
    fn resolve(&self, partial: Value, origin: &str) -> Result<Value> {
        // Through the config's own YAML text, so that f32 fields read as written (0.4, not
        // 0.4000000059604645) in the index and in the hash.
        let resolved = protoclr_train::config::resolve_value(partial, origin)?;
        let text = protoclr_train::config::from_value(resolved, origin)?.to_yaml();
        Ok(serde_norway::from_str(&text)?)
    }

    fn config_text(&self, resolved: &Value) -> Result<String> {
        // Exactly what `protoclr train` writes (it refuses a run folder holding another text).
        Ok(protoclr_train::config::from_value(resolved.clone(), "grid cell")?.to_yaml())
    }

    fn fingerprint(&self, resolved: &Value) -> Result<String> {
        let data: protoclr_train::config::DataConfig = serde_norway::from_value(
            resolved
                .get("data")
                .cloned()
                .context("the resolved config has no data section")?,
        )?;
        let key = protoclr_train::data::dataset_key(&data);
        if let Some(fp) = self.fingerprints.lock().unwrap().get(&key) {
            return Ok(fp.clone());
        }
        let root = self.data_root.as_deref().context(
            "no dataset root: cell ids include the dataset fingerprint; pass --data-root DIR or set \
             PROTOCLR_DATA to the folder holding cifar-10-batches-bin/",
        )?;
        let fp = protoclr_train::data::dataset_fingerprint(&data, root)?;
        self.fingerprints.lock().unwrap().insert(key, fp.clone());
        Ok(fp)
    }

    fn numerics_version(&self) -> u32 {
        // The binary that trains the cells is this one (`train_command`), so its constant.
        protoclr_train::NUMERICS_VERSION
    }

    fn train_command(&self, cell_dir: &Path, checkpoint_dir: &Path, threads: usize) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--threads")
            .arg(threads.to_string())
            .arg("train")
            .arg("--config")
            .arg(cell_dir.join("config.yaml"))
            .arg("--out")
            .arg(cell_dir)
            .arg("--checkpoint-dir")
            .arg(checkpoint_dir)
            .args(["--progress", "jsonl"]);
        // Beside the cells' checkpoint folders (not committed): the random-init references,
        // one per seed and evaluation setting, shared by the cells of a grid.
        if let Some(root) = checkpoint_dir.parent() {
            c.arg("--reference-cache").arg(root.join("references"));
        }
        if let Some(root) = &self.data_root {
            c.arg("--data-root").arg(root);
        }
        if let Some(d) = &self.device {
            c.arg("--device").arg(d);
        }
        c
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The confirmation stage of a grid plan, when the experiment has one and its selection exists
/// (or can be made now: with `write`, it is written). Says where the stage stands with `say`.
fn confirm_stage(
    plan: &Plan,
    results: &Results,
    backend: &dyn Backend,
    write: bool,
    say: &dyn Fn(String),
) -> Result<Option<Plan>> {
    let path = results.selection_path(&plan.experiment.name, &plan.profile);
    match confirm::stage(plan, results, backend, write)? {
        None => Ok(None),
        Some(StageState::Waiting {
            unfinished,
            failed,
            stale,
        }) => {
            say(confirm::waiting_line(plan, unfinished, failed, stale.as_deref()));
            Ok(None)
        }
        Some(StageState::Ready {
            plan: stage,
            selection,
            made,
        }) => {
            let how = match made {
                Made::Reused => format!("selection {}", path.display()),
                Made::New if write => format!("selected now, written to {}", path.display()),
                Made::New => "selected now from the finished grid (written by `grid run`)".to_string(),
                Made::Replaced(why) => {
                    format!("selected again, replacing the stale {} ({why})", path.display())
                }
            };
            say(format!("{} — {how}", confirm::selection_line(&selection)));
            Ok(Some(*stage))
        }
    }
}

/// [`confirm_stage`] for commands that only show or clean: an error (e.g. a grid cell without the
/// selection metric) is said, not fatal.
fn confirm_stage_or_say(
    plan: &Plan,
    results: &Results,
    backend: &dyn Backend,
    write: bool,
    say: &dyn Fn(String),
) -> Option<Plan> {
    confirm_stage(plan, results, backend, write, say).unwrap_or_else(|e| {
        say(format!("confirmation stage: {e:#}"));
        None
    })
}

fn load_plan(file: &Path, profile: &str, backend: &dyn Backend) -> Result<Plan> {
    let exp = Experiment::load(file)?;
    Plan::build(&exp, profile, backend)
}

/// Runs a `protoclr grid` subcommand.
/// Runs a `protoclr grid` subcommand; `device` is the global `--device`, passed on to the
/// training processes (and written into Slurm scripts).
pub fn run(cmd: GridCommand, device: Option<String>) -> Result<()> {
    match cmd {
        GridCommand::Plan {
            file,
            profile,
            workers,
            folders,
        } => {
            let backend = TrainBackend::new(folders.data_root, device.clone())?;
            let plan = load_plan(&file, &profile, &backend)?;
            let results = Results::new(&folders.results);
            let c = display::counts(&plan, &results);
            print!("{}", display::cell_table(&plan, &results));
            println!("{}", display::counts_line(&plan, &c));
            println!("{}", display::eta_line(&c, workers));
            if let Some(stage) = confirm_stage_or_say(&plan, &results, &backend, false, &|l| println!("{l}"))
            {
                let c = display::counts(&stage, &results);
                print!("{}", display::cell_table(&stage, &results));
                println!("{}", display::counts_line(&stage, &c));
                println!("{}", display::eta_line(&c, workers));
            } else if let Some(spec) = &plan.experiment.confirm {
                println!(
                    "confirmation stage: after the grid, the best configuration on `{}` and the reference, on seeds {:?} ({} cells)",
                    spec.metric,
                    spec.seeds,
                    2 * spec.seeds.len()
                );
            }
            Ok(())
        }
        GridCommand::Run {
            file,
            profile,
            workers,
            cell_threads,
            retry_failed,
            no_progress,
            folders,
        } => {
            let backend = TrainBackend::new(folders.data_root, device.clone())?;
            let plan = load_plan(&file, &profile, &backend)?;
            let results = Results::new(&folders.results);
            let workers = workers.max(1);
            let mut opts = RunOptions::new(workers, cell_threads.unwrap_or((cores() / workers).max(1)));
            opts.retry_failed = retry_failed;
            opts.progress = !no_progress;
            protoclr_grid::install_stop_handler(opts.stop.clone())?;
            let mut failures = Vec::new();
            let mut current = Some(plan.clone());
            // The grid, then (once its selection exists) the confirmation stage.
            while let Some(p) = current.take() {
                let s = runner::run(&p, &results, &backend, &opts)?;
                let stage = if p.stage == Stage::Confirm {
                    " (confirmation stage)"
                } else {
                    ""
                };
                eprintln!(
                    "{}.{}{stage}: {} cells — {} finished before, {} done, {} diverged, {} failed ({} of them in earlier runs), {} interrupted, {} finished by another runner; index {}",
                    p.experiment.name,
                    profile,
                    s.cells,
                    s.cached,
                    s.done,
                    s.diverged,
                    s.failed,
                    s.failed_earlier,
                    s.interrupted,
                    s.elsewhere,
                    s.index.display()
                );
                if s.stopped || s.interrupted > 0 {
                    // Also cells whose training process alone was stopped (SIGTERM/SIGINT to it).
                    eprintln!("stopped: rerun the same command to resume (checkpoints are kept)");
                    std::process::exit(130);
                }
                failures.extend(s.failures);
                if p.stage == Stage::Grid {
                    current = confirm_stage(&p, &results, &backend, true, &|l| eprintln!("{l}"))?;
                }
            }
            if !failures.is_empty() {
                bail!(
                    "{} cell(s) failed (logs in {}/cells/<id>/train.log; `--retry-failed` runs them again):\n  {}",
                    failures.len(),
                    folders.results.display(),
                    failures.join("\n  ")
                );
            }
            Ok(())
        }
        GridCommand::RunCell {
            file,
            profile,
            index,
            list,
            cell_threads,
            retry_failed,
            folders,
        } => {
            let backend = TrainBackend::new(folders.data_root, device.clone())?;
            let plan = load_plan(&file, &profile, &backend)?;
            let results = Results::new(&folders.results);
            // Confirmation cells come after the grid's (ids in a job's list, or indices).
            let stage = match &list {
                Some(list)
                    if !plan
                        .cells
                        .iter()
                        .any(|c| Some(&c.id) == slurm::list_entry(list, index).ok().as_ref()) =>
                {
                    confirm_stage(&plan, &results, &backend, true, &|l| eprintln!("{l}"))?
                }
                None if index >= plan.cells.len() => {
                    confirm_stage(&plan, &results, &backend, true, &|l| eprintln!("{l}"))?
                }
                _ => None,
            };
            let all: Vec<&protoclr_grid::Cell> = plan
                .cells
                .iter()
                .chain(stage.iter().flat_map(|s| s.cells.iter()))
                .collect();
            let cell = match &list {
                Some(list) => {
                    let id = slurm::list_entry(list, index)?;
                    all.iter().copied().find(|c| c.id == id).with_context(|| {
                        format!(
                            "cell {id} (line {index} of {}) is not a cell of {} profile {profile} any more: \
                             the experiment, the code's cell format or the dataset changed since the job was written",
                            list.display(),
                            file.display()
                        )
                    })?
                }
                None => all.get(index).copied().with_context(|| {
                    format!(
                        "{} profile {profile} has {} cells{}; no index {index}",
                        file.display(),
                        all.len(),
                        if plan.experiment.confirm.is_some() && stage.is_none() {
                            " (the confirmation stage's cells are numbered after the grid's once its selection exists)"
                        } else {
                            ""
                        }
                    )
                })?,
            };
            let plan = match &stage {
                Some(s) if cell.arm.is_some() => s,
                _ => &plan,
            };
            let threads = cell_threads
                .or_else(|| {
                    std::env::var("SLURM_CPUS_PER_TASK")
                        .ok()
                        .and_then(|s| s.parse().ok())
                })
                .unwrap_or_else(cores);
            let mut opts = RunOptions::new(1, threads);
            opts.retry_failed = retry_failed;
            opts.progress = false;
            protoclr_grid::install_stop_handler(opts.stop.clone())?;
            match runner::run_cell(plan, cell, &results, &backend, &opts)? {
                CellState::Done(_) | CellState::Diverged(_) => Ok(()),
                CellState::Failed(st) => bail!("cell {} failed: {}", cell.id, st.error.unwrap_or_default()),
                other => {
                    eprintln!("cell {} not finished ({})", cell.id, other.word());
                    std::process::exit(130);
                }
            }
        }
        GridCommand::Status {
            file,
            profile,
            folders,
        } => {
            let backend = TrainBackend::new(folders.data_root, device.clone())?;
            let exp = Experiment::load(&file)?;
            let results = Results::new(&folders.results);
            let profiles: Vec<String> = match profile {
                Some(p) => vec![p],
                None => exp.profiles.iter().map(|p| p.name.clone()).collect(),
            };
            let detailed = profiles.len() == 1;
            let mut errors = 0;
            for p in &profiles {
                match Plan::build(&exp, p, &backend) {
                    Ok(plan) => {
                        let c = display::counts(&plan, &results);
                        if detailed {
                            print!("{}", display::cell_table(&plan, &results));
                        }
                        println!("{}", display::counts_line(&plan, &c));
                        if detailed {
                            println!("{}", display::eta_line(&c, 1));
                        }
                        if c.done + c.diverged + c.failed + c.running > 0
                            || results.index_path(&exp.name, p).exists()
                        {
                            let path = results.write_index(&plan)?;
                            println!("index: {}", path.display());
                        }
                        if let Some(stage) =
                            confirm_stage_or_say(&plan, &results, &backend, true, &|l| println!("{l}"))
                        {
                            let c = display::counts(&stage, &results);
                            if detailed {
                                print!("{}", display::cell_table(&stage, &results));
                            }
                            println!("{}", display::counts_line(&stage, &c));
                            let path = results.write_index(&stage)?;
                            println!("index: {}", path.display());
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        println!("{} (profile {p}): cannot plan: {e:#}", exp.name);
                    }
                }
            }
            if errors == profiles.len() {
                bail!("no profile of {} could be planned", file.display());
            }
            Ok(())
        }
        GridCommand::Clean {
            file,
            profile,
            failed,
            diverged,
            checkpoints,
            all,
            folders,
        } => {
            if !(failed || diverged || checkpoints || all) {
                bail!("say what to remove: --failed, --diverged, --checkpoints or --all");
            }
            let backend = TrainBackend::new(folders.data_root, device.clone())?;
            let exp = Experiment::load(&file)?;
            let results = Results::new(&folders.results);
            let profiles: Vec<String> = match profile {
                Some(p) => vec![p],
                None => exp.profiles.iter().map(|p| p.name.clone()).collect(),
            };
            let (mut entries, mut ckpts, mut busy) = (0, 0, 0);
            for p in &profiles {
                let plan = match Plan::build(&exp, p, &backend) {
                    Ok(plan) => plan,
                    Err(e) => {
                        eprintln!("{} (profile {p}): skipped, cannot plan: {e:#}", exp.name);
                        continue;
                    }
                };
                let stage = confirm_stage_or_say(&plan, &results, &backend, false, &|l| eprintln!("{l}"));
                let mut cells = plan.unique();
                cells.extend(stage.iter().flat_map(|s| s.unique()));
                for cell in cells {
                    let state = results.state(&cell.id);
                    if let CellState::Running(_) = state {
                        busy += 1;
                        continue;
                    }
                    let remove_entry = all
                        || (failed && matches!(state, CellState::Failed(_)))
                        || (diverged && matches!(state, CellState::Diverged(_)));
                    let remove_ckpt = remove_entry || (checkpoints && matches!(state, CellState::Done(_)));
                    let dir = results.cell_dir(&cell.id);
                    if remove_entry && dir.exists() {
                        std::fs::remove_dir_all(&dir)
                            .with_context(|| format!("cannot remove {}", dir.display()))?;
                        entries += 1;
                    }
                    let ck = results.checkpoint_dir(&cell.id);
                    if remove_ckpt && ck.exists() {
                        std::fs::remove_dir_all(&ck)
                            .with_context(|| format!("cannot remove {}", ck.display()))?;
                        ckpts += 1;
                    }
                }
                if results.index_path(&exp.name, p).exists() {
                    results.write_index(&plan)?;
                }
                if let Some(stage) = &stage {
                    if results.plan_index_path(stage).exists() {
                        results.write_index(stage)?;
                    }
                }
            }
            println!("removed {entries} cell entries and {ckpts} checkpoint folders; {busy} running cells left alone");
            Ok(())
        }
        GridCommand::Slurm {
            file,
            profile,
            partition,
            gpus,
            cpus,
            time,
            mem,
            max_parallel,
            sbatch_args,
            retry_failed,
            submit,
            sbatch,
            folders,
        } => {
            let backend = TrainBackend::new(folders.data_root.clone(), device.clone())?;
            let plan = load_plan(&file, &profile, &backend)?;
            std::fs::create_dir_all(&folders.results)
                .with_context(|| format!("cannot create {}", folders.results.display()))?;
            let results = Results::new(folders.results.canonicalize()?);
            let opts = SlurmOptions {
                protoclr: std::env::current_exe()?,
                file: file
                    .canonicalize()
                    .with_context(|| format!("cannot find {}", file.display()))?,
                profile: profile.clone(),
                results: results.root.clone(),
                data_root: folders.data_root.as_deref().map(absolute),
                partition,
                gpus,
                cpus: cpus.max(1),
                time,
                mem,
                max_parallel,
                retry_failed,
                extra: sbatch_args,
                device: device.clone(),
            };
            results.write_index(&plan)?;
            // One stage a job: the grid while it has pending cells, then the confirmation stage
            // (its cells exist only once the grid is finished and the selection is made).
            let mut job = slurm::write_job(&plan, &results, &opts)?;
            if job.is_some() {
                if let Some(spec) = &plan.experiment.confirm {
                    println!(
                        "{}.{profile}: this job runs the grid; its confirmation stage ({} cells on seeds {:?}) \
                         can be submitted once the grid is finished: rerun this `grid slurm` command then",
                        plan.experiment.name,
                        2 * spec.seeds.len(),
                        spec.seeds
                    );
                }
            } else if let Some(stage) = confirm_stage(&plan, &results, &backend, true, &|l| println!("{l}"))?
            {
                results.write_index(&stage)?;
                job = slurm::write_job(&stage, &results, &opts)?;
            }
            let Some(job) = job else {
                println!(
                    "{}.{profile}: no pending cell, nothing to submit",
                    plan.experiment.name
                );
                return Ok(());
            };
            println!(
                "wrote {} ({} array tasks; cell list {})",
                job.script.display(),
                job.tasks,
                job.list.display()
            );
            if submit {
                let id = slurm::submit(&job.script, &sbatch)?;
                println!(
                    "submitted job {id}; `protoclr grid status {} --profile {profile}` shows progress",
                    file.display()
                );
            } else {
                println!("submit with: sbatch {}", job.script.display());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed cell trained by the current numerics is found under its id: its
    /// `config.yaml` resolved by this backend (which reads it into `protoclr_train`'s typed
    /// config and writes it back out) and hashed with the dataset fingerprint its run recorded
    /// gives the name of its folder. A change to the config types that altered a resolved
    /// config would move these cells to other ids (and retrain them).
    #[test]
    fn committed_cells_are_found_under_their_ids() {
        let cells = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results/cells");
        let backend = TrainBackend::new(None, None).unwrap();
        let mut checked = 0;
        for entry in std::fs::read_dir(&cells).unwrap() {
            let dir = entry.unwrap().path();
            let Ok(metrics) = std::fs::read_to_string(dir.join("metrics.json")) else {
                continue;
            };
            let m: serde_json::Value = serde_json::from_str(&metrics).unwrap();
            if m["numerics_version"] != protoclr_train::NUMERICS_VERSION {
                continue; // unversioned cells: by design no longer under the current ids
            }
            let text = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
            let resolved = backend
                .resolve(serde_norway::from_str(&text).unwrap(), "committed cell")
                .unwrap();
            let fp = m["dataset_fingerprint"].as_str().unwrap();
            let id = protoclr_grid::plan::cell_id(&resolved, fp, backend.numerics_version());
            assert_eq!(
                dir.file_name().unwrap().to_str().unwrap(),
                id,
                "{}",
                dir.display()
            );
            assert_eq!(backend.config_text(&resolved).unwrap(), text, "{}", dir.display());
            checked += 1;
        }
        assert!(
            checked >= 12,
            "only {checked} committed cells of the current numerics"
        );
    }
}

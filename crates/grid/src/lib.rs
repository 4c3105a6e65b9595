//! Experiment grids: declarative YAML files expanded into content-addressed training cells, a
//! crash-safe cache of their results, local parallel workers and Slurm job arrays.
//!
//! # Experiment files
//! One YAML file per figure or table (`experiments/*.yaml`). YAML is read with
//! [`serde_norway`], the maintained drop-in fork of `serde_yaml` whose errors carry a line and a
//! column; every error about an experiment file names the file, the line and the column
//! (`FILE:LINE:COLUMN: message`), also for errors found after parsing (the key is located in the
//! text by [`locate`]). The keys:
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `name` | string | experiment name: the index is `results/<name>.<profile>.csv` |
//! | `description` | string | free text |
//! | `base` | mapping, path, or list of them | partial training config shared by all cells; paths are relative to the experiment file |
//! | `profiles` | mapping name → mapping | at least `paper` and `cpu`; each overrides keys of the base. Inside a profile the key `base` names files (or inline mappings) merged first |
//! | `grid` | mapping dotted key → non-empty list | cartesian product |
//! | `zip` | list of mappings dotted key → non-empty list | each group varies its keys together (equal lengths); the optional `label` list names the group's entries |
//! | `seeds` | non-empty list of integers | sets the top-level `seed` key; innermost loop |
//! | `exclude` | list of mappings | a cell whose values equal every entry of one mapping is skipped (keys: varied keys, `label`, `seed`); an entry matching no cell is an error |
//! | `report` | mapping | what `protoclr report` builds from the experiment, see [`spec::ReportSpec`] |
//! | `confirm` | mapping | optional pre-registered confirmation stage, see below and [`confirm`] |
//!
//! Keys anywhere in a config mapping may be dotted (`loss.alpha: 0.5`) or nested. Unknown keys,
//! wrong types, empty lists, zip groups of unequal lengths, a missing `paper`/`cpu` profile and
//! keys varied twice are errors. Cells are produced in a fixed order: grid keys in file order
//! (first key slowest), then zip groups, then seeds.
//!
//! # Confirmation stage
//! ```yaml
//! confirm:
//!   select:
//!     metric: val_linear_top1     # flat key of metrics.json `eval`
//!     maximize: true              # default; false: lowest is best
//!     exclude: [{loss.alpha: 1}]  # optional: configurations that may not be selected
//!   reference: {loss.alpha: 1, loss.lambda: 1}  # exactly one configuration, never a candidate
//!   seeds: [100, 101, 102, 103, 104, 105, 106, 107]  # ≥ 2, distinct, disjoint from `seeds`
//! ```
//! Once every grid cell is finished, the grid selects the configuration with the best mean of
//! `eval.<metric>` over the grid's seeds (ties: first in expansion order), writes
//! `results/<name>.<profile>.selection.json`, and expands the candidate and the reference on the
//! fresh seeds into ordinary cached cells, listed in `results/<name>.<profile>.confirm.csv` and
//! run by the same `grid run` after the grid. `grid plan`/`status` show them; `grid slurm`
//! submits the grid while it has pending cells and the confirmation cells on the next call once
//! it is finished. A written selection is reused; if the grid's cell ids or the rule change it is
//! stale and made again once the new grid is finished. The reference and the exclusions are
//! checked against the grid when the plan is built; seeds shared with the grid, a missing metric
//! and the like are errors at their line. Details in [`confirm`].
//!
//! # Cells
//! A cell is a fully resolved training config (the [`Backend`] fills in every default). Its id is
//! the SHA-256 of [`CELL_FORMAT_VERSION`], the numerics version of the training code
//! ([`Backend::numerics_version`]), the canonical serialisation of the resolved config
//! (sorted keys, numbers normalised so that `1`, `1.0` and `1e0` are equal, see
//! [`value::canonical`]) and the dataset fingerprint ([`plan::cell_id`]). The same cell in two
//! experiments is one cache entry. A cache entry is tied to the numerics that trained it: after a
//! change of the training numerics (a new kernel summation order, another initialiser, …) every
//! id changes, the old cells are no longer found and the grid retrains them, so no figure mixes
//! cells of two numerics.
//!
//! # Results folder
//! `results/cells/<id>/` holds `config.yaml`, `metrics.json`, `train.log` and `status.json`
//! (status, SHA-256 of `metrics.json` and `config.yaml`); checkpoints go to
//! `results/checkpoints/<id>/`, per-cell locks to `results/locks/<id>.lock` (both git-ignored).
//! Every file the grid writes is written atomically (temporary file, fsync, rename, fsync of the
//! folder); a runner removes the temporary files of writers that were killed
//! ([`protoclr_formats::temps`]). A cell is done only when `status.json` says so and the checksums of `metrics.json`
//! and `config.yaml` match; anything else is redone. That rule is `protoclr_formats::CellRecord`,
//! shared with the report, so the report reads exactly the cells the grid calls done. The index `results/<experiment>.<profile>.csv` follows
//! `docs/formats.md`.
//!
//! # Locks
//! A lock file is created with `O_EXCL` and holds the owner's pid, process start time, host name
//! and the pid of its training child. A lock whose owner and child are dead (same host; zombies
//! count as dead, a reused pid is recognised by its start time) is taken over; a lock from another
//! host is taken over when its heartbeat (the file's mtime, refreshed every 30 s) is older than
//! [`lock::FOREIGN_STALE_AFTER`]. Takeovers are serialised by a second `O_EXCL` file.
//!
//! # Running
//! Cells run as child processes built by [`Backend::train_command`] (for protoclr:
//! `protoclr train --config <cell>/config.yaml --out <cell> --checkpoint-dir
//! results/checkpoints/<id> --threads T --progress jsonl`), each in its own process group and
//! killed with the runner (`PR_SET_PDEATHSIG`). Their JSON progress lines drive the progress bars;
//! their output goes to `train.log`. Exit code 0 is done, 3 diverged, 130/143 (the child stopped by
//! SIGINT/SIGTERM after checkpointing) interrupted, anything else failed; a failed or diverged
//! cell is recorded and the grid goes on. A stop request (Ctrl-C, SIGTERM)
//! sends SIGTERM to the children (SIGKILL after a grace period) and leaves their checkpoints, so a
//! rerun resumes mid-cell.

pub mod cache;
pub mod confirm;
pub mod display;
pub mod expand;
/// Atomic writes (one definition, shared with the report and defined in `protoclr_formats`).
pub use protoclr_formats::fsutil;
pub mod locate;
pub mod lock;
pub mod plan;
pub mod runner;
pub mod slurm;
pub mod spec;
pub mod value;
pub use protoclr_formats::yamlscan;

use serde_norway::Value;
use std::path::Path;
use std::process::Command;

pub use cache::{CellState, Results};
pub use plan::{Arm, Cell, Plan, Stage};
pub use runner::{RunOptions, RunSummary};

/// Bumped whenever the meaning of a resolved config changes (training semantics, metrics), so
/// that old cache entries are no longer found under the new ids.
pub const CELL_FORMAT_VERSION: u32 = 1;

/// What the grid needs from the training side: config resolution, the dataset fingerprint, the
/// numerics version and the command that trains one cell.
pub trait Backend: Sync {
    /// Turns a partial config into the canonical, fully resolved and validated one; errors name
    /// the offending key. `origin` says where the partial config comes from.
    fn resolve(&self, partial: Value, origin: &str) -> anyhow::Result<Value>;
    /// A fingerprint (hex) of the dataset the resolved config trains on.
    fn fingerprint(&self, resolved: &Value) -> anyhow::Result<String>;
    /// The version of the numerics the training command computes with (for protoclr,
    /// `protoclr_train::NUMERICS_VERSION`): it enters every cell id, so that cells trained by
    /// other numerics are not reused.
    fn numerics_version(&self) -> u32;
    /// The text of `<cell>/config.yaml` (what the training command reads and may compare with
    /// its own serialisation of the config).
    fn config_text(&self, resolved: &Value) -> anyhow::Result<String> {
        Ok(serde_norway::to_string(resolved)?)
    }
    /// The command that trains the cell whose resolved config is `cell_dir/config.yaml`, writing
    /// `metrics.json` into `cell_dir`, checkpoints into `checkpoint_dir`, JSON progress lines
    /// (`docs/formats.md`) on stdout, with `threads` compute threads.
    fn train_command(&self, cell_dir: &Path, checkpoint_dir: &Path, threads: usize) -> Command;
}

/// Installs a Ctrl-C / SIGTERM / SIGHUP handler that sets `stop` (the runner then stops its
/// children and returns). A second signal exits the process at once with status 130.
pub fn install_stop_handler(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting now (children are killed with the runner)");
            std::process::exit(130);
        }
        eprintln!("interrupt: stopping the running cells (checkpoints are kept; rerun to resume) …");
    })?;
    Ok(())
}

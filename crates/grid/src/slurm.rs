//! Slurm job arrays: one array task per pending cell, run by `protoclr grid run-cell`.
//!
//! `write_job` freezes the list of pending cells in `cells.txt` beside the script, so that the
//! array index of a task names the same cell however the results folder changes meanwhile.

use crate::cache::{CellState, Results};
use crate::fsutil::atomic_write;
use crate::plan::Plan;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Resources and paths of the job.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The protoclr binary the tasks run (absolute).
    pub protoclr: PathBuf,
    /// The experiment file (absolute).
    pub file: PathBuf,
    pub profile: String,
    /// The shared results folder (absolute).
    pub results: PathBuf,
    /// Passed to the tasks as `--data-root` when set.
    pub data_root: Option<PathBuf>,
    pub partition: Option<String>,
    pub gpus: u32,
    pub cpus: u32,
    /// `--time`, e.g. `04:00:00`.
    pub time: String,
    /// `--mem`, e.g. `16G`.
    pub mem: String,
    /// At most this many tasks at once (`--array=0-N%max`).
    pub max_parallel: Option<usize>,
    /// Include failed and diverged cells (they are run again).
    pub retry_failed: bool,
    /// Further `#SBATCH` lines, e.g. `--account=abc`.
    pub extra: Vec<String>,
    /// Passed to the tasks as `--device` when set (e.g. `cuda:0` with `gpus: 1`: Slurm's
    /// `CUDA_VISIBLE_DEVICES` makes the task's GPU device 0).
    pub device: Option<String>,
}

/// A written job.
#[derive(Debug, Clone)]
pub struct SlurmJob {
    pub dir: PathBuf,
    pub script: PathBuf,
    /// One cell id a line; task i runs line i.
    pub list: PathBuf,
    pub tasks: usize,
}

/// Quotes a string for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Writes the job for the pending cells of `plan` under `results/slurm/`; None when nothing is
/// pending.
pub fn write_job(plan: &Plan, results: &Results, opts: &SlurmOptions) -> Result<Option<SlurmJob>> {
    let pending: Vec<&str> = plan
        .unique()
        .into_iter()
        .filter(|c| match results.state(&c.id) {
            CellState::Done(_) | CellState::Running(_) => false,
            CellState::Failed(_) | CellState::Diverged(_) => opts.retry_failed,
            CellState::Pending(_) => true,
        })
        .map(|c| c.id.as_str())
        .collect();
    if pending.is_empty() {
        return Ok(None);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let dir = results
        .root
        .join("slurm")
        .join(format!("{}.{}.{stamp}", plan.experiment.name, plan.profile));
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let list = dir.join("cells.txt");
    atomic_write(&list, format!("{}\n", pending.join("\n")).as_bytes())?;
    let script = dir.join("job.sbatch");
    atomic_write(
        &script,
        script_text(plan, opts, &dir, &list, pending.len()).as_bytes(),
    )?;
    Ok(Some(SlurmJob {
        dir,
        script,
        list,
        tasks: pending.len(),
    }))
}

fn script_text(plan: &Plan, o: &SlurmOptions, dir: &Path, list: &Path, n: usize) -> String {
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let mut s = String::from("#!/bin/bash\n");
    s += &format!(
        "#SBATCH --job-name=protoclr-{}-{}\n",
        plan.experiment.name, plan.profile
    );
    match o.max_parallel {
        Some(m) => s += &format!("#SBATCH --array=0-{}%{m}\n", n - 1),
        None => s += &format!("#SBATCH --array=0-{}\n", n - 1),
    }
    if let Some(p) = &o.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if o.gpus > 0 {
        s += &format!("#SBATCH --gres=gpu:{}\n", o.gpus);
    }
    s += &format!("#SBATCH --cpus-per-task={}\n", o.cpus);
    s += &format!("#SBATCH --time={}\n", o.time);
    s += &format!("#SBATCH --mem={}\n", o.mem);
    s += &format!("#SBATCH --output={}/logs/%A_%a.out\n", dir.display());
    for e in &o.extra {
        s += &format!("#SBATCH {e}\n");
    }
    s += &format!(
        "# {} cells of {} (profile {}), frozen in {} when this script was written.\n",
        n,
        o.file.display(),
        o.profile,
        list.display()
    );
    s += "set -euo pipefail\n";
    let mut cmd = format!(
        "exec {} grid run-cell {} --profile {} --results {} --list {} --index \"$SLURM_ARRAY_TASK_ID\" --cell-threads \"${{SLURM_CPUS_PER_TASK:-{}}}\"",
        q(&o.protoclr),
        q(&o.file),
        sh_quote(&o.profile),
        q(&o.results),
        q(list),
        o.cpus
    );
    if let Some(d) = &o.data_root {
        cmd += &format!(" --data-root {}", q(d));
    }
    if o.retry_failed {
        cmd += " --retry-failed";
    }
    if let Some(d) = &o.device {
        cmd += &format!(" --device {}", sh_quote(d));
    }
    s += &cmd;
    s += "\n";
    s
}

/// Reads the frozen list of a job and returns the cell id of task `index`.
pub fn list_entry(list: &Path, index: usize) -> Result<String> {
    let text = std::fs::read_to_string(list).with_context(|| format!("cannot read {}", list.display()))?;
    let ids: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match ids.get(index) {
        Some(id) => Ok((*id).to_string()),
        None => bail!(
            "{}: index {index} out of range ({} cells)",
            list.display(),
            ids.len()
        ),
    }
}

/// Submits a script with `sbatch --parsable`; returns the job id.
pub fn submit(script: &Path, sbatch: &str) -> Result<String> {
    let out = Command::new(sbatch)
        .arg("--parsable")
        .arg(script)
        .output()
        .with_context(|| format!("cannot run `{sbatch}` (is Slurm installed?)"))?;
    if !out.status.success() {
        bail!(
            "{sbatch} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() {
        bail!("{sbatch} printed no job id");
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/a/b-c.yaml"), "/a/b-c.yaml");
        assert_eq!(sh_quote("it's here"), "'it'\\''s here'");
        assert_eq!(sh_quote(""), "''");
    }
}

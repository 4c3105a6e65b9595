//! Slurm job arrays: one array task per pending cell, run by `protoclr grid run-cell`.
//!
//! `write_job` freezes the list of pending cells in `cells.txt` beside the script, so that the
//! array index of a task names the same cell however the results folder changes meanwhile.
//!
//! Every value written into the script is checked first: a control character (a newline
//! above all) is refused, since it would end the line and start a new command or a line that
//! stops sbatch from reading the `#SBATCH` lines after it. Values are then quoted for the
//! reader of their line: [`sbatch_quote`] for `#SBATCH` lines (sbatch's own tokenizer), and
//! [`sh_quote`] for the shell line.

use crate::cache::{CellState, Results};
use crate::plan::Plan;
use anyhow::{bail, Context, Result};
use protoclr_formats::fsutil::atomic_write;
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
    /// Further sbatch arguments, one `#SBATCH` line each, e.g. `--account=abc` (each is one
    /// argument: a value with spaces is kept whole).
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

/// Quotes one argument of an `#SBATCH` line for sbatch's tokenizer (`_get_argument` in Slurm's
/// `src/sbatch/opt.c`): arguments are split at white space, an unquoted `#` starts a comment,
/// `"…"` groups, and `\` escapes the next character, inside quotes too. So: double quotes, with
/// `\` and `"` escaped. (A leading `:` is fatal to sbatch unless quoted.) The value must have no
/// control character ([`check_value`]).
pub fn sbatch_quote(s: &str) -> String {
    if !s.is_empty()
        && !s.starts_with(':')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Refuses a value for the script that holds a control character (a newline would end its line
/// and start another: an injected command, or a non-`#SBATCH` line that makes sbatch ignore the
/// `#SBATCH` lines after it). `what` names the option in the error.
pub fn check_value(what: &str, value: &str) -> Result<()> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        bail!("{what} {value:?} contains the control character {c:?}; it cannot go into a Slurm script");
    }
    Ok(())
}

/// Checks every value `script_text` writes (before anything is written).
fn check_values(experiment: &str, o: &SlurmOptions) -> Result<()> {
    check_value("the experiment name", experiment)?;
    check_value("--profile", &o.profile)?;
    if let Some(p) = &o.partition {
        check_value("--partition", p)?;
    }
    check_value("--time", &o.time)?;
    check_value("--mem", &o.mem)?;
    for e in &o.extra {
        check_value("--sbatch-arg", e)?;
    }
    if let Some(d) = &o.device {
        check_value("--device", d)?;
    }
    let paths = [
        ("the protoclr binary path", Some(&o.protoclr)),
        ("the experiment file path", Some(&o.file)),
        ("--results", Some(&o.results)),
        ("--data-root", o.data_root.as_ref()),
    ];
    for (what, p) in paths {
        if let Some(p) = p {
            let text = p
                .to_str()
                .with_context(|| format!("{what} {} is not valid UTF-8", p.display()))?;
            check_value(what, text)?;
        }
    }
    Ok(())
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
    check_values(&plan.experiment.name, opts)?;
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
    let text = script_text(&plan.experiment.name, opts, &dir, &list, pending.len())?;
    atomic_write(&list, format!("{}\n", pending.join("\n")).as_bytes())?;
    let script = dir.join("job.sbatch");
    atomic_write(&script, text.as_bytes())?;
    Ok(Some(SlurmJob {
        dir,
        script,
        list,
        tasks: pending.len(),
    }))
}

/// The text of `job.sbatch`: every `#SBATCH` line first (sbatch stops reading them at the first
/// line that is neither blank nor a comment), each argument quoted with [`sbatch_quote`]; then
/// the shell, whose words are quoted with [`sh_quote`].
fn script_text(experiment: &str, o: &SlurmOptions, dir: &Path, list: &Path, n: usize) -> Result<String> {
    check_values(experiment, o)?;
    for (what, p) in [("the job folder", dir), ("the cell list", list)] {
        check_value(what, &p.display().to_string())?;
    }
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let mut s = String::from("#!/bin/bash\n");
    let mut sbatch = |arg: String| s += &format!("#SBATCH {}\n", sbatch_quote(&arg));
    sbatch(format!("--job-name=protoclr-{experiment}-{}", o.profile));
    match o.max_parallel {
        Some(m) => sbatch(format!("--array=0-{}%{m}", n - 1)),
        None => sbatch(format!("--array=0-{}", n - 1)),
    }
    if let Some(p) = &o.partition {
        sbatch(format!("--partition={p}"));
    }
    if o.gpus > 0 {
        sbatch(format!("--gres=gpu:{}", o.gpus));
    }
    sbatch(format!("--cpus-per-task={}", o.cpus));
    sbatch(format!("--time={}", o.time));
    sbatch(format!("--mem={}", o.mem));
    sbatch(format!("--output={}/logs/%A_%a.out", dir.display()));
    for e in &o.extra {
        sbatch(e.clone());
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
    Ok(s)
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
        assert_eq!(sbatch_quote("--mem=16G"), "--mem=16G");
        assert_eq!(sbatch_quote("--output=/a b/%A.out"), "\"--output=/a b/%A.out\"");
        assert_eq!(sbatch_quote("--comment=x#y"), "\"--comment=x#y\"");
        assert_eq!(sbatch_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(sbatch_quote(":x"), "\":x\"");
    }

    #[test]
    fn control_characters_are_refused() {
        check_value("--mem", "16G").unwrap();
        for bad in ["debug\necho INJECTED", "a\rb", "a\tb", "a\u{1b}[0m"] {
            let e = check_value("--partition", bad).unwrap_err().to_string();
            assert!(
                e.starts_with("--partition ") && e.contains("control character"),
                "{e}"
            );
        }
    }
}

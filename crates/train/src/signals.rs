//! A training process and the outside world: SIGINT/SIGTERM stop a run cleanly, and progress
//! lines survive a stdout that was closed.
//!
//! **Stop signals.** [`install_stop_handler`] makes SIGINT and SIGTERM set a flag instead of
//! killing the process. [`crate::run::train`] looks at it before every training step and before
//! each evaluation, i.e. never in the middle of writing a checkpoint or `metrics.json`: the epoch
//! whose last step was done is checkpointed first, the partial epoch is dropped, and `train`
//! returns an [`Interrupted`] error (the CLI exits with 128 + the signal number: 130 for SIGINT,
//! 143 for SIGTERM). A rerun resumes from the checkpoint. A second signal exits at once (the
//! checkpoints are crash-safe, see [`crate::checkpoint`]).
//!
//! **Closed stdout.** Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE and
//! `println!` panics. [`stdout_line`] writes a line and, on the first failure, notes it once on
//! stderr and drops every later line: `protoclr train --progress jsonl | head -1` keeps training.
//! Commands that only print (status, plan, reports) instead call [`default_sigpipe`] and end
//! quietly, like any Unix filter, when the reader goes away.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicI32 = AtomicI32::new(0);
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(sig: libc::c_int) {
    // Only async-signal-safe work: an atomic swap, and _exit on the second signal.
    if STOP.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) }
    }
}

/// Routes SIGINT and SIGTERM to the stop flag (see the module docs).
pub fn install_stop_handler() -> anyhow::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; the
        // handler only touches an atomic.
        let ok = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0
        };
        if !ok {
            anyhow::bail!(
                "cannot install the handler of signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The stop signal received, if any.
pub fn stop_requested() -> Option<i32> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}

/// Restores the default action of SIGPIPE (the process ends quietly when its reader goes away).
/// For commands that only print; never for `train`.
pub fn default_sigpipe() {
    // SAFETY: resetting a signal's disposition to its default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Writes one line to stdout (flushed). After the first failure (a closed pipe), says so once on
/// stderr and drops this and every later line; returns whether the line was written.
pub fn stdout_line(line: &str) -> bool {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            if !STDOUT_GONE.swap(true, Ordering::Relaxed) {
                let _ = writeln!(
                    std::io::stderr(),
                    "note: stdout is closed ({e}); no more output lines, the work goes on"
                );
            }
            false
        }
    }
}

/// A run stopped by a signal; its checkpoints are kept and a rerun resumes.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped by {}: {epochs_done} of {epochs_planned} epochs done and checkpointed{}; rerun the same command to resume",
    signal_name(*.signal),
    .checkpoint.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default()
)]
pub struct Interrupted {
    pub signal: i32,
    pub epochs_done: usize,
    pub epochs_planned: usize,
    /// The newest checkpoint (None: nothing was checkpointed yet).
    pub checkpoint: Option<PathBuf>,
}

impl Interrupted {
    /// The exit status of the process: 128 + the signal number.
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

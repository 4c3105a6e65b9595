//! Atomic file writes (with the crash-test failpoints) and small facts about this process: one
//! definition for training outputs and checkpoints, the grid (status files, index CSVs, Slurm
//! scripts) and the report (figures, tables, notes).

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Writes `bytes` to `path` atomically: a temporary file in the same folder (named as
/// [`crate::temps`] says, so a killed writer's leftover is swept), fsync, rename over
/// `path`, fsync of the folder. Readers see the old content or the new one, never a part. An
/// error names the file and says once what went wrong (e.g. a full disk); the temporary file is
/// removed again.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_at(path, bytes, "write")
}

/// [`atomic_write`] whose steps are [`failpoint`]s named `tag`: half of the temporary file
/// written, temporary complete and fsynced, renamed into place.
pub fn atomic_write_at(path: &Path, bytes: &[u8], tag: &str) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = File::create(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))
        .and_then(|mut f| write_synced(&mut f, bytes, path, tag));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    failpoint(tag);
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()));
    }
    failpoint(tag);
    sync_dir(dir);
    Ok(())
}

/// Writes `bytes` into `f` and fsyncs it; errors name `path` (the file being written).
/// Under the failpoint `tag` the process may die half-way through the bytes.
pub fn write_synced(f: &mut File, bytes: &[u8], path: &Path, tag: &str) -> Result<()> {
    let half = bytes.len() / 2;
    let what = || format!("cannot write {}", path.display());
    f.write_all(&bytes[..half]).with_context(what)?;
    if failpoint_armed(tag) {
        let _ = f.flush();
        failpoint(tag);
    }
    f.write_all(&bytes[half..]).with_context(what)?;
    f.sync_all().with_context(what)
}

fn failpoint_spec() -> Option<(String, usize)> {
    let spec = std::env::var("PROTOCLR_FAILPOINT").ok()?;
    let (tag, n) = spec.split_once(':')?;
    Some((tag.to_string(), n.parse().ok()?))
}

fn failpoint_armed(tag: &str) -> bool {
    failpoint_spec().is_some_and(|(t, _)| t == tag)
}

/// Test hook for crash safety: with `PROTOCLR_FAILPOINT=<tag>:<n>` in the environment, the
/// `n`-th call of `failpoint(<tag>)` in this process kills it with SIGKILL (no unwinding, no
/// flushing: a crash at that instruction). [`atomic_write_at`] has three points (see there);
/// training's checkpoints add their own under the tag `ckpt` (`protoclr_train::checkpoint`).
/// Plain [`atomic_write`]s use the tag `write`.
pub fn failpoint(tag: &str) {
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let Some((t, n)) = failpoint_spec() else {
        return;
    };
    if t != tag {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == n {
        eprintln!("failpoint {tag}:{n}: killing the process");
        // SAFETY: plain signal delivery to ourselves.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// fsyncs a folder so that a rename in it is durable (best effort: some filesystems refuse).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown-host".into()
    }
}

/// A path that opens the image this process is running, for reading it or for starting it
/// again: `/proc/self/exe` where the kernel has it, else [`std::env::current_exe`].
///
/// `current_exe` answers the path the binary *was* started from. When that file is replaced
/// while the process runs (a rebuild, an `mv` of a new binary over it), Linux answers
/// "<path> (deleted)", a file that does not exist, and a run that hashes or restarts itself late
/// fails after hours of work. `/proc/self/exe` keeps naming the running image, deleted or not; a
/// child started through it runs the same binary as its parent.
pub fn running_executable() -> std::io::Result<std::path::PathBuf> {
    let proc = Path::new("/proc/self/exe");
    if fs::metadata(proc).is_ok() {
        return Ok(proc.to_path_buf());
    }
    std::env::current_exe()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sha256_file, sha256_hex};

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        assert_eq!(sha256_hex(b"two"), sha256_file(&p).unwrap());
    }

    #[test]
    fn a_full_disk_error_names_the_file_once() {
        // /dev/full fails every write with ENOSPC, like a full disk.
        let Ok(mut f) = File::options().write(true).open("/dev/full") else {
            return; // not Linux
        };
        let target = Path::new("/results/cells/x/metrics.json");
        let e = format!(
            "{:#}",
            write_synced(&mut f, &[7u8; 4096], target, "write").unwrap_err()
        );
        assert!(e.contains("cannot write /results/cells/x/metrics.json"), "{e}");
        assert_eq!(e.matches("No space left on device").count(), 1, "{e}");
    }
}

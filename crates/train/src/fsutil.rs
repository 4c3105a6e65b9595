//! Atomic file writes (temp file in the same folder, fsync, rename, fsync of the folder) and
//! SHA-256 helpers.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one.
/// An error names the file and says once what went wrong (e.g. a full disk); the temporary
/// file is removed again.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_at(path, bytes, "write")
}

/// [`atomic_write`] whose steps are [`failpoint`]s named `tag`.
pub fn atomic_write_at(path: &Path, bytes: &[u8], tag: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
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
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
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
/// flushing: a crash at that instruction). [`atomic_write_at`] has three points: half of the
/// temporary file written, temporary complete and fsynced, renamed into place; the `ckpt` tag
/// adds the checkpoint's own steps ([`crate::checkpoint::save`]): after the folder fsync and
/// after each deletion of an older checkpoint. Plain [`atomic_write`]s use the tag `write`.
pub fn failpoint(tag: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The sweep of stale temporary files and the liveness check: one definition for every crate.
pub use protoclr_formats::temps::{pid_alive, remove_stale_temps};

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/metrics.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two two");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        // Known SHA-256 of "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
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

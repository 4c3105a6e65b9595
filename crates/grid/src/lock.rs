//! Per-cell lock files that survive crashes: a lock whose owner died is taken over.
//!
//! The lock file is created atomically and complete (written to a temporary file, then
//! hard-linked to the lock path, which fails when the lock exists; this is atomic on local
//! filesystems and NFS). It holds a JSON [`LockInfo`]. A lock is stale when its owner and its
//! training child are dead (same host), or when its heartbeat (mtime) is older than
//! [`FOREIGN_STALE_AFTER`] (another host, whose pids cannot be checked). Taking over a stale lock
//! happens under a second exclusive file (`<lock>.takeover`), so two processes never both take
//! over the same lock.

use anyhow::{Context, Result};
use protoclr_formats::fsutil::{hostname, now_unix};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How often an owner refreshes its lock's mtime.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A lock from another host without heartbeat for this long is stale.
pub const FOREIGN_STALE_AFTER: Duration = Duration::from_secs(600);
/// A `.takeover` file older than this was left by a crash and is removed.
const TAKEOVER_STALE_AFTER: Duration = Duration::from_secs(60);

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub pid: u32,
    /// Start time of `pid` (clock ticks since boot, `/proc/<pid>/stat`), to recognise reused pids.
    pub pid_start: Option<u64>,
    pub host: String,
    /// The training process, once started.
    pub child_pid: Option<u32>,
    pub child_start: Option<u64>,
    pub since_unix: u64,
}

impl LockInfo {
    fn current() -> LockInfo {
        let pid = std::process::id();
        LockInfo {
            pid,
            pid_start: proc_start_time(pid),
            host: hostname(),
            child_pid: None,
            child_start: None,
            since_unix: now_unix(),
        }
    }

    /// Whether a process of this lock is alive (on another host: whether the heartbeat is
    /// recent; `age` is the time since the lock file's mtime).
    pub fn alive(&self, age: Duration) -> bool {
        if self.host != hostname() {
            return age < FOREIGN_STALE_AFTER;
        }
        pid_alive(self.pid, self.pid_start) || self.child_pid.is_some_and(|c| pid_alive(c, self.child_start))
    }
}

/// Start time of a process in clock ticks since boot (Linux), None elsewhere or when it is gone.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is a live process (zombies are dead); with `start`, also that it is the same
/// process and not a reuse of its pid.
pub fn pid_alive(pid: u32, start: Option<u64>) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    if Path::new("/proc/self/stat").exists() {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let rest = &stat[close + 2..];
        let mut fields = rest.split_whitespace();
        if matches!(fields.next(), Some("Z" | "X" | "x")) {
            return false;
        }
        return match (start, fields.nth(18).and_then(|s| s.parse::<u64>().ok())) {
            (Some(want), Some(got)) => want == got,
            _ => true,
        };
    }
    // SAFETY: kill with signal 0 only checks for the existence of the process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads a lock file: its holder and the time since its last heartbeat.
pub fn peek(path: &Path) -> Option<(LockInfo, Duration)> {
    let bytes = fs::read(path).ok()?;
    let info: LockInfo = serde_json::from_slice(&bytes).ok()?;
    Some((info, age_of(path)))
}

fn age_of(path: &Path) -> Duration {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::ZERO)
}

/// The outcome of [`CellLock::try_acquire`].
#[derive(Debug)]
pub enum Acquired {
    /// We hold the lock; the second field is the dead holder we took it over from.
    Yes(CellLock, Option<LockInfo>),
    /// Someone alive holds it (None: it is being created or taken over right now).
    Busy(Option<LockInfo>),
}

/// A held lock; released (the file removed) on drop.
#[derive(Debug)]
pub struct CellLock {
    path: PathBuf,
    info: LockInfo,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("lock");
    path.with_file_name(format!(
        ".{name}.{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

fn write_tmp(path: &Path, info: &LockInfo) -> Result<PathBuf> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec(info)?)?;
    f.sync_all()?;
    Ok(tmp)
}

/// Creates `path` with the content of `tmp` if it does not exist; Ok(false) when it exists.
fn link_new(tmp: &Path, path: &Path) -> Result<bool> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create lock {}", path.display())),
    }
}

impl CellLock {
    /// Tries to take the lock at `path` without waiting.
    pub fn try_acquire(path: &Path) -> Result<Acquired> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let info = LockInfo::current();
        let tmp = write_tmp(path, &info)?;
        let result = Self::acquire_with(path, &tmp, info);
        let _ = fs::remove_file(&tmp);
        result
    }

    fn acquire_with(path: &Path, tmp: &Path, info: LockInfo) -> Result<Acquired> {
        for _ in 0..3 {
            if link_new(tmp, path)? {
                return Ok(Acquired::Yes(
                    CellLock {
                        path: path.to_path_buf(),
                        info,
                    },
                    None,
                ));
            }
            let Ok(old_bytes) = fs::read(path) else {
                continue; // released in between: try again
            };
            let age = age_of(path);
            let old: Option<LockInfo> = serde_json::from_slice(&old_bytes).ok();
            let stale = match &old {
                Some(o) => !o.alive(age),
                // Unreadable content: never written by us (we link complete files); stale when old.
                None => age > TAKEOVER_STALE_AFTER,
            };
            if !stale {
                return Ok(Acquired::Busy(old));
            }
            // Take over under the takeover guard.
            let guard = path.with_extension("lock.takeover");
            match OpenOptions::new().write(true).create_new(true).open(&guard) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if age_of(&guard) > TAKEOVER_STALE_AFTER {
                        let _ = fs::remove_file(&guard);
                        continue;
                    }
                    return Ok(Acquired::Busy(old));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", guard.display())),
            }
            let outcome = (|| -> Result<Option<Acquired>> {
                // Still the same stale lock? (Another process may have replaced it meanwhile.)
                match fs::read(path) {
                    Ok(now) if now == old_bytes => {
                        fs::remove_file(path)
                            .with_context(|| format!("cannot remove stale lock {}", path.display()))?;
                    }
                    Ok(_) => return Ok(None),
                    Err(_) => {}
                }
                if link_new(tmp, path)? {
                    let lock = CellLock {
                        path: path.to_path_buf(),
                        info: info.clone(),
                    };
                    return Ok(Some(Acquired::Yes(lock, old.clone())));
                }
                Ok(None)
            })();
            let _ = fs::remove_file(&guard);
            if let Some(done) = outcome? {
                return Ok(done);
            }
        }
        Ok(Acquired::Busy(peek(path).map(|(i, _)| i)))
    }

    /// Records the pid of the training child in the lock (None when it ended).
    pub fn set_child(&mut self, pid: Option<u32>) -> Result<()> {
        self.info.child_pid = pid;
        self.info.child_start = pid.and_then(proc_start_time);
        let tmp = write_tmp(&self.path, &self.info)?;
        fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot update lock {}", self.path.display()))?;
        Ok(())
    }

    /// Refreshes the lock's mtime (the heartbeat seen from other hosts).
    pub fn heartbeat(&self) {
        if let Ok(f) = OpenOptions::new().write(true).open(&self.path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CellLock {
    fn drop(&mut self) {
        // Remove the file only if it is still ours.
        if let Some((info, _)) = peek(&self.path) {
            if info.pid == self.info.pid
                && info.since_unix == self.info.since_unix
                && info.host == self.info.host
            {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn second_acquire_is_busy_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locks/a.lock");
        let Acquired::Yes(lock, None) = CellLock::try_acquire(&p).unwrap() else {
            panic!("first acquire")
        };
        match CellLock::try_acquire(&p).unwrap() {
            Acquired::Busy(Some(info)) => assert_eq!(info.pid, std::process::id()),
            other => panic!("expected busy, got {other:?}"),
        }
        drop(lock);
        assert!(!p.exists());
        assert!(matches!(
            CellLock::try_acquire(&p).unwrap(),
            Acquired::Yes(_, None)
        ));
        // No temporary files are left behind.
        let n = fs::read_dir(dir.path().join("locks")).unwrap().count();
        assert_eq!(n, 0);
    }

    #[test]
    fn lock_of_dead_pid_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        let pid = dead_pid();
        assert!(!pid_alive(pid, None));
        let stale = LockInfo {
            pid,
            pid_start: None,
            host: hostname(),
            child_pid: None,
            child_start: None,
            since_unix: 1,
        };
        fs::write(&p, serde_json::to_vec(&stale).unwrap()).unwrap();
        match CellLock::try_acquire(&p).unwrap() {
            Acquired::Yes(lock, Some(prev)) => {
                assert_eq!(prev.pid, pid);
                assert_eq!(peek(lock.path()).unwrap().0.pid, std::process::id());
            }
            other => panic!("expected takeover, got {other:?}"),
        }
    }

    #[test]
    fn lock_of_live_pid_or_live_child_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        let live = sleeper.id();
        // Owner alive.
        let info = LockInfo {
            pid: live,
            pid_start: proc_start_time(live),
            host: hostname(),
            child_pid: None,
            child_start: None,
            since_unix: 1,
        };
        fs::write(&p, serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(matches!(
            CellLock::try_acquire(&p).unwrap(),
            Acquired::Busy(Some(_))
        ));
        // Owner dead but its training child alive: still busy.
        let info = LockInfo {
            pid: dead_pid(),
            child_pid: Some(live),
            child_start: proc_start_time(live),
            ..info
        };
        fs::write(&p, serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(matches!(
            CellLock::try_acquire(&p).unwrap(),
            Acquired::Busy(Some(_))
        ));
        // A reused pid (different start time) is not the owner.
        let info = LockInfo {
            pid: live,
            pid_start: Some(1),
            child_pid: None,
            child_start: None,
            ..info
        };
        fs::write(&p, serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(matches!(
            CellLock::try_acquire(&p).unwrap(),
            Acquired::Yes(_, Some(_))
        ));
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }

    #[test]
    fn foreign_host_lock_is_stale_only_without_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        let info = LockInfo {
            pid: 1,
            pid_start: None,
            host: "elsewhere.invalid".into(),
            child_pid: None,
            child_start: None,
            since_unix: 1,
        };
        fs::write(&p, serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(matches!(
            CellLock::try_acquire(&p).unwrap(),
            Acquired::Busy(Some(_))
        ));
        let old = SystemTime::now() - FOREIGN_STALE_AFTER - Duration::from_secs(5);
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(matches!(
            CellLock::try_acquire(&p).unwrap(),
            Acquired::Yes(_, Some(_))
        ));
    }
}

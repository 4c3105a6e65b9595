//! The temporary files of atomic writes, named so that a later run can tell a killed writer's
//! leftovers from a live writer's file in progress.
//!
//! Every atomic write in protoclr (training outputs and checkpoints in `protoclr_train`, the
//! results folder in `protoclr_grid`) writes `.<name>.tmp-<pid>` or `.<name>.tmp-<pid>-<n>` in the
//! target's folder and renames it over `<name>`. A process killed in between leaves that file;
//! [`remove_stale_temps`] removes the ones whose writer is no longer alive.

use std::fs;
use std::path::Path;

/// Whether `pid` is a live process on this host (one we may not signal counts as alive).
pub fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The writer's pid of a temporary file name (`.<name>.tmp-<pid>` or `.<name>.tmp-<pid>-<n>`),
/// None for any other name.
pub fn temp_writer(file_name: &str) -> Option<u32> {
    let (_, tail) = file_name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let pid = match tail.split_once('-') {
        Some((pid, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => pid,
        Some(_) => return None,
        None => tail,
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files of atomic writes in `dir` whose writer is no longer alive, i.e.
/// leftovers of a killed process; returns how many were removed. A missing folder is left
/// missing.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = temp_writer(&name) else {
            continue;
        };
        if !pid_alive(pid)
            && entry.file_type().is_ok_and(|t| t.is_file())
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_and_their_writers() {
        assert_eq!(temp_writer(".metrics.json.tmp-123"), Some(123));
        assert_eq!(temp_writer(".fig5.cpu.csv.tmp-77-4"), Some(77));
        for other in [
            "metrics.json",
            ".notes.tmp-abc",
            ".a.tmp-",
            ".a.tmp-12-",
            ".a.tmp-12-x",
            "a.tmp-12",
        ] {
            assert_eq!(temp_writer(other), None, "{other}");
        }
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has exited: its pid is free (reaped), so it is dead.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::id();
        for n in [
            format!(".metrics.json.tmp-{dead}"),
            format!(".ckpt-ab-e00001.safetensors.tmp-{dead}"),
            format!(".fig5.cpu.csv.tmp-{dead}-3"),
            format!(".metrics.json.tmp-{live}"),
            format!(".status.json.tmp-{live}-0"),
            "metrics.json".into(),
            ".notes.tmp-abc".into(),
        ] {
            fs::write(dir.path().join(n), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()), 3);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!(".metrics.json.tmp-{live}"),
                ".notes.tmp-abc".into(),
                format!(".status.json.tmp-{live}-0"),
                "metrics.json".to_string()
            ]
        );
        assert_eq!(remove_stale_temps(&dir.path().join("missing")), 0);
    }
}

//! `protoclr data verify`: a per-file report of a dataset folder or data root.

use super::cifar::{
    check_folder, fingerprint_of, FileCheck, Layout, CIFAR100_FOLDER, CIFAR10_FOLDER, LAYOUTS,
};
use anyhow::{bail, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// Checks of the files of one dataset folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetReport {
    /// `cifar10` / `cifar100`.
    pub dataset: String,
    pub dir: PathBuf,
    /// Every data file, in the release's order.
    pub files: Vec<FileCheck>,
    /// The dataset fingerprint (None when a file is missing or unreadable).
    pub fingerprint: Option<String>,
}

impl DatasetReport {
    /// Every file is the official one.
    pub fn verified(&self) -> bool {
        self.files.iter().all(|f| f.status.is_verified())
    }

    /// Every file can be read (some perhaps only with `allow_unverified`).
    pub fn usable(&self) -> bool {
        self.files.iter().all(|f| f.status.is_usable())
    }
}

/// The result of [`verify`]: one report per dataset folder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub datasets: Vec<DatasetReport>,
}

impl VerifyReport {
    /// Every file of every folder is the official one.
    pub fn all_verified(&self) -> bool {
        self.datasets.iter().all(DatasetReport::verified)
    }
}

/// Verifies the data files of a dataset folder (`cifar-10-batches-bin` or `cifar-100-binary`,
/// recognised by name or content) or of each such folder under a data root. Reads and hashes
/// every file (in parallel); problems are reported per file, not as errors. Errors only when
/// `path` holds no dataset at all.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    if !path.is_dir() {
        bail!("{}: not a folder", path.display());
    }
    let mut targets: Vec<(&Layout, PathBuf)> = Vec::new();
    for layout in LAYOUTS {
        let is_folder = path.file_name().is_some_and(|n| n == layout.folder)
            || layout.files.iter().any(|f| path.join(f.name).exists());
        if is_folder {
            targets.push((layout, path.to_path_buf()));
        } else if path.join(layout.folder).is_dir() {
            targets.push((layout, path.join(layout.folder)));
        }
    }
    if targets.is_empty() {
        bail!(
            "{}: neither a {CIFAR10_FOLDER} / {CIFAR100_FOLDER} folder nor a data root holding one",
            path.display()
        );
    }
    let datasets = targets
        .into_iter()
        .map(|(layout, dir)| {
            let files = check_folder(layout, &dir);
            let fingerprint = files.iter().all(|f| f.md5.is_some()).then(|| {
                fingerprint_of(
                    layout.dataset,
                    files
                        .iter()
                        .map(|f| (f.file.as_str(), f.md5.as_deref().unwrap_or_default())),
                )
            });
            DatasetReport {
                dataset: layout.dataset.to_string(),
                dir,
                files,
                fingerprint,
            }
        })
        .collect();
    Ok(VerifyReport { datasets })
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.datasets.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{} in {}", d.dataset, d.dir.display())?;
            let w = d.files.iter().map(|c| c.file.len()).max().unwrap_or(4).max(4);
            writeln!(
                f,
                "  {:<w$}  {:>10}  {:>7}  {:<32}  status",
                "file", "bytes", "records", "md5"
            )?;
            for c in &d.files {
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                writeln!(
                    f,
                    "  {:<w$}  {:>10}  {:>7}  {:<32}  {}",
                    c.file,
                    opt(c.bytes.map(|b| b.to_string())),
                    opt(c.records.map(|r| r.to_string())),
                    opt(c.md5.clone()),
                    c.status
                )?;
            }
            writeln!(f, "  fingerprint: {}", d.fingerprint.as_deref().unwrap_or("-"))?;
            let verdict = if d.verified() {
                "verified: the official files"
            } else if d.usable() {
                "NOT verified: usable only with --allow-unverified"
            } else {
                "NOT usable: missing or corrupt files"
            };
            writeln!(f, "  {verdict}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::cifar::FileStatus;
    use super::super::fingerprint;
    use super::super::test_support::*;
    use super::*;
    use md5::{Digest, Md5};

    fn fake_cifar10(records: usize) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(CIFAR10_FOLDER);
        write_tree(&dir, &cifar10_tree(records));
        (tmp, dir)
    }

    #[test]
    fn verify_reports_each_file_and_fingerprints_change_with_content() {
        let (tmp, dir) = fake_cifar10(3);
        let before = fingerprint("cifar10", tmp.path()).unwrap();
        let path = dir.join("data_batch_2.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_ne!(fingerprint("cifar10", tmp.path()).unwrap(), before);
        std::fs::write(dir.join("data_batch_4.bin"), [0u8; 10]).unwrap();
        std::fs::remove_file(dir.join("data_batch_5.bin")).unwrap();
        // From the root and from the folder: the same single report.
        let report = verify(tmp.path()).unwrap();
        assert_eq!(report, verify(&dir).unwrap());
        assert_eq!(report.datasets.len(), 1);
        let d = &report.datasets[0];
        assert_eq!(d.dataset, "cifar10");
        assert_eq!(d.files.len(), 6);
        assert!(matches!(d.files[0].status, FileStatus::Unverified(_)));
        assert_eq!(d.files[0].records, Some(3));
        assert_eq!(
            d.files[0].md5.as_deref(),
            Some(hex::encode(Md5::digest(std::fs::read(dir.join("data_batch_1.bin")).unwrap())).as_str())
        );
        assert!(matches!(d.files[3].status, FileStatus::Corrupt(_)));
        assert_eq!(d.files[4].status, FileStatus::Missing);
        assert!(d.fingerprint.is_none());
        assert!(!report.all_verified() && !d.usable());
        let table = report.to_string();
        for needle in ["data_batch_1.bin", "MISMATCH", "CORRUPT", "MISSING", "NOT usable"] {
            assert!(table.contains(needle), "{needle} not in\n{table}");
        }
        let empty = tempfile::tempdir().unwrap();
        assert!(verify(empty.path()).is_err());
    }
}

//! Readers and verification of the official CIFAR-10 and CIFAR-100 binary releases.

use super::{Dataset, Split};
use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use rayon::prelude::*;
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};

/// Side of a CIFAR image in pixels.
pub const SIDE: usize = 32;
/// Pixel bytes of one image: 3 channels × 32 × 32.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// Folder of the CIFAR-10 binary release under a data root.
pub const CIFAR10_FOLDER: &str = "cifar-10-batches-bin";
/// Folder of the CIFAR-100 binary release under a data root.
pub const CIFAR100_FOLDER: &str = "cifar-100-binary";
/// The dataset names accepted by [`load`], [`fingerprint`] and `fetch`.
pub const DATASETS: [&str; 2] = ["cifar10", "cifar100"];

/// The CIFAR-10 class names, in label order (as in the official `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Published MD5s of the files of the official CIFAR-100 binary release (the members of
/// `cifar-100-binary.tar.gz`, whose own MD5 is [`super::CIFAR100_ARCHIVE_MD5`]).
pub const CIFAR100_FILE_MD5: [(&str, &str); 2] = [
    ("train.bin", "6172c7755cfe09b2fe270c85cebc1b15"),
    ("test.bin", "4499cfba6c016c1be1438163640a0898"),
];

/// Published MD5s of the files of the official CIFAR-10 binary release.
pub const CIFAR10_FILE_MD5: [(&str, &str); 6] = [
    ("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
    ("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
    ("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
    ("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
    ("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
    ("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
];

/// One data file of a release.
#[derive(Debug)]
pub(crate) struct FileSpec {
    pub name: &'static str,
    /// Records in the official file.
    pub records: usize,
    /// Published MD5.
    pub md5: &'static str,
    /// Training file (else test).
    pub train: bool,
}

/// The layout of one release.
#[derive(Debug)]
pub(crate) struct Layout {
    /// `cifar10` / `cifar100`.
    pub dataset: &'static str,
    /// `CIFAR-10` / `CIFAR-100`, for messages.
    pub title: &'static str,
    /// Folder under a data root (also the archive's top folder).
    pub folder: &'static str,
    /// The label bytes before the pixels of a record: (name, number of valid values).
    pub labels: &'static [(&'static str, usize)],
    /// Which of the label bytes is the class.
    pub class_label: usize,
    /// Data files, in fingerprint order.
    pub files: &'static [FileSpec],
    /// Optional file of class names, one a line.
    pub names_file: &'static str,
    /// File name of the official archive and its published MD5.
    pub archive: &'static str,
    pub archive_md5: &'static str,
}

impl Layout {
    pub fn record_len(&self) -> usize {
        self.labels.len() + IMAGE_BYTES
    }

    pub fn num_classes(&self) -> usize {
        self.labels[self.class_label].1
    }
}

const fn c10(name: &'static str, md5: &'static str, train: bool) -> FileSpec {
    FileSpec {
        name,
        records: 10_000,
        md5,
        train,
    }
}

pub(crate) static CIFAR10: Layout = Layout {
    dataset: "cifar10",
    title: "CIFAR-10",
    folder: CIFAR10_FOLDER,
    labels: &[("label", 10)],
    class_label: 0,
    files: &[
        c10(CIFAR10_FILE_MD5[0].0, CIFAR10_FILE_MD5[0].1, true),
        c10(CIFAR10_FILE_MD5[1].0, CIFAR10_FILE_MD5[1].1, true),
        c10(CIFAR10_FILE_MD5[2].0, CIFAR10_FILE_MD5[2].1, true),
        c10(CIFAR10_FILE_MD5[3].0, CIFAR10_FILE_MD5[3].1, true),
        c10(CIFAR10_FILE_MD5[4].0, CIFAR10_FILE_MD5[4].1, true),
        c10(CIFAR10_FILE_MD5[5].0, CIFAR10_FILE_MD5[5].1, false),
    ],
    names_file: "batches.meta.txt",
    archive: "cifar-10-binary.tar.gz",
    archive_md5: "c32a1d4ab5d03f1284b67883e8d87530",
};

pub(crate) static CIFAR100: Layout = Layout {
    dataset: "cifar100",
    title: "CIFAR-100",
    folder: CIFAR100_FOLDER,
    labels: &[("coarse", 20), ("fine", 100)],
    class_label: 1,
    files: &[
        FileSpec {
            name: CIFAR100_FILE_MD5[0].0,
            records: 50_000,
            md5: CIFAR100_FILE_MD5[0].1,
            train: true,
        },
        FileSpec {
            name: CIFAR100_FILE_MD5[1].0,
            records: 10_000,
            md5: CIFAR100_FILE_MD5[1].1,
            train: false,
        },
    ],
    names_file: "fine_label_names.txt",
    archive: "cifar-100-binary.tar.gz",
    archive_md5: "03b5dce01913d631647c71ecec9e9cb8",
};

pub(crate) static LAYOUTS: [&Layout; 2] = [&CIFAR10, &CIFAR100];

/// The layout of `dataset` (`cifar10` or `cifar100`).
pub(crate) fn layout(dataset: &str) -> Result<&'static Layout> {
    LAYOUTS
        .iter()
        .copied()
        .find(|l| l.dataset == dataset)
        .with_context(|| {
            format!(
                "unknown dataset `{dataset}`; expected one of {}",
                DATASETS.join(", ")
            )
        })
}

/// Verification state of one data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// The MD5 equals the published one.
    Ok,
    /// Well-formed but not the official file (reason): usable with `allow_unverified`.
    Unverified(String),
    /// The file does not exist.
    Missing,
    /// Unreadable, empty, size not a multiple of the record length, or a label out of range.
    Corrupt(String),
}

impl FileStatus {
    /// The file is the official one (as far as it can be checked).
    pub fn is_verified(&self) -> bool {
        matches!(self, FileStatus::Ok)
    }

    /// The file can be read (with `allow_unverified` if it is not verified).
    pub fn is_usable(&self) -> bool {
        self.is_verified() || matches!(self, FileStatus::Unverified(_))
    }
}

impl fmt::Display for FileStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileStatus::Ok => write!(f, "ok (published MD5)"),
            FileStatus::Unverified(r) => write!(f, "MISMATCH: {r}"),
            FileStatus::Missing => write!(f, "MISSING"),
            FileStatus::Corrupt(r) => write!(f, "CORRUPT: {r}"),
        }
    }
}

/// The check of one data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// File name within the dataset folder.
    pub file: String,
    pub path: PathBuf,
    /// Size in bytes (None when missing or unreadable).
    pub bytes: Option<u64>,
    /// Whole records in the file (None when missing or corrupt).
    pub records: Option<usize>,
    /// MD5 hex of the file's bytes (None when missing or unreadable).
    pub md5: Option<String>,
    /// The published MD5.
    pub expected_md5: Option<String>,
    pub status: FileStatus,
}

/// The pixels (CHW per image, concatenated) and class labels of a file's records.
type Records = (Vec<u8>, Vec<u16>);

/// A file's check and, when asked for and usable, its parsed records.
struct Scanned {
    check: FileCheck,
    data: Option<Records>,
}

/// Checks every record's label bytes and returns the record count, plus the pixels and class
/// labels when `keep`. The error is the reason, without the file name.
fn parse(layout: &Layout, bytes: &[u8], keep: bool) -> std::result::Result<(usize, Option<Records>), String> {
    let rec = layout.record_len();
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let left_over = bytes.len() % rec;
    if left_over != 0 {
        return Err(format!(
            "size {} bytes is not a multiple of the {rec}-byte {} record ({} whole records and \
             {left_over} bytes left over: truncated, or not a {} binary file)",
            bytes.len(),
            layout.title,
            bytes.len() / rec,
            layout.title,
        ));
    }
    let n = bytes.len() / rec;
    let header = layout.labels.len();
    let mut out = keep.then(|| (Vec::with_capacity(n * IMAGE_BYTES), Vec::with_capacity(n)));
    for (r, record) in bytes.chunks_exact(rec).enumerate() {
        for (k, &(name, range)) in layout.labels.iter().enumerate() {
            if usize::from(record[k]) >= range {
                return Err(format!(
                    "record {r} (byte offset {}) has {name} label {}, expected 0..={}",
                    r * rec + k,
                    record[k],
                    range - 1
                ));
            }
        }
        if let Some((images, labels)) = out.as_mut() {
            images.extend_from_slice(&record[header..]);
            labels.push(u16::from(record[layout.class_label]));
        }
    }
    Ok((n, out))
}

/// Reads `dir/spec.name` once, hashes and checks it; parses it when `keep` and it is usable.
fn scan_file(layout: &Layout, spec: &FileSpec, dir: &Path, keep: bool) -> Scanned {
    let path = dir.join(spec.name);
    let mut check = FileCheck {
        file: spec.name.to_string(),
        path: path.clone(),
        bytes: None,
        records: None,
        md5: None,
        expected_md5: Some(spec.md5.to_string()),
        status: FileStatus::Missing,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Scanned { check, data: None };
        }
        Err(e) => {
            check.status = FileStatus::Corrupt(format!("cannot read: {e}"));
            return Scanned { check, data: None };
        }
    };
    check.bytes = Some(bytes.len() as u64);
    let md5 = hex::encode(Md5::digest(&bytes));
    check.md5 = Some(md5.clone());
    let (records, data) = match parse(layout, &bytes, keep) {
        Ok(parsed) => parsed,
        Err(reason) => {
            check.status = FileStatus::Corrupt(reason);
            return Scanned { check, data: None };
        }
    };
    drop(bytes);
    check.records = Some(records);
    let count_note = (records != spec.records).then(|| {
        format!(
            "{records} records where the official file has {} (truncated, or a different file?)",
            spec.records
        )
    });
    let expected = spec.md5;
    check.status = if md5 == expected {
        FileStatus::Ok
    } else {
        FileStatus::Unverified(match count_note {
            Some(note) => format!("MD5 {md5} is not the published {expected}; {note}"),
            None => format!("MD5 {md5} is not the published {expected}"),
        })
    };
    Scanned { check, data }
}

/// Scans every data file of `layout` in `dir`, in parallel, in the release's file order.
fn scan_folder(layout: &Layout, dir: &Path, keep: bool) -> Vec<Scanned> {
    layout
        .files
        .par_iter()
        .map(|spec| scan_file(layout, spec, dir, keep))
        .collect()
}

/// The fingerprint of a release from its files' MD5s, in the release's order (format: module doc).
pub(crate) fn fingerprint_of<'a>(
    dataset: &str,
    md5s: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut h = Sha256::new();
    h.update(format!("protoclr dataset fingerprint v1\n{dataset}\n"));
    for (file, md5) in md5s {
        h.update(format!("{file} {md5}\n"));
    }
    hex::encode(h.finalize())
}

/// The problems of a scan that forbid using the files, as one line each (naming the file).
/// `allow_unverified` accepts well-formed files that are not the official ones.
pub(crate) fn problems(checks: &[FileCheck], allow_unverified: bool) -> Vec<String> {
    checks
        .iter()
        .filter_map(|c| match &c.status {
            FileStatus::Missing => Some(format!("{}: missing", c.path.display())),
            FileStatus::Corrupt(r) => Some(format!("{}: {r}", c.path.display())),
            FileStatus::Unverified(r) if !allow_unverified => Some(format!("{}: {r}", c.path.display())),
            _ => None,
        })
        .collect()
}

/// One error message for `problems` found in `dir`, with the remedy.
pub(crate) fn problems_error(
    layout: &Layout,
    dir: &Path,
    checks: &[FileCheck],
    problems: &[String],
) -> anyhow::Error {
    let mut msg = if problems.len() == 1 {
        problems[0].clone()
    } else {
        format!(
            "{} files in {} failed verification:\n  - {}",
            layout.title,
            dir.display(),
            problems.join("\n  - ")
        )
    };
    let broken = checks
        .iter()
        .any(|c| matches!(c.status, FileStatus::Missing | FileStatus::Corrupt(_)));
    if broken {
        msg.push_str(&format!(
            "\n(download the official release with `protoclr data fetch {} --dir ROOT`)",
            layout.dataset
        ));
    } else {
        msg.push_str(
            "\n(to run on your own copy anyway pass --allow-unverified, i.e. \
             `data.allow_unverified: true`; the run then records dataset_verified: false)",
        );
    }
    anyhow::anyhow!(msg)
}

/// Class names of `layout` in `dir`: from its names file when present, else the defaults.
fn class_names(layout: &Layout, dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(layout.names_file);
    let k = layout.num_classes();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if names.len() != k {
                bail!(
                    "{}: expected {k} class names (one a line), found {}",
                    path.display(),
                    names.len()
                );
            }
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(if layout.dataset == "cifar10" {
            CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
        } else {
            (0..k).map(|c| format!("class_{c:02}")).collect()
        }),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn load_layout(layout: &Layout, dir: &Path, allow_unverified: bool) -> Result<Split> {
    if !dir.is_dir() {
        bail!(
            "{} folder {} does not exist (download the official release with \
             `protoclr data fetch {} --dir ROOT`)",
            layout.title,
            dir.display(),
            layout.dataset
        );
    }
    let class_names = class_names(layout, dir)?;
    let scanned = scan_folder(layout, dir, true);
    let checks: Vec<FileCheck> = scanned.iter().map(|s| s.check.clone()).collect();
    let problems = problems(&checks, allow_unverified);
    if !problems.is_empty() {
        return Err(problems_error(layout, dir, &checks, &problems));
    }
    let verified = checks.iter().all(|c| c.status.is_verified());
    let fingerprint = fingerprint_of(
        layout.dataset,
        checks
            .iter()
            .map(|c| (c.file.as_str(), c.md5.as_deref().unwrap_or_default())),
    );
    let empty = || Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        n: 0,
        height: SIDE,
        width: SIDE,
        num_classes: layout.num_classes(),
        class_names: class_names.clone(),
    };
    let (mut train, mut test) = (empty(), empty());
    for (spec, s) in layout.files.iter().zip(scanned) {
        let (images, labels) = s.data.expect("usable files are parsed");
        let part = if spec.train { &mut train } else { &mut test };
        if part.images.is_empty() {
            part.images = images;
            part.labels = labels;
        } else {
            part.images.extend_from_slice(&images);
            part.labels.extend_from_slice(&labels);
        }
        part.n = part.labels.len();
    }
    Ok(Split {
        train,
        test,
        fingerprint,
        verified,
    })
}

/// Loads the CIFAR-10 binary release from `dir` (the `cifar-10-batches-bin` folder itself).
/// Files whose MD5 differs from the published one are an error unless `allow_unverified`
/// (then `verified = false`); missing or malformed files are always an error.
pub fn load_cifar10(dir: &Path, allow_unverified: bool) -> Result<Split> {
    load_layout(&CIFAR10, dir, allow_unverified)
}

/// Loads the CIFAR-100 binary release from `dir` (the `cifar-100-binary` folder itself), with
/// the fine labels (100 classes). As for CIFAR-10, files whose MD5 differs from the published
/// one ([`CIFAR100_FILE_MD5`]) are an error unless `allow_unverified` (then `verified = false`).
pub fn load_cifar100(dir: &Path, allow_unverified: bool) -> Result<Split> {
    load_layout(&CIFAR100, dir, allow_unverified)
}

/// The folder of `dataset` under `root`: `root/cifar-10-batches-bin` or `root/cifar-100-binary`,
/// or `root` itself when it is that folder.
pub fn dataset_dir(dataset: &str, root: &Path) -> Result<PathBuf> {
    let layout = layout(dataset)?;
    let sub = root.join(layout.folder);
    if !sub.is_dir() && root.file_name().is_some_and(|n| n == layout.folder) {
        return Ok(root.to_path_buf());
    }
    Ok(sub)
}

/// Loads `dataset` (`cifar10` or `cifar100`) from the data root `root` (see [`dataset_dir`]).
pub fn load(dataset: &str, root: &Path, allow_unverified: bool) -> Result<Split> {
    let dir = dataset_dir(dataset, root)?;
    load_layout(layout(dataset)?, &dir, allow_unverified)
}

/// The fingerprint [`load`] would give, from the files' MD5s only (no parsing, no checks
/// besides existence); the files are hashed in parallel.
pub fn fingerprint(dataset: &str, root: &Path) -> Result<String> {
    let layout = layout(dataset)?;
    let dir = dataset_dir(dataset, root)?;
    let md5s = layout
        .files
        .par_iter()
        .map(|spec| {
            let path = dir.join(spec.name);
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(hex::encode(Md5::digest(&bytes)))
        })
        .collect::<Result<Vec<String>>>()?;
    Ok(fingerprint_of(
        layout.dataset,
        layout.files.iter().zip(&md5s).map(|(s, m)| (s.name, m.as_str())),
    ))
}

/// Checks the files of `layout` in `dir` (hashes and checks structure; keeps no pixels).
pub(crate) fn check_folder(layout: &Layout, dir: &Path) -> Vec<FileCheck> {
    scan_folder(layout, dir, false)
        .into_iter()
        .map(|s| s.check)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{channel_mean_std, verify, CIFAR100_MEAN, CIFAR100_STD, CIFAR10_MEAN, CIFAR10_STD};
    use super::*;
    use std::time::Instant;

    fn fake_cifar10(records: usize) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(CIFAR10_FOLDER);
        write_tree(&dir, &cifar10_tree(records));
        (tmp, dir)
    }

    fn err_text(r: Result<Split>) -> String {
        format!("{:#}", r.expect_err("expected an error"))
    }

    #[test]
    fn fake_cifar10_reads_records_exactly_and_is_unverified() {
        let (_tmp, dir) = fake_cifar10(12);
        let split = load_cifar10(&dir, true).unwrap();
        assert!(!split.verified);
        assert_eq!((split.train.n, split.test.n), (60, 12));
        assert_eq!(split.train.images.len(), 60 * 3072);
        assert_eq!(split.train.class_names[0], "airplane");
        // Record r of data_batch_(f+1) is training image 12·f + r; test_batch is file 5.
        for (f, r) in [(0, 0), (2, 5), (4, 11)] {
            let i = 12 * f + r;
            assert_eq!(split.train.labels[i], u16::from(fake_label(f, r, 10)));
            assert_eq!(split.train.image(i), fake_pixels(f, r).as_slice());
        }
        assert_eq!(split.test.image(3), fake_pixels(5, 3).as_slice());
        assert_eq!(split.test.labels[3], u16::from(fake_label(5, 3, 10)));
        // Without allow_unverified the published MD5s reject the files, naming them.
        let msg = err_text(load_cifar10(&dir, false));
        assert!(
            msg.contains("data_batch_1.bin") && msg.contains("test_batch.bin"),
            "{msg}"
        );
        assert!(msg.contains("5dd7e06a14cb22eb9f671a540d1b7c25"), "{msg}");
        assert!(
            msg.contains("12 records where the official file has 10000"),
            "{msg}"
        );
        assert!(msg.contains("--allow-unverified"), "{msg}");
        // Same files → same fingerprint; `load` and `fingerprint` agree.
        assert_eq!(load("cifar10", dir.parent().unwrap(), true).unwrap(), split);
        assert_eq!(fingerprint("cifar10", &dir).unwrap(), split.fingerprint);
    }

    #[test]
    fn truncated_or_missing_files_are_errors_naming_the_file_even_when_unverified_is_allowed() {
        let (_tmp, dir) = fake_cifar10(4);
        let path = dir.join("data_batch_3.bin");
        let full = std::fs::read(&path).unwrap();
        // Truncated inside the last record: the size is not a multiple of 3,073.
        std::fs::write(&path, &full[..full.len() - 100]).unwrap();
        let msg = err_text(load_cifar10(&dir, true));
        assert!(msg.contains("data_batch_3.bin"), "{msg}");
        assert!(msg.contains("not a multiple of the 3073-byte"), "{msg}");
        assert!(msg.contains("3 whole records and 2973 bytes left over"), "{msg}");
        // One byte too many is just as wrong.
        let mut long = full.clone();
        long.push(0);
        std::fs::write(&path, &long).unwrap();
        assert!(err_text(load_cifar10(&dir, true)).contains("data_batch_3.bin"));
        // Empty.
        std::fs::write(&path, b"").unwrap();
        let msg = err_text(load_cifar10(&dir, true));
        assert!(msg.contains("data_batch_3.bin: empty file"), "{msg}");
        // Missing.
        std::fs::remove_file(&path).unwrap();
        let msg = err_text(load_cifar10(&dir, true));
        assert!(msg.contains("data_batch_3.bin: missing"), "{msg}");
        assert!(msg.contains("protoclr data fetch cifar10"), "{msg}");
        // No folder at all.
        let msg = err_text(load("cifar10", &dir.join("nowhere"), false));
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn label_out_of_range_names_file_and_record() {
        let (_tmp, dir) = fake_cifar10(5);
        let path = dir.join("test_batch.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3 * 3073] = 10;
        std::fs::write(&path, &bytes).unwrap();
        let msg = err_text(load_cifar10(&dir, true));
        assert!(msg.contains("test_batch.bin"), "{msg}");
        assert!(msg.contains("record 3 ") && msg.contains("label 10"), "{msg}");
    }

    #[test]
    fn class_names_file_must_hold_one_name_per_class() {
        let (_tmp, dir) = fake_cifar10(2);
        std::fs::write(dir.join("batches.meta.txt"), "a\nb\n").unwrap();
        let msg = err_text(load_cifar10(&dir, true));
        assert!(
            msg.contains("batches.meta.txt") && msg.contains("found 2"),
            "{msg}"
        );
        // Absent: the official names.
        std::fs::remove_file(dir.join("batches.meta.txt")).unwrap();
        let split = load_cifar10(&dir, true).unwrap();
        assert_eq!(split.train.class_names[9], "truck");
    }

    #[test]
    fn cifar100_layout_uses_fine_labels() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(CIFAR100_FOLDER);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("train.bin"), cifar100_file(0, 250)).unwrap();
        std::fs::write(dir.join("test.bin"), cifar100_file(1, 30)).unwrap();
        let split = load("cifar100", tmp.path(), true).unwrap();
        assert!(!split.verified, "record counts differ from the official ones");
        assert_eq!((split.train.n, split.test.n), (250, 30));
        assert_eq!(split.train.num_classes, 100);
        assert_eq!(split.train.class_names[7], "class_07");
        for r in [0, 13, 249] {
            // The fine label (second byte) is the class, and it spans 0..100, beyond 20 coarse.
            assert_eq!(split.train.labels[r], u16::from(fake_label(0, r, 100)));
            assert_eq!(split.train.image(r), fake_pixels(0, r).as_slice());
        }
        assert!(split.train.labels.iter().any(|&l| l >= 20));
        assert_eq!(split.test.image(29), fake_pixels(1, 29).as_slice());
        // Not the official record count: an error without allow_unverified.
        let msg = err_text(load_cifar100(&dir, false));
        assert!(msg.contains("train.bin") && msg.contains("250 records"), "{msg}");
        // 3,073-byte (CIFAR-10) records are not a multiple of 3,074.
        std::fs::write(dir.join("test.bin"), cifar10_file(0, 30)).unwrap();
        let msg = err_text(load_cifar100(&dir, true));
        assert!(msg.contains("test.bin") && msg.contains("3074-byte"), "{msg}");
        // A coarse label ≥ 20 is named as such.
        let mut bad = cifar100_file(1, 30);
        bad[2 * 3074] = 20;
        std::fs::write(dir.join("test.bin"), &bad).unwrap();
        let msg = err_text(load_cifar100(&dir, true));
        assert!(
            msg.contains("record 2 ") && msg.contains("coarse label 20"),
            "{msg}"
        );
        // Names from fine_label_names.txt.
        std::fs::write(dir.join("test.bin"), cifar100_file(1, 30)).unwrap();
        let names: Vec<String> = (0..100).map(|c| format!("fine{c}")).collect();
        std::fs::write(dir.join("fine_label_names.txt"), names.join("\n")).unwrap();
        assert_eq!(load_cifar100(&dir, true).unwrap().test.class_names, names);
    }

    /// The data root of the real files: env `PROTOCLR_DATA`, else `../shared/datasets` from the
    /// repository root.
    fn real_root() -> PathBuf {
        let root = std::env::var_os("PROTOCLR_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"));
        assert!(
            root.join(CIFAR10_FOLDER).is_dir(),
            "the real CIFAR-10 files are needed: {} has no {CIFAR10_FOLDER}/ (set PROTOCLR_DATA \
             to the folder holding it, or run `protoclr data fetch cifar10 --dir ROOT`)",
            root.display()
        );
        root
    }

    /// The real CIFAR-100 release, when the data root holds it (CI has only CIFAR-10: then the
    /// test says so and checks nothing): verified by the published MD5s, and one changed byte
    /// makes a copy unverified — refused, or read with `verified = false` — as for CIFAR-10.
    #[test]
    fn real_cifar100_files_match_the_published_md5s() {
        let root = real_root();
        let real = root.join(CIFAR100_FOLDER);
        if !real.is_dir() {
            eprintln!("skipped: {} has no {CIFAR100_FOLDER}/", root.display());
            return;
        }
        let split = load("cifar100", &root, false).unwrap();
        assert!(split.verified);
        assert_eq!((split.train.n, split.test.n), (50_000, 10_000));
        assert_eq!(split.train.class_counts(), vec![500; 100]);
        assert_eq!(split.test.class_counts(), vec![100; 100]);
        let (mean, std) = channel_mean_std(&split.train);
        eprintln!("CIFAR-100 train mean {mean:?} std {std:?}");
        for c in 0..3 {
            assert!((mean[c] - CIFAR100_MEAN[c]).abs() < 1e-6, "{mean:?}");
            assert!((std[c] - CIFAR100_STD[c]).abs() < 1e-6, "{std:?}");
        }
        let report = verify(&real).unwrap();
        assert!(report.all_verified(), "{report}");
        assert!(report.datasets[0]
            .files
            .iter()
            .all(|f| f.status == FileStatus::Ok && f.md5 == f.expected_md5));
        assert_eq!(fingerprint("cifar100", &root).unwrap(), split.fingerprint);
        let first_test_pixel = split.test.image(0)[0];
        drop(split);

        // A copy whose test.bin differs in one pixel byte of its first record.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(CIFAR100_FOLDER);
        std::fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(real.join("train.bin"), dir.join("train.bin")).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(real.join("train.bin"), dir.join("train.bin")).unwrap();
        let mut bytes = std::fs::read(real.join("test.bin")).unwrap();
        bytes[2] ^= 1;
        std::fs::write(dir.join("test.bin"), &bytes).unwrap();
        let msg = err_text(load_cifar100(&dir, false));
        assert!(msg.contains("test.bin") && !msg.contains("train.bin"), "{msg}");
        assert!(
            msg.contains("is not the published 4499cfba6c016c1be1438163640a0898"),
            "{msg}"
        );
        assert!(msg.contains("--allow-unverified"), "{msg}");
        let report = verify(&dir).unwrap();
        assert!(!report.all_verified() && report.datasets[0].usable(), "{report}");
        assert_eq!(report.datasets[0].files[0].status, FileStatus::Ok);
        let split = load_cifar100(&dir, true).unwrap();
        assert!(!split.verified);
        assert_eq!(split.test.image(0)[0], first_test_pixel ^ 1);
    }

    #[test]
    fn real_cifar10_files() {
        let root = real_root();
        let t = Instant::now();
        let split = load("cifar10", &root, false).unwrap();
        eprintln!(
            "loaded and verified CIFAR-10 in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        assert!(split.verified);
        assert_eq!((split.train.n, split.test.n), (50_000, 10_000));
        assert_eq!(split.train.images.len(), 50_000 * 3072);
        assert_eq!((split.train.height, split.train.width), (32, 32));
        assert_eq!(split.train.class_counts(), vec![5000; 10]);
        assert_eq!(split.test.class_counts(), vec![1000; 10]);
        assert_eq!(split.train.class_names, CIFAR10_CLASSES);
        // `od -t u1 -N 4 data_batch_1.bin` → 6 59 43 50: label 6 (frog), then red bytes.
        assert_eq!(split.train.labels[0], 6);
        assert_eq!(split.train.class_names[6], "frog");
        assert_eq!(&split.train.image(0)[..3], &[59, 43, 50]);
        // `od -t u1 -N 1 test_batch.bin` → 3 (cat).
        assert_eq!(split.test.labels[0], 3);
        assert_eq!(fingerprint("cifar10", &root).unwrap(), split.fingerprint);
        let (mean, std) = channel_mean_std(&split.train);
        eprintln!("CIFAR-10 train mean {mean:?} std {std:?}");
        for c in 0..3 {
            assert!((mean[c] - CIFAR10_MEAN[c]).abs() < 1e-6, "{mean:?}");
            assert!((std[c] - CIFAR10_STD[c]).abs() < 1e-6, "{std:?}");
        }
        let report = verify(&root).unwrap();
        assert!(report.all_verified(), "{report}");
        assert_eq!(
            report.datasets[0].fingerprint.as_deref(),
            Some(split.fingerprint.as_str())
        );
        drop(split);

        // A copy whose first batch lost its last record: an error naming the file and the
        // count, or with allow_unverified 49,999 training images and verified = false.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(CIFAR10_FOLDER);
        std::fs::create_dir_all(&dir).unwrap();
        let real = root.join(CIFAR10_FOLDER);
        for (name, _) in CIFAR10_FILE_MD5.iter().skip(1) {
            #[cfg(unix)]
            std::os::unix::fs::symlink(real.join(name), dir.join(name)).unwrap();
            #[cfg(not(unix))]
            std::fs::copy(real.join(name), dir.join(name)).unwrap();
        }
        let first = std::fs::read(real.join("data_batch_1.bin")).unwrap();
        std::fs::write(dir.join("data_batch_1.bin"), &first[..first.len() - 3073]).unwrap();
        let msg = err_text(load_cifar10(&dir, false));
        assert!(msg.contains("data_batch_1.bin"), "{msg}");
        assert!(
            msg.contains("9999 records where the official file has 10000"),
            "{msg}"
        );
        assert!(!msg.contains("data_batch_2.bin"), "{msg}");
        let split = load_cifar10(&dir, true).unwrap();
        assert!(!split.verified);
        assert_eq!(split.train.n, 49_999);
        assert_eq!(split.train.labels[0], 6);
    }
}

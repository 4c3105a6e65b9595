//! Image-folder datasets (`data.dataset: imagefolder`): ImageNet, ImageNet-LT and any other
//! class-per-folder tree of JPEGs — listing, class mapping, checking and JPEG decoding.
//!
//! # Layouts
//! Each part (training, validation) comes either from a **folder** or from a **list file**:
//! - a folder `D` holds one subfolder per class, `D/<class>/<image>.JPEG` (ImageNet's `train/`,
//!   or a `val/` reorganised into class folders). Files whose extension is not `jpg`/`jpeg` (any
//!   case) and hidden files are ignored; files are taken in sorted order of their names, classes
//!   in sorted order of the folder names.
//! - a list file holds one entry per line, `relative/path.JPEG <label>` (the ImageNet-LT format:
//!   the path, whitespace, a decimal label ≥ 0). The paths are relative to the list root
//!   (`data.list_root`, default: the data root). Blank lines are ignored.
//!
//! # Classes
//! - With a mapping file (`data.class_map`, one class a line, `<wnid> <name…>`, e.g. ImageNet's
//!   `LOC_synset_mapping.txt`), label i is the class of line i: class folders are matched by
//!   their wnid, list labels must be below the number of lines, and the names are the text after
//!   the wnid (the wnid itself when a line has nothing else).
//! - Without one, a training folder defines the classes: its subfolder names, sorted, are the
//!   names and label i is the i-th name. A training list without a mapping file has
//!   `1 + the largest label` classes named `class_0000` … (width of the largest index).
//!   A validation folder then needs folder names it can match: a mapping file or a training folder.
//!
//! # Bad entries
//! A malformed list line, a label out of range, a class folder that is not a class, a missing
//! file and (with `full_decode`) a JPEG that does not decode are *bad entries*: [`scan`] collects
//! them with the list file and line (or the folder) and the image path; [`FolderScan::check`]
//! turns them into one error listing the first [`SHOWN_BAD`] and their count, unless `skip_bad`,
//! in which case they are dropped from the lists and counted. Decoding every JPEG up front is
//! slow for ImageNet (≈1.3 M files), so training checks listings and existence only and decodes
//! lazily ([`crate::input`]); `scan(…, full_decode = true)` is the full check.
//! Structural problems (an unreadable list file or mapping file, no classes, an empty part) are
//! plain errors, whatever `skip_bad`.
//!
//! # Fingerprint
//! [`FolderScan::fingerprint`] is the SHA-256 (hex) of the UTF-8 text
//! `"protoclr dataset fingerprint v1\nimagefolder\n"`, then `"classes <C>\n"` and one line per
//! class (`<wnid>\t<name>` with a mapping file or class folders, else `<name>`), then for each
//! part (`train`, `val`) `"<part> <n>\n"` and one line `<path>\t<label>\t<bytes>` per usable
//! entry in order, paths relative to the part's root with `/` separators. File contents are not
//! hashed (150 GB for ImageNet); names, labels and sizes are.
//!
//! # Decoding
//! [`decode_jpeg`] uses zune-jpeg directly (the decoder behind the `image` crate's JPEG support;
//! as fast as going through `image`, see [`crate::input`]): baseline and progressive,
//! grayscale, YCbCr, CMYK and YCCK input, always to RGB planes. Non-conformant but decodable
//! files are accepted (zune's tolerant mode), as PIL does; a PNG saved as `.JPEG` (ImageNet's
//! training set holds one) is undecodable, hence a bad entry. So is a truncated file: the
//! tolerant decoder would fill its missing part with grey, so the marker structure is walked
//! first and a stream that ends before its end-of-image marker is refused
//! ([`super::jpeg::check_complete`]); this one check serves training and `data verify`.

use crate::config::DataConfig;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// The `data.dataset` value of image-folder datasets.
pub const FOLDER_DATASET: &str = "imagefolder";
/// Per-channel mean of the ImageNet training images (torchvision's values), used to normalise
/// every folder dataset.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation of the ImageNet training images (torchvision's values).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Bad entries listed by name in the error of [`FolderScan::check`].
pub const SHOWN_BAD: usize = 10;

/// The images of one part of a folder dataset: paths relative to `root`, with their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageList {
    /// Folder the entry paths are relative to.
    pub root: PathBuf,
    /// (relative path, label < `class_names.len()`).
    pub entries: Vec<(PathBuf, u16)>,
    /// Class names in label order.
    pub class_names: Vec<String>,
}

impl ImageList {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Full path of image `i`. Panics if `i >= len()`.
    pub fn path(&self, i: usize) -> PathBuf {
        self.root.join(&self.entries[i].0)
    }

    /// Label of image `i`. Panics if `i >= len()`.
    pub fn label(&self, i: usize) -> u16 {
        self.entries[i].1
    }

    /// All labels, in entry order.
    pub fn labels(&self) -> Vec<u16> {
        self.entries.iter().map(|e| e.1).collect()
    }

    /// The images `idx` (in that order; repeats allowed), same root and classes. Panics if an
    /// index is out of range.
    pub fn subset(&self, idx: &[usize]) -> ImageList {
        ImageList {
            root: self.root.clone(),
            entries: idx.iter().map(|&i| self.entries[i].clone()).collect(),
            class_names: self.class_names.clone(),
        }
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &(_, l) in &self.entries {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Reads and decodes image `i` ([`read_image`]).
    pub fn load(&self, i: usize) -> Result<DecodedImage> {
        read_image(&self.path(i))
    }
}

/// Why an entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A list line that is not `path label`.
    Malformed(String),
    LabelOutOfRange {
        label: u64,
        classes: usize,
    },
    /// A subfolder of a class-per-folder part whose name is not a class.
    UnknownClass(String),
    /// The file cannot be opened or is not a regular file.
    Missing(String),
    /// The file is not a decodable JPEG.
    Undecodable(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed(why) => write!(f, "malformed line: {why}"),
            Problem::LabelOutOfRange { label, classes } => {
                write!(f, "label {label} out of range ({classes} classes)")
            }
            Problem::UnknownClass(name) => write!(f, "folder `{name}` is not one of the classes"),
            Problem::Missing(why) => write!(f, "missing file ({why})"),
            Problem::Undecodable(why) => write!(f, "not a decodable JPEG ({why})"),
        }
    }
}

/// One bad entry: where it was listed and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    /// The list file, or the folder, the entry comes from.
    pub source: PathBuf,
    /// Line number (1-based) in a list file.
    pub line: Option<usize>,
    /// The image path (or class folder), when the entry names one.
    pub path: Option<PathBuf>,
    pub problem: Problem,
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(p) = &self.path {
            write!(f, ": {}", p.display())?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Where the images of one part come from (absolute or data-root-resolved paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartSource {
    /// A class-per-folder tree.
    Folder(PathBuf),
    /// A list file whose paths are relative to `root`.
    List { file: PathBuf, root: PathBuf },
}

/// The files of a folder dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderLayout {
    pub train: PartSource,
    pub val: PartSource,
    /// The probe bank's own list (`data.bank_list`), if any.
    pub bank: Option<PartSource>,
    /// `wnid name` per line; label i = line i.
    pub class_map: Option<PathBuf>,
}

impl FolderLayout {
    /// The layout named by `data` (`train_dir` or `train_list`, `val_dir` or `val_list`,
    /// `class_map`, `list_root`), paths resolved against `data_root` (absolute ones are kept).
    pub fn from_config(data: &DataConfig, data_root: &Path) -> Result<FolderLayout> {
        if !data.is_folder() {
            bail!("`data.dataset` is `{}`, not `{FOLDER_DATASET}`", data.dataset);
        }
        let list_root = data_root.join(data.list_root.as_deref().unwrap_or(""));
        let part = |dir: &Option<String>, list: &Option<String>, name: &str| -> Result<PartSource> {
            match (dir, list) {
                (Some(d), None) => Ok(PartSource::Folder(data_root.join(d))),
                (None, Some(l)) => Ok(PartSource::List {
                    file: data_root.join(l),
                    root: list_root.clone(),
                }),
                _ => bail!("give exactly one of `data.{name}_dir` and `data.{name}_list`"),
            }
        };
        Ok(FolderLayout {
            train: part(&data.train_dir, &data.train_list, "train")?,
            val: part(&data.val_dir, &data.val_list, "val")?,
            bank: data.bank_list.as_ref().map(|l| PartSource::List {
                file: data_root.join(l),
                root: list_root.clone(),
            }),
            class_map: data.class_map.as_ref().map(|m| data_root.join(m)),
        })
    }
}

/// The result of [`scan`]: the usable entries of both parts and the bad ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderScan {
    pub train: ImageList,
    pub val: ImageList,
    /// The probe bank's list (`data.bank_list`), if the layout has one.
    pub bank: Option<ImageList>,
    /// Every bad entry, training part first (then validation, then bank), in listing order.
    pub bad: Vec<BadEntry>,
    /// Whether every usable entry was decoded (`full_decode`).
    pub decoded: bool,
    /// SHA-256 hex of the classes and usable entries (format in the module doc).
    pub fingerprint: String,
}

impl FolderScan {
    /// Ok when there are no bad entries, or `skip_bad` (they are already left out of the lists).
    /// Otherwise one error naming the first [`SHOWN_BAD`] with their list and line, and the count.
    pub fn check(&self, skip_bad: bool) -> Result<()> {
        if self.bad.is_empty() || skip_bad {
            return Ok(());
        }
        let mut msg = format!(
            "{} bad entr{} in the image-folder dataset (pass --skip-bad or set `data.skip_bad: true` to skip them):",
            self.bad.len(),
            if self.bad.len() == 1 { "y" } else { "ies" }
        );
        for b in self.bad.iter().take(SHOWN_BAD) {
            msg.push_str(&format!("\n  {b}"));
        }
        if self.bad.len() > SHOWN_BAD {
            msg.push_str(&format!("\n  … and {} more", self.bad.len() - SHOWN_BAD));
        }
        bail!(msg)
    }

    /// One line: images and classes of each part, bad entries.
    pub fn summary(&self) -> String {
        format!(
            "{} classes · train {} images · val {} images · {} bad entr{}{}",
            self.train.num_classes(),
            self.train.len(),
            self.val.len(),
            self.bad.len(),
            if self.bad.len() == 1 { "y" } else { "ies" },
            if self.decoded {
                " · every image decoded"
            } else {
                ""
            }
        )
    }
}

/// The classes: (key matched against folder names, display name).
struct Classes {
    keys: Vec<String>,
    names: Vec<String>,
    /// Keys are real folder names / wnids (not generated `class_…` names).
    named: bool,
}

impl Classes {
    fn index(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|k| k == key)
    }
}

/// Reads a class mapping file: `wnid name…` per line (blank lines skipped); returns (wnid, name)
/// in file order. A duplicate wnid is an error naming both lines.
pub fn read_class_map(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read class map {}", path.display()))?;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut first_line: Vec<usize> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (wnid, name) = match line.split_once(char::is_whitespace) {
            Some((w, n)) => (w.to_string(), n.trim().to_string()),
            None => (line.to_string(), line.to_string()),
        };
        if let Some(k) = out.iter().position(|(w, _)| *w == wnid) {
            bail!(
                "{}:{}: class `{wnid}` already on line {}",
                path.display(),
                i + 1,
                first_line[k]
            );
        }
        out.push((wnid, name));
        first_line.push(i + 1);
    }
    if out.is_empty() {
        bail!("class map {} lists no classes", path.display());
    }
    if out.len() > usize::from(u16::MAX) + 1 {
        bail!(
            "class map {}: {} classes, at most 65536 are supported",
            path.display(),
            out.len()
        );
    }
    Ok(out)
}

/// The class folder names of a class-per-folder tree, sorted (hidden entries and files skipped).
pub fn folder_classes(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("cannot read folder {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        names.push(name);
    }
    names.sort();
    if names.is_empty() {
        bail!("{}: no class folders", dir.display());
    }
    Ok(names)
}

fn is_jpeg_name(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    !hidden && matches!(ext.as_deref(), Some("jpg" | "jpeg"))
}

/// One list line: `path label`, split at the last run of whitespace (paths may hold spaces).
pub fn parse_list_line(line: &str) -> std::result::Result<(&str, u64), String> {
    let line = line.trim();
    let Some((path, label)) = line.rsplit_once(char::is_whitespace) else {
        return Err(format!("expected `path label`, got `{line}`"));
    };
    let path = path.trim_end();
    let label = label
        .parse::<u64>()
        .map_err(|_| format!("label `{label}` is not a non-negative integer"))?;
    Ok((path, label))
}

/// Raw entries of a part before existence checks.
struct Listed {
    root: PathBuf,
    /// (relative path, label, source, line).
    entries: Vec<(PathBuf, u16, Option<usize>)>,
    source: PathBuf,
    bad: Vec<BadEntry>,
}

fn list_folder(dir: &Path, classes: &Classes) -> Result<Listed> {
    let mut listed = Listed {
        root: dir.to_path_buf(),
        entries: Vec::new(),
        source: dir.to_path_buf(),
        bad: Vec::new(),
    };
    for name in folder_classes(dir)? {
        let Some(label) = classes.index(&name) else {
            listed.bad.push(BadEntry {
                source: dir.to_path_buf(),
                line: None,
                path: Some(dir.join(&name)),
                problem: Problem::UnknownClass(name),
            });
            continue;
        };
        let sub = dir.join(&name);
        let mut files: Vec<String> = std::fs::read_dir(&sub)
            .with_context(|| format!("cannot read folder {}", sub.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| is_jpeg_name(Path::new(n)))
            .collect();
        files.sort();
        listed.entries.extend(
            files
                .into_iter()
                .map(|f| (Path::new(&name).join(f), label as u16, None)),
        );
    }
    Ok(listed)
}

/// Parses a list file; labels are checked against `classes` when known.
fn list_file(file: &Path, root: &Path, classes: Option<usize>) -> Result<(Listed, Vec<u64>)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read list file {}", file.display()))?;
    let mut listed = Listed {
        root: root.to_path_buf(),
        entries: Vec::new(),
        source: file.to_path_buf(),
        bad: Vec::new(),
    };
    let mut raw_labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_list_line(line) {
            Err(why) => listed.bad.push(BadEntry {
                source: file.to_path_buf(),
                line: Some(i + 1),
                path: None,
                problem: Problem::Malformed(why),
            }),
            Ok((path, label)) => {
                let c = classes.unwrap_or(usize::from(u16::MAX) + 1) as u64;
                if label >= c {
                    listed.bad.push(BadEntry {
                        source: file.to_path_buf(),
                        line: Some(i + 1),
                        path: Some(root.join(path)),
                        problem: Problem::LabelOutOfRange {
                            label,
                            classes: c as usize,
                        },
                    });
                } else {
                    listed
                        .entries
                        .push((PathBuf::from(path), label as u16, Some(i + 1)));
                    raw_labels.push(label);
                }
            }
        }
    }
    Ok((listed, raw_labels))
}

/// Drops training-list entries whose label is out of range once the class count is known.
fn enforce_classes(listed: &mut Listed, classes: usize) {
    let (keep, drop): (Vec<_>, Vec<_>) = listed.entries.drain(..).partition(|e| (e.1 as usize) < classes);
    listed.entries = keep;
    for (p, l, line) in drop {
        listed.bad.push(BadEntry {
            source: listed.source.clone(),
            line,
            path: Some(listed.root.join(p)),
            problem: Problem::LabelOutOfRange {
                label: l as u64,
                classes,
            },
        });
    }
}

/// Checks existence (and with `full_decode` decodability) of the entries, in parallel; returns
/// the usable list, the sizes of its files, and the bad entries appended to `listed.bad` in
/// listing order.
fn check_part(
    mut listed: Listed,
    classes: &Classes,
    full_decode: bool,
    progress: &ProgressBar,
) -> (ImageList, Vec<u64>, Vec<BadEntry>) {
    let checks: Vec<std::result::Result<u64, Problem>> = listed
        .entries
        .par_iter()
        .map(|(p, _, _)| {
            progress.inc(1);
            let path = listed.root.join(p);
            let meta = std::fs::metadata(&path).map_err(|e| Problem::Missing(e.to_string()))?;
            if !meta.is_file() {
                return Err(Problem::Missing("not a regular file".into()));
            }
            if full_decode {
                read_image(&path).map_err(|e| Problem::Undecodable(format!("{:#}", e.root_cause())))?;
            }
            Ok(meta.len())
        })
        .collect();
    let mut entries = Vec::with_capacity(listed.entries.len());
    let mut sizes = Vec::with_capacity(listed.entries.len());
    let mut late_bad = Vec::new();
    for ((p, l, line), c) in listed.entries.into_iter().zip(checks) {
        match c {
            Ok(size) => {
                entries.push((p, l));
                sizes.push(size);
            }
            Err(problem) => late_bad.push(BadEntry {
                source: listed.source.clone(),
                line,
                path: Some(listed.root.join(&p)),
                problem,
            }),
        }
    }
    // Listing order: parse-time problems carry line numbers, checked ones follow their lines.
    listed.bad.extend(late_bad);
    listed.bad.sort_by_key(|b| b.line.unwrap_or(0));
    let list = ImageList {
        root: listed.root,
        entries,
        class_names: classes.names.clone(),
    };
    (list, sizes, listed.bad)
}

/// Lists a training part and resolves the classes (from `map`, the class folders, or the labels).
fn list_with_classes(part: &PartSource, map: Option<Vec<(String, String)>>) -> Result<(Listed, Classes)> {
    let (mut listed, classes) = match (part, map) {
        (PartSource::Folder(dir), Some(map)) => {
            let classes = Classes {
                keys: map.iter().map(|m| m.0.clone()).collect(),
                names: map.into_iter().map(|m| m.1).collect(),
                named: true,
            };
            (list_folder(dir, &classes)?, classes)
        }
        (PartSource::Folder(dir), None) => {
            let keys = folder_classes(dir)?;
            if keys.len() > usize::from(u16::MAX) + 1 {
                bail!(
                    "{}: {} class folders, at most 65536 are supported",
                    dir.display(),
                    keys.len()
                );
            }
            let classes = Classes {
                names: keys.clone(),
                keys,
                named: true,
            };
            (list_folder(dir, &classes)?, classes)
        }
        (PartSource::List { file, root }, Some(map)) => {
            let (listed, _) = list_file(file, root, Some(map.len()))?;
            let classes = Classes {
                keys: map.iter().map(|m| m.0.clone()).collect(),
                names: map.into_iter().map(|m| m.1).collect(),
                named: true,
            };
            (listed, classes)
        }
        (PartSource::List { file, root }, None) => {
            let (listed, labels) = list_file(file, root, None)?;
            let Some(&max) = labels.iter().max() else {
                bail!("list file {} has no usable entries", file.display());
            };
            let n = max as usize + 1;
            let width = (n - 1).to_string().len().max(4);
            let names: Vec<String> = (0..n).map(|c| format!("class_{c:0width$}")).collect();
            let classes = Classes {
                keys: names.clone(),
                names,
                named: false,
            };
            (listed, classes)
        }
    };
    enforce_classes(&mut listed, classes.names.len());
    Ok((listed, classes))
}

/// Lists and checks one part on its own (classes as for a training part, no mapping file), e.g.
/// for `protoclr bench input`: the usable entries and the bad ones.
pub fn scan_part(part: &PartSource, full_decode: bool) -> Result<(ImageList, Vec<BadEntry>)> {
    let (listed, classes) = list_with_classes(part, None)?;
    let (list, _, bad) = check_part(listed, &classes, full_decode, &ProgressBar::hidden());
    if list.is_empty() {
        bail!("no usable images in {}", listed_source(part).display());
    }
    Ok((list, bad))
}

fn listed_source(part: &PartSource) -> &Path {
    match part {
        PartSource::Folder(d) => d,
        PartSource::List { file, .. } => file,
    }
}

/// Lists both parts of `layout`, resolves the classes, checks every entry's file exists (and,
/// with `full_decode`, decodes every JPEG, in parallel) and computes the fingerprint. Bad entries
/// are collected, not raised: see [`FolderScan::check`]. Errors on structural problems only.
pub fn scan(layout: &FolderLayout, full_decode: bool) -> Result<FolderScan> {
    scan_with_progress(layout, full_decode, false)
}

/// [`scan`], with a progress bar (images checked, ETA) on stderr when `progress`.
pub fn scan_with_progress(layout: &FolderLayout, full_decode: bool, progress: bool) -> Result<FolderScan> {
    let map = layout.class_map.as_deref().map(read_class_map).transpose()?;
    let (train_listed, classes) = list_with_classes(&layout.train, map)?;
    // A part labelled by the training part's classes (validation, probe bank).
    let list_against = |part: &PartSource, what: &str| -> Result<Listed> {
        Ok(match part {
            PartSource::Folder(dir) => {
                if !classes.named {
                    bail!(
                        "{what} folder {} needs class names to match its folders: give `data.class_map` \
                         or a training folder",
                        dir.display()
                    );
                }
                list_folder(dir, &classes)?
            }
            PartSource::List { file, root } => list_file(file, root, Some(classes.names.len()))?.0,
        })
    };
    let val_listed = list_against(&layout.val, "validation")?;
    let bank_listed = layout
        .bank
        .as_ref()
        .map(|b| list_against(b, "probe bank"))
        .transpose()?;
    let bar = if progress {
        let total = train_listed.entries.len()
            + val_listed.entries.len()
            + bank_listed.as_ref().map_or(0, |b| b.entries.len());
        let pb = ProgressBar::new(total as u64);
        pb.set_style(
            ProgressStyle::with_template(if full_decode {
                "{elapsed_precise} [{bar:30}] {pos}/{len} images decoded · {per_sec} · ETA {eta}"
            } else {
                "{elapsed_precise} [{bar:30}] {pos}/{len} images checked · ETA {eta}"
            })
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let (train, train_sizes, mut bad) = check_part(train_listed, &classes, full_decode, &bar);
    let (val, val_sizes, val_bad) = check_part(val_listed, &classes, full_decode, &bar);
    let bank = bank_listed.map(|b| check_part(b, &classes, full_decode, &bar));
    bar.finish_and_clear();
    bad.extend(val_bad);
    if let Some((_, _, bank_bad)) = &bank {
        bad.extend(bank_bad.iter().cloned());
    }
    let bank_part = bank.as_ref().map(|(list, _, _)| ("probe bank", list));
    for (part, list) in [("training", &train), ("validation", &val)]
        .into_iter()
        .chain(bank_part)
    {
        if list.is_empty() {
            let why = if bad.is_empty() {
                String::new()
            } else {
                format!(" (first bad entry: {})", bad[0])
            };
            bail!("the {part} part of the image-folder dataset has no usable images{why}");
        }
    }
    let mut h = Sha256::new();
    h.update(format!(
        "protoclr dataset fingerprint v1\n{FOLDER_DATASET}\nclasses {}\n",
        classes.names.len()
    ));
    for (k, n) in classes.keys.iter().zip(&classes.names) {
        if classes.named {
            h.update(format!("{k}\t{n}\n"));
        } else {
            h.update(format!("{n}\n"));
        }
    }
    // The bank's lines only when there is one, so that other datasets keep their fingerprints.
    let bank_lines = bank.as_ref().map(|(list, sizes, _)| ("bank", list, sizes));
    for (part, list, sizes) in [("train", &train, &train_sizes), ("val", &val, &val_sizes)]
        .into_iter()
        .chain(bank_lines)
    {
        h.update(format!("{part} {}\n", list.len()));
        for ((p, l), s) in list.entries.iter().zip(sizes) {
            h.update(format!("{}\t{l}\t{s}\n", p.to_string_lossy().replace('\\', "/")));
        }
    }
    Ok(FolderScan {
        train,
        val,
        bank: bank.map(|(list, _, _)| list),
        bad,
        decoded: full_decode,
        fingerprint: hex::encode(h.finalize()),
    })
}

/// The fingerprint a run of `data` (a folder dataset) records: [`scan`] without decoding, and
/// [`FolderScan::check`] with `data.skip_bad`.
pub fn fingerprint(data: &DataConfig, data_root: &Path) -> Result<String> {
    let s = scan(&FolderLayout::from_config(data, data_root)?, false)?;
    s.check(data.skip_bad.unwrap_or(false))?;
    Ok(s.fingerprint)
}

/// A decoded image: 3×h×w bytes, the R, G and B planes, each row-major (the layout of
/// [`crate::data::Dataset`] and of the augmentation pipeline's input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    pub chw: Vec<u8>,
    pub height: usize,
    pub width: usize,
}

/// Decodes a JPEG file's bytes to RGB, planar ([`DecodedImage`]). Grayscale JPEGs are decoded as
/// one channel and copied to the three planes (2.5× faster than letting the decoder expand them).
///
/// A stream without its end-of-image marker (a truncated file) is an error, although zune-jpeg
/// would fill the missing part in ([`super::jpeg::check_complete`]).
pub fn decode_jpeg(bytes: &[u8]) -> Result<DecodedImage> {
    super::jpeg::check_complete(bytes)?;
    let zerr = |e: zune_jpeg::errors::DecodeErrors| anyhow::anyhow!("{e:?}");
    let opts = DecoderOptions::default().set_strict_mode(false);
    let mut head = JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    head.decode_headers().map_err(zerr)?;
    let gray = head.input_colorspace() == Some(ColorSpace::Luma);
    let out = if gray { ColorSpace::Luma } else { ColorSpace::RGB };
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), opts.jpeg_set_out_colorspace(out));
    let px = dec.decode().map_err(zerr)?;
    let (w, h) = dec.dimensions().context("no image dimensions")?;
    let plane = w * h;
    if plane == 0 || px.len() != out.num_components() * plane {
        bail!("decoded {} bytes for a {w}×{h} image", px.len());
    }
    let mut chw = vec![0u8; 3 * plane];
    if gray {
        for c in chw.chunks_exact_mut(plane) {
            c.copy_from_slice(&px);
        }
    } else {
        let (r, rest) = chw.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (k, p) in px.chunks_exact(3).enumerate() {
            r[k] = p[0];
            g[k] = p[1];
            b[k] = p[2];
        }
    }
    Ok(DecodedImage {
        chw,
        height: h,
        width: w,
    })
}

/// Reads and decodes the JPEG at `path`; errors name the path.
pub fn read_image(path: &Path) -> Result<DecodedImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    decode_jpeg(&bytes).with_context(|| format!("cannot decode image {}", path.display()))
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Real JPEG trees written by the tests.
    use image::codecs::jpeg::JpegEncoder;
    use image::ExtendedColorType;
    use std::path::Path;

    /// A w×h RGB test pattern (interleaved) that differs by `seed`.
    pub fn pattern(w: usize, h: usize, seed: usize) -> Vec<u8> {
        let mut px = Vec::with_capacity(3 * w * h);
        for y in 0..h {
            for x in 0..w {
                px.push(((x * 4 + seed * 37) % 256) as u8);
                px.push(((y * 4 + seed * 11) % 256) as u8);
                px.push((((x + y) * 2 + seed * 53) % 256) as u8);
            }
        }
        px
    }

    /// JPEG bytes (quality 90) of [`pattern`].
    pub fn jpeg(w: usize, h: usize, seed: usize) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90)
            .encode(&pattern(w, h, seed), w as u32, h as u32, ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    /// Writes `count` images `dir/<class>/img<k>.JPEG` of side w×h for every (class, count, w, h),
    /// k counting on across the classes (the first class holds img0, img1, …), pattern seed k.
    pub fn write_tree(dir: &Path, classes: &[(&str, usize, usize, usize)]) {
        let mut seed = 0;
        for &(class, count, w, h) in classes {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for _ in 0..count {
                std::fs::write(dir.join(class).join(format!("img{seed}.JPEG")), jpeg(w, h, seed)).unwrap();
                seed += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    fn data_cfg(f: impl FnOnce(&mut DataConfig)) -> DataConfig {
        let mut d = DataConfig {
            dataset: crate::config::DatasetName::Imagefolder,
            ..DataConfig::default()
        };
        f(&mut d);
        d
    }

    fn scan_cfg(d: &DataConfig, root: &Path, full: bool) -> Result<FolderScan> {
        scan(&FolderLayout::from_config(d, root)?, full)
    }

    #[test]
    fn decode_roundtrip_sizes_and_grayscale() {
        for (w, h) in [(64, 64), (37, 23), (1, 1), (65, 17)] {
            let img = decode_jpeg(&jpeg(w, h, 3)).unwrap();
            assert_eq!((img.width, img.height, img.chw.len()), (w, h, 3 * w * h));
            // Planar layout: pixel (0, 0) of plane c is close to the pattern's channel c.
            let src = pattern(w, h, 3);
            for (c, &want) in src.iter().take(3).enumerate() {
                let d = (img.chw[c * w * h] as i32 - want as i32).abs();
                assert!(d < 24, "{w}×{h} channel {c}: {} vs {}", img.chw[c * w * h], want);
            }
        }
        // A grayscale JPEG comes back as three equal planes.
        let mut out = Vec::new();
        let gray: Vec<u8> = (0..40 * 30).map(|k| (k % 200) as u8).collect();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode(&gray, 40, 30, image::ExtendedColorType::L8)
            .unwrap();
        let img = decode_jpeg(&out).unwrap();
        let p = 40 * 30;
        assert_eq!(img.chw[..p], img.chw[p..2 * p]);
        assert_eq!(img.chw[..p], img.chw[2 * p..]);
        assert!(decode_jpeg(b"not a jpeg at all").is_err());
    }

    #[test]
    fn truncated_jpegs_are_undecodable_for_training_and_verify() {
        // Cut to 10 … 99 % of their bytes (the cuts zune-jpeg used to fill in with grey), a
        // JPEG is not decoded — by `decode_jpeg` (training) and by the full scan (`data verify`).
        let full = jpeg(256, 192, 5);
        decode_jpeg(&full).unwrap();
        let t = tempfile::tempdir().unwrap();
        write_tree(&t.path().join("train"), &[("c0", 2, 24, 24)]);
        let fractions = [0.10, 0.33, 0.50, 0.90, 0.99];
        for (k, f) in fractions.iter().enumerate() {
            let cut = &full[..(full.len() as f64 * f) as usize];
            let Err(err) = decode_jpeg(cut) else {
                panic!("cut to {f} of {} bytes: decoded", full.len())
            };
            let err = format!("{err:#}");
            assert!(err.contains("truncated"), "cut to {f}: {err}");
            std::fs::write(t.path().join(format!("train/c0/cut{k}.JPEG")), cut).unwrap();
        }
        let d = data_cfg(|d| {
            d.train_dir = Some("train".into());
            d.val_dir = Some("train".into());
            d.class_map = None;
        });
        let s = scan_cfg(&d, t.path(), true).unwrap();
        // Each cut file is bad in both parts (the tree is used as training and validation).
        assert_eq!(s.bad.len(), 2 * fractions.len(), "{:?}", s.bad);
        assert!(s
            .bad
            .iter()
            .all(|b| matches!(&b.problem, Problem::Undecodable(m) if m.contains("truncated"))));
        assert_eq!((s.train.len(), s.val.len()), (2, 2));
        let Err(err) = read_image(&t.path().join("train/c0/cut4.JPEG")) else {
            panic!("a truncated file decoded")
        };
        let err = format!("{err:#}");
        assert!(err.contains("cut4.JPEG") && err.contains("truncated"), "{err}");
    }

    #[test]
    fn classes_from_sorted_folders_and_val_folders() {
        let t = tempfile::tempdir().unwrap();
        write_tree(&t.path().join("tr"), &[("n02", 2, 64, 64), ("n01", 3, 37, 23)]);
        write_tree(&t.path().join("va"), &[("n01", 1, 64, 64), ("n02", 1, 20, 30)]);
        std::fs::write(t.path().join("tr/n01/notes.txt"), "ignored").unwrap();
        std::fs::write(t.path().join("tr/n01/.hidden.JPEG"), "ignored").unwrap();
        let d = data_cfg(|d| {
            d.train_dir = Some("tr".into());
            d.val_dir = Some("va".into());
        });
        let s = scan_cfg(&d, t.path(), true).unwrap();
        assert!(s.bad.is_empty(), "{:?}", s.bad);
        assert_eq!(s.train.class_names, vec!["n01", "n02"]);
        assert_eq!(s.train.len(), 5);
        assert_eq!(s.train.entries[0], (PathBuf::from("n01/img2.JPEG"), 0));
        assert_eq!(s.train.entries[4].1, 1);
        assert_eq!(s.train.class_counts(), vec![3, 2]);
        assert_eq!(s.val.labels(), vec![0, 1]);
        let img = s.train.load(0).unwrap();
        assert_eq!((img.height, img.width), (23, 37));
        s.check(false).unwrap();
        // The fingerprint covers the listing: same tree → same; another file size → another.
        assert_eq!(scan_cfg(&d, t.path(), false).unwrap().fingerprint, s.fingerprint);
        assert_eq!(fingerprint(&d, t.path()).unwrap(), s.fingerprint);
        std::fs::write(t.path().join("va/n02/img1.JPEG"), jpeg(21, 30, 9)).unwrap();
        assert_ne!(scan_cfg(&d, t.path(), false).unwrap().fingerprint, s.fingerprint);
    }

    #[test]
    fn class_map_orders_and_names_classes() {
        let t = tempfile::tempdir().unwrap();
        write_tree(&t.path().join("train"), &[("n01", 1, 16, 16), ("n02", 2, 16, 16)]);
        std::fs::write(
            t.path().join("map.txt"),
            "n02 great white shark, white shark\n\nn01 tench\nn03\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("val.txt"),
            "train/n01/img0.JPEG 1\ntrain/n02/img1.JPEG 2\n",
        )
        .unwrap();
        let d = data_cfg(|d| {
            d.train_dir = Some("train".into());
            d.val_list = Some("val.txt".into());
            d.class_map = Some("map.txt".into());
        });
        let s = scan_cfg(&d, t.path(), false).unwrap();
        assert_eq!(
            s.train.class_names,
            vec!["great white shark, white shark", "tench", "n03"]
        );
        // n01 (label 1) first in folder order, then n02 (label 0).
        assert_eq!(s.train.labels(), vec![1, 0, 0]);
        assert_eq!(s.val.labels(), vec![1, 2]);
        assert!(s.bad.is_empty());
        // Duplicate wnids are an error naming both lines.
        std::fs::write(t.path().join("map.txt"), "n01 a\nn02 b\nn01 c\n").unwrap();
        let e = format!("{:#}", scan_cfg(&d, t.path(), false).unwrap_err());
        assert!(e.contains("map.txt:3") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn lt_lists_parse_and_report_bad_lines() {
        let t = tempfile::tempdir().unwrap();
        write_tree(
            &t.path().join("imgs/train"),
            &[("a", 3, 64, 64), ("b", 2, 33, 47)],
        );
        std::fs::create_dir_all(t.path().join("lists")).unwrap();
        std::fs::write(
            t.path().join("lists/train.txt"),
            "train/a/img0.JPEG 0\ntrain/a/img1.JPEG 0\n\ntrain/b/img3.JPEG 2\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("lists/val.txt"),
            "train/a/img2.JPEG 1\ntrain/b/img4.JPEG\ntrain/b/img3.JPEG 7\ntrain/a/nope.JPEG 0\n",
        )
        .unwrap();
        let d = data_cfg(|d| {
            d.train_list = Some("lists/train.txt".into());
            d.val_list = Some("lists/val.txt".into());
            d.list_root = Some("imgs".into());
        });
        let s = scan_cfg(&d, t.path(), false).unwrap();
        assert_eq!(
            s.train.class_names,
            vec!["class_0000", "class_0001", "class_0002"]
        );
        assert_eq!(s.train.labels(), vec![0, 0, 2]);
        assert_eq!(s.train.root, t.path().join("imgs"));
        assert_eq!(s.val.entries, vec![(PathBuf::from("train/a/img2.JPEG"), 1)]);
        let shown: Vec<String> = s.bad.iter().map(|b| b.to_string()).collect();
        assert_eq!(s.bad.len(), 3, "{shown:?}");
        assert_eq!(s.bad[0].line, Some(2));
        assert!(matches!(s.bad[0].problem, Problem::Malformed(_)));
        assert!(shown[0].contains("val.txt:2: malformed line"), "{shown:?}");
        assert_eq!(
            s.bad[1].problem,
            Problem::LabelOutOfRange { label: 7, classes: 3 }
        );
        assert!(
            shown[1].contains("val.txt:3") && shown[1].contains("img3.JPEG"),
            "{shown:?}"
        );
        assert!(matches!(s.bad[2].problem, Problem::Missing(_)));
        assert!(
            shown[2].contains("val.txt:4") && shown[2].contains("nope.JPEG"),
            "{shown:?}"
        );
        let e = format!("{:#}", s.check(false).unwrap_err());
        assert!(e.contains("3 bad entries") && e.contains("val.txt:2"), "{e}");
        s.check(true).unwrap();
        assert_eq!(
            parse_list_line("dir with space/x.JPEG \t 12 "),
            Ok(("dir with space/x.JPEG", 12))
        );
        assert!(parse_list_line("x.JPEG -1").is_err());
        assert!(parse_list_line("x.JPEG").is_err());
    }

    #[test]
    fn bad_files_and_labels_with_and_without_skip_bad() {
        let t = tempfile::tempdir().unwrap();
        write_tree(&t.path().join("train"), &[("c0", 3, 64, 64), ("c1", 3, 31, 45)]);
        // Corrupt bytes behind a .JPEG name, and a truncated header.
        std::fs::write(t.path().join("train/c1/img4.JPEG"), b"\xff\xd8garbage").unwrap();
        std::fs::write(t.path().join("train/c0/zz.jpg"), b"definitely not a jpeg").unwrap();
        std::fs::write(
            t.path().join("val.txt"),
            "train/c0/img0.JPEG 0\ntrain/c1/img3.JPEG 5\ntrain/c1/missing.JPEG 1\ntrain/c1/img5.JPEG 1\n",
        )
        .unwrap();
        let d = data_cfg(|d| {
            d.train_dir = Some("train".into());
            d.val_list = Some("val.txt".into());
        });
        // Without decoding: only listing problems and the missing file.
        let quick = scan_cfg(&d, t.path(), false).unwrap();
        assert_eq!(quick.bad.len(), 2, "{:?}", quick.bad);
        assert_eq!(quick.train.len(), 7);
        // With full decoding the two corrupt files are found too, with their paths.
        let s = scan_cfg(&d, t.path(), true).unwrap();
        let shown: Vec<String> = s.bad.iter().map(|b| b.to_string()).collect();
        assert_eq!(s.bad.len(), 4, "{shown:?}");
        assert!(shown
            .iter()
            .any(|m| m.contains("c1/img4.JPEG") && m.contains("not a decodable JPEG")));
        assert!(shown
            .iter()
            .any(|m| m.contains("c0/zz.jpg") && m.contains("not a decodable JPEG")));
        assert!(shown
            .iter()
            .any(|m| m.contains("val.txt:2") && m.contains("label 5 out of range")));
        assert!(shown
            .iter()
            .any(|m| m.contains("val.txt:3") && m.contains("missing file")));
        assert_eq!(s.train.len(), 5);
        assert_eq!(s.val.len(), 2);
        let e = format!("{:#}", s.check(false).unwrap_err());
        assert!(e.contains("4 bad entries") && e.contains("skip_bad"), "{e}");
        s.check(true).unwrap();
        // A tree whose only class folder is unknown to the mapping file.
        std::fs::write(t.path().join("map.txt"), "c0 zero\n").unwrap();
        let d = data_cfg(|d| {
            d.train_dir = Some("train".into());
            d.val_dir = Some("train".into());
            d.class_map = Some("map.txt".into());
        });
        let s = scan_cfg(&d, t.path(), false).unwrap();
        assert!(s
            .bad
            .iter()
            .all(|b| matches!(&b.problem, Problem::UnknownClass(c) if c == "c1")));
        assert_eq!(s.bad.len(), 2);
    }

    #[test]
    fn many_bad_entries_are_summarised() {
        let t = tempfile::tempdir().unwrap();
        write_tree(&t.path().join("train"), &[("a", 1, 8, 8)]);
        let lines: String = (0..25).map(|k| format!("train/a/missing{k}.JPEG 0\n")).collect();
        std::fs::write(t.path().join("val.txt"), format!("train/a/img0.JPEG 0\n{lines}")).unwrap();
        let d = data_cfg(|d| {
            d.train_dir = Some("train".into());
            d.val_list = Some("val.txt".into());
        });
        let e = format!("{:#}", fingerprint(&d, t.path()).unwrap_err());
        assert!(e.contains("25 bad entries") && e.contains("and 15 more"), "{e}");
        assert_eq!(e.matches("missing file").count(), SHOWN_BAD, "{e}");
        // Structural problems are errors whatever skip_bad.
        let d = data_cfg(|d| {
            d.train_dir = Some("nowhere".into());
            d.val_list = Some("val.txt".into());
            d.skip_bad = Some(true);
        });
        assert!(format!("{:#}", fingerprint(&d, t.path()).unwrap_err()).contains("nowhere"));
    }
}

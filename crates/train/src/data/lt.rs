//! `protoclr data make-lt`: a long-tailed version of a class-per-folder dataset (Imagenette →
//! Imagenette-LT) in the ImageNet-LT format, read back through `data.train_list` /
//! `data.val_list` like the real ImageNet-LT.
//!
//! # Input
//! `FROM/train/<class>/*.JPEG` and `FROM/val/<class>/*.JPEG` (the folder names are options),
//! listed as [`super::folder::scan`] lists class folders: classes in sorted order of the training
//! folder names (label i = i-th name), files in sorted order of their names. Every validation
//! folder must be a training class.
//!
//! # Class sizes
//! The exponential profile of CIFAR-10-LT (Cao et al. 2019), the one `data.imbalance_ratio`
//! applies: class c keeps `n_c = floor(n_max · ρ^(−c/(C−1)))` training images
//! ([`super::long_tail_counts`]), n_max the smallest class of `FROM/train` (so every class can
//! supply its share), the images of each class chosen by a seeded shuffle
//! ([`super::long_tail_indices`], `ChaCha8Rng` seeded with `--seed`). ImageNet-LT itself drew
//! its 1,000 class sizes from a Pareto distribution with α = 6 (1,280 down to 5 images); with
//! 10 classes a random draw is a poor profile, hence the deterministic exponential one.
//! Imagenette (smallest class 858) at ρ = 100 gives 858, 514, 308, 184, 110, 66, 39, 23, 14, 8.
//!
//! # Output (`OUT/`, written as one unit: a staging folder renamed into place)
//! - `train.txt`: `train/<class>/<file> <label>` a line (paths relative to `FROM`, so a config
//!   sets `data.list_root` to `FROM` relative to the data root), in listing order.
//! - `val.txt`: a balanced validation list, the same number of images of every class (default:
//!   the smallest validation class; ImageNet-LT's val/test lists are balanced too), chosen by
//!   a seeded shuffle (seed `--seed` + 1), same format.
//! - `bank.txt`: a balanced probe bank (a `data.bank_list`): n_max training images of every
//!   class (all of the smallest class), chosen by a seeded shuffle (seed `--seed` + 2), same
//!   format. The linear probe and the kNN memory are fitted on it, as ImageNet-LT's
//!   self-supervised evaluations fit them on balanced data: a probe fitted on the long-tailed
//!   list itself learns the class prior (on Imagenette-LT at ρ = 100 it scored about 1 % on the
//!   medium- and few-shot classes, for trained and random-init encoders alike) and would not
//!   measure the representation. It overlaps the training list, as the CIFAR probe bank overlaps
//!   CIFAR-10-LT's training subset.
//! - `classes.txt`: one class folder name a line, label i on line i (a `data.class_map`).
//!
//! Same input, ρ and seed → byte-identical files. If `OUT` already exists with exactly these
//! files nothing is written; with other contents it is an error (nothing is changed).

use super::folder::{scan, FolderLayout, ImageList, PartSource};
use super::subset::{long_tail_counts, long_tail_indices, per_class_indices};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// What [`make_lt`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct LtOptions {
    /// ρ = n_max / n_min of the training profile (≥ 1).
    pub imbalance: f64,
    /// Seed of the choice of images within each class.
    pub seed: u64,
    /// Validation images per class (default: the smallest validation class).
    pub val_per_class: Option<usize>,
    /// Training and validation folders under `FROM`.
    pub train: String,
    pub val: String,
}

impl LtOptions {
    /// Imbalance `imbalance`, seed 0, folders `train` and `val`, default validation size.
    pub fn new(imbalance: f64) -> LtOptions {
        LtOptions {
            imbalance,
            seed: 0,
            val_per_class: None,
            train: "train".into(),
            val: "val".into(),
        }
    }
}

/// The lists of a long-tailed dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtLists {
    /// Class folder names in label order.
    pub classes: Vec<String>,
    /// Lines of `train.txt`, `val.txt` and `classes.txt`.
    pub train_txt: String,
    pub val_txt: String,
    pub bank_txt: String,
    pub classes_txt: String,
    /// Training images kept of each class.
    pub train_counts: Vec<usize>,
    /// Validation images of each class.
    pub val_per_class: usize,
}

/// The lines `<part>/<class>/<file> <label>` of the entries `idx` of `list`.
fn lines(part: &str, list: &ImageList, idx: &[usize]) -> String {
    idx.iter()
        .map(|&i| {
            let (path, label) = &list.entries[i];
            let rel = path
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            format!("{part}/{rel} {label}\n")
        })
        .collect()
}

/// Builds the lists of the long-tailed version of `from` (see the module doc).
pub fn make_lt(from: &Path, opts: &LtOptions) -> Result<LtLists> {
    for part in [&opts.train, &opts.val] {
        if part.is_empty() || part.contains(char::is_whitespace) {
            bail!("the folder name `{part}` must be non-empty and free of whitespace");
        }
    }
    let layout = FolderLayout {
        train: PartSource::Folder(from.join(&opts.train)),
        val: PartSource::Folder(from.join(&opts.val)),
        bank: None,
        class_map: None,
    };
    let s = scan(&layout, false).with_context(|| format!("cannot list {}", from.display()))?;
    s.check(false)
        .with_context(|| format!("{} is not a clean class-per-folder dataset", from.display()))?;
    let classes = s.train.class_names.clone();
    let k = classes.len();
    let train_labels = s.train.labels();
    let train_counts = long_tail_counts(&s.train.class_counts(), opts.imbalance)?;
    let train_idx = long_tail_indices(&train_labels, k, opts.imbalance, opts.seed)?;

    let val_counts = s.val.class_counts();
    let smallest = *val_counts.iter().min().expect("at least one class");
    let val_per_class = opts.val_per_class.unwrap_or(smallest);
    if val_per_class == 0 {
        let c = val_counts.iter().position(|&n| n == 0).unwrap_or(0);
        bail!(
            "{}: class `{}` has no validation images; a balanced validation list needs some",
            layout_dir(from, &opts.val),
            classes[c]
        );
    }
    let val_idx = per_class_indices(&s.val.labels(), k, val_per_class, opts.seed.wrapping_add(1))
        .with_context(|| format!("{}: --val-per-class {val_per_class}", layout_dir(from, &opts.val)))?;
    let n_max = *s.train.class_counts().iter().min().expect("at least one class");
    let bank_idx = per_class_indices(&train_labels, k, n_max, opts.seed.wrapping_add(2))?;
    Ok(LtLists {
        train_txt: lines(&opts.train, &s.train, &train_idx),
        val_txt: lines(&opts.val, &s.val, &val_idx),
        bank_txt: lines(&opts.train, &s.train, &bank_idx),
        classes_txt: classes.iter().map(|c| format!("{c}\n")).collect(),
        classes,
        train_counts,
        val_per_class,
    })
}

fn layout_dir(from: &Path, part: &str) -> String {
    from.join(part).display().to_string()
}

/// The files of `lists`, by name.
fn files(lists: &LtLists) -> [(&'static str, &str); 4] {
    [
        ("train.txt", &lists.train_txt),
        ("val.txt", &lists.val_txt),
        ("bank.txt", &lists.bank_txt),
        ("classes.txt", &lists.classes_txt),
    ]
}

/// Writes `lists` as the folder `out` (module doc): into a staging folder beside it, each file
/// synced, then renamed to `out`. Returns false when `out` already held exactly these files.
pub fn write_lt(lists: &LtLists, out: &Path) -> Result<bool> {
    if out.exists() {
        // Each file read once: the names whose content differs from (or is missing in) `out`.
        let differing: Vec<&str> = files(lists)
            .into_iter()
            .filter(|(name, text)| !std::fs::read_to_string(out.join(name)).is_ok_and(|t| t == *text))
            .map(|(name, _)| name)
            .collect();
        if differing.is_empty() {
            return Ok(false);
        }
        if differing == ["bank.txt"] && !out.join("bank.txt").exists() {
            bail!(
                "{} holds these lists but no bank.txt (written by an older protoclr, before the probe \
                 bank); remove it and rerun (nothing was changed)",
                out.display()
            );
        }
        bail!(
            "{} already exists with other contents (another ρ, seed or source?); remove it or \
             choose another --out (nothing was changed)",
            out.display()
        );
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a folder name", out.display()))?
        .to_string_lossy();
    let staging = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| -> Result<()> {
        std::fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
        for (file, text) in files(lists) {
            protoclr_formats::fsutil::atomic_write(&staging.join(file), text.as_bytes())?;
        }
        std::fs::rename(&staging, out)
            .with_context(|| format!("cannot rename {} to {}", staging.display(), out.display()))?;
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::super::folder::test_support::write_tree;
    use super::*;
    use crate::config::DataConfig;
    use std::collections::BTreeSet;

    /// Training classes of 12, 10 and 11 images, validation of 4, 3 and 5 (class names out of
    /// alphabetical order on disk do not matter: folders are sorted).
    fn source(root: &Path) -> std::path::PathBuf {
        let from = root.join("nette");
        write_tree(
            &from.join("train"),
            &[("n03", 11, 8, 8), ("n01", 12, 8, 8), ("n02", 10, 9, 7)],
        );
        write_tree(
            &from.join("val"),
            &[("n02", 3, 8, 8), ("n01", 4, 8, 8), ("n03", 5, 8, 8)],
        );
        std::fs::write(from.join("train/n01/notes.txt"), "not an image").unwrap();
        from
    }

    fn parse(text: &str) -> Vec<(String, u16)> {
        text.lines()
            .map(|l| {
                let (p, y) = l.rsplit_once(' ').unwrap();
                (p.to_string(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn lists_follow_the_profile_and_read_back_as_a_folder_dataset() {
        let t = tempfile::tempdir().unwrap();
        let from = source(t.path());
        let lists = make_lt(&from, &LtOptions::new(10.0)).unwrap();
        // n_max = 10 (the smallest class): 10, floor(10 · 10^(−1/2)) = 3, floor(10 / 10) = 1.
        assert_eq!(lists.classes, vec!["n01", "n02", "n03"]);
        assert_eq!(lists.train_counts, vec![10, 3, 1]);
        assert_eq!(lists.val_per_class, 3);
        assert_eq!(lists.classes_txt, "n01\nn02\nn03\n");
        let train = parse(&lists.train_txt);
        let val = parse(&lists.val_txt);
        let bank = parse(&lists.bank_txt);
        let per_class = |v: &[(String, u16)]| {
            (0..3)
                .map(|c| v.iter().filter(|e| e.1 == c).count())
                .collect::<Vec<_>>()
        };
        assert_eq!(per_class(&train), vec![10, 3, 1]);
        assert_eq!(per_class(&val), vec![3, 3, 3]);
        // The probe bank is balanced at n_max = 10 of each training class (of 12, 10, 11).
        assert_eq!(per_class(&bank), vec![10, 10, 10]);
        // Every path exists, lies in its label's class folder, and appears once.
        for (part, entries) in [("train", &train), ("val", &val), ("train", &bank)] {
            let unique: BTreeSet<&String> = entries.iter().map(|e| &e.0).collect();
            assert_eq!(unique.len(), entries.len());
            for (p, y) in entries.iter() {
                assert!(from.join(p).is_file(), "{p}");
                assert!(
                    p.starts_with(&format!("{part}/{}/", lists.classes[*y as usize])),
                    "{p}"
                );
                assert!(p.ends_with(".JPEG"), "{p}");
            }
        }
        // Deterministic: the same call gives the same bytes; another seed other images.
        assert_eq!(make_lt(&from, &LtOptions::new(10.0)).unwrap(), lists);
        let other = make_lt(
            &from,
            &LtOptions {
                seed: 5,
                ..LtOptions::new(10.0)
            },
        )
        .unwrap();
        assert_eq!(other.train_counts, lists.train_counts);
        assert_ne!(other.train_txt, lists.train_txt);

        // Written, then read through train_list / val_list / class_map as ImageNet-LT is.
        let out = t.path().join("nette-lt10");
        assert!(write_lt(&lists, &out).unwrap());
        let mut entries: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries, vec!["nette", "nette-lt10"], "no staging folder left");
        let data = DataConfig {
            dataset: crate::config::DatasetName::Imagefolder,
            train_list: Some("nette-lt10/train.txt".into()),
            val_list: Some("nette-lt10/val.txt".into()),
            list_root: Some("nette".into()),
            class_map: Some("nette-lt10/classes.txt".into()),
            ..DataConfig::default()
        };
        let s = scan(&FolderLayout::from_config(&data, t.path()).unwrap(), true).unwrap();
        assert!(s.bad.is_empty(), "{:?}", s.bad);
        assert_eq!(s.train.class_counts(), vec![10, 3, 1]);
        assert_eq!(s.val.class_counts(), vec![3, 3, 3]);
        assert_eq!(s.bank, None);
        // With the bank list: read as a third part, and part of the fingerprint.
        let with_bank = DataConfig {
            bank_list: Some("nette-lt10/bank.txt".into()),
            ..data.clone()
        };
        let b = scan(&FolderLayout::from_config(&with_bank, t.path()).unwrap(), true).unwrap();
        assert!(b.bad.is_empty(), "{:?}", b.bad);
        assert_eq!(b.bank.as_ref().unwrap().class_counts(), vec![10, 10, 10]);
        assert_eq!((&b.train, &b.val), (&s.train, &s.val));
        assert_ne!(b.fingerprint, s.fingerprint);
        assert_eq!(s.train.class_names, lists.classes);
        // Writing the same lists again is a no-op; other lists into the same folder are refused.
        assert!(!write_lt(&lists, &out).unwrap());
        let e = format!("{:#}", write_lt(&other, &out).unwrap_err());
        assert!(e.contains("already exists with other contents"), "{e}");
        // A folder of an older protoclr (the same lists, no bank.txt) is named as such.
        std::fs::remove_file(out.join("bank.txt")).unwrap();
        let e = format!("{:#}", write_lt(&lists, &out).unwrap_err());
        assert!(e.contains("no bank.txt") && e.contains("remove it"), "{e}");
        std::fs::write(out.join("bank.txt"), &lists.bank_txt).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("train.txt")).unwrap(),
            lists.train_txt
        );
    }

    #[test]
    fn profile_at_rho_100_and_bad_sources() {
        let t = tempfile::tempdir().unwrap();
        let from = source(t.path());
        let lists = make_lt(
            &from,
            &LtOptions {
                val_per_class: Some(2),
                ..LtOptions::new(100.0)
            },
        )
        .unwrap();
        // 10, floor(10 / 10) = 1, floor(10 / 100) = 0: a class may end up empty at this size.
        assert_eq!(lists.train_counts, vec![10, 1, 0]);
        assert_eq!(parse(&lists.val_txt).len(), 6);
        // More validation images than a class has; ρ < 1; a validation class that is not a
        // training class.
        let e = format!(
            "{:#}",
            make_lt(
                &from,
                &LtOptions {
                    val_per_class: Some(4),
                    ..LtOptions::new(10.0)
                }
            )
            .unwrap_err()
        );
        assert!(
            e.contains("val") && e.contains("class 1 has only 3 images"),
            "{e}"
        );
        assert!(make_lt(&from, &LtOptions::new(0.5)).is_err());
        write_tree(&from.join("val"), &[("n09", 1, 8, 8)]);
        let e = format!("{:#}", make_lt(&from, &LtOptions::new(10.0)).unwrap_err());
        assert!(e.contains("n09") && e.contains("not one of the classes"), "{e}");
    }
}

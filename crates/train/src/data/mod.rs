//! CIFAR-10 / CIFAR-100 data: readers of the official binary releases, verification, seeded
//! training subsets, normalisation statistics and the download (`protoclr data fetch|verify`).
//!
//! # Files
//! - CIFAR-10 (`ROOT/cifar-10-batches-bin/`): `data_batch_1.bin` … `data_batch_5.bin` (training,
//!   10,000 records each) and `test_batch.bin` (10,000). A record is 3,073 bytes: the label byte
//!   (0–9), then 1,024 red, 1,024 green and 1,024 blue bytes of a 32×32 image, row-major. Class
//!   names come from `batches.meta.txt` (one a line), or the official names when it is absent.
//! - CIFAR-100 (`ROOT/cifar-100-binary/`): `train.bin` (50,000 records) and `test.bin` (10,000).
//!   A record is 3,074 bytes: the coarse label (0–19), the fine label (0–99), then the 3,072 pixel
//!   bytes as above. The fine labels are used (100 classes); names come from
//!   `fine_label_names.txt` when present, else `class_00` … `class_99`.
//!
//! Images are kept as `u8` in the file's own layout (CHW per image), so [`Dataset::image`] is a
//! plain slice of the record's pixels.
//!
//! # Verification
//! Every file is read once: the same bytes are hashed (MD5) and parsed, the files in parallel
//! (rayon). A missing file, an empty file, a size that is not a multiple of the record length
//! (a truncated download) or a label out of range is always an error naming the file (and the
//! record for a bad label).
//! Each file's MD5 is compared with the published one ([`CIFAR10_FILE_MD5`],
//! [`CIFAR100_FILE_MD5`]: CIFAR-100's `train.bin` 6172c775…, `test.bin` 4499cfba…, the members of
//! the official archive). A mismatch (one changed byte is enough) is an error unless
//! `allow_unverified`, in which case the split is returned with `verified = false` (recorded in
//! a run's metrics as `dataset_verified`); the message also names a record count that differs
//! from the official one (50,000 / 10,000 for CIFAR-100).
//!
//! # Fingerprint
//! [`Split::fingerprint`] is the SHA-256 (hex) of the UTF-8 text
//! `"protoclr dataset fingerprint v1\n<dataset>\n"` followed by one line `"<file> <md5>\n"` per
//! data file in the release's fixed order (CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin`,
//! `test_batch.bin`; CIFAR-100: `train.bin`, `test.bin`). Class-name files are not part of it.
//!
//! # Training subsets
//! [`select_train`] applies the config's `per_class`, then `fraction`, then `imbalance_ratio`
//! (each step on the result of the previous one; any combination), see [`subset`]. A run first
//! holds out its validation split (`eval.val_images`, [`holdout_and_select`]) and chooses the
//! training subset among the other images.
//!
//! # Image folders
//! `data.dataset: imagefolder` reads ImageNet / ImageNet-LT style trees and list files of JPEGs,
//! decoded lazily while training (see [`folder`] and [`crate::input`]). [`make_lt`] writes an
//! ImageNet-LT-style long-tailed version of such a tree (`protoclr data make-lt`).
//! [`dataset_fingerprint`] gives the fingerprint of either kind of dataset from its config.
//!
//! # Download
//! [`fetch`] downloads the official archive (or the same file name under `base_url` / env
//! `PROTOCLR_DATA_URL`), checks its MD5, unpacks it atomically and verifies the files, see
//! [`fetch_from`].

mod cifar;
mod fetch;
pub mod folder;
pub mod jpeg;
mod lt;
pub mod subset;
mod verify;

pub use cifar::{
    dataset_dir, fingerprint, load, load_cifar10, load_cifar100, FileCheck, FileStatus, CIFAR100_FILE_MD5,
    CIFAR100_FOLDER, CIFAR10_CLASSES, CIFAR10_FILE_MD5, CIFAR10_FOLDER, DATASETS, IMAGE_BYTES, SIDE,
};
pub use fetch::{
    archive_url, fetch, fetch_from, fetch_from_with, CIFAR100_ARCHIVE_MD5, CIFAR100_URL, CIFAR10_ARCHIVE_MD5,
    CIFAR10_URL, DATA_URL_ENV, DEFAULT_IDLE_TIMEOUT, OFFICIAL_BASE_URL,
};
pub use folder::{
    decode_jpeg, read_image, scan, BadEntry, DecodedImage, FolderLayout, FolderScan, ImageList, PartSource,
    Problem, FOLDER_DATASET, IMAGENET_MEAN, IMAGENET_STD,
};
pub use lt::{make_lt, write_lt, LtLists, LtOptions};
pub use subset::{
    complement, default_val_images, fraction_indices, holdout_and_select, long_tail_counts,
    long_tail_indices, per_class_indices, select_indices, select_train, step_seed, validation_indices,
};
pub use verify::{verify, DatasetReport, VerifyReport};

use rayon::prelude::*;

/// Per-channel (R, G, B) mean of the CIFAR-10 training images, in [0, 1] units: over all
/// 50,000 × 1,024 pixels (checked against the real files in the tests).
pub const CIFAR10_MEAN: [f32; 3] = [0.491_399_7, 0.482_158_4, 0.446_530_9];
/// Per-channel population standard deviation over all CIFAR-10 training pixels (not the often
/// quoted 0.2023/0.1994/0.2010, which averages per-image deviations).
pub const CIFAR10_STD: [f32; 3] = [0.247_032_2, 0.243_485_1, 0.261_587_8];
/// Per-channel mean of the CIFAR-100 training images (widely published values, same definition
/// as [`CIFAR10_MEAN`]; checked against the real files in the tests when they are at hand).
pub const CIFAR100_MEAN: [f32; 3] = [0.507_075_2, 0.486_548_9, 0.440_917_8];
/// Per-channel population standard deviation of the CIFAR-100 training pixels.
pub const CIFAR100_STD: [f32; 3] = [0.267_334_3, 0.256_438_5, 0.276_150_5];

/// The fingerprint a run of the `data` config records in its metrics (and the grid puts into cell
/// ids): [`fingerprint`] for CIFAR, [`folder::fingerprint`] (a listing scan) for image folders.
pub fn dataset_fingerprint(
    data: &crate::config::DataConfig,
    root: &std::path::Path,
) -> anyhow::Result<String> {
    if data.is_folder() {
        folder::fingerprint(data, root)
    } else {
        fingerprint(data.dataset.as_str(), root)
    }
}

/// What [`dataset_fingerprint`] depends on, as a string (for caching fingerprints): the dataset
/// name for CIFAR; for image folders also the files named (`train_*`, `val_*`, `bank_list`, `list_root`,
/// `class_map`) and `skip_bad`.
pub fn dataset_key(data: &crate::config::DataConfig) -> String {
    if !data.is_folder() {
        return data.dataset.to_string();
    }
    format!(
        "{}\n{:?}",
        data.dataset,
        (
            &data.train_dir,
            &data.val_dir,
            &data.train_list,
            &data.val_list,
            &data.bank_list,
            &data.list_root,
            &data.class_map,
            data.skip_bad,
        )
    )
}

/// The official training-set mean and standard deviation of `dataset` (`cifar10`/`cifar100`).
pub fn official_mean_std(dataset: &str) -> Option<([f32; 3], [f32; 3])> {
    match dataset {
        "cifar10" => Some((CIFAR10_MEAN, CIFAR10_STD)),
        "cifar100" => Some((CIFAR100_MEAN, CIFAR100_STD)),
        _ => None,
    }
}

/// Images and labels of one part of a dataset, held in memory as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// `n × 3 × height × width` bytes: per image the R, G and B planes, each row-major.
    pub images: Vec<u8>,
    /// One label per image, `< num_classes`.
    pub labels: Vec<u16>,
    /// Number of images.
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    /// `num_classes` names, in label order.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Bytes of one image (`3 × height × width`).
    pub fn image_len(&self) -> usize {
        3 * self.height * self.width
    }

    /// The pixels of image `i` (CHW, `u8`). Panics if `i >= n`.
    pub fn image(&self, i: usize) -> &[u8] {
        assert!(i < self.n, "image index {i} out of range (n = {})", self.n);
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// A new dataset holding images `idx` (in that order; repeats allowed), same classes.
    /// Panics if an index is `>= n`.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let len = self.image_len();
        let mut images = Vec::with_capacity(idx.len() * len);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            images,
            labels,
            n: idx.len(),
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        }
    }

    /// Number of images of each class (length `num_classes`).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// The official training and test parts of a dataset, with the identity of the files read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
    /// SHA-256 hex over the dataset name and the per-file MD5s (format in the module doc).
    pub fingerprint: String,
    /// Every file matched its published MD5.
    pub verified: bool,
}

/// Per-channel mean and population standard deviation of the pixels of `ds`, in [0, 1] units
/// (pixel / 255), summed exactly in integers. Panics if `ds` is empty.
pub fn channel_mean_std(ds: &Dataset) -> ([f32; 3], [f32; 3]) {
    assert!(ds.n > 0, "channel_mean_std of an empty dataset");
    let plane = ds.height * ds.width;
    let (sum, sq) = ds
        .images
        .par_chunks(3 * plane)
        .fold(
            || ([0u64; 3], [0u64; 3]),
            |(mut s, mut q), img| {
                for c in 0..3 {
                    for &p in &img[c * plane..(c + 1) * plane] {
                        let p = u64::from(p);
                        s[c] += p;
                        q[c] += p * p;
                    }
                }
                (s, q)
            },
        )
        .reduce(
            || ([0u64; 3], [0u64; 3]),
            |(s1, q1), (s2, q2)| {
                (
                    [s1[0] + s2[0], s1[1] + s2[1], s1[2] + s2[2]],
                    [q1[0] + q2[0], q1[1] + q2[1], q1[2] + q2[2]],
                )
            },
        );
    let count = (ds.n * plane) as f64;
    let mut mean = [0f32; 3];
    let mut std = [0f32; 3];
    for c in 0..3 {
        let m = sum[c] as f64 / count;
        let var = (sq[c] as f64 / count - m * m).max(0.0);
        mean[c] = (m / 255.0) as f32;
        std[c] = (var.sqrt() / 255.0) as f32;
    }
    (mean, std)
}

/// Builders of small files in the exact official layouts, shared by the tests of the submodules.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    /// Label of record `r` of file number `f` in the fake files (every class occurs).
    pub fn fake_label(f: usize, r: usize, classes: usize) -> u8 {
        ((r * 7 + f * 3) % classes) as u8
    }

    /// Pixel bytes of record `r` of file `f`: a pattern that differs between records and files.
    pub fn fake_pixels(f: usize, r: usize) -> Vec<u8> {
        (0..3072)
            .map(|k| ((k * 31 + r * 17 + f * 101) % 251) as u8)
            .collect()
    }

    /// A CIFAR-10 file of `records` 3,073-byte records.
    pub fn cifar10_file(f: usize, records: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(records * 3073);
        for r in 0..records {
            out.push(fake_label(f, r, 10));
            out.extend(fake_pixels(f, r));
        }
        out
    }

    /// The files of a fake `cifar-10-batches-bin/` folder (names relative to the folder).
    pub fn cifar10_tree(records: usize) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = (0..6)
            .map(|f| {
                let name = if f < 5 {
                    format!("data_batch_{}.bin", f + 1)
                } else {
                    "test_batch.bin".to_string()
                };
                (name, cifar10_file(f, records))
            })
            .collect();
        let meta = super::CIFAR10_CLASSES.join("\n") + "\n\n";
        files.push(("batches.meta.txt".into(), meta.into_bytes()));
        files
    }

    /// Writes `files` under `dir` (created).
    pub fn write_tree(dir: &Path, files: &[(String, Vec<u8>)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// A CIFAR-100 file of `records` 3,074-byte records (coarse = fine / 5).
    pub fn cifar100_file(f: usize, records: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(records * 3074);
        for r in 0..records {
            let fine = fake_label(f, r, 100);
            out.push(fine / 5);
            out.push(fine);
            out.extend(fake_pixels(f, r));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        // 3 images of 1×2 pixels: image i has every byte equal to 10·i + channel.
        let mut images = Vec::new();
        for i in 0..3u8 {
            for c in 0..3u8 {
                images.extend([10 * i + c, 10 * i + c]);
            }
        }
        Dataset {
            images,
            labels: vec![0, 1, 1],
            n: 3,
            height: 1,
            width: 2,
            num_classes: 2,
            class_names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn image_and_subset_slice_the_right_bytes() {
        let ds = tiny();
        assert_eq!(ds.image(1), &[10, 10, 11, 11, 12, 12]);
        let sub = ds.subset(&[2, 0, 2]);
        assert_eq!(sub.n, 3);
        assert_eq!(sub.labels, vec![1, 0, 1]);
        assert_eq!(sub.image(0), ds.image(2));
        assert_eq!(sub.image(1), ds.image(0));
        assert_eq!(sub.images.len(), 3 * 6);
        assert_eq!(sub.class_names, ds.class_names);
        assert_eq!(ds.class_counts(), vec![1, 2]);
    }

    #[test]
    fn channel_statistics_match_a_direct_computation() {
        let ds = tiny();
        let (mean, std) = channel_mean_std(&ds);
        for c in 0..3 {
            // Channel c holds the values c, 10 + c, 20 + c (twice each): mean 10 + c, and a
            // population variance of (100 + 0 + 100) / 3.
            let m = (10.0 + c as f64) / 255.0;
            let s = (200.0f64 / 3.0).sqrt() / 255.0;
            assert!((mean[c] as f64 - m).abs() < 1e-7, "{mean:?}");
            assert!((std[c] as f64 - s).abs() < 1e-7, "{std:?}");
        }
        assert_eq!(official_mean_std("cifar10"), Some((CIFAR10_MEAN, CIFAR10_STD)));
        assert_eq!(official_mean_std("mnist"), None);
    }
}

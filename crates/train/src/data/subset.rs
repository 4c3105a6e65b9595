//! Seeded training subsets: N images per class, a random fraction, and long-tailed subsets.
//!
//! Every function shuffles the indices with `ChaCha8Rng::seed_from_u64(seed)` and keeps a prefix
//! of the shuffled order (per class where it applies); the kept indices are returned sorted, so
//! a subset keeps the file order. Same inputs and seed → same indices, on every platform.
//!
//! Long tail (CIFAR-10-LT, Cao et al. 2019, "LDAM"): class c keeps
//! `n_c = floor(n_max · ρ^(−c/(C−1)))` images, computed as `n_max · (1/ρ)^(c/(C−1))` like the
//! reference code, where `n_max` is the smallest class count of the input (for a balanced input,
//! its per-class count) so that every class can supply its share. For CIFAR-10 and ρ = 100:
//! 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50.

use super::Dataset;
use crate::config::DataConfig;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `0..n` in a seeded random order.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx
}

/// Images per class of `labels`; an error if a label is `>= num_classes`.
fn counts(labels: &[u16], num_classes: usize) -> Result<Vec<usize>> {
    let mut counts = vec![0usize; num_classes];
    for (i, &l) in labels.iter().enumerate() {
        match counts.get_mut(l as usize) {
            Some(c) => *c += 1,
            None => bail!("image {i} has label {l}, but there are {num_classes} classes"),
        }
    }
    Ok(counts)
}

/// Keeps the first `take[c]` images of each class c in a seeded shuffle; sorted indices.
fn take_per_class(labels: &[u16], take: &[usize], seed: u64) -> Vec<usize> {
    let mut left = take.to_vec();
    let mut kept: Vec<usize> = shuffled(labels.len(), seed)
        .into_iter()
        .filter(|&i| {
            let c = labels[i] as usize;
            let keep = left[c] > 0;
            if keep {
                left[c] -= 1;
            }
            keep
        })
        .collect();
    kept.sort_unstable();
    kept
}

/// Indices of `n_per_class` images of every class, chosen at random (seeded); sorted.
/// An error if a class has fewer images than asked for, or a label is out of range.
pub fn per_class_indices(
    labels: &[u16],
    num_classes: usize,
    n_per_class: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let counts = counts(labels, num_classes)?;
    if let Some((c, &have)) = counts.iter().enumerate().find(|(_, &k)| k < n_per_class) {
        bail!("per_class = {n_per_class}: class {c} has only {have} images");
    }
    Ok(take_per_class(labels, &vec![n_per_class; num_classes], seed))
}

/// Indices of `round(n · fraction)` of `0..n`, chosen at random (seeded); sorted.
/// `fraction` must be in (0, 1].
pub fn fraction_indices(n: usize, fraction: f64, seed: u64) -> Result<Vec<usize>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        bail!("fraction must be in (0, 1], got {fraction}");
    }
    let k = (n as f64 * fraction).round() as usize;
    let mut kept = shuffled(n, seed);
    kept.truncate(k);
    kept.sort_unstable();
    Ok(kept)
}

/// The long-tail class sizes `n_c = floor(n_max · ρ^(−c/(C−1)))` with `n_max` the smallest of
/// `class_counts` (see the module doc). Needs at least two classes, every class non-empty and
/// ρ ≥ 1 (ρ = 1 keeps `n_max` images of every class).
pub fn long_tail_counts(class_counts: &[usize], imbalance_ratio: f64) -> Result<Vec<usize>> {
    let rho = imbalance_ratio;
    if !(rho >= 1.0 && rho.is_finite()) {
        bail!("imbalance ratio must be a finite number ≥ 1, got {rho}");
    }
    let c_total = class_counts.len();
    if c_total < 2 {
        bail!("a long-tailed subset needs at least 2 classes, got {c_total}");
    }
    let n_max = *class_counts.iter().min().expect("at least two classes");
    if n_max == 0 {
        let c = class_counts.iter().position(|&k| k == 0).unwrap_or(0);
        bail!("a long-tailed subset needs images of every class; class {c} has none");
    }
    Ok((0..c_total)
        .map(|c| {
            let factor = (1.0 / rho).powf(c as f64 / (c_total - 1) as f64);
            ((n_max as f64 * factor).floor() as usize).min(n_max)
        })
        .collect())
}

/// Indices of a long-tailed subset (class c keeps [`long_tail_counts`]`[c]` images chosen at
/// random, seeded); sorted.
pub fn long_tail_indices(
    labels: &[u16],
    num_classes: usize,
    imbalance_ratio: f64,
    seed: u64,
) -> Result<Vec<usize>> {
    let take = long_tail_counts(&counts(labels, num_classes)?, imbalance_ratio)?;
    Ok(take_per_class(labels, &take, seed))
}

/// The seed of selection step `step` (1: per_class, 2: fraction, 3: imbalance_ratio) of a run
/// with seed `seed`: SplitMix64 of `seed ⊕ (step · 0x9E3779B97F4A7C15)`, so that the steps (and
/// the run's other random streams, seeded with `seed` itself) are independent.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The indices (sorted) of the training images a run uses, for images with `labels`: the steps
/// of [`select_train`] (which applies this to a [`Dataset`]; folder datasets use it directly).
pub fn select_indices(labels: &[u16], num_classes: usize, cfg: &DataConfig, seed: u64) -> Result<Vec<usize>> {
    // `keep` indexes `labels`; every step selects positions within the current `keep`.
    let mut keep: Vec<usize> = (0..labels.len()).collect();
    let labels_of = |keep: &[usize]| -> Vec<u16> { keep.iter().map(|&i| labels[i]).collect() };
    if let Some(n) = cfg.per_class {
        let pos = per_class_indices(&labels_of(&keep), num_classes, n, step_seed(seed, 1))?;
        keep = pos.into_iter().map(|p| keep[p]).collect();
    }
    if let Some(f) = cfg.fraction {
        let pos = fraction_indices(keep.len(), f, step_seed(seed, 2))?;
        keep = pos.into_iter().map(|p| keep[p]).collect();
    }
    if let Some(rho) = cfg.imbalance_ratio {
        let pos = long_tail_indices(&labels_of(&keep), num_classes, rho, step_seed(seed, 3))?;
        keep = pos.into_iter().map(|p| keep[p]).collect();
    }
    if keep.is_empty() {
        bail!(
            "the training subset is empty (data.per_class {:?}, data.fraction {:?}, \
             data.imbalance_ratio {:?} on {} images)",
            cfg.per_class,
            cfg.fraction,
            cfg.imbalance_ratio,
            labels.len()
        );
    }
    Ok(keep)
}

/// Default size of the validation split of a training split of `n` images: min(5000, round(n/10))
/// with halves rounded up (5,000 for CIFAR-10 and CIFAR-100, 947 for Imagenette's 9,469).
pub fn default_val_images(n: usize) -> usize {
    (n.saturating_add(5) / 10).min(5000)
}

/// The validation split: `k` of the images with `labels`, stratified by class, chosen at random
/// (seeded); sorted. Class c gives its proportional share `k·n_c/N` rounded by largest remainder
/// (ties to the lower class), so a balanced split gives every class exactly `k/C` images when C
/// divides k. `k` must be smaller than N (the rest is what a run trains on).
pub fn validation_indices(labels: &[u16], num_classes: usize, k: usize, seed: u64) -> Result<Vec<usize>> {
    let n = labels.len();
    if k >= n {
        bail!("eval.val_images = {k} must be smaller than the {n} images of the training split");
    }
    let counts = counts(labels, num_classes)?;
    let mut take: Vec<usize> = counts.iter().map(|&c| k * c / n).collect();
    let mut left = k - take.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..num_classes).collect();
    by_remainder.sort_by_key(|&c| (std::cmp::Reverse((k * counts[c]) % n), c));
    for &c in &by_remainder {
        if left == 0 {
            break;
        }
        if take[c] < counts[c] {
            take[c] += 1;
            left -= 1;
        }
    }
    Ok(take_per_class(labels, &take, seed))
}

/// The sorted indices of `0..n` that are not in the sorted list `idx`.
pub fn complement(n: usize, idx: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(n.saturating_sub(idx.len()));
    let mut it = idx.iter().peekable();
    for i in 0..n {
        if it.peek() == Some(&&i) {
            it.next();
        } else {
            out.push(i);
        }
    }
    out
}

/// A run's split of a training set with `labels`: the validation images held out (`val` of them,
/// [`validation_indices`] with seed [`step_seed`]`(seed, 4)`; none when `val` is 0) and the
/// training subset chosen by [`select_indices`] among the others. Both sorted, disjoint. With
/// `val = 0` the training subset is exactly [`select_indices`] of all the images.
pub fn holdout_and_select(
    labels: &[u16],
    num_classes: usize,
    cfg: &DataConfig,
    val: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if val == 0 {
        return Ok((vec![], select_indices(labels, num_classes, cfg, seed)?));
    }
    let heldout = validation_indices(labels, num_classes, val, step_seed(seed, 4))?;
    let rest = complement(labels.len(), &heldout);
    let rest_labels: Vec<u16> = rest.iter().map(|&i| labels[i]).collect();
    let keep = select_indices(&rest_labels, num_classes, cfg, seed).with_context(|| {
        format!(
            "choosing the training subset among the {} images left after holding out              eval.val_images = {val} validation images",
            rest.len()
        )
    })?;
    Ok((heldout, keep.into_iter().map(|p| rest[p]).collect()))
}

/// The training images a run uses: the config's `per_class`, then `fraction`, then
/// `imbalance_ratio`, each applied to the result of the previous step with seed
/// [`step_seed`]`(seed, step)`; steps not set in the config are skipped. An error if a step
/// cannot be applied (a class too small for `per_class`, …) or the result is empty.
pub fn select_train(train: &Dataset, cfg: &DataConfig, seed: u64) -> Result<Dataset> {
    let keep = select_indices(&train.labels, train.num_classes, cfg, seed)?;
    if keep.len() == train.n {
        return Ok(train.clone());
    }
    Ok(train.subset(&keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per` labels of each of `classes` classes, interleaved (0, 1, …, C−1, 0, 1, …).
    fn balanced(classes: usize, per: usize) -> Vec<u16> {
        (0..classes * per).map(|i| (i % classes) as u16).collect()
    }

    fn class_counts(labels: &[u16], idx: &[usize], classes: usize) -> Vec<usize> {
        let mut c = vec![0; classes];
        for &i in idx {
            c[labels[i] as usize] += 1;
        }
        c
    }

    fn strictly_increasing(idx: &[usize]) -> bool {
        idx.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn per_class_counts_are_exact_and_seeded() {
        let labels = balanced(10, 50);
        let a = per_class_indices(&labels, 10, 7, 1).unwrap();
        assert_eq!(class_counts(&labels, &a, 10), vec![7; 10]);
        assert!(strictly_increasing(&a));
        assert_eq!(a, per_class_indices(&labels, 10, 7, 1).unwrap());
        assert_ne!(a, per_class_indices(&labels, 10, 7, 2).unwrap());
        // All of them: every index.
        assert_eq!(
            per_class_indices(&labels, 10, 50, 3).unwrap(),
            (0..500).collect::<Vec<_>>()
        );
        let err = per_class_indices(&labels, 10, 51, 1).unwrap_err().to_string();
        assert!(err.contains("class 0 has only 50"), "{err}");
        assert!(per_class_indices(&[0, 12], 10, 1, 1).is_err());
    }

    #[test]
    fn fraction_keeps_round_n_f() {
        for (n, f) in [(1000, 0.1), (999, 0.5), (7, 0.3), (10, 1.0), (3, 0.1)] {
            let idx = fraction_indices(n, f, 5).unwrap();
            assert_eq!(idx.len(), (n as f64 * f).round() as usize, "n {n} f {f}");
            assert!(strictly_increasing(&idx) && idx.iter().all(|&i| i < n));
        }
        let a = fraction_indices(1000, 0.25, 9).unwrap();
        assert_eq!(a, fraction_indices(1000, 0.25, 9).unwrap());
        assert_ne!(a, fraction_indices(1000, 0.25, 10).unwrap());
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(fraction_indices(10, bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_tail_follows_the_exponential_profile() {
        // CIFAR-10-LT at ρ = 100 (the literature's counts), on 5,000 images per class.
        let labels = balanced(10, 5000);
        let idx = long_tail_indices(&labels, 10, 100.0, 0).unwrap();
        let got = class_counts(&labels, &idx, 10);
        assert_eq!(got, vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
        assert_eq!((got[0], got[9]), (5000, 5000 / 100));
        for (c, &k) in got.iter().enumerate() {
            let exact = 5000.0 * 100f64.powf(-(c as f64) / 9.0);
            assert!(
                k as f64 <= exact + 1e-6 && exact < k as f64 + 1.0,
                "class {c}: {k} vs {exact}"
            );
        }
        assert!(strictly_increasing(&idx));
        assert_eq!(idx, long_tail_indices(&labels, 10, 100.0, 0).unwrap());
        assert_ne!(idx, long_tail_indices(&labels, 10, 100.0, 1).unwrap());
        // ρ = 1 keeps everything; ρ = 10 on 100 classes ends at n_max / 10.
        assert_eq!(long_tail_counts(&[8, 8, 8], 1.0).unwrap(), vec![8, 8, 8]);
        let c100 = long_tail_counts(&[500; 100], 10.0).unwrap();
        assert_eq!((c100[0], c100[99]), (500, 50));
        assert!(c100.windows(2).all(|w| w[0] >= w[1]));
        // n_max is the smallest class.
        assert_eq!(long_tail_counts(&[90, 40], 4.0).unwrap(), vec![40, 10]);
        assert!(long_tail_counts(&[5, 0], 2.0).is_err());
        assert!(long_tail_counts(&[5], 2.0).is_err());
        assert!(long_tail_counts(&[5, 5], 0.5).is_err());
    }

    #[test]
    fn default_validation_size() {
        for (n, want) in [
            (50_000, 5000),
            (9469, 947),
            (18, 2),
            (15, 2),
            (14, 1),
            (0, 0),
            (1_281_167, 5000),
        ] {
            assert_eq!(default_val_images(n), want, "n = {n}");
        }
    }

    #[test]
    fn validation_is_stratified_seeded_and_leaves_images_to_train_on() {
        let labels = balanced(10, 5000);
        let v = validation_indices(&labels, 10, 5000, 1).unwrap();
        assert_eq!(class_counts(&labels, &v, 10), vec![500; 10]);
        assert!(strictly_increasing(&v));
        assert_eq!(v, validation_indices(&labels, 10, 5000, 1).unwrap());
        assert_ne!(v, validation_indices(&labels, 10, 5000, 2).unwrap());
        // Uneven classes 90/40/10: shares 9/4/1 of 14; of 15 the extra one goes to the largest
        // remainder (class 0: 15·90/140 = 9.64).
        let uneven: Vec<u16> = (0..140u16)
            .map(|i| {
                if i < 90 {
                    0
                } else if i < 130 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let v = validation_indices(&uneven, 3, 14, 0).unwrap();
        assert_eq!(class_counts(&uneven, &v, 3), vec![9, 4, 1]);
        let v = validation_indices(&uneven, 3, 15, 0).unwrap();
        assert_eq!(class_counts(&uneven, &v, 3), vec![10, 4, 1]);
        let err = validation_indices(&uneven, 3, 140, 0).unwrap_err().to_string();
        assert!(
            err.contains("eval.val_images = 140") && err.contains("140 images"),
            "{err}"
        );
    }

    #[test]
    fn complement_of_sorted_indices() {
        assert_eq!(complement(6, &[1, 4]), vec![0, 2, 3, 5]);
        assert_eq!(complement(3, &[]), vec![0, 1, 2]);
        assert_eq!(complement(2, &[0, 1]), Vec::<usize>::new());
    }

    #[test]
    fn holdout_comes_before_the_training_subset() {
        let labels = balanced(4, 100);
        let cfg = DataConfig {
            per_class: Some(50),
            ..DataConfig::default()
        };
        // No validation split: exactly the old selection.
        let (h, t) = holdout_and_select(&labels, 4, &cfg, 0, 9).unwrap();
        assert!(h.is_empty());
        assert_eq!(t, select_indices(&labels, 4, &cfg, 9).unwrap());
        // 40 held out (10 a class), then 50 a class among the 90 a class left.
        let (h, t) = holdout_and_select(&labels, 4, &cfg, 40, 9).unwrap();
        assert_eq!(class_counts(&labels, &h, 4), vec![10; 4]);
        assert_eq!(class_counts(&labels, &t, 4), vec![50; 4]);
        assert!(strictly_increasing(&h) && strictly_increasing(&t));
        assert!(
            t.iter().all(|i| h.binary_search(i).is_err()),
            "training subset overlaps validation"
        );
        assert_eq!(
            (h.clone(), t.clone()),
            holdout_and_select(&labels, 4, &cfg, 40, 9).unwrap()
        );
        // All of the rest when nothing is selected.
        let (h, t) = holdout_and_select(&labels, 4, &DataConfig::default(), 40, 9).unwrap();
        assert_eq!(t, complement(400, &h));
        // A class too small for per_class once the validation split is out: the error says so.
        let big = DataConfig {
            per_class: Some(95),
            ..DataConfig::default()
        };
        assert!(holdout_and_select(&labels, 4, &big, 0, 9).is_ok());
        let err = format!("{:#}", holdout_and_select(&labels, 4, &big, 40, 9).unwrap_err());
        assert!(
            err.contains("eval.val_images = 40") && err.contains("only 90"),
            "{err}"
        );
    }

    #[test]
    fn select_train_applies_the_steps_in_order() {
        let labels = balanced(4, 100);
        let train = Dataset {
            images: (0..400u32).flat_map(|i| [i as u8, (i >> 8) as u8, 0]).collect(),
            labels: labels.clone(),
            n: 400,
            height: 1,
            width: 1,
            num_classes: 4,
            class_names: (0..4).map(|c| c.to_string()).collect(),
        };
        let id = |d: &Dataset, k: usize| usize::from(d.image(k)[0]) | usize::from(d.image(k)[1]) << 8;
        // Nothing set: the whole set.
        assert_eq!(select_train(&train, &DataConfig::default(), 0).unwrap(), train);
        let cfg = DataConfig {
            per_class: Some(50),
            fraction: Some(0.5),
            imbalance_ratio: Some(4.0),
            ..DataConfig::default()
        };
        let sub = select_train(&train, &cfg, 3).unwrap();
        // per_class → 200 images, fraction → 100, then the tail from the smallest class count.
        let after_fraction = {
            let a = per_class_indices(&labels, 4, 50, step_seed(3, 1)).unwrap();
            let b = fraction_indices(a.len(), 0.5, step_seed(3, 2)).unwrap();
            b.into_iter().map(|p| a[p]).collect::<Vec<_>>()
        };
        assert_eq!(after_fraction.len(), 100);
        let n_max = *class_counts(&labels, &after_fraction, 4).iter().min().unwrap();
        let expect = long_tail_counts(&[n_max; 4], 4.0).unwrap();
        assert_eq!(sub.class_counts(), expect);
        // Images and labels travel together, in file order, from the earlier steps' picks.
        for k in 0..sub.n {
            let i = id(&sub, k);
            assert_eq!(sub.labels[k], labels[i]);
            assert!(after_fraction.contains(&i));
            assert!(k == 0 || id(&sub, k - 1) < i);
        }
        assert_eq!(sub, select_train(&train, &cfg, 3).unwrap());
        assert_ne!(sub, select_train(&train, &cfg, 4).unwrap());
        let too_many = DataConfig {
            per_class: Some(101),
            ..DataConfig::default()
        };
        assert!(select_train(&train, &too_many, 0).is_err());
        let empty = DataConfig {
            fraction: Some(0.001),
            ..DataConfig::default()
        };
        let err = select_train(&train, &empty, 0).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
}

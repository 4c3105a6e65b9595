//! Evaluation of a frozen encoder: feature extraction, a linear probe (softmax regression on
//! standardised features, Adam, cosine schedule) and weighted kNN (solo-learn's: k neighbours by
//! cosine similarity, votes weighted by exp(s/T)). Top-1 and top-5 accuracy in percent.

use crate::augment;
use crate::model::ResNet;
use anyhow::Result;
use candle_core::{Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Images as a flat u8 buffer of `n` CHW images of side `h`×`w`.
pub struct ImageSet<'a> {
    pub pixels: &'a [u8],
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl ImageSet<'_> {
    pub fn image(&self, i: usize) -> &[u8] {
        let s = 3 * self.h * self.w;
        &self.pixels[i * s..(i + 1) * s]
    }
}

/// Encoder features (`[n, d]` row-major) of un-augmented, normalised images, in batches.
pub fn extract_features(
    encoder: &ResNet,
    images: &ImageSet,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    batch: usize,
) -> Result<Vec<f32>> {
    let d = encoder.feat_dim;
    let mut out = Vec::with_capacity(images.n * d);
    let per = 3 * size * size;
    let mut start = 0;
    while start < images.n {
        let end = (start + batch).min(images.n);
        let mut buf = vec![0f32; (end - start) * per];
        buf.par_chunks_mut(per).enumerate().for_each(|(k, o)| {
            augment::eval_transform(images.image(start + k), images.h, images.w, size, mean, std, o);
        });
        let x = Tensor::from_vec(buf, (end - start, 3, size, size), &encoder.device)?;
        let h = encoder.forward(&x, false)?;
        out.extend(h.flatten_all()?.to_vec1::<f32>()?);
        start = end;
    }
    Ok(out)
}

/// Top-1 and top-5 accuracy in percent.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
}

fn topk_hits(scores: &[f32], label: usize, k: usize) -> (bool, bool) {
    let target = scores[label];
    // Rank = number of classes scoring strictly higher (ties resolved in the label's favour
    // only when they come first in index order, as argmax would).
    let higher = scores
        .iter()
        .enumerate()
        .filter(|&(c, &s)| s > target || (s == target && c < label))
        .count();
    (higher == 0, higher < k)
}

fn accuracy(scores: &[f32], labels: &[u16], classes: usize) -> Accuracy {
    let n = labels.len();
    let (mut t1, mut t5) = (0usize, 0usize);
    for (i, &y) in labels.iter().enumerate() {
        let (a, b) = topk_hits(&scores[i * classes..(i + 1) * classes], y as usize, 5);
        t1 += a as usize;
        t5 += b as usize;
    }
    Accuracy {
        top1: 100.0 * t1 as f64 / n.max(1) as f64,
        top5: 100.0 * t5 as f64 / n.max(1) as f64,
    }
}

/// Settings of the linear probe.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub weight_decay: f64,
    pub seed: u64,
}

/// Per-dimension mean and standard deviation of `[n, d]` features.
fn standardizer(x: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / d;
    let mut mean = vec![0f64; d];
    for r in x.chunks(d) {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += *v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0f64; d];
    for r in x.chunks(d) {
        var.iter_mut()
            .zip(r)
            .zip(&mean)
            .for_each(|((s, v), m)| *s += (*v as f64 - m).powi(2));
    }
    let std = var
        .iter()
        .map(|s| ((s / n as f64).sqrt()).max(1e-6) as f32)
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

fn standardize(x: &[f32], d: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
    x.chunks(d)
        .flat_map(|r| r.iter().zip(mean).zip(std).map(|((v, m), s)| (v - m) / s))
        .collect()
}

/// An empty bank or test set has no accuracy (it used to come out as 100 % or 0 %): an error
/// naming the empty set, whichever filter emptied it.
fn non_empty_sets(metric: &str, n_train: usize, n_test: usize) -> Result<()> {
    for (what, n) in [("training (probe/kNN bank)", n_train), ("test", n_test)] {
        if n == 0 {
            anyhow::bail!(
                "{metric}: the {what} set has no images (see `eval.train_images`, `eval.test_images`)"
            );
        }
    }
    Ok(())
}

/// Trains softmax regression on standardised `train` features and returns test accuracy.
pub fn linear_probe(
    train: &[f32],
    train_labels: &[u16],
    test: &[f32],
    test_labels: &[u16],
    d: usize,
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<Accuracy> {
    LinearProbe::train(train, train_labels, d, classes, cfg)?.accuracy(test, test_labels)
}

/// A trained linear probe: the training features' standardisation and the softmax-regression
/// weights, to score any number of evaluation sets (test, validation) with one training.
pub struct LinearProbe {
    mean: Vec<f32>,
    std: Vec<f32>,
    w: Tensor,
    b: Tensor,
    d: usize,
    classes: usize,
}

impl LinearProbe {
    /// Softmax regression on standardised `train` features (Adam, cosine schedule, seeded order).
    pub fn train(
        train: &[f32],
        train_labels: &[u16],
        d: usize,
        classes: usize,
        cfg: &ProbeConfig,
    ) -> Result<Self> {
        non_empty_sets("linear probe", train_labels.len(), 1)?;
        let dev = Device::Cpu;
        let (mean, std) = standardizer(train, d);
        let xtr = standardize(train, d, &mean, &std);
        let n = train_labels.len();
        let mut w = Tensor::zeros((d, classes), candle_core::DType::F32, &dev)?;
        let mut b = Tensor::zeros(classes, candle_core::DType::F32, &dev)?;
        let (mut mw, mut vw) = (w.zeros_like()?, w.zeros_like()?);
        let (mut mb, mut vb) = (b.zeros_like()?, b.zeros_like()?);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0070_726f_6265);
        let mut order: Vec<usize> = (0..n).collect();
        let steps_per_epoch = n.div_ceil(cfg.batch);
        let total = cfg.epochs * steps_per_epoch;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let mut t = 0usize;
        for _ in 0..cfg.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(cfg.batch) {
                let bs = chunk.len();
                let mut xb = Vec::with_capacity(bs * d);
                let mut yb = vec![0f32; bs * classes];
                for (r, &i) in chunk.iter().enumerate() {
                    xb.extend_from_slice(&xtr[i * d..(i + 1) * d]);
                    yb[r * classes + train_labels[i] as usize] = 1.0;
                }
                let xb = Tensor::from_vec(xb, (bs, d), &dev)?;
                let yb = Tensor::from_vec(yb, (bs, classes), &dev)?;
                let logits = xb.matmul(&w)?.broadcast_add(&b)?;
                let p = candle_core::Tensor::exp(&logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?)?)?;
                let p = p.broadcast_div(&p.sum_keepdim(D::Minus1)?)?;
                let g = ((p - yb)? / bs as f64)?;
                let gw = (xb.t()?.matmul(&g)? + (&w * cfg.weight_decay)?)?;
                let gb = g.sum(0)?;
                t += 1;
                let lr = cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / total as f64).cos());
                let bc1 = 1.0 - b1.powi(t as i32);
                let bc2 = 1.0 - b2.powi(t as i32);
                let adam = |p: &Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor| -> Result<Tensor> {
                    *m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
                    *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let step = ((&*m / bc1)? / ((&*v / bc2)?.sqrt()? + eps)?)?;
                    Ok((p - (step * lr)?)?)
                };
                w = adam(&w, &gw, &mut mw, &mut vw)?;
                b = adam(&b, &gb, &mut mb, &mut vb)?;
            }
        }
        Ok(LinearProbe {
            mean,
            std,
            w,
            b,
            d,
            classes,
        })
    }

    /// Top-1 and top-5 accuracy of the probe on features `x` (`[n, d]`) with `labels`.
    pub fn accuracy(&self, x: &[f32], labels: &[u16]) -> Result<Accuracy> {
        non_empty_sets("linear probe", 1, labels.len())?;
        let x = standardize(x, self.d, &self.mean, &self.std);
        let x = Tensor::from_vec(x, (labels.len(), self.d), &Device::Cpu)?;
        let scores = x
            .matmul(&self.w)?
            .broadcast_add(&self.b)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(accuracy(&scores, labels, self.classes))
    }

    /// The probe's top-1 prediction of every feature of `x` (`[n, d]`): the first class of
    /// highest score, as [`LinearProbe::accuracy`] counts it.
    pub fn predict(&self, x: &[f32]) -> Result<Vec<u16>> {
        let n = x.len() / self.d;
        let x = standardize(x, self.d, &self.mean, &self.std);
        let x = Tensor::from_vec(x, (n, self.d), &Device::Cpu)?;
        let scores = x
            .matmul(&self.w)?
            .broadcast_add(&self.b)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(argmax_rows(&scores, self.classes))
    }
}

/// Per row of `classes` scores, the first index of the largest score.
fn argmax_rows(scores: &[f32], classes: usize) -> Vec<u16> {
    scores
        .chunks(classes)
        .map(|row| {
            let mut best = 0;
            for (c, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = c;
                }
            }
            best as u16
        })
        .collect()
}

/// ImageNet-LT's many-shot threshold (a class with more than 100 training images, of at most
/// 1,280) and few-shot threshold (fewer than 20), as counts out of [`LT_REFERENCE_MAX`].
pub const LT_MANY_ABOVE: usize = 100;
/// See [`LT_MANY_ABOVE`].
pub const LT_FEW_BELOW: usize = 20;
/// The largest class of ImageNet-LT's training set, the scale of the thresholds.
pub const LT_REFERENCE_MAX: usize = 1280;

/// Test top-1 accuracy of the many-, medium- and few-shot classes (ImageNet-LT's convention,
/// scaled to the training set's largest class; see [`class_groups`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupAccuracy {
    /// Percent; None when the group has no class with test images.
    pub many: Option<f64>,
    pub medium: Option<f64>,
    pub few: Option<f64>,
    /// Classes in each group.
    pub n_many: usize,
    pub n_medium: usize,
    pub n_few: usize,
}

/// The group of each class (0 many, 1 medium, 2 few) from its training count n_c and the
/// largest count n_max: many when n_c > n_max·100/1280, few when n_c < n_max·20/1280, medium
/// otherwise — ImageNet-LT's >100 / 20–100 / <20 exactly when n_max = 1,280, the same fractions
/// of n_max for any other training set. Compared in integers (n_c·1280 against n_max·100).
pub fn class_groups(train_counts: &[usize]) -> Vec<u8> {
    let n_max = train_counts.iter().copied().max().unwrap_or(0);
    train_counts
        .iter()
        .map(|&n| {
            if n * LT_REFERENCE_MAX > n_max * LT_MANY_ABOVE {
                0
            } else if n * LT_REFERENCE_MAX < n_max * LT_FEW_BELOW {
                2
            } else {
                1
            }
        })
        .collect()
}

/// Per-group test top-1 from the `predictions` of the test images with `labels`, the classes
/// grouped by their self-supervised training counts `train_counts` ([`class_groups`]). A
/// group's accuracy is the mean of its classes' accuracies (ImageNet-LT's `shot_acc`), over the
/// classes with test images. None when the training set is balanced (every count equal: the
/// groups would only repeat the overall accuracy).
pub fn group_accuracy(predictions: &[u16], labels: &[u16], train_counts: &[usize]) -> Option<GroupAccuracy> {
    assert_eq!(predictions.len(), labels.len(), "one prediction per test image");
    let (lo, hi) = (train_counts.iter().min()?, train_counts.iter().max()?);
    if lo == hi {
        return None;
    }
    let k = train_counts.len();
    let (mut hits, mut total) = (vec![0usize; k], vec![0usize; k]);
    for (&p, &y) in predictions.iter().zip(labels) {
        total[y as usize] += 1;
        hits[y as usize] += usize::from(p == y);
    }
    let groups = class_groups(train_counts);
    let mean_of = |g: u8| -> (Option<f64>, usize) {
        let members: Vec<usize> = (0..k).filter(|&c| groups[c] == g).collect();
        let accs: Vec<f64> = members
            .iter()
            .filter(|&&c| total[c] > 0)
            .map(|&c| 100.0 * hits[c] as f64 / total[c] as f64)
            .collect();
        let mean = (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64);
        (mean, members.len())
    };
    let ((many, n_many), (medium, n_medium), (few, n_few)) = (mean_of(0), mean_of(1), mean_of(2));
    Some(GroupAccuracy {
        many,
        medium,
        few,
        n_many,
        n_medium,
        n_few,
    })
}

fn l2_rows(x: &[f32], d: usize) -> Vec<f32> {
    x.chunks(d)
        .flat_map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(move |v| v / n)
        })
        .collect()
}

/// Weighted kNN: each test feature votes with its `k` most cosine-similar training features,
/// weighted by exp(s/T).
#[allow(clippy::too_many_arguments)]
pub fn knn(
    train: &[f32],
    train_labels: &[u16],
    test: &[f32],
    test_labels: &[u16],
    d: usize,
    classes: usize,
    k: usize,
    temperature: f64,
) -> Result<Accuracy> {
    non_empty_sets("kNN", train_labels.len(), test_labels.len())?;
    let dev = Device::Cpu;
    let ntr = train_labels.len();
    let k = k.min(ntr);
    let bank = Tensor::from_vec(l2_rows(train, d), (ntr, d), &dev)?
        .t()?
        .contiguous()?;
    let q = l2_rows(test, d);
    let nte = test_labels.len();
    let mut scores = vec![0f32; nte * classes];
    let chunk = 256;
    for start in (0..nte).step_by(chunk) {
        let end = (start + chunk).min(nte);
        let qs = Tensor::from_vec(q[start * d..end * d].to_vec(), (end - start, d), &dev)?;
        let sims = qs.matmul(&bank)?.to_vec2::<f32>()?;
        scores[start * classes..end * classes]
            .par_chunks_mut(classes)
            .zip(sims.par_iter())
            .for_each(|(out, row)| {
                let mut idx: Vec<usize> = (0..ntr).collect();
                if k < ntr {
                    idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                }
                for &i in &idx[..k] {
                    out[train_labels[i] as usize] += ((row[i] as f64) / temperature).exp() as f32;
                }
            });
    }
    Ok(accuracy(&scores, test_labels, classes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Gaussian clusters around well separated class centres.
    fn clusters(n_per: usize, classes: usize, d: usize, noise: f32, seed: u64) -> (Vec<f32>, Vec<u16>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = vec![];
        let mut y = vec![];
        for i in 0..n_per * classes {
            let c = i % classes;
            for t in 0..d {
                let centre = if t % classes == c { 3.0 } else { 0.0 };
                x.push(centre + noise * rng.random_range(-1.0f32..1.0));
            }
            y.push(c as u16);
        }
        (x, y)
    }

    #[test]
    fn probe_and_knn_separate_clean_clusters() {
        let (xtr, ytr) = clusters(50, 5, 10, 0.5, 1);
        let (xte, yte) = clusters(20, 5, 10, 0.5, 2);
        let cfg = ProbeConfig {
            epochs: 20,
            lr: 0.05,
            batch: 32,
            weight_decay: 0.0,
            seed: 0,
        };
        let acc = linear_probe(&xtr, &ytr, &xte, &yte, 10, 5, &cfg).unwrap();
        assert_eq!(acc.top1, 100.0);
        assert_eq!(acc.top5, 100.0);
        let acc = knn(&xtr, &ytr, &xte, &yte, 10, 5, 20, 0.1).unwrap();
        assert_eq!(acc.top1, 100.0);
    }

    #[test]
    fn empty_sets_are_errors_not_accuracies() {
        // An empty bank or test set (e.g. a subset filtered down to nothing) has no accuracy.
        let (x, y) = clusters(4, 2, 3, 0.1, 1);
        let cfg = ProbeConfig {
            epochs: 1,
            lr: 0.05,
            batch: 4,
            weight_decay: 0.0,
            seed: 0,
        };
        for (xtr, ytr, xte, yte, what) in [
            (&[][..], &[][..], &x[..], &y[..], "training"),
            (&x[..], &y[..], &[][..], &[][..], "test"),
        ] {
            let msg = format!("{:#}", linear_probe(xtr, ytr, xte, yte, 3, 2, &cfg).unwrap_err());
            assert!(msg.contains(what) && msg.contains("no images"), "{msg}");
            let msg = format!("{:#}", knn(xtr, ytr, xte, yte, 3, 2, 5, 0.1).unwrap_err());
            assert!(msg.contains(what) && msg.contains("no images"), "{msg}");
        }
    }

    #[test]
    fn chance_level_on_random_labels() {
        // Features independent of the labels: accuracy near 1/C (here 10 classes; 2000 samples).
        let (xte, _) = clusters(200, 10, 16, 1.0, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let yte: Vec<u16> = (0..2000).map(|_| rng.random_range(0..10)).collect();
        let (xtr, _) = clusters(200, 10, 16, 1.0, 4);
        let ytr: Vec<u16> = (0..2000).map(|_| rng.random_range(0..10)).collect();
        let acc = knn(&xtr, &ytr, &xte, &yte, 16, 10, 50, 0.1).unwrap();
        assert!((acc.top1 - 10.0).abs() < 4.0, "{}", acc.top1);
        assert!((acc.top5 - 50.0).abs() < 6.0, "{}", acc.top5);
    }

    #[test]
    fn class_groups_follow_imagenet_lt_thresholds_scaled_to_n_max() {
        // At ImageNet-LT's own scale (n_max = 1280): >100 many, 20–100 medium, <20 few.
        assert_eq!(class_groups(&[1280, 101, 100, 20, 19, 5]), vec![0, 0, 1, 1, 2, 2]);
        // CIFAR-10-LT at ρ = 100 (n_max 1000 after per_class = 1000): thresholds 78.125 and
        // 15.625 images: 1000…129 many, 77…17 medium, 10 few.
        let lt100 = [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10];
        assert_eq!(class_groups(&lt100), vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 2]);
        // ρ = 10: every class keeps more than 7.8 % of n_max, all many-shot.
        assert_eq!(
            class_groups(&[1000, 774, 599, 464, 359, 278, 215, 166, 129, 100]),
            vec![0; 10]
        );
    }

    #[test]
    fn group_accuracy_of_constructed_predictions() {
        // 4 classes: counts 1280 (many), 640 (many), 60 (medium), 10 (few).
        let counts = [1280, 640, 60, 10];
        // Class 0: 4 test images, 3 right (75 %); class 1: 2 images, 1 right (50 %);
        // class 2: 5 images, 2 right (40 %); class 3: 2 images, none right (0 %).
        let labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 3];
        let preds = [0, 0, 0, 1, 1, 0, 2, 2, 0, 1, 3, 0, 2];
        let g = group_accuracy(&preds, &labels, &counts).unwrap();
        // Many: mean of 75 and 50 (per-class mean, not 4 of 6 images = 66.7).
        assert_eq!(g.many, Some(62.5));
        assert_eq!(g.medium, Some(40.0));
        assert_eq!(g.few, Some(0.0));
        assert_eq!((g.n_many, g.n_medium, g.n_few), (2, 1, 1));
        // A group without classes, and a class without test images, have no accuracy.
        let g = group_accuracy(&[0, 1], &[0, 1], &[100, 90, 1]).unwrap();
        assert_eq!((g.many, g.medium, g.few), (Some(100.0), None, None));
        assert_eq!((g.n_many, g.n_medium, g.n_few), (2, 0, 1));
        // A balanced training set: not computed.
        assert_eq!(group_accuracy(&preds, &labels, &[5, 5, 5, 5]), None);
    }

    #[test]
    fn probe_predictions_agree_with_its_accuracy() {
        let (xtr, ytr) = clusters(30, 4, 8, 2.5, 5);
        let (xte, yte) = clusters(25, 4, 8, 2.5, 6);
        let cfg = ProbeConfig {
            epochs: 5,
            lr: 0.05,
            batch: 32,
            weight_decay: 0.0,
            seed: 1,
        };
        let probe = LinearProbe::train(&xtr, &ytr, 8, 4, &cfg).unwrap();
        let (acc, pred) = (probe.accuracy(&xte, &yte).unwrap(), probe.predict(&xte).unwrap());
        let right = pred.iter().zip(&yte).filter(|(p, y)| p == y).count();
        assert_eq!(acc.top1, 100.0 * right as f64 / yte.len() as f64);
        assert!(acc.top1 < 100.0 && acc.top1 > 25.0, "{}", acc.top1);
        assert_eq!(acc, linear_probe(&xtr, &ytr, &xte, &yte, 8, 4, &cfg).unwrap());
        assert_eq!(argmax_rows(&[0.5, 0.9, 0.9, 0.1, 0.0, 0.0], 3), vec![1, 0]);
    }

    #[test]
    fn topk_counts_ties_and_ranks() {
        let scores = [0.1f32, 0.9, 0.5, 0.5, 0.2, 0.0];
        assert_eq!(topk_hits(&scores, 1, 5), (true, true));
        assert_eq!(topk_hits(&scores, 2, 5), (false, true)); // rank 1
        assert_eq!(topk_hits(&scores, 3, 5), (false, true)); // rank 2 (tie broken by index)
        assert_eq!(topk_hits(&scores, 5, 5), (false, false)); // rank 5
    }
}

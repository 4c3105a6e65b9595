//! Prototype representation bias (our reading of the paper's definition).
//!
//! For each evaluation image x, K augmented views under the run's own pipeline go through the
//! frozen encoder; `μ_x` is the mean of the K L2-normalised features (the surrogate prototype
//! E_t f(t(x))), `μ̂_y` the mean of `μ_x` over the images of class y (the realistic class
//! prototype), and
//!
//! ```text
//! bias = (1/n) Σ_x ‖μ̂_{y(x)} − μ_x‖₂        (with a 95 % normal interval over images)
//! bias_cos = (1/n) Σ_x (1 − cos(μ̂_{y(x)}, μ_x))
//! ```
//!
//! Which encoder the paper measures the bias with is not known; we measure the trained encoder's
//! pooled features (and, when asked, a random-init encoder's as a reference).

use crate::augment::{self, Pipeline};
use crate::eval::ImageSet;
use crate::model::ResNet;
use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// The bias with its 95 % intervals.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct BiasStats {
    pub l2: f64,
    pub l2_ci95: [f64; 2],
    pub cos: f64,
    pub cos_ci95: [f64; 2],
    pub images: usize,
    pub views: usize,
}

fn mean_ci(v: &[f64]) -> (f64, [f64; 2]) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let h = 1.96 * sd / n.sqrt();
    (m, [m - h, m + h])
}

/// The bias from features: `feats` is `[n·K, d]` with the K views of image i in rows
/// `i·K .. (i+1)·K`; `labels` has n entries.
pub fn bias_from_features(
    feats: &[f32],
    labels: &[u16],
    views: usize,
    d: usize,
    classes: usize,
) -> Result<BiasStats> {
    let n = labels.len();
    if n == 0 || views == 0 || feats.len() != n * views * d {
        bail!(
            "prototype bias: {} features for {n} images × {views} views × {d} dims",
            feats.len()
        );
    }
    let mut mu_x = vec![0f64; n * d];
    for i in 0..n {
        for v in 0..views {
            let row = &feats[(i * views + v) * d..(i * views + v + 1) * d];
            let norm = row
                .iter()
                .map(|a| (*a as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            for t in 0..d {
                mu_x[i * d + t] += row[t] as f64 / norm / views as f64;
            }
        }
    }
    let mut mu_y = vec![0f64; classes * d];
    let mut counts = vec![0usize; classes];
    for (i, &y) in labels.iter().enumerate() {
        counts[y as usize] += 1;
        for t in 0..d {
            mu_y[y as usize * d + t] += mu_x[i * d + t];
        }
    }
    for y in 0..classes {
        if counts[y] > 0 {
            mu_y[y * d..(y + 1) * d]
                .iter_mut()
                .for_each(|v| *v /= counts[y] as f64);
        }
    }
    let mut l2 = Vec::with_capacity(n);
    let mut cos = Vec::with_capacity(n);
    for (i, &y) in labels.iter().enumerate() {
        let a = &mu_x[i * d..(i + 1) * d];
        let b = &mu_y[y as usize * d..(y as usize + 1) * d];
        let diff = a.iter().zip(b).map(|(p, q)| (p - q).powi(2)).sum::<f64>().sqrt();
        let dot = a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        let na = a.iter().map(|p| p * p).sum::<f64>().sqrt().max(1e-12);
        let nb = b.iter().map(|p| p * p).sum::<f64>().sqrt().max(1e-12);
        l2.push(diff);
        cos.push(1.0 - dot / (na * nb));
    }
    let (l2m, l2ci) = mean_ci(&l2);
    let (cm, cci) = mean_ci(&cos);
    Ok(BiasStats {
        l2: l2m,
        l2_ci95: l2ci,
        cos: cm,
        cos_ci95: cci,
        images: n,
        views,
    })
}

/// Measures the bias of `encoder` on `images` (with `labels`) with K = `views` augmentations of
/// each image by `pipeline`, seeded by `seed`.
#[allow(clippy::too_many_arguments)]
pub fn prototype_bias(
    encoder: &ResNet,
    images: &ImageSet,
    labels: &[u16],
    classes: usize,
    pipeline: &Pipeline,
    size: usize,
    views: usize,
    seed: u64,
) -> Result<BiasStats> {
    let d = encoder.feat_dim;
    let per = 3 * size * size;
    let imgs_per_batch = (512 / views).max(1);
    let mut feats = Vec::with_capacity(images.n * views * d);
    let mut start = 0;
    while start < images.n {
        let end = (start + imgs_per_batch).min(images.n);
        let srcs: Vec<&[u8]> = (start..end)
            .flat_map(|i| std::iter::repeat_n(images.image(i), views))
            .collect();
        let seeds: Vec<u64> = (start..end)
            .flat_map(|i| (0..views).map(move |v| augment::view_seed(seed, u64::MAX, i as u64, v as u64)))
            .collect();
        let mut buf = vec![0f32; srcs.len() * per];
        pipeline.augment_batch(&srcs, images.h, images.w, &seeds, &mut buf);
        let x = Tensor::from_vec(buf, (srcs.len(), 3, size, size), &encoder.device)?;
        feats.extend(encoder.forward(&x, false)?.flatten_all()?.to_vec1::<f32>()?);
        start = end;
    }
    bias_from_features(&feats, labels, views, d, classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_geometry() {
        // Two images of class 0 with single views e₁ and e₂: μ̂₀ = (e₁+e₂)/2, each at distance
        // √2/2; cos(μ̂₀, e₁) = √2/2. One image of class 1 alone: distance 0.
        let feats = [1.0f32, 0.0, 0.0, 2.0, 0.0, -3.0];
        let s = bias_from_features(&feats, &[0, 0, 1], 1, 2, 2).unwrap();
        let want = (2.0 * 0.5f64.sqrt()) / 3.0;
        assert!((s.l2 - want).abs() < 1e-12);
        let want_cos = 2.0 * (1.0 - 0.5f64.sqrt()) / 3.0;
        assert!((s.cos - want_cos).abs() < 1e-12);
        assert!(s.l2_ci95[0] < s.l2 && s.l2 < s.l2_ci95[1]);
    }

    #[test]
    fn views_are_averaged_after_normalisation() {
        // One image, K = 2 views (3,0) and (0,5): μ_x = (0.5, 0.5); alone in its class → bias 0.
        let s = bias_from_features(&[3.0, 0.0, 0.0, 5.0], &[0], 2, 2, 1).unwrap();
        assert_eq!(s.l2, 0.0);
        // Two images of one class, identical views: zero bias whatever K.
        let f = [1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(bias_from_features(&f, &[0, 0], 2, 2, 1).unwrap().l2, 0.0);
        assert!(bias_from_features(&f, &[0, 0, 0], 2, 2, 1).is_err());
    }
}

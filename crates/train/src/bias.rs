//! Prototype representation bias (our reading of the paper's definition), its scale-free form,
//! and the reconstructed theorems' bounds measured on the same surrogates.
//!
//! For each evaluation image x, K augmented views under the run's own pipeline go through the
//! frozen encoder (its pooled features, before the projection head); `μ_x` is the mean of the K
//! L2-normalised features (the surrogate prototype E_t f(t(x)); ‖μ_x‖ ≤ 1, not re-normalised),
//! `μ̂_y` the mean of `μ_x` over the images of class y (the realistic class prototype), `μ̄` the
//! mean of all `μ_x`, and
//!
//! ```text
//! bias_l2  = (1/n) Σ_x ‖μ̂_{y(x)} − μ_x‖₂            (95 % normal interval over images)
//! bias_cos = (1/n) Σ_x (1 − cos(μ̂_{y(x)}, μ_x))
//! bias_rel = Σ_x ‖μ̂_{y(x)} − μ_x‖₂ / Σ_x ‖μ_x − μ̄‖₂   (95 % delta-method interval)
//! ```
//!
//! `bias_rel` is scale-free: multiplying every feature spread by a constant leaves it unchanged,
//! so an encoder cannot lower it by shrinking its features (a collapsed encoder has a tiny
//! `bias_l2`). It is ≈ 1 when the class means carry no information (each μ̂_y ≈ μ̄, e.g. features
//! independent of the labels) and 0 when every μ_x is its class prototype. When the spread
//! itself vanishes — mean ‖μ_x − μ̄‖ ≤ 10⁻⁶ · mean ‖μ_x‖, i.e. the μ_x agree to within the f32
//! rounding of the features (a collapsed encoder) — the ratio is 0/0 and is *defined* as 1 with
//! the interval [1, 1] (`BiasStats::collapsed`): the class structure explains none of a spread
//! that does not exist, so a collapsed encoder scores like a label-blind one and cannot win.
//!
//! The interval of `bias_rel` is the delta method for the ratio R = ā / b̄ of the per-image means
//! of a_i = ‖μ̂_{y_i} − μ_{x_i}‖ and b_i = ‖μ_{x_i} − μ̄‖: R ± 1.96·sd(ψ)/√n with the influence
//! values ψ_i = (a_i − R·b_i) / b̄. Like `bias_l2`'s interval it treats the prototypes as fixed
//! and the images as the sampling unit; it needs no random numbers.
//!
//! # Theorem bounds ([`bounds_from_features`])
//! Per image, with z the L2-normalised feature of view 0 (one of the K views that make μ_x),
//! y its class, the realistic prototypes μ̂ of the classes present, and s the reconstruction's
//! similarity s(z, μ) = cos(z, μ) = ⟨z, μ⟩ / ‖μ‖ (docs/paper.md):
//!
//! ```text
//! attract:  −s(z, μ̂_y) ≤ −s(z, μ_x) + ‖μ_x − μ̂_y‖
//! repel:    max_{y'≠y} s(z, μ̂_{y'}) ≤ τ · log Σ_{y'≠y} exp(s(z, μ̂_{y'}) / τ)
//! ```
//!
//! The math: with an inner-product similarity s(z, μ) = ⟨z, μ⟩ the attracting bound is
//! Cauchy–Schwarz, ⟨z, μ_x − μ_y⟩ ≤ ‖z‖·‖μ_x − μ_y‖ = ‖μ_x − μ_y‖, for any μ's. With the cosine it
//! reads ⟨z, u_x − u_y⟩ ≤ ‖μ_x − μ_y‖ with u = μ/‖μ‖, and Cauchy–Schwarz only gives
//! ⟨z, u_x − u_y⟩ ≤ ‖u_x − u_y‖, which is the stated bound only for unit prototypes (‖μ‖ = 1);
//! our surrogates have ‖μ‖ < 1 and ‖u_x − u_y‖ can exceed ‖μ_x − μ_y‖ (short means pointing in
//! different directions). So the reconstruction's attracting bound, computed as stated (cosine
//! s, the un-normalised bias term `bias_l2` averages), may fail; a failure is a finding about the
//! reconstruction (it needs unit prototypes or an inner-product s), reported, never clipped. The
//! repelling bound is log-sum-exp ≥ max and holds for any reals (0 ≤ slack ≤ τ·log(C−1)), so its
//! share must be 1 and its slack says how loose it is. Both sides are computed in f64 from the
//! f32 features and compared exactly (no tolerance).

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
    /// The scale-free bias (1 when `collapsed`).
    pub rel: f64,
    pub rel_ci95: [f64; 2],
    /// The surrogates do not spread (see the module doc): `rel` is 1 by definition.
    pub collapsed: bool,
    pub images: usize,
    pub views: usize,
}

/// The reconstructed theorems' bounds on the bias images (see the module doc).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct BoundStats {
    /// Share of the images, in [0, 1], where the attracting bound holds.
    pub attract_holds: f64,
    /// Mean of RHS − LHS of the attracting bound (negative parts are violations).
    pub attract_slack: f64,
    /// Same for the repelling bound; None when the images hold a single class.
    pub repel_holds: Option<f64>,
    pub repel_slack: Option<f64>,
    /// Images (one sample each).
    pub n: usize,
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

/// Ratio ā / b̄ of the means of paired samples and its 95 % delta-method interval.
fn ratio_ci(a: &[f64], b: &[f64]) -> (f64, [f64; 2]) {
    let n = a.len() as f64;
    let (am, bm) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let r = am / bm;
    let psi: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - r * y) / bm).collect();
    let (_, [lo, hi]) = mean_ci(&psi);
    let h = (hi - lo) / 2.0;
    (r, [r - h, r + h])
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| p * q).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q).powi(2)).sum::<f64>().sqrt()
}

/// The surrogate prototypes of n images: μ_x (`[n, d]`), μ̂_y (`[classes, d]`) and class counts.
struct Surrogates {
    d: usize,
    mu_x: Vec<f64>,
    mu_y: Vec<f64>,
    counts: Vec<usize>,
}

impl Surrogates {
    fn x(&self, i: usize) -> &[f64] {
        &self.mu_x[i * self.d..(i + 1) * self.d]
    }

    fn y(&self, c: usize) -> &[f64] {
        &self.mu_y[c * self.d..(c + 1) * self.d]
    }
}

/// Row `r` of `[rows, d]` features, L2-normalised, in f64.
fn unit_row(feats: &[f32], r: usize, d: usize) -> Vec<f64> {
    unit_f64(&feats[r * d..(r + 1) * d])
}

/// `row` L2-normalised, in f64 (a zero row stays zero).
pub(crate) fn unit_f64(row: &[f32]) -> Vec<f64> {
    let row: Vec<f64> = row.iter().map(|&a| a as f64).collect();
    let nr = norm(&row).max(1e-12);
    row.into_iter().map(|a| a / nr).collect()
}

fn surrogates(feats: &[f32], labels: &[u16], views: usize, d: usize, classes: usize) -> Result<Surrogates> {
    let n = labels.len();
    if n == 0 || views == 0 || feats.len() != n * views * d {
        bail!(
            "prototype bias: {} features for {n} images × {views} views × {d} dims",
            feats.len()
        );
    }
    if let Some(&y) = labels.iter().find(|&&y| y as usize >= classes) {
        bail!("prototype bias: label {y} with {classes} classes");
    }
    let mut mu_x = vec![0f64; n * d];
    for i in 0..n {
        for v in 0..views {
            let u = unit_row(feats, i * views + v, d);
            for t in 0..d {
                mu_x[i * d + t] += u[t] / views as f64;
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
    Ok(Surrogates {
        d,
        mu_x,
        mu_y,
        counts,
    })
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
    let s = surrogates(feats, labels, views, d, classes)?;
    let n = labels.len();
    let mut l2 = Vec::with_capacity(n);
    let mut cos = Vec::with_capacity(n);
    for (i, &y) in labels.iter().enumerate() {
        let (a, b) = (s.x(i), s.y(y as usize));
        l2.push(dist(a, b));
        cos.push(1.0 - dot(a, b) / (norm(a).max(1e-12) * norm(b).max(1e-12)));
    }
    let mut mean_all = vec![0f64; d];
    for i in 0..n {
        mean_all
            .iter_mut()
            .zip(s.x(i))
            .for_each(|(m, v)| *m += v / n as f64);
    }
    let spread: Vec<f64> = (0..n).map(|i| dist(s.x(i), &mean_all)).collect();
    let scale = (0..n).map(|i| norm(s.x(i))).sum::<f64>() / n as f64;
    let collapsed = spread.iter().sum::<f64>() / n as f64 <= 1e-6 * scale;
    let (rel, rel_ci95) = if collapsed {
        (1.0, [1.0, 1.0])
    } else {
        ratio_ci(&l2, &spread)
    };
    let (l2m, l2ci) = mean_ci(&l2);
    let (cm, cci) = mean_ci(&cos);
    Ok(BiasStats {
        l2: l2m,
        l2_ci95: l2ci,
        cos: cm,
        cos_ci95: cci,
        rel,
        rel_ci95,
        collapsed,
        images: n,
        views,
    })
}

/// Both sides of the two bounds for every image (see the module doc), as
/// `(attract_lhs, attract_rhs, repel)` with `repel = (lhs, rhs)` when another class is present.
#[allow(clippy::type_complexity)]
fn bound_sides(
    feats: &[f32],
    labels: &[u16],
    views: usize,
    d: usize,
    classes: usize,
    tau: f64,
) -> Result<Vec<(f64, f64, Option<(f64, f64)>)>> {
    if !(tau.is_finite() && tau > 0.0) {
        bail!("theorem bounds: τ must be > 0, got {tau}");
    }
    let s = surrogates(feats, labels, views, d, classes)?;
    let cosine = |z: &[f64], mu: &[f64]| dot(z, mu) / norm(mu).max(1e-12);
    Ok(labels
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            let y = y as usize;
            let z = unit_row(feats, i * views, d);
            let lhs = -cosine(&z, s.y(y));
            let rhs = -cosine(&z, s.x(i)) + dist(s.x(i), s.y(y));
            let others: Vec<f64> = (0..classes)
                .filter(|&c| c != y && s.counts[c] > 0)
                .map(|c| cosine(&z, s.y(c)))
                .collect();
            let repel = (!others.is_empty()).then(|| {
                let m = others.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = others.iter().map(|a| ((a - m) / tau).exp()).sum();
                (m, m + tau * sum.ln())
            });
            (lhs, rhs, repel)
        })
        .collect())
}

/// The theorems' bounds measured on the features of the bias images (layout as
/// [`bias_from_features`]) with the run's temperature `tau`.
pub fn bounds_from_features(
    feats: &[f32],
    labels: &[u16],
    views: usize,
    d: usize,
    classes: usize,
    tau: f64,
) -> Result<BoundStats> {
    let sides = bound_sides(feats, labels, views, d, classes, tau)?;
    let n = sides.len() as f64;
    let share = |holds: usize, of: usize| holds as f64 / of as f64;
    let attract_holds = share(sides.iter().filter(|s| s.0 <= s.1).count(), sides.len());
    let attract_slack = sides.iter().map(|s| s.1 - s.0).sum::<f64>() / n;
    let repel: Vec<(f64, f64)> = sides.iter().filter_map(|s| s.2).collect();
    let (repel_holds, repel_slack) = if repel.len() == sides.len() {
        (
            Some(share(repel.iter().filter(|r| r.0 <= r.1).count(), repel.len())),
            Some(repel.iter().map(|r| r.1 - r.0).sum::<f64>() / n),
        )
    } else {
        (None, None)
    };
    Ok(BoundStats {
        attract_holds,
        attract_slack,
        repel_holds,
        repel_slack,
        n: sides.len(),
    })
}

/// Encoder features (`[n·K, d]`, the K views of image i in rows `i·K .. (i+1)·K`) of K =
/// `views` augmentations by `pipeline` of each of `images`, view v of image i seeded with
/// `view_seed(seed, u64::MAX, i, v)`.
pub fn view_features(
    encoder: &ResNet,
    images: &ImageSet,
    pipeline: &Pipeline,
    size: usize,
    views: usize,
    seed: u64,
) -> Result<Vec<f32>> {
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
    Ok(feats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

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
    fn bias_rel_of_known_geometry() {
        // μ = (1,0), (0,1) of class 0 and (0,−1) of class 1: μ̄ = (1/3, 0); distances to μ̄ are
        // 2/3, √10/3, √10/3, to the class means √2/2, √2/2, 0.
        let feats = [1.0f32, 0.0, 0.0, 2.0, 0.0, -3.0];
        let s = bias_from_features(&feats, &[0, 0, 1], 1, 2, 2).unwrap();
        let want = 2.0f64.sqrt() / ((2.0 + 2.0 * 10f64.sqrt()) / 3.0);
        assert!((s.rel - want).abs() < 1e-12, "{} vs {want}", s.rel);
        assert!(!s.collapsed);
        assert!(s.rel_ci95[0] < s.rel && s.rel < s.rel_ci95[1]);
    }

    /// `n` images of `classes` classes (i mod C), K views each: view rows from `f(image, view)`.
    fn features(n: usize, views: usize, d: usize, mut f: impl FnMut(usize, usize) -> Vec<f32>) -> Vec<f32> {
        let mut x = Vec::with_capacity(n * views * d);
        for i in 0..n {
            for v in 0..views {
                let row = f(i, v);
                assert_eq!(row.len(), d);
                x.extend(row);
            }
        }
        x
    }

    fn labels(n: usize, classes: usize) -> Vec<u16> {
        (0..n).map(|i| (i % classes) as u16).collect()
    }

    fn gaussian(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
        (0..d).map(|_| rng.sample::<f32, _>(StandardNormal)).collect()
    }

    #[test]
    fn a_collapsed_encoder_scores_one_not_zero() {
        // Every view the same vector: bias_l2 = 0 (it would "win"), bias_rel = 1 by definition.
        let x = features(40, 2, 3, |_, _| vec![0.3, -0.2, 0.5]);
        let s = bias_from_features(&x, &labels(40, 4), 2, 3, 4).unwrap();
        assert!(s.l2 < 1e-12, "{}", s.l2);
        assert!(s.collapsed);
        assert_eq!((s.rel, s.rel_ci95), (1.0, [1.0, 1.0]));
        // All-zero features too.
        let z = bias_from_features(&vec![0.0; 40 * 2 * 3], &labels(40, 4), 2, 3, 4).unwrap();
        assert!(z.collapsed && z.rel == 1.0);
    }

    #[test]
    fn shrinking_the_spread_lowers_bias_l2_but_not_bias_rel() {
        // A near-collapsed encoder: one direction plus ε × label-independent noise. bias_l2
        // scales with ε; bias_rel stays ≈ 1 (not collapsed: the spread is well above f32 noise).
        let run = |eps: f32| {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let x = features(400, 2, 16, |_, _| {
                let g = gaussian(&mut rng, 16);
                (0..16)
                    .map(|t| if t == 0 { 1.0 } else { 0.0 } + eps * g[t])
                    .collect()
            });
            bias_from_features(&x, &labels(400, 4), 2, 16, 4).unwrap()
        };
        let (wide, narrow) = (run(1e-1), run(1e-3));
        assert!(narrow.l2 < wide.l2 / 50.0, "{} vs {}", narrow.l2, wide.l2);
        assert!(!narrow.collapsed);
        assert!(
            (narrow.rel - wide.rel).abs() < 0.01,
            "{} vs {}",
            narrow.rel,
            wide.rel
        );
        assert!((wide.rel - 1.0).abs() < 0.02, "{}", wide.rel);
    }

    #[test]
    fn a_perfect_encoder_scores_zero() {
        // Every view of a class-c image is the class's own vector: μ_x = μ̂_y, bias_rel = 0.
        let protos: Vec<Vec<f32>> = {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            (0..5).map(|_| gaussian(&mut rng, 8)).collect()
        };
        let x = features(100, 3, 8, |i, _| protos[i % 5].clone());
        let s = bias_from_features(&x, &labels(100, 5), 3, 8, 5).unwrap();
        assert!(!s.collapsed);
        assert!(s.rel.abs() < 1e-12 && s.l2 < 1e-12, "{} {}", s.rel, s.l2);
    }

    #[test]
    fn a_random_encoder_scores_about_one() {
        // Unit features independent of the labels (K = 1, 2,000 images, 10 classes): ‖u − m‖² is
        // 1 − 1/n_c about the class mean and 1 − 1/n about the global one (the image is part of
        // the mean), so bias_rel ≈ √((1 − 1/200)/(1 − 1/2000)) = 0.99775.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x = features(2000, 1, 64, |_, _| gaussian(&mut rng, 64));
        let s = bias_from_features(&x, &labels(2000, 10), 1, 64, 10).unwrap();
        let want = ((1.0 - 1.0 / 200.0) / (1.0 - 1.0 / 2000.0f64)).sqrt();
        assert!((s.rel - want).abs() < 0.003, "{} vs {want}", s.rel);
        assert!(s.rel < 1.0 && s.rel_ci95[0] < s.rel && s.rel < s.rel_ci95[1]);
    }

    #[test]
    fn bias_rel_and_its_interval_match_an_independent_computation() {
        // Clustered features with noise; the ratio recomputed here from scratch, its standard
        // error by the jackknife over images (prototypes held fixed, as the delta method does).
        let (n, k, d, c) = (300usize, 2usize, 6usize, 3usize);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let x = features(n, k, d, |i, _| {
            let g = gaussian(&mut rng, d);
            (0..d)
                .map(|t| g[t] + if t == i % c { 2.0 } else { 0.0 })
                .collect()
        });
        let y = labels(n, c);
        let s = bias_from_features(&x, &y, k, d, c).unwrap();
        let unit = |r: &[f32]| -> Vec<f64> {
            let nr = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            r.iter().map(|v| *v as f64 / nr).collect()
        };
        let mu: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let (a, b) = (
                    unit(&x[(2 * i) * d..(2 * i + 1) * d]),
                    unit(&x[(2 * i + 1) * d..(2 * i + 2) * d]),
                );
                a.iter().zip(&b).map(|(p, q)| (p + q) / 2.0).collect()
            })
            .collect();
        let mean_of = |rows: Vec<&Vec<f64>>| -> Vec<f64> {
            let m = rows.len() as f64;
            (0..d)
                .map(|t| rows.iter().map(|r| r[t]).sum::<f64>() / m)
                .collect()
        };
        let class_mean: Vec<Vec<f64>> = (0..c)
            .map(|cl| mean_of(mu.iter().skip(cl).step_by(c).collect()))
            .collect();
        let global = mean_of(mu.iter().collect());
        let a: Vec<f64> = (0..n).map(|i| dist(&mu[i], &class_mean[i % c])).collect();
        let b: Vec<f64> = (0..n).map(|i| dist(&mu[i], &global)).collect();
        let (sa, sb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
        assert!((s.rel - sa / sb).abs() < 1e-12, "{} vs {}", s.rel, sa / sb);
        let loo: Vec<f64> = (0..n).map(|i| (sa - a[i]) / (sb - b[i])).collect();
        let lm = loo.iter().sum::<f64>() / n as f64;
        let se_jack =
            ((n as f64 - 1.0) / n as f64 * loo.iter().map(|r| (r - lm).powi(2)).sum::<f64>()).sqrt();
        let half = (s.rel_ci95[1] - s.rel_ci95[0]) / 2.0;
        assert!(
            (half / (1.96 * se_jack) - 1.0).abs() < 0.05,
            "{half} vs {}",
            1.96 * se_jack
        );
        assert!(s.rel > 0.2 && s.rel < 0.9, "{}", s.rel);
    }

    #[test]
    fn bounds_of_hand_made_vectors() {
        // K = 1: A (1,0) and B (0,1) of class 0, C (−1,0) of class 1, D (0,−1) of class 2.
        // μ̂₀ = (½,½), μ̂₁ = C, μ̂₂ = D. Attract: A, B have LHS −1/√2, RHS −1 + 1/√2 (slack
        // √2 − 1); C, D are their own prototype (slack 0). Repel (τ = ½): A's other prototypes
        // score −1 and 0 → τ·ln(1 + e^{−2}); C's score −1/√2 and 0 → τ·ln(1 + e^{−√2}).
        let x = [1.0f32, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0];
        let t = bounds_from_features(&x, &[0, 0, 1, 2], 1, 2, 3, 0.5).unwrap();
        assert_eq!(t.n, 4);
        assert_eq!(t.attract_holds, 1.0);
        assert!(
            (t.attract_slack - (2f64.sqrt() - 1.0) / 2.0).abs() < 1e-12,
            "{}",
            t.attract_slack
        );
        assert_eq!(t.repel_holds, Some(1.0));
        let want = 0.25 * ((1.0 + (-2f64).exp()).ln() + (1.0 + (-(2f64.sqrt())).exp()).ln());
        assert!(
            (t.repel_slack.unwrap() - want).abs() < 1e-12,
            "{:?} vs {want}",
            t.repel_slack
        );
    }

    #[test]
    fn the_cosine_attracting_bound_fails_on_short_prototypes() {
        // K = 3 views whose mean is short: A's views (1,0), (−0.4, ±√0.84) → μ_A = (1/15, 0);
        // B's views (0,1), (±√0.84, −0.4) → μ_B = (0, 1/15); class 0 → μ̂₀ = (1/30, 1/30).
        // For A (z = (1,0)): LHS −cos(z, μ̂₀) = −1/√2 > RHS −1 + ‖μ_A − μ̂₀‖ = −1 + √2/30: a
        // violation (the inner-product form ⟨z, μ_A − μ̂₀⟩ = 1/30 ≤ √2/30 would hold). C, alone in
        // class 1, is its own prototype: holds with slack 0.
        let r = 0.84f32.sqrt();
        let x = [
            1.0, 0.0, -0.4, r, -0.4, -r, // A
            0.0, 1.0, r, -0.4, -r, -0.4, // B
            -1.0, 0.0, -1.0, 0.0, -1.0, 0.0, // C
        ];
        let t = bounds_from_features(&x, &[0, 0, 1], 3, 2, 2, 0.5).unwrap();
        assert!((t.attract_holds - 1.0 / 3.0).abs() < 1e-15);
        let slack_a = -1.0 + 2f64.sqrt() / 30.0 + 0.5f64.sqrt();
        assert!(slack_a < -0.2);
        assert!(
            (t.attract_slack - 2.0 * slack_a / 3.0).abs() < 1e-6,
            "{}",
            t.attract_slack
        );
    }

    #[test]
    fn the_repelling_bound_always_holds_within_its_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let (c, tau) = (5usize, 0.2);
        let x = features(200, 2, 8, |_, _| gaussian(&mut rng, 8));
        let t = bounds_from_features(&x, &labels(200, c), 2, 8, c, tau).unwrap();
        assert_eq!(t.repel_holds, Some(1.0));
        let slack = t.repel_slack.unwrap();
        assert!(slack > 0.0 && slack <= tau * ((c - 1) as f64).ln(), "{slack}");
        // One class: no other prototype, no repelling bound.
        let one = bounds_from_features(&x, &[0; 200], 2, 8, c, tau).unwrap();
        assert_eq!((one.repel_holds, one.repel_slack, one.n), (None, None, 200));
        assert!(bounds_from_features(&x, &labels(200, c), 2, 8, c, 0.0).is_err());
        assert!(bounds_from_features(&x, &labels(200, 6), 2, 8, c, tau).is_err());
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

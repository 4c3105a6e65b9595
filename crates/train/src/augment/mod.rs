//! Data augmentation: seeded, per-image, parallel pipelines with torchvision's semantics on
//! float images.
//!
//! A [`Pipeline`] is built from [`AugmentConfig`]: a preset, names removed from it, names added
//! to it. Each image (3×H×W `u8`, CHW as in the CIFAR binaries) is converted to `f32` in [0, 1]
//! (`x / 255`, torchvision's `ToTensor`), passed through the transforms in order, and normalised
//! per channel, `(x − mean) / std`, into a 3×size×size `f32` buffer.
//!
//! # Transforms (names as in `augment.remove` / `augment.add`)
//! - `crop`: `RandomResizedCrop(size, scale, ratio)` — torchvision's sampler
//!   ([`sample_crop_params`]) and a bilinear resize ([`resized_crop`]).
//! - `flip`: horizontal flip with probability `flip_p`.
//! - `color_jitter`: with probability `jitter.p`, `ColorJitter(b, c, s, h)`: factors uniform in
//!   [max(0, 1−B), 1+B] (likewise C, S) and a hue shift uniform in [−H, H], the four operations
//!   applied in a uniformly random order; a component with strength 0 is skipped (torchvision
//!   sets it to `None`).
//! - `grayscale`: with probability `grayscale_p`, L = 0.299R + 0.587G + 0.114B on 3 channels.
//! - `blur`: with probability `blur.p`, Gaussian blur, σ uniform in `blur.sigma`, kernel side
//!   [`blur_kernel_size`]`(size, kernel_frac)` (5 for CIFAR's 32 at the default 0.1), reflect
//!   padding.
//! - `solarize`: with probability `solarize.p`, x ≥ threshold → 1 − x.
//! - `rotation`: with probability `rotation.p`, rotation by an angle uniform in
//!   [−degrees, degrees] about the centre, bilinear, zero fill.
//! - `cutout`: with probability `cutout.p`, a square of side round(`size_frac`·size) centred on a
//!   uniformly random pixel, clipped at the borders, set to 0 *after* normalisation — the
//!   dataset mean in pixel space, so it removes information without shifting the input
//!   statistics. The decision and position are drawn at its place in the order; the square is
//!   written after normalisation.
//!
//! # Presets, `remove`, `add`
//! `simclr` = [crop, flip, color_jitter, grayscale]; `none` = []. Names in `remove` are dropped
//! from the preset (a name the preset lacks is ignored). Names in `add` that are not already in
//! the pipeline are appended in the canonical order [crop, flip, color_jitter, grayscale, blur,
//! solarize, rotation, cutout] (`config::Transform`), whatever their order in the list. A name
//! both removed and added is an error naming it (an unknown name is refused when the config is read). Without `crop`, an image
//! whose side differs from `size` is first centre-resized ([`center_resize`]).
//!
//! # Randomness
//! Every draw comes from the caller's RNG in pipeline order. [`Pipeline::augment_batch`] gives
//! image k its own `ChaCha8Rng::seed_from_u64(seeds[k])`, so batches are bit-identical whatever
//! the rayon thread count; [`view_seed`] derives those seeds from (base seed, epoch, image, view).
//!
//! # Deviations from torchvision (deliberate)
//! - Float throughout: the `u8` image is converted once and never re-quantised (torchvision on
//!   PIL or `uint8` tensors rounds to 8 bits after every operation).
//! - Grayscale weights 0.299/0.587/0.114 (ITU-R 601-2, as PIL); torchvision's tensor path uses
//!   0.2989 for red.
//! - Resizing is torchvision's default `antialias=True` bilinear (PIL's triangle filter): exactly
//!   bilinear with align_corners=False when enlarging — always the case for crops of CIFAR
//!   images resized to their own side — and antialiased when shrinking.
//! - Rotation is bilinear (torchvision's `RandomRotation` defaults to nearest) and has a
//!   probability (torchvision has none); torchvision's fill blending (output × bilinear weight of
//!   the in-bounds taps) is reproduced.
//! - The blur kernel side comes from a fraction of the image side (SimCLR's 10 %), not a fixed
//!   size; reflect padding repeats periodically when the kernel is wider than the image (torch
//!   refuses).
//! - The random stream is ChaCha8, not torch's generator; "apply with probability p" is
//!   `u < p` for u uniform in [0, 1), as torchvision's `torch.rand(1) < p`.
//!
//! `tests_torchvision.rs` checks each op against torchvision's float path on fixed images
//! (reference numbers made by `torchvision_reference.py`, committed beside it): brightness, hue,
//! flip and the crop-resize agree to f32 rounding, the luma-based ops differ only by the red
//! weight above (≤ 1e-4), and the crop sampler and the whole `simclr` pipeline have
//! torchvision's distribution. torchvision's *PIL* path (what `datasets.CIFAR10` with PIL
//! transforms computes) differs more: it rounds to 8 bits after every op and rotates the hue
//! in 8-bit HSV (up to 0.05 per value on the reference images; numbers in the JSON file).

mod ops;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_torchvision;

pub use ops::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, blur_kernel_size, center_resize,
    cutout, cutout_bounds, fill_square, gaussian_blur, gaussian_kernel, hflip, normalize, resized_crop,
    resized_crop_hw, rotate, sample_crop_params, solarize, to_grayscale, Image, LUMA,
};

// One named transform of the pipeline (`augment.remove` / `augment.add` name them).
use crate::config::Transform as Op;
use crate::config::{AugmentConfig, Preset};
use anyhow::{bail, Result};
use ops::uniform;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Canonical order: the order of [`Op::ALL`].
const CANONICAL: &[Op] = Op::ALL;

/// A configured augmentation pipeline (cheap to share across threads: it holds no buffers).
#[derive(Debug, Clone)]
pub struct Pipeline {
    ops: Vec<Op>,
    cfg: AugmentConfig,
    mean: [f32; 3],
    std: [f32; 3],
    blur_kernel: usize,
    cutout_side: usize,
}

impl Pipeline {
    /// Builds the pipeline of `cfg` with normalisation by per-channel `mean` and `std` (in [0, 1]
    /// pixel units). Errors (never panics) on unknown names and on parameters that would make a
    /// transform meaningless.
    pub fn new(cfg: &AugmentConfig, mean: [f32; 3], std: [f32; 3]) -> Result<Pipeline> {
        let preset: &[Op] = match cfg.preset {
            Preset::Simclr => &[Op::Crop, Op::Flip, Op::ColorJitter, Op::Grayscale],
            Preset::None => &[],
        };
        let (remove, add) = (&cfg.remove, &cfg.add);
        if let Some(op) = add.iter().find(|op| remove.contains(op)) {
            bail!("`augment`: transform `{}` is both removed and added", op.as_str());
        }
        let mut ops: Vec<Op> = preset.iter().copied().filter(|op| !remove.contains(op)).collect();
        for &op in CANONICAL {
            if add.contains(&op) && !ops.contains(&op) {
                ops.push(op);
            }
        }
        Self::check(cfg, mean, std)?;
        Ok(Pipeline {
            ops,
            cfg: cfg.clone(),
            mean,
            std,
            blur_kernel: blur_kernel_size(cfg.size, cfg.blur.kernel_frac),
            cutout_side: (f64::from(cfg.cutout.size_frac) * cfg.size as f64).round() as usize,
        })
    }

    fn check(cfg: &AugmentConfig, mean: [f32; 3], std: [f32; 3]) -> Result<()> {
        if cfg.size == 0 {
            bail!("`augment.size` must be ≥ 1");
        }
        if !(mean.iter().all(|m| m.is_finite()) && std.iter().all(|s| s.is_finite() && *s > 0.0)) {
            bail!("normalisation needs finite means and std > 0, got {mean:?}, {std:?}");
        }
        let [s0, s1] = cfg.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1.is_finite()) {
            bail!(
                "`augment.crop_scale` must satisfy 0 < lo ≤ hi, got {:?}",
                cfg.crop_scale
            );
        }
        let [r0, r1] = cfg.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            bail!(
                "`augment.crop_ratio` must satisfy 0 < lo ≤ hi, got {:?}",
                cfg.crop_ratio
            );
        }
        let j = &cfg.jitter;
        for (k, v) in [
            ("brightness", j.brightness),
            ("contrast", j.contrast),
            ("saturation", j.saturation),
            ("hue", j.hue),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("`augment.jitter.{k}` must be finite and ≥ 0, got {v}");
            }
        }
        let [g0, g1] = cfg.blur.sigma;
        if !(g0 > 0.0 && g0 <= g1 && g1.is_finite()) {
            bail!(
                "`augment.blur.sigma` must satisfy 0 < lo ≤ hi, got {:?}",
                cfg.blur.sigma
            );
        }
        for (k, v) in [
            ("augment.blur.kernel_frac", cfg.blur.kernel_frac),
            ("augment.rotation.degrees", cfg.rotation.degrees),
            ("augment.cutout.size_frac", cfg.cutout.size_frac),
            ("augment.solarize.threshold", cfg.solarize.threshold),
        ] {
            if !v.is_finite() || (k != "augment.solarize.threshold" && v < 0.0) {
                bail!("`{k}` must be finite (and ≥ 0), got {v}");
            }
        }
        Ok(())
    }

    /// The transforms in the order they are applied.
    pub fn names(&self) -> Vec<&'static str> {
        self.ops.iter().map(|op| op.as_str()).collect()
    }

    /// Output side in pixels.
    pub fn size(&self) -> usize {
        self.cfg.size
    }

    /// Length of one output image: 3·size·size.
    pub fn out_len(&self) -> usize {
        3 * self.cfg.size * self.cfg.size
    }

    /// Augments one 3×h×w `u8` image into `out` (3×size×size, normalised), drawing from `rng`.
    /// Panics if the buffer lengths do not match.
    pub fn apply<R: Rng + ?Sized>(&self, src: &[u8], h: usize, w: usize, rng: &mut R, out: &mut [f32]) {
        assert_eq!(out.len(), self.out_len(), "output must be 3·size·size");
        let size = self.cfg.size;
        let cfg = &self.cfg;
        let mut img = Image::from_u8(src, h, w);
        if !self.ops.contains(&Op::Crop) && (h != size || w != size) {
            img = center_resize(&img, size);
        }
        let mut cut = None;
        for &op in &self.ops {
            match op {
                Op::Crop => {
                    let (t, l, ch, cw) =
                        sample_crop_params(img.h, img.w, cfg.crop_scale, cfg.crop_ratio, rng);
                    img = resized_crop(&img, t, l, ch, cw, size);
                }
                Op::Flip => {
                    if rng.random::<f32>() < cfg.flip_p {
                        hflip(&mut img);
                    }
                }
                Op::ColorJitter => {
                    if rng.random::<f32>() < cfg.jitter.p {
                        self.color_jitter(&mut img, rng);
                    }
                }
                Op::Grayscale => {
                    if rng.random::<f32>() < cfg.grayscale_p {
                        to_grayscale(&mut img);
                    }
                }
                Op::Blur => {
                    if rng.random::<f32>() < cfg.blur.p {
                        let [lo, hi] = cfg.blur.sigma;
                        let sigma = uniform(rng, f64::from(lo), f64::from(hi)) as f32;
                        gaussian_blur(&mut img, self.blur_kernel, sigma);
                    }
                }
                Op::Solarize => {
                    if rng.random::<f32>() < cfg.solarize.p {
                        solarize(&mut img, cfg.solarize.threshold);
                    }
                }
                Op::Rotation => {
                    if rng.random::<f32>() < cfg.rotation.p {
                        let d = f64::from(cfg.rotation.degrees);
                        img = rotate(&img, uniform(rng, -d, d) as f32);
                    }
                }
                Op::Cutout => {
                    if rng.random::<f32>() < cfg.cutout.p {
                        cut = Some((rng.random_range(0..size), rng.random_range(0..size)));
                    }
                }
            }
        }
        normalize(&img, self.mean, self.std, out);
        if let Some((cy, cx)) = cut {
            fill_square(out, size, size, cy, cx, self.cutout_side, 0.0);
        }
    }

    /// torchvision `ColorJitter.forward`: a random permutation of the four operations, then the
    /// factors (brightness, contrast, saturation, hue), then the operations in that order.
    fn color_jitter<R: Rng + ?Sized>(&self, img: &mut Image, rng: &mut R) {
        let j = &self.cfg.jitter;
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let factor = |strength: f32, rng: &mut R| {
            (strength > 0.0).then(|| {
                let s = f64::from(strength);
                uniform(rng, (1.0 - s).max(0.0), 1.0 + s) as f32
            })
        };
        let b = factor(j.brightness, rng);
        let c = factor(j.contrast, rng);
        let s = factor(j.saturation, rng);
        let h = (j.hue > 0.0).then(|| {
            let hue = f64::from(j.hue);
            uniform(rng, -hue, hue) as f32
        });
        for k in order {
            match (k, b, c, s, h) {
                (0, Some(f), ..) => adjust_brightness(img, f),
                (1, _, Some(f), ..) => adjust_contrast(img, f),
                (2, _, _, Some(f), _) => adjust_saturation(img, f),
                (3, .., Some(f)) => adjust_hue(img, f),
                _ => {}
            }
        }
    }

    /// Augments a batch in parallel: image k (3×h×w `u8`) with its own
    /// `ChaCha8Rng::seed_from_u64(seeds[k])` into `out[k·out_len() ..]`. The result does not
    /// depend on the number of rayon threads. Panics if the lengths do not match.
    pub fn augment_batch(&self, images: &[&[u8]], h: usize, w: usize, seeds: &[u64], out: &mut [f32]) {
        assert_eq!(images.len(), seeds.len(), "one seed per image");
        assert_eq!(
            out.len(),
            images.len() * self.out_len(),
            "output must hold images·3·size·size values"
        );
        out.par_chunks_mut(self.out_len())
            .zip(images.par_iter().zip(seeds.par_iter()))
            .for_each(|(o, (img, &seed))| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                self.apply(img, h, w, &mut rng, o);
            });
    }
}

/// No augmentation: converts a 3×h×w `u8` image to [0, 1], centre-resizes it to `size` if
/// needed ([`center_resize`]) and normalises it into `out` (3×size×size).
pub fn eval_transform(
    src: &[u8],
    h: usize,
    w: usize,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) {
    let img = center_resize(&Image::from_u8(src, h, w), size);
    normalize(&img, mean, std, out);
}

/// [`eval_transform`] over a batch, in parallel (`out` holds images·3·size·size values).
pub fn eval_batch(
    images: &[&[u8]],
    h: usize,
    w: usize,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) {
    let n = 3 * size * size;
    assert_eq!(
        out.len(),
        images.len() * n,
        "output must hold images·3·size·size values"
    );
    out.par_chunks_mut(n)
        .zip(images.par_iter())
        .for_each(|(o, img)| eval_transform(img, h, w, size, mean, std, o));
}

/// SplitMix64's output function applied to `x + γ` (Steele, Lea & Flood 2014): a bijection of
/// u64 with good avalanche.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The augmentation seed of view `view` of image `index` in epoch `epoch` of a run seeded with
/// `base`: s = splitmix64(base ⊕ "augment!"), then s ← splitmix64(s ⊕ epoch), s ←
/// splitmix64(s ⊕ index), s ← splitmix64(s ⊕ view). Each step is a bijection, so for a fixed
/// prefix distinct last components give distinct seeds; the tag keeps the stream apart from
/// other uses of `base`.
pub fn view_seed(base: u64, epoch: u64, index: u64, view: u64) -> u64 {
    const TAG: u64 = u64::from_be_bytes(*b"augment!");
    let mut s = splitmix64(base ^ TAG);
    s = splitmix64(s ^ epoch);
    s = splitmix64(s ^ index);
    splitmix64(s ^ view)
}

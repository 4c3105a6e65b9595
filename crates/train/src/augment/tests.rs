//! Property tests of the transforms and the pipeline.

use super::ops::{crop_params, hsv_to_rgb, rgb_to_hsv};
use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn random_image(seed: u64, h: usize, w: usize) -> Image {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Image::new(3, h, w, (0..3 * h * w).map(|_| rng.random::<f32>()).collect())
}

fn random_u8(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<u8>()).collect()
}

fn max_diff(a: &Image, b: &Image) -> f32 {
    assert_eq!((a.c, a.h, a.w), (b.c, b.h, b.w));
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn solid(rgb: [f32; 3], h: usize, w: usize) -> Image {
    let data = rgb.iter().flat_map(|&v| std::iter::repeat_n(v, h * w)).collect();
    Image::new(3, h, w, data)
}

fn transpose(img: &Image) -> Image {
    let mut out = Image::zeros(img.c, img.w, img.h);
    for ch in 0..img.c {
        for y in 0..img.h {
            for x in 0..img.w {
                out.data[(ch * img.w + x) * img.h + y] = img.get(ch, y, x);
            }
        }
    }
    out
}

fn cfg_with(preset: &str, remove: &[&str], add: &[&str]) -> AugmentConfig {
    AugmentConfig {
        preset: preset.parse().unwrap(),
        remove: remove.iter().map(|s| s.parse().unwrap()).collect(),
        add: add.iter().map(|s| s.parse().unwrap()).collect(),
        ..AugmentConfig::default()
    }
}

const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// Python's `colorsys` in f64, an independent reference for the hue rotation.
fn colorsys_hue_shift(r: f64, g: f64, b: f64, shift: f64) -> (f64, f64, f64) {
    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
    if maxc == minc {
        return (r, g, b);
    }
    let s = (maxc - minc) / maxc;
    let (rc, gc, bc) = (
        (maxc - r) / (maxc - minc),
        (maxc - g) / (maxc - minc),
        (maxc - b) / (maxc - minc),
    );
    let h = if r == maxc {
        bc - gc
    } else if g == maxc {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = ((h / 6.0).rem_euclid(1.0) + shift).rem_euclid(1.0);
    let v = maxc;
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as i64 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hue_shift_zero_is_identity(seed in any::<u64>(), h in 1usize..9, w in 1usize..9) {
        let img = random_image(seed, h, w);
        let mut out = img.clone();
        adjust_hue(&mut out, 0.0);
        prop_assert!(max_diff(&img, &out) < 1e-5);
    }

    #[test]
    fn hue_shift_one_equals_zero_and_inverts(seed in any::<u64>(), a in -0.5f32..0.5) {
        let img = random_image(seed, 6, 5);
        let (mut zero, mut one) = (img.clone(), img.clone());
        adjust_hue(&mut zero, 0.0);
        adjust_hue(&mut one, 1.0);
        prop_assert!(max_diff(&zero, &one) < 1e-5);
        let mut back = img.clone();
        adjust_hue(&mut back, a);
        adjust_hue(&mut back, -a);
        prop_assert!(max_diff(&img, &back) < 1e-5);
    }

    #[test]
    fn hue_shift_matches_colorsys(seed in any::<u64>(), shift in -0.5f32..0.5) {
        let img = random_image(seed, 4, 4);
        let mut out = img.clone();
        adjust_hue(&mut out, shift);
        for i in 0..16 {
            let p = |ch: usize, im: &Image| f64::from(im.data[ch * 16 + i]);
            let want = colorsys_hue_shift(p(0, &img), p(1, &img), p(2, &img), f64::from(shift));
            for (ch, wv) in [want.0, want.1, want.2].into_iter().enumerate() {
                prop_assert!((p(ch, &out) - wv).abs() < 1e-4, "pixel {i} ch {ch}");
            }
        }
    }

    #[test]
    fn unit_factors_are_identities(seed in any::<u64>()) {
        let img = random_image(seed, 7, 6);
        for f in [adjust_brightness, adjust_contrast, adjust_saturation] {
            let mut out = img.clone();
            f(&mut out, 1.0);
            prop_assert_eq!(&out, &img);
        }
    }

    #[test]
    fn saturation_zero_is_grayscale(seed in any::<u64>()) {
        let img = random_image(seed, 5, 7);
        let (mut sat, mut gray) = (img.clone(), img.clone());
        adjust_saturation(&mut sat, 0.0);
        to_grayscale(&mut gray);
        prop_assert!(max_diff(&sat, &gray) < 1e-6);
    }

    #[test]
    fn contrast_zero_is_the_grayscale_mean(seed in any::<u64>()) {
        let img = random_image(seed, 6, 6);
        let mut gray = img.clone();
        to_grayscale(&mut gray);
        let mean = gray.plane(0).iter().sum::<f32>() / 36.0;
        let mut out = img.clone();
        adjust_contrast(&mut out, 0.0);
        prop_assert!(out.data.iter().all(|v| (v - mean).abs() < 1e-5));
    }

    #[test]
    fn colour_ops_stay_in_unit_range(seed in any::<u64>(), f in 0.0f32..3.0) {
        let img = random_image(seed, 5, 5);
        for op in [adjust_brightness, adjust_contrast, adjust_saturation] {
            let mut out = img.clone();
            op(&mut out, f);
            prop_assert!(out.data.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn crop_params_respect_bounds(
        seed in any::<u64>(),
        h in 1usize..80,
        w in 1usize..80,
        s0 in 0.01f32..1.0,
        ds in 0.0f32..1.0,
        r0 in 0.2f32..2.0,
        dr in 0.0f32..3.0,
    ) {
        let scale = [s0, (s0 + ds).min(1.0)];
        let ratio = [r0, r0 + dr];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ((top, left, ch, cw), fallback) = crop_params(h, w, scale, ratio, &mut rng);
        prop_assert!(ch >= 1 && cw >= 1 && top + ch <= h && left + cw <= w);
        let (chf, cwf) = (ch as f64, cw as f64);
        if fallback {
            // Centred, and the whole image unless its ratio is outside the range.
            prop_assert!(top == (h - ch) / 2 && left == (w - cw) / 2);
            prop_assert!(ch == h || cw == w);
        } else {
            // Sides are rounded from an exact draw: |ch·cw − target| ≤ (ch + cw)/2 + 1/4.
            let area = (h * w) as f64;
            let slack = (chf + cwf) / 2.0 + 0.25;
            prop_assert!(chf * cwf >= f64::from(scale[0]) * area - slack - 1e-6);
            prop_assert!(chf * cwf <= f64::from(scale[1]) * area + slack + 1e-6);
            // Ratio of the exact sides within bounds: (cw − ½)/(ch + ½) ≤ r1 ≤ …, r0 ≤ (cw + ½)/(ch − ½).
            prop_assert!((cwf - 0.5) / (chf + 0.5) <= f64::from(ratio[1]) + 1e-6);
            if chf > 0.5 {
                prop_assert!((cwf + 0.5) / (chf - 0.5) >= f64::from(ratio[0]) - 1e-6);
            }
        }
    }

    #[test]
    fn flip_twice_is_identity(seed in any::<u64>(), h in 1usize..9, w in 1usize..9) {
        let img = random_image(seed, h, w);
        let mut out = img.clone();
        hflip(&mut out);
        if w > 1 {
            prop_assert_eq!(out.get(0, 0, 0), img.get(0, 0, w - 1));
        }
        hflip(&mut out);
        prop_assert_eq!(out, img);
    }

    #[test]
    fn full_crop_to_same_size_is_identity(seed in any::<u64>(), n in 1usize..20) {
        let img = random_image(seed, n, n);
        prop_assert_eq!(resized_crop(&img, 0, 0, n, n, n), img);
    }

    #[test]
    fn resize_preserves_constants(
        v in 0.0f32..1.0, h in 1usize..40, w in 1usize..40, size in 1usize..40,
    ) {
        let img = solid([v, v, v], h, w);
        let out = resized_crop(&img, 0, 0, h, w, size);
        prop_assert!(out.data.iter().all(|x| (x - v).abs() < 1e-5));
    }

    #[test]
    fn blur_of_constant_is_constant(
        v in 0.0f32..1.0, n in 1usize..12, k in 1usize..6, sigma in 0.1f32..3.0,
    ) {
        let mut img = solid([v, v, v], n, n + 1);
        gaussian_blur(&mut img, 2 * k + 1, sigma);
        prop_assert!(img.data.iter().all(|x| (x - v).abs() < 1e-5));
    }

    #[test]
    fn gaussian_kernel_is_normalised_and_symmetric(k in 0usize..10, sigma in 0.05f32..5.0) {
        let size = 2 * k + 1;
        let kern = gaussian_kernel(size, sigma);
        prop_assert!((kern.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        for i in 0..size {
            prop_assert_eq!(kern[i], kern[size - 1 - i]);
        }
        prop_assert!(kern.windows(2).take(k).all(|p| p[0] <= p[1]), "peaks at the centre");
    }

    #[test]
    fn solarize_thresholds(seed in any::<u64>()) {
        let img = random_image(seed, 4, 6);
        let mut none = img.clone();
        solarize(&mut none, 1.01);
        prop_assert_eq!(&none, &img);
        let mut all = img.clone();
        solarize(&mut all, 0.0);
        prop_assert!(all.data.iter().zip(&img.data).all(|(a, x)| *a == 1.0 - x));
    }

    #[test]
    fn rotate_zero_is_identity(seed in any::<u64>(), h in 1usize..10, w in 1usize..10) {
        let img = random_image(seed, h, w);
        prop_assert!(max_diff(&rotate(&img, 0.0), &img) < 1e-6);
    }

    #[test]
    fn view_seeds_differ_in_each_component(b in any::<u64>(), e in 0u64..1000, i in 0u64..1000) {
        let s = view_seed(b, e, i, 0);
        prop_assert_eq!(s, view_seed(b, e, i, 0));
        prop_assert_ne!(s, view_seed(b, e, i, 1));
        prop_assert_ne!(s, view_seed(b, e, i + 1, 0));
        prop_assert_ne!(s, view_seed(b, e + 1, i, 0));
        prop_assert_ne!(s, view_seed(b.wrapping_add(1), e, i, 0));
    }
}

#[test]
fn hsv_round_trip_of_primaries() {
    for (rgb, hue) in [
        ((1.0, 0.0, 0.0), 0.0),
        ((0.0, 1.0, 0.0), 1.0 / 3.0),
        ((0.0, 0.0, 1.0), 2.0 / 3.0),
    ] {
        let (h, s, v) = rgb_to_hsv(rgb.0, rgb.1, rgb.2);
        assert!((h - hue).abs() < 1e-6 && s == 1.0 && v == 1.0);
        let back = hsv_to_rgb(h, s, v);
        let err = (back.0 - rgb.0)
            .abs()
            .max((back.1 - rgb.1).abs())
            .max((back.2 - rgb.2).abs());
        assert!(err < 1e-6, "{back:?} vs {rgb:?}");
    }
    // Red shifted by a third of the circle is green.
    let mut img = solid([1.0, 0.0, 0.0], 2, 2);
    adjust_hue(&mut img, 1.0 / 3.0);
    assert!(max_diff(&img, &solid([0.0, 1.0, 0.0], 2, 2)) < 1e-6);
}

#[test]
fn grayscale_uses_itu_601_weights() {
    for (ch, want) in [(0, 0.299f32), (1, 0.587), (2, 0.114)] {
        let mut rgb = [0.0; 3];
        rgb[ch] = 1.0;
        let mut img = solid(rgb, 3, 4);
        to_grayscale(&mut img);
        assert!(img.data.iter().all(|&v| v == want), "channel {ch}");
    }
    let mut img = random_image(7, 5, 5);
    to_grayscale(&mut img);
    assert_eq!(img.plane(0), img.plane(1));
    assert_eq!(img.plane(1), img.plane(2));
}

#[test]
fn brightness_scales_and_clamps() {
    let mut img = solid([0.2, 0.5, 0.8], 2, 2);
    adjust_brightness(&mut img, 1.5);
    let want = solid([0.3, 0.75, 1.0], 2, 2);
    assert!(max_diff(&img, &want) < 1e-6);
}

#[test]
fn rotate_quarter_turn_is_transposed_flip() {
    let n = 9;
    let img = random_image(3, n, n);
    // Counter-clockwise by 90°: out[y][x] = in[x][n−1−y] = transpose(hflip(in)).
    let mut flipped = img.clone();
    hflip(&mut flipped);
    let want = transpose(&flipped);
    let got = rotate(&img, 90.0);
    for ch in 0..3 {
        for y in 1..n - 1 {
            for x in 1..n - 1 {
                assert!(
                    (got.get(ch, y, x) - want.get(ch, y, x)).abs() < 1e-4,
                    "({ch},{y},{x})"
                );
            }
        }
    }
    // A half turn is a flip in both axes, everywhere.
    let half = rotate(&img, 180.0);
    for y in 0..n {
        for x in 0..n {
            assert!((half.get(1, y, x) - img.get(1, n - 1 - y, n - 1 - x)).abs() < 1e-4);
        }
    }
}

#[test]
fn rotation_fills_corners_with_zero() {
    let img = solid([1.0, 1.0, 1.0], 16, 16);
    let out = rotate(&img, 45.0);
    assert_eq!(out.get(0, 0, 0), 0.0);
    assert!((out.get(0, 8, 8) - 1.0).abs() < 1e-6);
}

#[test]
fn upscaling_is_bilinear_with_half_pixel_centres() {
    // A horizontal ramp: bilinear interpolation reproduces it exactly where no tap is clamped,
    // at source x = (i + 0.5)·in/out − 0.5 (align_corners=False).
    let (h, w, size) = (8, 8, 32);
    let mut img = Image::zeros(3, h, w);
    for (i, v) in img.data.iter_mut().enumerate() {
        *v = (i % w) as f32 / 10.0;
    }
    let out = resized_crop(&img, 0, 0, h, w, size);
    let s = w as f32 / size as f32;
    for x in 0..size {
        let src = (x as f32 + 0.5) * s - 0.5;
        let want = src.clamp(0.0, (w - 1) as f32) / 10.0;
        assert!((out.get(2, 5, x) - want).abs() < 1e-6, "x = {x}");
    }
}

#[test]
fn downscaling_uses_antialiased_triangle_weights() {
    // 4 → 2: out0 = (0.75a + 0.75b + 0.25c)/1.75, out1 = (0.25b + 0.75c + 0.75d)/1.75.
    let row = [0.1f32, 0.4, 0.3, 0.9];
    let img = Image::new(3, 1, 4, row.repeat(3));
    let out = resized_crop(&img, 0, 0, 1, 4, 2);
    let (a, b, c, d) = (row[0], row[1], row[2], row[3]);
    let o0 = (0.75 * a + 0.75 * b + 0.25 * c) / 1.75;
    let o1 = (0.25 * b + 0.75 * c + 0.75 * d) / 1.75;
    assert!((out.get(0, 0, 0) - o0).abs() < 1e-6 && (out.get(0, 0, 1) - o1).abs() < 1e-6);
}

#[test]
fn crop_fallback_clamps_the_ratio() {
    // No draw of area ≥ 0.99·64·4 with ratio in [1, 1] fits a 4×64 image: centred 4×4 crop.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (p, fallback) = crop_params(64, 4, [0.99, 1.0], [1.0, 1.0], &mut rng);
    assert!(fallback);
    assert_eq!(p, (30, 0, 4, 4));
}

#[test]
fn blur_kernel_size_rule() {
    assert_eq!(blur_kernel_size(32, 0.1), 5);
    assert_eq!(blur_kernel_size(30, 0.1), 3);
    assert_eq!(blur_kernel_size(10, 0.1), 3);
    assert_eq!(blur_kernel_size(224, 0.1), 23);
    assert_eq!(blur_kernel_size(64, 0.5), 33);
}

#[test]
fn blur_smooths_an_impulse_symmetrically() {
    let mut img = Image::zeros(3, 9, 9);
    img.data[4 * 9 + 4] = 1.0;
    gaussian_blur(&mut img, 5, 1.0);
    let k = gaussian_kernel(5, 1.0);
    assert!((img.get(0, 4, 4) - k[2] * k[2]).abs() < 1e-7);
    assert!((img.get(0, 3, 5) - k[1] * k[3]).abs() < 1e-7);
    assert_eq!(img.get(0, 0, 0), 0.0);
    assert!((img.plane(0).iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn cutout_square_is_clipped() {
    assert_eq!(cutout_bounds(32, 32, 10, 20, 8), (6, 14, 16, 24));
    assert_eq!(cutout_bounds(32, 32, 0, 31, 8), (0, 4, 27, 32));
    let mut img = solid([0.5, 0.5, 0.5], 6, 6);
    cutout(&mut img, 0, 0, 4);
    assert_eq!(img.data.iter().filter(|&&v| v == 0.0).count(), 3 * 4);
}

#[test]
fn pipeline_names_follow_presets() {
    let p = |c: AugmentConfig| Pipeline::new(&c, CIFAR_MEAN, CIFAR_STD).unwrap().names();
    assert_eq!(
        p(cfg_with("simclr", &[], &[])),
        ["crop", "flip", "color_jitter", "grayscale"]
    );
    assert_eq!(
        p(cfg_with("simclr", &["color_jitter"], &["blur"])),
        ["crop", "flip", "grayscale", "blur"]
    );
    assert_eq!(
        p(cfg_with(
            "simclr",
            &[],
            &["cutout", "rotation", "blur", "solarize", "flip"]
        )),
        [
            "crop",
            "flip",
            "color_jitter",
            "grayscale",
            "blur",
            "solarize",
            "rotation",
            "cutout"
        ]
    );
    assert_eq!(p(cfg_with("none", &[], &["flip", "crop"])), ["crop", "flip"]);
    assert!(p(cfg_with("none", &["crop"], &[])).is_empty());
    assert_eq!(
        p(cfg_with("simclr", &["grayscale"], &["crop"])),
        ["crop", "flip", "color_jitter"]
    );
}

#[test]
fn pipeline_rejects_conflicting_names() {
    // (Unknown names are refused when the config is read: `config::Transform`.)
    let cfg = cfg_with("simclr", &["flip"], &["flip"]);
    let err = Pipeline::new(&cfg, CIFAR_MEAN, CIFAR_STD).unwrap_err();
    assert!(format!("{err:#}").contains("flip"), "{err:#}");
    let cfg = AugmentConfig {
        size: 0,
        ..AugmentConfig::default()
    };
    assert!(Pipeline::new(&cfg, CIFAR_MEAN, CIFAR_STD).is_err());
    assert!(Pipeline::new(&AugmentConfig::default(), CIFAR_MEAN, [0.2, 0.0, 0.2]).is_err());
}

#[test]
fn eval_of_the_mean_image_is_zero() {
    let mean_u8 = [125u8, 123, 114];
    let mean = mean_u8.map(|v| f32::from(v) / 255.0);
    let src: Vec<u8> = mean_u8
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, 32 * 32))
        .collect();
    let mut out = vec![1.0; 3 * 32 * 32];
    eval_transform(&src, 32, 32, 32, mean, CIFAR_STD, &mut out);
    assert!(out.iter().all(|&v| v == 0.0));
    // Centre resize to another size keeps a constant image constant.
    let mut small = vec![1.0; 3 * 24 * 24];
    eval_transform(&src, 32, 32, 24, mean, CIFAR_STD, &mut small);
    assert!(small.iter().all(|&v| v.abs() < 1e-5));
}

#[test]
fn eval_normalises_per_channel() {
    let src = random_u8(5, 3 * 8 * 8);
    let mut out = vec![0.0; 3 * 8 * 8];
    eval_transform(&src, 8, 8, 8, CIFAR_MEAN, CIFAR_STD, &mut out);
    for (i, (&o, &s)) in out.iter().zip(&src).enumerate() {
        let ch = i / 64;
        assert_eq!(o, (f32::from(s) / 255.0 - CIFAR_MEAN[ch]) / CIFAR_STD[ch]);
    }
}

#[test]
fn preset_none_is_eval_transform() {
    let pipe = Pipeline::new(&cfg_with("none", &[], &[]), CIFAR_MEAN, CIFAR_STD).unwrap();
    let src = random_u8(9, 3 * 32 * 32);
    let (mut a, mut b) = (vec![0.0; 3072], vec![0.0; 3072]);
    pipe.apply(&src, 32, 32, &mut ChaCha8Rng::seed_from_u64(0), &mut a);
    eval_transform(&src, 32, 32, 32, CIFAR_MEAN, CIFAR_STD, &mut b);
    assert_eq!(a, b);
}

#[test]
fn pipeline_cutout_zeroes_one_clipped_square() {
    let mut cfg = cfg_with("none", &[], &["cutout"]);
    cfg.cutout.p = 1.0;
    cfg.cutout.size_frac = 0.25;
    let pipe = Pipeline::new(&cfg, CIFAR_MEAN, CIFAR_STD).unwrap();
    let mut eval = vec![0.0; 3072];
    let mut got = vec![0.0; 3072];
    for seed in 0..50 {
        let src = random_u8(seed, 3072);
        eval_transform(&src, 32, 32, 32, CIFAR_MEAN, CIFAR_STD, &mut eval);
        pipe.apply(&src, 32, 32, &mut ChaCha8Rng::seed_from_u64(seed), &mut got);
        let changed: Vec<usize> = (0..3072).filter(|&i| got[i] != eval[i]).collect();
        assert!(changed.iter().all(|&i| got[i] == 0.0));
        let (ys, xs): (Vec<usize>, Vec<usize>) = changed.iter().map(|&i| ((i % 1024) / 32, i % 32)).unzip();
        let span = |v: &[usize]| v.iter().max().unwrap() - v.iter().min().unwrap() + 1;
        assert!(
            (4..=8).contains(&span(&ys)) && (4..=8).contains(&span(&xs)),
            "seed {seed}"
        );
    }
}

#[test]
fn simclr_outputs_are_finite_and_in_range() {
    let mut cfg = cfg_with("simclr", &[], &["blur", "solarize", "rotation"]);
    cfg.size = 24;
    let pipe = Pipeline::new(&cfg, CIFAR_MEAN, CIFAR_STD).unwrap();
    let mut out = vec![0.0; pipe.out_len()];
    for seed in 0..200 {
        let src = random_u8(seed, 3 * 32 * 32);
        pipe.apply(&src, 32, 32, &mut ChaCha8Rng::seed_from_u64(seed), &mut out);
        for (i, &v) in out.iter().enumerate() {
            let ch = i / (24 * 24);
            let (lo, hi) = (
                (0.0 - CIFAR_MEAN[ch]) / CIFAR_STD[ch],
                (1.0 - CIFAR_MEAN[ch]) / CIFAR_STD[ch],
            );
            assert!(v >= lo - 1e-5 && v <= hi + 1e-5, "seed {seed}: {v}");
        }
    }
}

fn batch_fixture() -> (Pipeline, Vec<Vec<u8>>, Vec<u64>) {
    let cfg = cfg_with("simclr", &[], &["blur", "solarize", "rotation", "cutout"]);
    let pipe = Pipeline::new(&cfg, CIFAR_MEAN, CIFAR_STD).unwrap();
    let images: Vec<Vec<u8>> = (0..64).map(|k| random_u8(k, 3 * 32 * 32)).collect();
    let seeds: Vec<u64> = (0..64).map(|k| view_seed(42, 3, k, k % 2)).collect();
    (pipe, images, seeds)
}

#[test]
fn augment_batch_is_deterministic_across_thread_counts() {
    let (pipe, images, seeds) = batch_fixture();
    let refs: Vec<&[u8]> = images.iter().map(|v| v.as_slice()).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = vec![0.0f32; refs.len() * pipe.out_len()];
        pool.install(|| pipe.augment_batch(&refs, 32, 32, &seeds, &mut out));
        out
    };
    let one = run(1);
    let two = run(2);
    assert!(one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()));
    // Image k is exactly `apply` with its own seeded generator.
    let mut single = vec![0.0; pipe.out_len()];
    pipe.apply(
        &images[5],
        32,
        32,
        &mut ChaCha8Rng::seed_from_u64(seeds[5]),
        &mut single,
    );
    assert_eq!(&one[5 * pipe.out_len()..6 * pipe.out_len()], single.as_slice());
    // Different seeds give different views.
    assert_ne!(&one[..pipe.out_len()], &one[pipe.out_len()..2 * pipe.out_len()]);
}

#[test]
fn simclr_throughput() {
    // A report, not an assertion: images per second of the SimCLR pipeline on 32×32 inputs.
    let (_, images, _) = batch_fixture();
    let pipe = Pipeline::new(&AugmentConfig::default(), CIFAR_MEAN, CIFAR_STD).unwrap();
    let refs: Vec<&[u8]> = images.iter().map(|v| v.as_slice()).collect();
    let mut out = vec![0.0f32; refs.len() * pipe.out_len()];
    let rounds = 16;
    let start = std::time::Instant::now();
    for r in 0..rounds {
        let seeds: Vec<u64> = (0..refs.len() as u64).map(|k| view_seed(0, r, k, 0)).collect();
        pipe.augment_batch(&refs, 32, 32, &seeds, &mut out);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (rounds as usize * refs.len()) as f64;
    println!(
        "simclr augmentation: {:.0} images/s on {} rayon threads",
        n / secs,
        rayon::current_num_threads()
    );
}

//! The individual transforms on [`Image`]s: 3×H×W `f32` planes (CHW) with values in [0, 1].
//!
//! Each function follows the corresponding torchvision functional (`_functional_tensor.py`,
//! float path); the module documentation of [`crate::augment`] lists where and why we differ.

use rand::Rng;

/// ITU-R 601-2 luma weights (PIL's `convert("L")`): L = 0.299·R + 0.587·G + 0.114·B.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// A CHW `f32` image; `data[(ch·h + y)·w + x]` is channel `ch` at row `y`, column `x`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// Wraps `data` (length `c·h·w`, panics otherwise).
    pub fn new(c: usize, h: usize, w: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), c * h * w, "image data length must be c·h·w");
        Self { c, h, w, data }
    }

    /// An all-zero image.
    pub fn zeros(c: usize, h: usize, w: usize) -> Self {
        Self::new(c, h, w, vec![0.0; c * h * w])
    }

    /// Converts a 3×H×W `u8` image to [0, 1] as torchvision's `ToTensor` (`x / 255`).
    pub fn from_u8(src: &[u8], h: usize, w: usize) -> Self {
        assert_eq!(src.len(), 3 * h * w, "source must be 3×h×w bytes");
        Self::new(3, h, w, src.iter().map(|&v| f32::from(v) / 255.0).collect())
    }

    /// The plane of channel `ch`.
    pub fn plane(&self, ch: usize) -> &[f32] {
        let n = self.h * self.w;
        &self.data[ch * n..(ch + 1) * n]
    }

    /// The value of channel `ch` at row `y`, column `x`.
    pub fn get(&self, ch: usize, y: usize, x: usize) -> f32 {
        self.data[(ch * self.h + y) * self.w + x]
    }

    /// The three planes of an RGB image, mutably (panics unless `c == 3`).
    fn rgb_mut(&mut self) -> (&mut [f32], &mut [f32], &mut [f32]) {
        assert_eq!(self.c, 3, "colour transforms need 3 channels");
        let n = self.h * self.w;
        let (r, rest) = self.data.split_at_mut(n);
        let (g, b) = rest.split_at_mut(n);
        (r, g, b)
    }
}

/// `lo + (hi − lo)·u`, u uniform in [0, 1) (torch's `uniform_`); never panics when lo ≥ hi.
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Mirrors the row of pixels in place (torchvision `hflip`).
pub fn hflip(img: &mut Image) {
    let w = img.w;
    for row in img.data.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// torchvision's `_blend`: (f·a + (1 − f)·b) clamped to [0, 1].
#[inline]
fn blend(a: f32, b: f32, factor: f32) -> f32 {
    (factor * a + (1.0 - factor) * b).clamp(0.0, 1.0)
}

/// Multiplies by `factor` and clamps (blend with black).
pub fn adjust_brightness(img: &mut Image, factor: f32) {
    for v in &mut img.data {
        *v = blend(*v, 0.0, factor);
    }
}

/// Blends with the mean of the grayscale image (a scalar): (f·x + (1 − f)·mean) clamped.
pub fn adjust_contrast(img: &mut Image, factor: f32) {
    let (r, g, b) = img.rgb_mut();
    let n = r.len();
    let sum: f64 = (0..n).map(|i| f64::from(luma(r[i], g[i], b[i]))).sum();
    let mean = (sum / n.max(1) as f64) as f32;
    for plane in [r, g, b] {
        for v in plane.iter_mut() {
            *v = blend(*v, mean, factor);
        }
    }
}

/// Blends each pixel with its grayscale value: f = 0 is grayscale, f = 1 the identity.
pub fn adjust_saturation(img: &mut Image, factor: f32) {
    let (r, g, b) = img.rgb_mut();
    for i in 0..r.len() {
        let l = luma(r[i], g[i], b[i]);
        r[i] = blend(r[i], l, factor);
        g[i] = blend(g[i], l, factor);
        b[i] = blend(b[i], l, factor);
    }
}

/// Rotates the hue: RGB → HSV, h ← (h + shift) mod 1, HSV → RGB (torchvision's `_rgb2hsv` and
/// `_hsv2rgb`). Any real shift is accepted (torchvision rejects |shift| > 0.5).
pub fn adjust_hue(img: &mut Image, shift: f32) {
    let (r, g, b) = img.rgb_mut();
    for i in 0..r.len() {
        let (h, s, v) = rgb_to_hsv(r[i], g[i], b[i]);
        let h = (h + shift).rem_euclid(1.0);
        (r[i], g[i], b[i]) = hsv_to_rgb(h, s, v);
    }
}

#[inline]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
}

/// torchvision's `_rgb2hsv` for one pixel; h in [0, 1).
#[inline]
pub(crate) fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let crd = if eqc { 1.0 } else { cr };
    let rc = (maxc - r) / crd;
    let gc = (maxc - g) / crd;
    let bc = (maxc - b) / crd;
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0) % 1.0, s, maxc)
}

/// torchvision's `_hsv2rgb` for one pixel.
#[inline]
pub(crate) fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Replaces the three channels by L = 0.299·R + 0.587·G + 0.114·B (ITU-R 601-2).
pub fn to_grayscale(img: &mut Image) {
    let (r, g, b) = img.rgb_mut();
    for i in 0..r.len() {
        let l = luma(r[i], g[i], b[i]);
        (r[i], g[i], b[i]) = (l, l, l);
    }
}

/// Pixels at or above `threshold` become 1 − x (torchvision `solarize`).
pub fn solarize(img: &mut Image, threshold: f32) {
    for v in &mut img.data {
        if *v >= threshold {
            *v = 1.0 - *v;
        }
    }
}

/// Kernel side for a blur on images of side `size`: the smallest odd integer ≥ max(3,
/// `frac`·size) (a 1e-4 slack absorbs f32 noise such as 0.1·30 = 3.0000001).
pub fn blur_kernel_size(size: usize, frac: f32) -> usize {
    let k = ((f64::from(frac) * size as f64) - 1e-4).ceil().max(3.0) as usize;
    k | 1
}

/// torchvision's `_get_gaussian_kernel1d`: exp(−x²/2σ²) at x = −(k−1)/2 … (k−1)/2, normalised.
pub fn gaussian_kernel(kernel_size: usize, sigma: f32) -> Vec<f32> {
    let half = (kernel_size as f32 - 1.0) * 0.5;
    let pdf: Vec<f32> = (0..kernel_size)
        .map(|i| {
            let x = (-half + i as f32) / sigma;
            (-0.5 * x * x).exp()
        })
        .collect();
    let sum: f32 = pdf.iter().sum();
    pdf.into_iter().map(|p| p / sum).collect()
}

/// Reflect padding index (torch's `reflect`: −1 → 1, n → n − 2), repeated periodically for
/// offsets beyond one image side (where torch would refuse).
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// Separable Gaussian blur with reflect padding (torchvision `gaussian_blur`, same σ in x and y).
pub fn gaussian_blur(img: &mut Image, kernel_size: usize, sigma: f32) {
    let kernel = gaussian_kernel(kernel_size, sigma);
    let (h, w) = (img.h, img.w);
    let r = (kernel_size / 2) as isize;
    let mut padded = vec![0.0f32; w + 2 * r as usize];
    let mut tmp = vec![0.0f32; h * w];
    let row_src: Vec<usize> = (0..h as isize + 2 * r).map(|i| reflect(i - r, h)).collect();
    for plane in img.data.chunks_exact_mut(h * w) {
        // Horizontal pass into `tmp`.
        for y in 0..h {
            let row = &plane[y * w..(y + 1) * w];
            for (j, p) in padded.iter_mut().enumerate() {
                *p = row[reflect(j as isize - r, w)];
            }
            let out = &mut tmp[y * w..(y + 1) * w];
            for (x, o) in out.iter_mut().enumerate() {
                *o = kernel.iter().zip(&padded[x..]).map(|(k, p)| k * p).sum();
            }
        }
        // Vertical pass back into the plane.
        for y in 0..h {
            let out = &mut plane[y * w..(y + 1) * w];
            out.fill(0.0);
            for (j, &k) in kernel.iter().enumerate() {
                let src = row_src[y + j];
                for (o, &t) in out.iter_mut().zip(&tmp[src * w..(src + 1) * w]) {
                    *o += k * t;
                }
            }
        }
    }
}

/// Rotates counter-clockwise by `degrees` about the image centre ((w−1)/2, (h−1)/2), bilinear,
/// zero fill, same size — torchvision `rotate(..., BILINEAR, expand=False, fill=0)`, including
/// its fill blending: each output is multiplied by the bilinear weight of the in-bounds taps.
pub fn rotate(img: &Image, degrees: f32) -> Image {
    let (c, h, w) = (img.c, img.h, img.w);
    let (sin, cos) = f64::from(degrees).to_radians().sin_cos();
    let (sin, cos) = (sin as f32, cos as f32);
    let (cx, cy) = ((w as f32 - 1.0) * 0.5, (h as f32 - 1.0) * 0.5);
    let n = h * w;
    let mut out = Image::zeros(c, h, w);
    for y in 0..h {
        let yc = y as f32 - cy;
        for x in 0..w {
            let xc = x as f32 - cx;
            let sx = cos * xc - sin * yc + cx;
            let sy = sin * xc + cos * yc + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let mut taps = [(0usize, 0.0f32); 4];
            let mut nt = 0;
            let mut mask = 0.0f32;
            for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
                for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
                    let (xx, yy) = (x0 + dx, y0 + dy);
                    if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                        let wt = wx * wy;
                        taps[nt] = (yy as usize * w + xx as usize, wt);
                        nt += 1;
                        mask += wt;
                    }
                }
            }
            if nt == 0 {
                continue;
            }
            for ch in 0..c {
                let plane = &img.data[ch * n..(ch + 1) * n];
                let v: f32 = taps[..nt].iter().map(|&(i, wt)| wt * plane[i]).sum();
                out.data[ch * n + y * w + x] = v * mask;
            }
        }
    }
    out
}

/// Resampling weights along one axis: output i reads `len[i]` inputs from `start[i]`.
struct AxisWeights {
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<f32>,
    stride: usize,
}

impl AxisWeights {
    /// torch's antialiased bilinear (`_upsample_bilinear2d_aa`, PIL's triangle filter): for
    /// scale s = in/out, output i is centred at s·(i + 0.5) with support max(s, 1). When
    /// upscaling (s ≤ 1) this is exactly bilinear interpolation with align_corners=False.
    fn bilinear(in_len: usize, out_len: usize) -> Self {
        let scale = in_len as f64 / out_len as f64;
        let (support, inv) = if scale >= 1.0 {
            (scale, 1.0 / scale)
        } else {
            (1.0, 1.0)
        };
        let stride = support.ceil() as usize * 2 + 1;
        let mut aw = Self {
            start: Vec::with_capacity(out_len),
            len: Vec::with_capacity(out_len),
            weights: vec![0.0; out_len * stride],
            stride,
        };
        for i in 0..out_len {
            let center = scale * (i as f64 + 0.5);
            // `as i64` truncates toward zero, as torch's static_cast.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_len as i64) as usize;
            let n = hi.saturating_sub(lo).clamp(1, stride);
            let lo = lo.min(in_len - 1);
            let n = n.min(in_len - lo);
            let tri = |j: usize| (1.0 - (((lo + j) as f64 - center + 0.5) * inv).abs()).max(0.0);
            let total: f64 = (0..n).map(tri).sum();
            let ws = &mut aw.weights[i * stride..i * stride + n];
            for (j, wt) in ws.iter_mut().enumerate() {
                *wt = if total > 0.0 { (tri(j) / total) as f32 } else { 0.0 };
            }
            aw.start.push(lo);
            aw.len.push(n);
        }
        aw
    }

    #[inline]
    fn taps(&self, i: usize) -> (usize, &[f32]) {
        let s = i * self.stride;
        (self.start[i], &self.weights[s..s + self.len[i]])
    }
}

/// Crops rows `top..top+h`, columns `left..left+w` and resizes to `size`×`size` (torchvision
/// `resized_crop`, bilinear, antialias=True; see `AxisWeights`). Panics if the crop leaves the
/// image or is empty.
pub fn resized_crop(img: &Image, top: usize, left: usize, h: usize, w: usize, size: usize) -> Image {
    resized_crop_hw(img, top, left, h, w, size, size)
}

/// [`resized_crop`] to `out_h`×`out_w` (the same filter per axis).
pub fn resized_crop_hw(
    img: &Image,
    top: usize,
    left: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Image {
    assert!(h > 0 && w > 0 && out_h > 0 && out_w > 0, "empty crop or output");
    assert!(top + h <= img.h && left + w <= img.w, "crop outside the image");
    let (c, iw) = (img.c, img.w);
    let cols = AxisWeights::bilinear(w, out_w);
    let rows = AxisWeights::bilinear(h, out_h);
    // Horizontal pass: c × h × out_w.
    let mut tmp = vec![0.0f32; c * h * out_w];
    for ch in 0..c {
        for y in 0..h {
            let src = &img.data[(ch * img.h + top + y) * iw + left..][..w];
            let dst = &mut tmp[(ch * h + y) * out_w..][..out_w];
            for (x, d) in dst.iter_mut().enumerate() {
                let (s, ws) = cols.taps(x);
                *d = ws.iter().zip(&src[s..]).map(|(a, b)| a * b).sum();
            }
        }
    }
    // Vertical pass: c × out_h × out_w.
    let mut out = Image::zeros(c, out_h, out_w);
    for ch in 0..c {
        for y in 0..out_h {
            let (s, ws) = rows.taps(y);
            let dst = &mut out.data[(ch * out_h + y) * out_w..][..out_w];
            for (j, &wt) in ws.iter().enumerate() {
                let src = &tmp[(ch * h + s + j) * out_w..][..out_w];
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d += wt * v;
                }
            }
        }
    }
    out
}

/// The centred square of side min(h, w), resized to `size`×`size` (the identity when the image
/// already is `size`×`size`). For square inputs this equals torchvision's `Resize(size)`; for
/// others, `Resize(size)` + `CenterCrop(size)` up to rounding of the crop offset.
pub fn center_resize(img: &Image, size: usize) -> Image {
    if img.h == size && img.w == size {
        return img.clone();
    }
    let side = img.h.min(img.w);
    resized_crop(img, (img.h - side) / 2, (img.w - side) / 2, side, side, size)
}

/// torchvision `RandomResizedCrop.get_params`: up to 10 attempts drawing an area fraction
/// uniform in `scale` and a log-uniform aspect ratio (w/h) in `ratio`, sides rounded half to
/// even as Python's `round`; the first that fits is placed uniformly. Otherwise a centred crop
/// of the whole image with its ratio clamped to `ratio`. Returns (top, left, height, width).
pub fn sample_crop_params<R: Rng + ?Sized>(
    h: usize,
    w: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    rng: &mut R,
) -> (usize, usize, usize, usize) {
    crop_params(h, w, scale, ratio, rng).0
}

/// [`sample_crop_params`] and whether the fallback was taken.
pub(crate) fn crop_params<R: Rng + ?Sized>(
    h: usize,
    w: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    rng: &mut R,
) -> ((usize, usize, usize, usize), bool) {
    let area = (h * w) as f64;
    let (lr0, lr1) = (f64::from(ratio[0]).ln(), f64::from(ratio[1]).ln());
    for _ in 0..10 {
        let target = area * uniform(rng, f64::from(scale[0]), f64::from(scale[1]));
        let aspect = uniform(rng, lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round_ties_even();
        let ch = (target / aspect).sqrt().round_ties_even();
        if cw > 0.0 && cw <= w as f64 && ch > 0.0 && ch <= h as f64 {
            let (ch, cw) = (ch as usize, cw as usize);
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return ((top, left, ch, cw), false);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (rmin, rmax) = (f64::from(ratio[0]), f64::from(ratio[1]));
    let (ch, cw) = if in_ratio < rmin {
        ((w as f64 / rmin).round_ties_even() as usize, w)
    } else if in_ratio > rmax {
        (h, (h as f64 * rmax).round_ties_even() as usize)
    } else {
        (h, w)
    };
    let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
    (((h - ch) / 2, (w - cw) / 2, ch, cw), true)
}

/// The rows and columns `[top, bottom) × [left, right)` of a square of side `side` centred on
/// (`cy`, `cx`) (top-left at centre − side/2), clipped to an h×w image.
pub fn cutout_bounds(h: usize, w: usize, cy: usize, cx: usize, side: usize) -> (usize, usize, usize, usize) {
    let top = cy as isize - (side / 2) as isize;
    let left = cx as isize - (side / 2) as isize;
    let clip = |v: isize, n: usize| v.clamp(0, n as isize) as usize;
    (
        clip(top, h),
        clip(top + side as isize, h),
        clip(left, w),
        clip(left + side as isize, w),
    )
}

/// Sets the square of [`cutout_bounds`] to `value` in every channel of CHW `data`.
pub fn fill_square(data: &mut [f32], h: usize, w: usize, cy: usize, cx: usize, side: usize, value: f32) {
    let (top, bottom, left, right) = cutout_bounds(h, w, cy, cx, side);
    for plane in data.chunks_exact_mut(h * w) {
        for y in top..bottom {
            plane[y * w + left..y * w + right].fill(value);
        }
    }
}

/// Cutout (DeVries & Taylor): the square of side `side` centred on (`cy`, `cx`), clipped at the
/// borders, set to 0. The pipeline applies it after normalisation (0 = the dataset mean).
pub fn cutout(img: &mut Image, cy: usize, cx: usize, side: usize) {
    fill_square(&mut img.data, img.h, img.w, cy, cx, side, 0.0);
}

/// `(x − mean[ch]) / std[ch]` into `out` (torchvision `Normalize`).
pub fn normalize(img: &Image, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    assert_eq!(img.c, 3, "normalisation needs 3 channels");
    assert_eq!(out.len(), img.data.len(), "output length must be 3·h·w");
    let n = img.h * img.w;
    for ch in 0..3 {
        let (m, s) = (mean[ch], std[ch]);
        for (o, &v) in out[ch * n..(ch + 1) * n].iter_mut().zip(img.plane(ch)) {
            *o = (v - m) / s;
        }
    }
}

//! Small statistics: summaries over seeds, Student-t quantiles (on the `statrs` t distribution),
//! Welch intervals, correlations with bootstrap intervals, and the least-squares line.
//!
//! Everything works on `f64` slices; functions return `None` (or NaN for the raw correlation
//! functions) where the statistic is undefined (too few values, zero variance) instead of
//! inventing a number.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Seed of every bootstrap in the reports (fixed, so figures and claims are reproducible).
pub const BOOTSTRAP_SEED: u64 = 20_251_012;
/// Bootstrap resamples per interval.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// Arithmetic mean; `None` for an empty slice.
pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        None
    } else {
        Some(xs.iter().sum::<f64>() / xs.len() as f64)
    }
}

/// Sample standard deviation (denominator n − 1); `None` for fewer than two values.
pub fn std(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

/// Mean, sample standard deviation, count and two-sided 95 % t-interval of the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub mean: f64,
    /// `None` when n < 2.
    pub std: Option<f64>,
    pub n: usize,
}

impl Summary {
    /// Summary of raw values; `None` for an empty slice.
    pub fn of(xs: &[f64]) -> Option<Self> {
        Some(Self {
            mean: mean(xs)?,
            std: std(xs),
            n: xs.len(),
        })
    }

    /// Half-width of the 95 % Student-t interval of the mean: t₀.₉₇₅,ₙ₋₁ · s / √n.
    pub fn ci95_half_width(&self) -> Option<f64> {
        let s = self.std?;
        let t = t_quantile(0.975, (self.n - 1) as f64)?;
        Some(t * s / (self.n as f64).sqrt())
    }

    /// The 95 % t-interval of the mean, `(lo, hi)`.
    pub fn ci95(&self) -> Option<(f64, f64)> {
        let h = self.ci95_half_width()?;
        Some((self.mean - h, self.mean + h))
    }
}

/// Student's t distribution with `df` degrees of freedom, location 0, scale 1; `None` unless
/// df is finite and > 0.
fn students_t(df: f64) -> Option<StudentsT> {
    if !(df > 0.0 && df.is_finite()) {
        return None;
    }
    StudentsT::new(0.0, 1.0, df).ok()
}

/// CDF of Student's t distribution with `df` (> 0, finite, may be fractional) degrees of
/// freedom (`statrs`); NaN for any other df.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    students_t(df).map_or(f64::NAN, |d| d.cdf(t))
}

/// Quantile of Student's t distribution: the t with `t_cdf(t, df) = p`, for p in (0, 1) and
/// finite df > 0; `None` otherwise.
///
/// Bisection on the `statrs` CDF, not `StudentsT::inverse_cdf`: in statrs 0.18 that inverse
/// (via `inv_beta_reg`) loses accuracy for large df — t₀.₉₇₅ at df = 10⁷ comes out 1.8266
/// instead of 1.95996, and at df = 10⁵ it is off by 7·10⁻⁶.
pub fn t_quantile(p: f64, df: f64) -> Option<f64> {
    if !(p > 0.0 && p < 1.0) {
        return None;
    }
    let dist = students_t(df)?;
    if p < 0.5 {
        return t_quantile(1.0 - p, df).map(|t| -t);
    }
    let mut hi = 1.0;
    while dist.cdf(hi) < p {
        hi *= 2.0;
        if hi > 1e12 {
            return None;
        }
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if dist.cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 * hi.max(1.0) {
            break;
        }
    }
    Some(0.5 * (lo + hi))
}

/// Welch's interval for the difference of two means `a − b` from their summaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WelchInterval {
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided confidence level of `[lo, hi]`.
    pub level: f64,
}

/// Welch's two-sided interval at confidence `level` for mean(a) − mean(b); needs n ≥ 2 on both
/// sides. When both standard deviations are zero the interval collapses to the point difference.
pub fn welch_interval(a: &Summary, b: &Summary, level: f64) -> Option<WelchInterval> {
    let (sa, sb) = (a.std?, b.std?);
    let (va, vb) = (sa * sa / a.n as f64, sb * sb / b.n as f64);
    let diff = a.mean - b.mean;
    let se2 = va + vb;
    if se2 == 0.0 {
        return Some(WelchInterval {
            diff,
            lo: diff,
            hi: diff,
            df: f64::INFINITY,
            level,
        });
    }
    let df = se2 * se2 / (va * va / (a.n as f64 - 1.0) + vb * vb / (b.n as f64 - 1.0)).max(f64::MIN_POSITIVE);
    let t = t_quantile(1.0 - (1.0 - level) / 2.0, df)?;
    let h = t * se2.sqrt();
    Some(WelchInterval {
        diff,
        lo: diff - h,
        hi: diff + h,
        df,
        level,
    })
}

/// Pearson's product-moment correlation; NaN when undefined (n < 2 or zero variance).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "pearson: x and y differ in length");
    let (Some(mx), Some(my)) = (mean(x), mean(y)) else {
        return f64::NAN;
    };
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Ranks 1..=n, ties get the average of the ranks they span.
pub fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson on average ranks); NaN when undefined.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// A statistic with its percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapCi {
    pub estimate: f64,
    /// 2.5 % and 97.5 % percentiles of the valid resamples; `None` when fewer than half of the
    /// resamples gave a defined statistic.
    pub ci95: Option<(f64, f64)>,
    pub n: usize,
    pub resamples: usize,
    /// Resamples with a defined (non-NaN) statistic.
    pub valid: usize,
    pub seed: u64,
}

/// Percentile bootstrap over (x, y) pairs, resampled with replacement, for a paired statistic.
pub fn bootstrap_paired(
    x: &[f64],
    y: &[f64],
    stat: fn(&[f64], &[f64]) -> f64,
    resamples: usize,
    seed: u64,
) -> BootstrapCi {
    assert_eq!(x.len(), y.len(), "bootstrap: x and y differ in length");
    let n = x.len();
    let estimate = stat(x, y);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut vals = Vec::with_capacity(resamples);
    let (mut bx, mut by) = (vec![0.0; n], vec![0.0; n]);
    if n >= 2 {
        for _ in 0..resamples {
            for k in 0..n {
                let i = rng.random_range(0..n);
                bx[k] = x[i];
                by[k] = y[i];
            }
            let v = stat(&bx, &by);
            if v.is_finite() {
                vals.push(v);
            }
        }
    }
    vals.sort_by(f64::total_cmp);
    let valid = vals.len();
    let ci95 = (valid > 0 && 2 * valid >= resamples && estimate.is_finite())
        .then(|| (percentile(&vals, 0.025), percentile(&vals, 0.975)));
    BootstrapCi {
        estimate,
        ci95,
        n,
        resamples,
        valid,
        seed,
    }
}

/// Linear-interpolated percentile (q in [0, 1]) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    if i + 1 < sorted.len() {
        sorted[i] * (1.0 - f) + sorted[i + 1] * f
    } else {
        sorted[i]
    }
}

/// Ordinary least-squares line y = intercept + slope · x; `None` for n < 2 or constant x.
pub fn least_squares(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    assert_eq!(x.len(), y.len(), "least_squares: x and y differ in length");
    let (mx, my) = (mean(x)?, mean(y)?);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
    }
    if x.len() < 2 || sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mean_and_std_known() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32, sample var 32/7.
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), Some(5.0));
        assert!(close(std(&xs).unwrap(), (32.0f64 / 7.0).sqrt(), 1e-12));
        assert_eq!(std(&[1.0]), None);
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn t_quantiles_match_tables() {
        // Two-sided 95 % critical values from standard t tables.
        for (df, t) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (4.0, 2.776_445_105),
            (10.0, 2.228_138_852),
            (30.0, 2.042_272_456),
        ] {
            let q = t_quantile(0.975, df).unwrap();
            assert!(close(q, t, 1e-6), "df {df}: {q} vs {t}");
        }
        assert!(close(t_quantile(0.975, 1e7).unwrap(), 1.959_963_985, 1e-5));
        assert!(close(t_quantile(0.995, 5.0).unwrap(), 4.032_142_984, 1e-6));
        assert!(close(t_quantile(0.025, 4.0).unwrap(), -2.776_445_105, 1e-6));
        // df = 1 is Cauchy: F(t) = 1/2 + atan(t)/π.
        assert!(close(t_cdf(1.0, 1.0), 0.75, 1e-12));
        assert_eq!(t_quantile(1.0, 3.0), None);
    }

    #[test]
    fn ci95_of_three_values() {
        // 1, 2, 3: mean 2, s = 1, half-width t(0.975, 2) / √3.
        let s = Summary::of(&[1.0, 2.0, 3.0]).unwrap();
        let h = s.ci95_half_width().unwrap();
        assert!(close(h, 4.302_652_730 / 3f64.sqrt(), 1e-6));
        assert_eq!(Summary::of(&[1.0]).unwrap().ci95(), None);
    }

    #[test]
    fn pearson_spearman_least_squares_hand_computed() {
        // x = 1..5, y = 2,4,5,4,5: Sxy = 6, Sxx = 10, Syy = 6, r = 6/√60.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 4.0, 5.0, 4.0, 5.0];
        assert!(close(pearson(&x, &y), 6.0 / 60f64.sqrt(), 1e-12));
        // Ranks of y with ties: 1, 2.5, 4.5, 2.5, 4.5 → Σd_x d_y = 7, Σd_y² = 9, ρ = 7/√90.
        assert_eq!(ranks(&y), vec![1.0, 2.5, 4.5, 2.5, 4.5]);
        assert!(close(spearman(&x, &y), 7.0 / 90f64.sqrt(), 1e-12));
        let (a, b) = least_squares(&x, &y).unwrap();
        assert!(close(b, 0.6, 1e-12) && close(a, 2.2, 1e-12));
    }

    #[test]
    fn spearman_of_monotone_sequences() {
        let x = [0.1, 0.5, 0.7, 2.0, 9.0];
        let up: [f64; 5] = [1.0, 1.5, 10.0, 11.0, 100.0];
        let down: Vec<f64> = up.iter().map(|v| -v.ln()).collect();
        assert!(close(spearman(&x, &up), 1.0, 1e-12));
        assert!(close(spearman(&x, &down), -1.0, 1e-12));
        assert!(pearson(&x, &up) < 1.0);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_estimate() {
        let x: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|v| -2.0 * v + if (*v as i64) % 3 == 0 { 3.0 } else { 0.0 })
            .collect();
        let a = bootstrap_paired(&x, &y, spearman, 2000, 7);
        let b = bootstrap_paired(&x, &y, spearman, 2000, 7);
        assert_eq!(a, b);
        let (lo, hi) = a.ci95.unwrap();
        assert!(lo <= a.estimate && a.estimate <= hi && hi < 0.0, "{a:?}");
        // A perfectly monotone relation: every defined resample is exactly −1.
        let z: Vec<f64> = x.iter().map(|v| -v).collect();
        let c = bootstrap_paired(&x, &z, spearman, 1000, 1);
        assert_eq!(c.ci95, Some((-1.0, -1.0)));
    }

    #[test]
    fn welch_interval_known_answer() {
        // a: mean 10, s = 1, n = 4; b: mean 8, s = 2, n = 4.
        // va = 0.25, vb = 1, se² = 1.25, df = 1.5625 / (0.0625/3 + 1/3) = 4.411764…
        let a = Summary {
            mean: 10.0,
            std: Some(1.0),
            n: 4,
        };
        let b = Summary {
            mean: 8.0,
            std: Some(2.0),
            n: 4,
        };
        let w = welch_interval(&a, &b, 0.95).unwrap();
        assert!(close(w.df, 1.5625 / (1.0625 / 3.0), 1e-12));
        let t = t_quantile(0.975, w.df).unwrap();
        assert!(t > 2.571 && t < 2.777, "t between the df 5 and df 4 values: {t}");
        assert!(close(w.hi - w.diff, t * 1.25f64.sqrt(), 1e-12));
        assert!(close(w.diff, 2.0, 1e-12));
    }
}

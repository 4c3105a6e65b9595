//! Shared look of the figures: the bundled font, colour maps, and writing one drawing to both
//! PNG and SVG.
//!
//! The font (DejaVu Sans, `assets/DejaVuSans.ttf`, licence beside it) is compiled into the
//! binary and registered with plotters' `ab_glyph` text renderer, so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Family name every text style uses (the bundled DejaVu Sans is registered under it).
pub const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters (idempotent, thread-safe).
pub fn ensure_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            register_font(FAMILY, style, DEJAVU_SANS)
                .map_err(|_| "the bundled DejaVu Sans font could not be parsed".to_string())?;
        }
        Ok(())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// A text style in the bundled font.
pub fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().into()
}

/// A drawing that can be rendered on any plotters backend.
pub trait Figure {
    /// Pixel size (width, height) of the PNG (and of the SVG's view box).
    fn size(&self) -> (u32, u32);
    /// Draws the whole figure on `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Converts a plotters drawing error into an `anyhow` error.
pub fn plot_err<E: std::error::Error + Send + Sync + 'static>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// Draws `fig` as `<stem>.png` and `<stem>.svg` in `out`, each rendered in memory and written
/// atomically ([`crate::output::write_atomic`]): a killed report leaves the old file or the new
/// one. The PNG is encoded as plotters encodes its files (`image`'s PNG encoder, defaults).
pub fn save<F: Figure>(fig: &F, out: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    ensure_font()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let png = out.join(format!("{stem}.png"));
    let svg = out.join(format!("{stem}.svg"));
    let (w, h) = fig.size();
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        fig.draw(&root)
            .with_context(|| format!("drawing {}", png.display()))?;
        root.present()
            .map_err(plot_err)
            .with_context(|| format!("drawing {}", png.display()))?;
    }
    let mut encoded = Vec::new();
    image::codecs::png::PngEncoder::new(&mut encoded)
        .write_image(&pixels, w, h, image::ColorType::Rgb8)
        .with_context(|| format!("encoding {}", png.display()))?;
    crate::output::write_atomic(&png, &encoded)?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        fig.draw(&root)
            .with_context(|| format!("drawing {}", svg.display()))?;
        root.present()
            .map_err(plot_err)
            .with_context(|| format!("drawing {}", svg.display()))?;
    }
    crate::output::write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

fn lerp_table(table: &[(u8, u8, u8)], t: f64) -> RGBColor {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.5 };
    let pos = t * (table.len() - 1) as f64;
    let i = (pos.floor() as usize).min(table.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (table[i], table[i + 1]);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Sequential colour map (viridis, 9 control points from matplotlib), t in [0, 1].
pub fn sequential(t: f64) -> RGBColor {
    const VIRIDIS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    lerp_table(&VIRIDIS, t)
}

/// Diverging colour map (ColorBrewer RdBu): t = −1 red (worse), 0 near-white, +1 blue (better).
pub fn diverging(t: f64) -> RGBColor {
    const RDBU: [(u8, u8, u8); 11] = [
        (103, 0, 31),
        (178, 24, 43),
        (214, 96, 77),
        (244, 165, 130),
        (253, 219, 199),
        (247, 247, 247),
        (209, 229, 240),
        (146, 197, 222),
        (67, 147, 195),
        (33, 102, 172),
        (5, 48, 97),
    ];
    lerp_table(&RDBU, (t + 1.0) / 2.0)
}

/// Black or white, whichever reads better on `bg`.
pub fn text_on(bg: RGBColor) -> RGBColor {
    let lum = 0.299 * bg.0 as f64 + 0.587 * bg.1 as f64 + 0.114 * bg.2 as f64;
    if lum > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

/// Colour of missing cells and other "no data" marks.
pub const NO_DATA: RGBColor = RGBColor(215, 215, 215);
/// Main colour of data points.
pub const POINT: RGBColor = RGBColor(31, 119, 180);
/// Colour of the highlighted (reference) point.
pub const ACCENT: RGBColor = RGBColor(214, 39, 40);

/// Formats a signed number with a true minus sign, e.g. `−0.42`, `+1.20`.
pub fn signed(v: f64, decimals: usize) -> String {
    let s = format!("{:+.*}", decimals, v);
    s.replacen('-', "−", 1)
}

/// Formats a number with a true minus sign.
pub fn num(v: f64, decimals: usize) -> String {
    format!("{:.*}", decimals, v).replacen('-', "−", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_registers_and_maps_are_bounded() {
        ensure_font().unwrap();
        ensure_font().unwrap();
        assert_eq!(sequential(0.0), RGBColor(68, 1, 84));
        assert_eq!(sequential(1.0), RGBColor(253, 231, 37));
        assert_eq!(diverging(0.0), RGBColor(247, 247, 247));
        assert_eq!(diverging(-5.0), RGBColor(103, 0, 31));
        assert_eq!(text_on(sequential(0.0)), WHITE);
        assert_eq!(text_on(sequential(1.0)), BLACK);
        assert_eq!(signed(-0.5, 2), "−0.50");
        assert_eq!(signed(0.5, 1), "+0.5");
    }
}

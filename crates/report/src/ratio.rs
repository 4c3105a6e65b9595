//! α/λ ratio vs overall scale (Fig. 4 / Fig. 5): is the effect of the balanced loss the ratio of
//! the attracting and repelling weights (the paper's claim), or only the overall step size?
//!
//! The balanced loss's overall scale multiplies the gradient like a learning rate, so cells with
//! the same α/λ differ only in step size; the diagonal α = λ (ratio 1, scales from the grid, e.g.
//! 0.5–1.5) is pure step size around NT-Xent (1, 1). From a [`Heatmap`]: one row per distinct
//! ratio with its cells' mean test linear top-1, the spread within the ratio (the step-size
//! effect at that ratio), the diagonal marked, and η² = the share of the variance of the cell
//! means explained by the ratio. Written as `<experiment>_ratio.{md,tex,csv}` and drawn as
//! `<experiment>_ratio.{png,svg}` (accuracy against log₂(α/λ), diagonal cells highlighted).

use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use polars::prelude::*;

use crate::heatmap::{trim_num, Heatmap};
use crate::stats::Summary;
use crate::style::{font, num, plot_err, signed, Figure, ACCENT, POINT};
use crate::tables::tex_escape;

/// Pixel size of `<experiment>_ratio.png`.
pub const RATIO_SIZE: (u32, u32) = (1200, 800);
/// x-axis label of the ratio figure.
pub const X_LABEL: &str = "α/λ (log scale): ratio of attracting to repelling weight";
/// y-axis label of the ratio figure.
pub const Y_LABEL: &str = "Linear top-1 accuracy (%), mean over seeds";

/// One (α, λ) cell with data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioCell {
    pub alpha: f64,
    pub lambda: f64,
    /// Test linear top-1 over seeds.
    pub test: Summary,
}

/// All cells sharing one α/λ.
#[derive(Debug, Clone, PartialEq)]
pub struct RatioRow {
    pub ratio: f64,
    /// Cells in increasing α.
    pub cells: Vec<RatioCell>,
    /// Ratio 1: the diagonal α = λ.
    pub diagonal: bool,
}

impl RatioRow {
    /// Mean over the row's cells of their mean accuracy.
    pub fn mean(&self) -> f64 {
        self.cells.iter().map(|c| c.test.mean).sum::<f64>() / self.cells.len() as f64
    }

    /// Smallest and largest cell mean.
    pub fn range(&self) -> (f64, f64) {
        self.cells.iter().fold((f64::MAX, f64::MIN), |(lo, hi), c| {
            (lo.min(c.test.mean), hi.max(c.test.mean))
        })
    }
}

/// The ratio table of one α × λ experiment.
#[derive(Debug, Clone)]
pub struct RatioTable {
    /// `fig5` or `fig4`.
    pub experiment: String,
    pub title: String,
    /// Rows in increasing ratio.
    pub rows: Vec<RatioRow>,
    /// NT-Xent (1, 1), if it has data.
    pub reference: Option<Summary>,
    pub partial: Option<String>,
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

impl RatioTable {
    /// Groups the heatmap's cells with data by α/λ (λ = 0 cells are left out: no ratio).
    pub fn from_heatmap(map: &Heatmap, experiment: &str) -> Self {
        let mut rows: Vec<RatioRow> = Vec::new();
        for (li, row) in map.cells.iter().enumerate() {
            for (ai, c) in row.iter().enumerate() {
                let (alpha, lambda) = (map.alphas[ai], map.lambdas[li]);
                let Some(test) = c else { continue };
                if lambda == 0.0 {
                    continue;
                }
                let ratio = alpha / lambda;
                let cell = RatioCell {
                    alpha,
                    lambda,
                    test: *test,
                };
                match rows.iter_mut().find(|r| same(r.ratio, ratio)) {
                    Some(r) => r.cells.push(cell),
                    None => rows.push(RatioRow {
                        ratio,
                        cells: vec![cell],
                        diagonal: same(ratio, 1.0),
                    }),
                }
            }
        }
        rows.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
        for r in &mut rows {
            r.cells.sort_by(|a, b| a.alpha.total_cmp(&b.alpha));
        }
        Self {
            experiment: experiment.into(),
            title: format!("Accuracy against α/λ ({experiment}): ratio or step size?"),
            rows,
            reference: map.reference(),
            partial: map.partial.clone(),
        }
    }

    /// η² over the ratios that occur at ≥ 2 scales: between-ratio sum of squares of their cell
    /// means over the total sum of squares (1 = the ratio alone explains the differences, 0 = the
    /// scale does). A ratio with one cell says nothing about scale, so it is left out. Returns
    /// `(η², cells, ratios)`; `None` with fewer than two such ratios or no variation.
    pub fn eta_squared(&self) -> Option<(f64, usize, usize)> {
        let rows: Vec<&RatioRow> = self.rows.iter().filter(|r| r.cells.len() >= 2).collect();
        if rows.len() < 2 {
            return None;
        }
        let all: Vec<f64> = rows
            .iter()
            .flat_map(|r| r.cells.iter().map(|c| c.test.mean))
            .collect();
        let grand = all.iter().sum::<f64>() / all.len() as f64;
        let total: f64 = all.iter().map(|v| (v - grand).powi(2)).sum();
        if total <= 0.0 {
            return None;
        }
        let between: f64 = rows
            .iter()
            .map(|r| r.cells.len() as f64 * (r.mean() - grand).powi(2))
            .sum();
        Some((between / total, all.len(), rows.len()))
    }

    /// The diagonal row (α = λ), if any cell is on it.
    pub fn diagonal(&self) -> Option<&RatioRow> {
        self.rows.iter().find(|r| r.diagonal)
    }

    fn cells_text(r: &RatioRow) -> String {
        r.cells
            .iter()
            .map(|c| {
                format!(
                    "({}, {}): {}",
                    trim_num(c.alpha),
                    trim_num(c.lambda),
                    num(c.test.mean, 2)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The η² sentence and the diagonal sentence.
    fn summary_parts(&self) -> (String, String) {
        let eta = self
            .eta_squared()
            .map(|(e, cells, ratios)| {
                format!(
                    "Over the {ratios} ratios run at ≥ 2 scales ({cells} cells), the ratio explains \
                     η² = {} of the variance of the cell means (the rest is the scale).",
                    num(e, 3)
                )
            })
            .unwrap_or_else(|| {
                "η² undefined: fewer than two ratios run at ≥ 2 scales (or no variation).".into()
            });
        let diag = match self.diagonal() {
            Some(d) => {
                let (lo, hi) = d.range();
                format!(
                    " Diagonal α = λ (ratio 1, scales {}–{}): cell means span {} points ({}–{}).",
                    trim_num(d.cells.first().map(|c| c.alpha).unwrap_or(f64::NAN)),
                    trim_num(d.cells.last().map(|c| c.alpha).unwrap_or(f64::NAN)),
                    num(hi - lo, 2),
                    num(lo, 2),
                    num(hi, 2)
                )
            }
            None => " No cell on the diagonal α = λ.".into(),
        };
        (eta, diag.trim_start().to_string())
    }

    fn summary_sentence(&self) -> String {
        let (eta, diag) = self.summary_parts();
        format!("{eta} {diag}")
    }

    fn footnote(&self) -> String {
        format!(
            "Test linear top-1 in %, mean over seeds per cell; one row per α/λ. Cells (α, λ) with \
             the same ratio differ only in the loss's overall scale, which multiplies the gradient \
             like a learning rate: their spread is the step-size effect at that ratio. ★ marks \
             the diagonal α = λ (ratio 1: step size only, around NT-Xent). {} Descriptive, no \
             selection.{}",
            self.summary_sentence(),
            self.partial
                .as_ref()
                .map(|p| format!(" Computed on partial data ({p})."))
                .unwrap_or_default()
        )
    }

    fn diff_text(&self, v: f64) -> String {
        self.reference
            .map(|r| signed(v - r.mean, 2))
            .unwrap_or_else(|| "—".into())
    }

    /// Markdown version.
    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        s.push_str(
            "| α/λ | Diagonal | Cells | Mean (%) | − NT-Xent (points) | Min–max (%) | Spread (points) | Cells (α, λ): mean |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let (lo, hi) = r.range();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {}–{} | {} | {} |\n",
                trim_num(r.ratio),
                if r.diagonal { "★ α = λ" } else { "" },
                r.cells.len(),
                num(r.mean(), 2),
                self.diff_text(r.mean()),
                num(lo, 2),
                num(hi, 2),
                num(hi - lo, 2),
                Self::cells_text(r)
            ));
        }
        if let Some(d) = self.diagonal() {
            s.push_str(
                "\nDiagonal α = λ (ratio 1), by scale:\n\n| Scale (α = λ) | n | Mean (%) | − NT-Xent (points) |\n|---|---|---|---|\n",
            );
            for c in &d.cells {
                s.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    trim_num(c.alpha),
                    c.test.n,
                    num(c.test.mean, 2),
                    self.diff_text(c.test.mean)
                ));
            }
        }
        s.push_str(&format!("\n{}\n", self.footnote()));
        s
    }

    /// LaTeX (booktabs) version.
    pub fn latex(&self) -> String {
        let mut s = String::from("% Generated by `protoclr report`; needs \\usepackage{booktabs}.\n");
        s.push_str("\\begin{table}[t]\n\\centering\n");
        s.push_str(&format!("\\caption{{{}}}\n", tex_escape(&self.title)));
        s.push_str(&format!("\\label{{tab:{}-ratio}}\n", self.experiment));
        s.push_str("\\begin{tabular}{lcrrrcr}\n\\toprule\n");
        s.push_str(
            "$\\alpha/\\lambda$ & Diagonal & Cells & Mean (\\%) & $-$ NT-Xent & Min--max (\\%) & Spread \\\\\n\\midrule\n",
        );
        for r in &self.rows {
            let (lo, hi) = r.range();
            s.push_str(&format!(
                "{} & {} & {} & {} & {} & {}--{} & {} \\\\\n",
                tex_escape(&trim_num(r.ratio)),
                if r.diagonal { "$\\star$" } else { "" },
                r.cells.len(),
                tex_escape(&num(r.mean(), 2)),
                tex_escape(&self.diff_text(r.mean())),
                tex_escape(&num(lo, 2)),
                tex_escape(&num(hi, 2)),
                tex_escape(&num(hi - lo, 2))
            ));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n");
        s.push_str(&format!(
            "\\par\\smallskip{{\\footnotesize {}}}\n\\end{{table}}\n",
            tex_escape(&self.footnote().replace('★', "star"))
        ));
        s
    }

    /// Machine-readable version: one row per cell, with its ratio, scale and row aggregates.
    pub fn frame(&self) -> Result<DataFrame> {
        let cells: Vec<(&RatioRow, &RatioCell)> = self
            .rows
            .iter()
            .flat_map(|r| r.cells.iter().map(move |c| (r, c)))
            .collect();
        let df = DataFrame::new_infer_height(vec![
            Column::new(
                "ratio".into(),
                cells.iter().map(|(r, _)| r.ratio).collect::<Vec<_>>(),
            ),
            Column::new(
                "diagonal".into(),
                cells.iter().map(|(r, _)| r.diagonal).collect::<Vec<_>>(),
            ),
            Column::new(
                "alpha".into(),
                cells.iter().map(|(_, c)| c.alpha).collect::<Vec<_>>(),
            ),
            Column::new(
                "lambda".into(),
                cells.iter().map(|(_, c)| c.lambda).collect::<Vec<_>>(),
            ),
            Column::new(
                "linear_top1_mean".into(),
                cells.iter().map(|(_, c)| c.test.mean).collect::<Vec<_>>(),
            ),
            Column::new(
                "linear_top1_std".into(),
                cells.iter().map(|(_, c)| c.test.std).collect::<Vec<_>>(),
            ),
            Column::new(
                "linear_top1_n".into(),
                cells.iter().map(|(_, c)| c.test.n as u32).collect::<Vec<_>>(),
            ),
            Column::new(
                "ratio_mean".into(),
                cells.iter().map(|(r, _)| r.mean()).collect::<Vec<_>>(),
            ),
            Column::new(
                "ratio_spread".into(),
                cells
                    .iter()
                    .map(|(r, _)| {
                        let (lo, hi) = r.range();
                        hi - lo
                    })
                    .collect::<Vec<_>>(),
            ),
        ])?;
        Ok(df)
    }

    /// Writes `<experiment>_ratio.{md,tex,csv}` and `<experiment>_ratio.{png,svg}` into `out`.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        let stem = format!("{}_ratio", self.experiment);
        let mut written =
            crate::output::write_table(out, &stem, &self.markdown(), &self.latex(), self.frame()?)?;
        written.extend(crate::style::save(self, out, &stem)?);
        Ok(written)
    }

    fn full_title(&self) -> String {
        match &self.partial {
            Some(p) => format!("{} — {p}", self.title),
            None => self.title.clone(),
        }
    }
}

/// Tick labels that fit: `(position, text)` in pixel x, dropping any closer than `gap` to the
/// previous kept one.
fn spaced_ticks(ticks: Vec<(i32, String)>, gap: i32) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = Vec::new();
    for (x, t) in ticks {
        if out.last().is_none_or(|(px, _)| x - px >= gap) {
            out.push((x, t));
        }
    }
    out
}

/// One panel of the ratio figure: points `(x, cell, highlighted)` on a numeric x axis with
/// tick labels at `ticks` (data x, text).
struct Panel<'a> {
    caption: &'a str,
    x_desc: &'a str,
    points: Vec<(f64, RatioCell, bool)>,
    /// Line through these `(x, y)`.
    line: Vec<(f64, f64)>,
    line_label: &'a str,
    ticks: Vec<(f64, String)>,
    y_range: (f64, f64),
    legend: bool,
}

impl RatioTable {
    fn draw_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, p: Panel) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let xs: Vec<f64> = p.ticks.iter().map(|t| t.0).collect();
        let (mut x0, mut x1) = xs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if xs.is_empty() {
            (x0, x1) = (-1.0, 1.0);
        }
        let pad = ((x1 - x0) * 0.08).max(0.1);
        let (x0, x1) = (x0 - pad, x1 + pad);
        let (y0, y1) = p.y_range;
        let mut chart = ChartBuilder::on(area)
            .caption(p.caption, font(19.0))
            .margin(16)
            .x_label_area_size(70)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(0)
            .x_desc(p.x_desc)
            .y_desc(Y_LABEL)
            .axis_desc_style(font(17.0))
            .label_style(font(15.0))
            .y_label_formatter(&|v| num(*v, 1))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(plot_err)?;
        // Tick labels at the data's own x values, drawn in pixels, skipping ones that would touch.
        let (bx, by) = area.get_base_pixel();
        let ticks: Vec<(i32, String)> = p
            .ticks
            .iter()
            .map(|(x, t)| (chart.backend_coord(&(*x, y0)).0, t.clone()))
            .collect();
        for (px, t) in spaced_ticks(ticks, 44) {
            let py = chart.backend_coord(&(x0, y0)).1;
            area.draw(&Text::new(
                t,
                (px - bx, py - by + 8),
                font(15.0).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(plot_err)?;
        }
        if let Some(r) = self.reference {
            chart
                .draw_series(LineSeries::new(
                    [(x0, r.mean), (x1, r.mean)],
                    ShapeStyle::from(&RGBColor(120, 120, 120)).stroke_width(1),
                ))
                .map_err(plot_err)?
                .label(format!("NT-Xent (1, 1): {}", num(r.mean, 2)))
                .legend(|(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], ShapeStyle::from(&RGBColor(120, 120, 120)))
                });
        }
        chart
            .draw_series(LineSeries::new(p.line, ShapeStyle::from(&POINT).stroke_width(2)))
            .map_err(plot_err)?
            .label(p.line_label)
            .legend(|(x, y)| {
                PathElement::new([(x, y), (x + 24, y)], ShapeStyle::from(&POINT).stroke_width(2))
            });
        let bar = ShapeStyle::from(&POINT.mix(0.6)).stroke_width(1);
        chart
            .draw_series(p.points.iter().filter_map(|(x, c, _)| {
                let h = c.test.ci95_half_width()?;
                Some(ErrorBar::new_vertical(
                    *x,
                    c.test.mean - h,
                    c.test.mean,
                    c.test.mean + h,
                    bar,
                    8,
                ))
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(
                p.points
                    .iter()
                    .filter(|(_, _, d)| !d)
                    .map(|(x, c, _)| Circle::new((*x, c.test.mean), 5, POINT.mix(0.75).filled())),
            )
            .map_err(plot_err)?
            .label("cell (α, λ): mean over seeds, bars 95% t-interval")
            .legend(|(x, y)| Circle::new((x + 12, y), 5, POINT.filled()));
        chart
            .draw_series(
                p.points
                    .iter()
                    .filter(|(_, _, d)| *d)
                    .map(|(x, c, _)| TriangleMarker::new((*x, c.test.mean), 9, ACCENT.filled())),
            )
            .map_err(plot_err)?
            .label("diagonal α = λ (ratio 1: step size only)")
            .legend(|(x, y)| TriangleMarker::new((x + 12, y), 8, ACCENT.filled()));
        if p.legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .margin(10)
                .label_font(font(14.0))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    }
}

impl Figure for RatioTable {
    fn size(&self) -> (u32, u32) {
        RATIO_SIZE
    }

    /// Left: every cell against log₂(α/λ), the diagonal highlighted, a line through the ratio
    /// means. Right: the diagonal alone against its scale α = λ, on the same y range.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root
            .margin(8, 0, 0, 0)
            .titled(&self.full_title(), font(24.0))
            .map_err(plot_err)?;
        let (body, foot) = body.split_vertically(RATIO_SIZE.1 as i32 - 40 - 60);
        let (left, right) = body.split_horizontally(RATIO_SIZE.0 * 62 / 100);
        let all: Vec<&RatioCell> = self.rows.iter().flat_map(|r| r.cells.iter()).collect();
        let half = |c: &RatioCell| c.test.ci95_half_width().unwrap_or(0.0);
        let (mut y0, mut y1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), c| {
            (a.min(c.test.mean - half(c)), b.max(c.test.mean + half(c)))
        });
        if all.is_empty() {
            (y0, y1) = (0.0, 100.0);
        }
        let span = (y1 - y0).max(1.0);
        let y_range = (y0 - 0.08 * span, y1 + 0.08 * span);
        let tick = |v: f64| {
            let s = format!("{v:.2}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        };
        self.draw_panel(
            &left,
            Panel {
                caption: "All cells against the ratio",
                x_desc: X_LABEL,
                points: self
                    .rows
                    .iter()
                    .flat_map(|r| r.cells.iter().map(move |c| (r.ratio.log2(), *c, r.diagonal)))
                    .collect(),
                line: self.rows.iter().map(|r| (r.ratio.log2(), r.mean())).collect(),
                line_label: "mean over the cells of each ratio",
                ticks: self
                    .rows
                    .iter()
                    .map(|r| (r.ratio.log2(), tick(r.ratio)))
                    .collect(),
                y_range,
                legend: true,
            },
        )?;
        let diag: Vec<RatioCell> = self.diagonal().map(|d| d.cells.clone()).unwrap_or_default();
        self.draw_panel(
            &right,
            Panel {
                caption: "Diagonal α = λ: step size only",
                x_desc: "scale α = λ",
                points: diag.iter().map(|c| (c.alpha, *c, true)).collect(),
                line: diag.iter().map(|c| (c.alpha, c.test.mean)).collect(),
                line_label: "diagonal cells",
                ticks: diag.iter().map(|c| (c.alpha, trim_num(c.alpha))).collect(),
                y_range,
                legend: false,
            },
        )?;
        let (eta, diag) = self.summary_parts();
        foot.draw(&Text::new(eta, (20, 6), font(15.0)))
            .map_err(plot_err)?;
        foot.draw(&Text::new(diag, (20, 30), font(15.0)))
            .map_err(plot_err)?;
        Ok(())
    }
}

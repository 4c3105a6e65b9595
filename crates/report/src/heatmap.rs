//! Fig. 4 / Fig. 5: α × λ heatmaps of mean linear accuracy (values in the cells, colour bar, the
//! NT-Xent cell (1, 1) outlined) and, beside each, the difference from NT-Xent in points.
//!
//! The "best" (α, λ) ≠ (1, 1) named in the notes and in claim (b) is chosen by
//! [`crate::select`]: on validation accuracy when every cell has it, else on test (and said so).

use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::load::{axis_number, Experiment};
use crate::select::{select_best, Basis, TEST_METRIC, VALIDATION_METRIC};
use crate::stats::Summary;
use crate::style::{diverging, font, num, plot_err, sequential, signed, text_on, Figure, NO_DATA};

/// Pixel size of fig4.png / fig5.png.
pub const HEATMAP_SIZE: (u32, u32) = (1800, 800);
/// Index column of α.
pub const ALPHA: &str = "loss.alpha";
/// Index column of λ.
pub const LAMBDA: &str = "loss.lambda";
/// x-axis label.
pub const X_LABEL: &str = "α: weight of the attracting term (loss.alpha)";
/// y-axis label.
pub const Y_LABEL: &str = "λ: weight of the repelling term (loss.lambda)";

/// Mean linear accuracy on an α × λ grid.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    /// Sorted distinct α values of the index.
    pub alphas: Vec<f64>,
    /// Sorted distinct λ values of the index.
    pub lambdas: Vec<f64>,
    /// `linear_top1` (test) over seeds, `cells[λ index][α index]`.
    pub cells: Vec<Vec<Option<Summary>>>,
    /// `val_linear_top1` over seeds, same layout; `None` where not measured.
    pub val: Vec<Vec<Option<Summary>>>,
    /// `partial: k of n cells`, when cells are missing.
    pub partial: Option<String>,
    /// Cells with metrics / cells in the index.
    pub counts: (usize, usize),
    /// Other varied index columns, pooled within each (α, λ).
    pub pooled_axes: Vec<String>,
}

fn position(values: &[f64], v: f64) -> Option<usize> {
    values
        .iter()
        .position(|x| (x - v).abs() <= 1e-9 * x.abs().max(1.0))
}

impl Heatmap {
    /// Aggregates an α × λ experiment (index columns `loss.alpha`, `loss.lambda`) over seeds.
    pub fn from_experiment(exp: &Experiment, title: &str) -> Result<Self> {
        for axis in [ALPHA, LAMBDA] {
            if !exp.axes.iter().any(|a| a == axis) {
                bail!(
                    "index {} has no `{axis}` column (varied keys: {}); an α × λ figure needs \
                     both loss.alpha and loss.lambda",
                    exp.index_path.display(),
                    exp.axes.join(", ")
                );
            }
        }
        // Numeric α, λ columns, so that `1` and `1.0` are one cell.
        let mut cells = exp.cells.clone();
        let mut axes_num = Vec::new();
        for (axis, name) in [(ALPHA, "alpha"), (LAMBDA, "lambda")] {
            let mut vals = Vec::with_capacity(cells.height());
            for (row, s) in cells.column(axis)?.str()?.iter().enumerate() {
                let s = s.unwrap_or("");
                match axis_number(s) {
                    Some(v) => vals.push(v),
                    None => bail!(
                        "row {} of {}: `{axis}` = `{s}` is not a number",
                        row + 2,
                        exp.index_path.display()
                    ),
                }
            }
            let mut sorted = vals.clone();
            sorted.sort_by(f64::total_cmp);
            sorted.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * a.abs().max(1.0));
            axes_num.push(sorted);
            cells.with_column(polars::prelude::Column::new(name.into(), vals))?;
        }
        let groups = crate::load::groups_from_frame(
            &crate::load::aggregate(&cells, &["alpha", "lambda"])?,
            &["alpha", "lambda"],
        )?;
        let (alphas, lambdas) = (axes_num[0].clone(), axes_num[1].clone());
        let mut grid = vec![vec![None; alphas.len()]; lambdas.len()];
        let mut val = grid.clone();
        for g in groups {
            let (Some(a), Some(l)) = (axis_number(&g.key[0]), axis_number(&g.key[1])) else {
                continue;
            };
            if let (Some(ai), Some(li), Some(s)) =
                (position(&alphas, a), position(&lambdas, l), g.get(TEST_METRIC))
            {
                grid[li][ai] = Some(*s);
                val[li][ai] = g.get(VALIDATION_METRIC).copied();
            }
        }
        let pooled_axes = exp
            .axes
            .iter()
            .filter(|a| *a != ALPHA && *a != LAMBDA)
            .filter(|a| {
                let col = exp.cells.column(a).ok();
                col.and_then(|c| c.n_unique().ok()).unwrap_or(1) > 1
            })
            .cloned()
            .collect();
        Ok(Self {
            title: format!("{title} ({}, profile {})", exp.name, exp.profile),
            alphas,
            lambdas,
            cells: grid,
            val,
            partial: exp.title_tag(),
            counts: (exp.with_metrics(), exp.total()),
            pooled_axes,
        })
    }

    /// Grid position `(α index, λ index)` of NT-Xent, (α, λ) = (1, 1), if it is on the grid.
    pub fn reference_position(&self) -> Option<(usize, usize)> {
        Some((position(&self.alphas, 1.0)?, position(&self.lambdas, 1.0)?))
    }

    /// Seed summary of the NT-Xent cell, if it has data.
    pub fn reference(&self) -> Option<Summary> {
        let (ai, li) = self.reference_position()?;
        self.cells[li][ai]
    }

    /// Every other cell with data: `(α, λ, summary)`.
    pub fn others(&self) -> Vec<(f64, f64, Summary)> {
        let r = self.reference_position();
        let mut out = Vec::new();
        for (li, row) in self.cells.iter().enumerate() {
            for (ai, c) in row.iter().enumerate() {
                if let (Some(s), false) = (c, Some((ai, li)) == r) {
                    out.push((self.alphas[ai], self.lambdas[li], *s));
                }
            }
        }
        out
    }

    /// The best (α, λ) ≠ (1, 1): highest mean validation accuracy when every such cell with data
    /// has it, else highest mean test accuracy ([`Basis::Test`]). `None` without such a cell.
    pub fn selected_other(&self) -> Option<Selected> {
        let r = self.reference_position();
        let mut items = Vec::new();
        for (li, row) in self.cells.iter().enumerate() {
            for (ai, c) in row.iter().enumerate() {
                if let (Some(test), false) = (c, Some((ai, li)) == r) {
                    items.push(Selected {
                        alpha: self.alphas[ai],
                        lambda: self.lambdas[li],
                        test: *test,
                        val: self.val[li][ai],
                        basis: Basis::Test,
                        candidates: 0,
                    });
                }
            }
        }
        let s = select_best(&items, |x| x.val.map(|v| v.mean), |x| Some(x.test.mean))?;
        let mut out = items.swap_remove(s.index);
        out.basis = s.basis;
        out.candidates = s.candidates;
        Some(out)
    }

    /// Markdown line naming [`Heatmap::selected_other`] with its test accuracy and difference
    /// from NT-Xent, and what it was selected on.
    pub fn selection_markdown(&self) -> String {
        let Some(s) = self.selected_other() else {
            return "Selected (α, λ) ≠ (1, 1): none (no such cell with data).\n".into();
        };
        let diff = self
            .reference()
            .map(|r| {
                format!(
                    ", {} points vs NT-Xent's {}",
                    signed(s.test.mean - r.mean, 2),
                    num(r.mean, 2)
                )
            })
            .unwrap_or_default();
        let val = s
            .val
            .map(|v| format!("; validation {} (n={})", num(v.mean, 2), v.n))
            .unwrap_or_default();
        format!(
            "Selected (α, λ) ≠ (1, 1), {} among {} cells: α = {}, λ = {} — test linear top-1 {} \
             (n={}){diff}{val}. {}\n",
            s.basis.short(),
            s.candidates,
            trim_num(s.alpha),
            trim_num(s.lambda),
            num(s.test.mean, 2),
            s.test.n,
            s.basis.sentence()
        )
    }

    /// Grid points with no data: `(α, λ)`.
    pub fn empty_cells(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for (li, row) in self.cells.iter().enumerate() {
            for (ai, c) in row.iter().enumerate() {
                if c.is_none() {
                    out.push((self.alphas[ai], self.lambdas[li]));
                }
            }
        }
        out
    }

    /// Title line, with the partial marking.
    pub fn full_title(&self) -> String {
        match &self.partial {
            Some(p) => format!("{} — {p}", self.title),
            None => self.title.clone(),
        }
    }

    fn draw_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, p: Panel) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let Panel {
            caption,
            unit,
            value,
            colour,
            range,
            text,
        } = p;
        let (na, nl) = (self.alphas.len(), self.lambdas.len());
        let (w, _) = area.dim_in_pixel();
        let (main, bar) = area.split_horizontally(w.saturating_sub(130));
        let mut chart = ChartBuilder::on(&main)
            .caption(caption, font(21.0))
            .margin(14)
            .x_label_area_size(80)
            .y_label_area_size(100)
            .build_cartesian_2d(0f64..na as f64, 0f64..nl as f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc(X_LABEL)
            .y_desc(Y_LABEL)
            .axis_desc_style(font(18.0))
            .draw()
            .map_err(plot_err)?;

        let cell_px = {
            let (x0, y0) = chart.backend_coord(&(0.0, 0.0));
            let (x1, y1) = chart.backend_coord(&(1.0, 1.0));
            (x1 - x0).abs().min((y1 - y0).abs()) as f64
        };
        let big = (cell_px / 4.2).clamp(10.0, 24.0);
        let small = (big * 0.62).max(9.0);
        let centre = Pos::new(HPos::Center, VPos::Center);

        for li in 0..nl {
            for ai in 0..na {
                let (x, y) = (ai as f64, li as f64);
                let c = self.cells[li][ai];
                let v = value(ai, li);
                let bg = v.map(colour).unwrap_or(NO_DATA);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + 1.0, y + 1.0)],
                        bg.filled(),
                    )))
                    .map_err(plot_err)?;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + 1.0, y + 1.0)],
                        ShapeStyle::from(&WHITE).stroke_width(1),
                    )))
                    .map_err(plot_err)?;
                let fg = text_on(bg);
                let (main_text, sub) = match (v, c) {
                    (Some(v), Some(c)) => (text(ai, li, v), format!("n={}", c.n)),
                    (None, Some(c)) => ("—".to_string(), format!("n={}", c.n)),
                    _ => ("no data".to_string(), String::new()),
                };
                chart
                    .draw_series([
                        Text::new(main_text, (x + 0.5, y + 0.58), font(big).pos(centre).color(&fg)),
                        Text::new(sub, (x + 0.5, y + 0.25), font(small).pos(centre).color(&fg)),
                    ])
                    .map_err(plot_err)?;
            }
        }
        if let Some((ai, li)) = self.reference_position() {
            let (x, y) = (ai as f64, li as f64);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.02, y + 0.02), (x + 0.98, y + 0.98)],
                    ShapeStyle::from(&BLACK).stroke_width(4),
                )))
                .map_err(plot_err)?;
        }
        // Tick labels at cell centres, drawn in pixel coordinates on the panel.
        let (bx, by) = main.get_base_pixel();
        for (ai, a) in self.alphas.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(ai as f64 + 0.5, 0.0));
            main.draw(&Text::new(
                trim_num(*a),
                (px - bx, py - by + 10),
                font(17.0).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(plot_err)?;
        }
        for (li, l) in self.lambdas.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(0.0, li as f64 + 0.5));
            main.draw(&Text::new(
                trim_num(*l),
                (px - bx - 10, py - by),
                font(17.0).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(plot_err)?;
        }

        // Colour bar.
        let (lo, hi) = range;
        let mut cb = ChartBuilder::on(&bar)
            .caption(unit, font(21.0))
            .margin(14)
            .margin_right(4)
            .x_label_area_size(80)
            .right_y_label_area_size(70)
            .build_cartesian_2d(0f64..1f64, lo..hi)
            .map_err(plot_err)?;
        cb.configure_mesh()
            .disable_mesh()
            .set_tick_mark_size(LabelAreaPosition::Right, 6)
            .disable_x_axis()
            .y_labels(7)
            .y_label_style(font(15.0))
            .y_label_formatter(&|v| num(*v, if (hi - lo) < 5.0 { 2 } else { 1 }))
            .draw()
            .map_err(plot_err)?;
        let steps = 120;
        cb.draw_series((0..steps).map(|k| {
            let v0 = lo + (hi - lo) * k as f64 / steps as f64;
            let v1 = lo + (hi - lo) * (k + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, v0), (1.0, v1)], colour(0.5 * (v0 + v1)).filled())
        }))
        .map_err(plot_err)?;
        Ok(())
    }
}

/// The (α, λ) ≠ (1, 1) chosen by [`Heatmap::selected_other`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selected {
    pub alpha: f64,
    pub lambda: f64,
    /// Test linear top-1 over seeds (what is reported).
    pub test: Summary,
    /// Validation linear top-1 over seeds, when measured.
    pub val: Option<Summary>,
    pub basis: Basis,
    /// Cells it was chosen from.
    pub candidates: usize,
}

/// One heatmap panel: what to show in each cell and how to colour it.
struct Panel<'a> {
    caption: &'a str,
    /// Colour-bar caption.
    unit: &'a str,
    /// Value of cell (α index, λ index), `None` when it cannot be computed.
    value: &'a dyn Fn(usize, usize) -> Option<f64>,
    colour: &'a dyn Fn(f64) -> RGBColor,
    /// Colour-bar range.
    range: (f64, f64),
    /// Cell text for (α index, λ index, value).
    text: &'a dyn Fn(usize, usize, f64) -> String,
}

/// `1`, `0.75`, `1.25`: axis values without trailing zeros.
pub fn trim_num(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.replacen('-', "−", 1)
}

impl Figure for Heatmap {
    fn size(&self) -> (u32, u32) {
        HEATMAP_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root
            .margin(10, 0, 0, 0)
            .titled(&self.full_title(), font(26.0))
            .map_err(plot_err)?;
        let (body, foot) = body.split_vertically(HEATMAP_SIZE.1 as i32 - 50 - 50);
        let (left, right) = body.split_horizontally(HEATMAP_SIZE.0 / 2);

        let means: Vec<f64> = self.cells.iter().flatten().flatten().map(|s| s.mean).collect();
        let (mut lo, mut hi) = means
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        if means.is_empty() {
            (lo, hi) = (0.0, 100.0);
        } else if hi - lo < 1e-9 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let mean_at = |ai: usize, li: usize| self.cells[li][ai].map(|s| s.mean);
        let seq = move |v: f64| sequential((v - lo) / (hi - lo));
        self.draw_panel(
            &left,
            Panel {
                caption: "Mean linear top-1 accuracy over seeds (%)",
                unit: "%",
                value: &mean_at,
                colour: &seq,
                range: (lo, hi),
                text: &|_, _, v| num(v, 1),
            },
        )?;

        let reference = self.reference();
        let diff_at = |ai: usize, li: usize| Some(self.cells[li][ai]?.mean - reference?.mean);
        let max_abs = self
            .cells
            .iter()
            .enumerate()
            .flat_map(|(li, row)| (0..row.len()).filter_map(move |ai| diff_at(ai, li)))
            .fold(0.0f64, |m, d| m.max(d.abs()));
        let span = if max_abs > 1e-9 { max_abs } else { 1.0 };
        let div = move |v: f64| diverging(v / span);
        let ref_pos = self.reference_position();
        let caption = if reference.is_some() {
            "Difference from NT-Xent (α = λ = 1), points"
        } else {
            "Difference from NT-Xent (α = λ = 1): no NT-Xent cell with data"
        };
        self.draw_panel(
            &right,
            Panel {
                caption,
                unit: "points",
                value: &diff_at,
                colour: &div,
                range: (-span, span),
                text: &|ai, li, v| {
                    if Some((ai, li)) == ref_pos {
                        "0 (ref)".to_string()
                    } else {
                        signed(v, 1)
                    }
                },
            },
        )?;

        let mut note = format!(
            "Black outline: NT-Xent cell (α, λ) = (1, 1). Cells: mean over n seeds; grey: no data. \
             {} of {} cells with metrics.",
            self.counts.0, self.counts.1
        );
        if !self.pooled_axes.is_empty() {
            note.push_str(&format!(" Pooled over: {}.", self.pooled_axes.join(", ")));
        }
        foot.draw(&Text::new(note, (20, 14), font(16.0)))
            .map_err(plot_err)?;
        Ok(())
    }
}

//! The `heatmap` kind: a metric's seed mean over two varied keys `x` × `y` (values in the
//! cells, colour bar) and, with a `reference` cell (outlined), a second panel with every cell's
//! difference from it. Fig. 4 / Fig. 5 are its users (α × λ, reference NT-Xent at (1, 1)).
//!
//! Numeric axes are sorted (`1` and `1.0` are one value); an axis with a non-numeric value is
//! drawn in first-appearance order. The "best" cell other than the reference named in the notes
//! and in claim (b) is chosen by [`crate::select`]: on the validation form of the value
//! (`val_<value>`) when every cell has it, else on the value itself (and said so).

use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use protoclr_formats::report::ReportSpec;

use crate::load::{axis_number, Experiment};
use crate::select::{select_best, Basis};
use crate::stats::Summary;
use crate::style::{diverging, font, num, plot_err, sequential, signed, text_on, Figure, NO_DATA};

/// Pixel size of a heatmap PNG.
pub const HEATMAP_SIZE: (u32, u32) = (1800, 800);

/// How a heatmap names things: from the `report:` section, with the defaults of docs/formats.md.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Varied keys of the x and y axes (index columns).
    pub x: String,
    pub y: String,
    /// The metric shown.
    pub value: String,
    pub x_label: String,
    pub y_label: String,
    pub x_symbol: String,
    pub y_symbol: String,
    pub value_label: String,
    pub unit: String,
    pub value_name: String,
    /// The reference cell `(x, y)`.
    pub reference: Option<(f64, f64)>,
    pub reference_name: String,
    /// The difference-from-reference panel.
    pub difference: bool,
}

impl View {
    /// The view a `heatmap` spec asks for.
    pub fn from_spec(spec: &ReportSpec) -> Self {
        let x = spec.x.clone().unwrap_or_default();
        let y = spec.y.clone().unwrap_or_default();
        let value = spec.value.clone().unwrap_or_default();
        let reference = spec
            .reference
            .as_ref()
            .and_then(|r| Some((*r.get(&x)?, *r.get(&y)?)));
        Self {
            x_label: spec.x_label.clone().unwrap_or_else(|| x.clone()),
            y_label: spec.y_label.clone().unwrap_or_else(|| y.clone()),
            x_symbol: symbol(spec, &x),
            y_symbol: symbol(spec, &y),
            value_label: spec
                .value_label
                .clone()
                .unwrap_or_else(|| format!("Mean {value} over seeds")),
            unit: spec.unit.clone().unwrap_or_default(),
            value_name: spec.value_name.clone().unwrap_or_else(|| value.clone()),
            reference_name: spec.reference_name.clone().unwrap_or_else(|| "reference".into()),
            difference: spec.difference.unwrap_or(reference.is_some()) && reference.is_some(),
            reference,
            x,
            y,
            value,
        }
    }

    /// The validation form of the value the selection is made on, when metrics.json has one.
    pub fn validation_metric(&self) -> Option<String> {
        let v = format!("val_{}", self.value);
        protoclr_formats::EVAL_METRICS.contains(&v.as_str()).then_some(v)
    }

    /// Unit of a difference: `points` for a value in %, else the value's unit.
    pub fn diff_unit(&self) -> &str {
        if self.unit == "%" {
            "points"
        } else {
            &self.unit
        }
    }

    /// `(α, λ)`: the pair of axis symbols.
    pub fn pair(&self) -> String {
        format!("({}, {})", self.x_symbol, self.y_symbol)
    }

    /// `(1, 1)`: the reference coordinates (empty without a reference).
    pub fn reference_pair(&self) -> String {
        self.reference
            .map(|(a, b)| format!("({}, {})", trim_num(a), trim_num(b)))
            .unwrap_or_default()
    }

    /// `α = λ = 1` or `α = 0.5, λ = 1`: the reference as equations.
    pub fn reference_eq(&self) -> String {
        match self.reference {
            Some((a, b)) if a == b => format!("{} = {} = {}", self.x_symbol, self.y_symbol, trim_num(a)),
            Some((a, b)) => format!(
                "{} = {}, {} = {}",
                self.x_symbol,
                trim_num(a),
                self.y_symbol,
                trim_num(b)
            ),
            None => String::new(),
        }
    }

    /// `α = 0.5, λ = 1.5`: a cell as equations.
    pub fn cell_eq(&self, x: &str, y: &str) -> String {
        format!("{} = {x}, {} = {y}", self.x_symbol, self.y_symbol)
    }
}

/// The short name of a varied key (`symbols:`), else the key.
pub fn symbol(spec: &ReportSpec, key: &str) -> String {
    spec.symbols
        .as_ref()
        .and_then(|m| m.get(key))
        .cloned()
        .unwrap_or_else(|| key.to_string())
}

/// One axis: its values in drawing order, numbers when every value is one.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisValues {
    /// Tick labels (numbers without trailing zeros, else the index's text).
    pub text: Vec<String>,
    /// The numbers, when the axis is numeric.
    pub numbers: Option<Vec<f64>>,
}

impl AxisValues {
    /// Values of the index column `col`, numeric (sorted, `1` = `1.0`) when all parse.
    pub fn of(col: &[&str]) -> Self {
        let nums: Option<Vec<f64>> = col.iter().map(|s| axis_number(s)).collect();
        match nums {
            Some(mut v) => {
                v.sort_by(f64::total_cmp);
                v.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * a.abs().max(1.0));
                Self {
                    text: v.iter().map(|x| trim_num(*x)).collect(),
                    numbers: Some(v),
                }
            }
            None => {
                let mut text: Vec<String> = Vec::new();
                for s in col {
                    if !text.iter().any(|t| t == s) {
                        text.push(s.to_string());
                    }
                }
                Self { text, numbers: None }
            }
        }
    }

    /// Position of an index value on the axis.
    pub fn position_of(&self, s: &str) -> Option<usize> {
        match &self.numbers {
            Some(n) => position(n, axis_number(s)?),
            None => self.text.iter().position(|t| t == s),
        }
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// A metric's seed means over two varied keys.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub view: View,
    /// Sorted distinct x values of the index (their positions for a non-numeric axis).
    pub alphas: Vec<f64>,
    /// Sorted distinct y values of the index (likewise).
    pub lambdas: Vec<f64>,
    /// Tick labels of the axes.
    pub x_text: Vec<String>,
    pub y_text: Vec<String>,
    /// The value over seeds, `cells[y index][x index]`.
    pub cells: Vec<Vec<Option<Summary>>>,
    /// Its validation form over seeds, same layout; `None` where not measured.
    pub val: Vec<Vec<Option<Summary>>>,
    /// `partial: k of n cells`, when cells are missing.
    pub partial: Option<String>,
    /// Cells with metrics / cells in the index.
    pub counts: (usize, usize),
    /// Other varied index columns, pooled within each (x, y).
    pub pooled_axes: Vec<String>,
    /// Whether both axes are numeric (else [`Heatmap::alphas`] / [`Heatmap::lambdas`] hold
    /// positions).
    pub numeric: bool,
}

fn position(values: &[f64], v: f64) -> Option<usize> {
    values
        .iter()
        .position(|x| (x - v).abs() <= 1e-9 * x.abs().max(1.0))
}

impl Heatmap {
    /// Aggregates the experiment over seeds as the `heatmap` spec asks (title: the spec's, with
    /// the experiment and profile).
    pub fn from_spec(exp: &Experiment, spec: &ReportSpec) -> Result<Self> {
        Self::from_view(exp, &spec.title, View::from_spec(spec))
    }

    /// As [`Heatmap::from_spec`], from a [`View`].
    pub fn from_view(exp: &Experiment, title: &str, view: View) -> Result<Self> {
        for axis in [&view.x, &view.y] {
            if !exp.axes.iter().any(|a| a == axis) {
                bail!(
                    "index {} has no `{axis}` column (varied keys: {}); the heatmap of the \
                     report section needs both `{}` and `{}`",
                    exp.index_path.display(),
                    exp.axes.join(", "),
                    view.x,
                    view.y
                );
            }
        }
        let col = |k: &str| -> Result<Vec<String>> {
            Ok(exp
                .cells
                .column(k)?
                .str()?
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect())
        };
        let (xcol, ycol) = (col(&view.x)?, col(&view.y)?);
        let xa = AxisValues::of(&xcol.iter().map(String::as_str).collect::<Vec<_>>());
        let ya = AxisValues::of(&ycol.iter().map(String::as_str).collect::<Vec<_>>());
        let numeric = xa.numbers.is_some() && ya.numbers.is_some();
        if view.reference.is_some() {
            for (a, k) in [(&xa, &view.x), (&ya, &view.y)] {
                if a.numbers.is_none() {
                    bail!(
                        "index {}: `{k}` has a value that is not a number; a heatmap with a \
                         `reference` needs numeric axes",
                        exp.index_path.display()
                    );
                }
            }
        }
        // Numeric axes as number columns, so that `1` and `1.0` are one cell.
        let mut cells = exp.cells.clone();
        for (name, a, values) in [("__x", &xa, &xcol), ("__y", &ya, &ycol)] {
            let column = match a.numbers {
                Some(_) => polars::prelude::Column::new(
                    name.into(),
                    values.iter().map(|s| axis_number(s)).collect::<Vec<_>>(),
                ),
                None => polars::prelude::Column::new(name.into(), values.clone()),
            };
            cells.with_column(column)?;
        }
        let groups = crate::load::groups_from_frame(
            &crate::load::aggregate(&cells, &["__x", "__y"])?,
            &["__x", "__y"],
        )?;
        let mut grid = vec![vec![None; xa.len()]; ya.len()];
        let mut val = grid.clone();
        let val_metric = view.validation_metric();
        for g in groups {
            if let (Some(xi), Some(yi), Some(s)) = (
                xa.position_of(&g.key[0]),
                ya.position_of(&g.key[1]),
                g.get(&view.value),
            ) {
                grid[yi][xi] = Some(*s);
                val[yi][xi] = val_metric.as_deref().and_then(|m| g.get(m)).copied();
            }
        }
        let pooled_axes = exp
            .axes
            .iter()
            .filter(|a| **a != view.x && **a != view.y)
            .filter(|a| {
                let col = exp.cells.column(a).ok();
                col.and_then(|c| c.n_unique().ok()).unwrap_or(1) > 1
            })
            .cloned()
            .collect();
        let positions = |a: &AxisValues| {
            a.numbers
                .clone()
                .unwrap_or_else(|| (0..a.len()).map(|i| i as f64).collect())
        };
        Ok(Self {
            title: format!("{title} ({}, profile {})", exp.name, exp.profile),
            alphas: positions(&xa),
            lambdas: positions(&ya),
            x_text: xa.text,
            y_text: ya.text,
            view,
            cells: grid,
            val,
            partial: exp.title_tag(),
            counts: (exp.with_metrics(), exp.total()),
            pooled_axes,
            numeric,
        })
    }

    /// Grid position `(x index, y index)` of the reference cell, if there is one on the grid.
    pub fn reference_position(&self) -> Option<(usize, usize)> {
        let (rx, ry) = self.view.reference?;
        Some((position(&self.alphas, rx)?, position(&self.lambdas, ry)?))
    }

    /// Seed summary of the reference cell, if it has data.
    pub fn reference(&self) -> Option<Summary> {
        let (ai, li) = self.reference_position()?;
        self.cells[li][ai]
    }

    /// Every other cell with data: `(x, y, summary)`.
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

    /// The best cell other than the reference: highest mean validation value when every such
    /// cell with data has it, else highest mean value ([`Basis::Test`]). `None` without such a
    /// cell.
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

    /// Tick text of an x / y position value.
    fn x_name(&self, x: f64) -> String {
        position(&self.alphas, x)
            .map(|i| self.x_text[i].clone())
            .unwrap_or_else(|| trim_num(x))
    }

    fn y_name(&self, y: f64) -> String {
        position(&self.lambdas, y)
            .map(|i| self.y_text[i].clone())
            .unwrap_or_else(|| trim_num(y))
    }

    /// Markdown line naming [`Heatmap::selected_other`] with its value and difference from the
    /// reference, and what it was selected on (empty without a reference).
    pub fn selection_markdown(&self) -> String {
        let v = &self.view;
        if v.reference.is_none() {
            return String::new();
        }
        let Some(s) = self.selected_other() else {
            return format!(
                "Selected {} ≠ {}: none (no such cell with data).\n",
                v.pair(),
                v.reference_pair()
            );
        };
        let diff = self
            .reference()
            .map(|r| {
                format!(
                    ", {}{} vs {}'s {}",
                    signed(s.test.mean - r.mean, 2),
                    with_space(v.diff_unit()),
                    v.reference_name,
                    num(r.mean, 2)
                )
            })
            .unwrap_or_default();
        let val = s
            .val
            .map(|x| format!("; validation {} (n={})", num(x.mean, 2), x.n))
            .unwrap_or_default();
        format!(
            "Selected {} ≠ {}, {} among {} cells: {} — {} {} (n={}){diff}{val}. {}\n",
            v.pair(),
            v.reference_pair(),
            s.basis.short(),
            s.candidates,
            v.cell_eq(&self.x_name(s.alpha), &self.y_name(s.lambda)),
            v.value_name,
            num(s.test.mean, 2),
            s.test.n,
            s.basis.sentence()
        )
    }

    /// Grid points with no data: `(x, y)` tick texts.
    pub fn empty_cells(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (li, row) in self.cells.iter().enumerate() {
            for (ai, c) in row.iter().enumerate() {
                if c.is_none() {
                    out.push((self.x_text[ai].clone(), self.y_text[li].clone()));
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
            .x_desc(self.view.x_label.as_str())
            .y_desc(self.view.y_label.as_str())
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
        for (ai, a) in self.x_text.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(ai as f64 + 0.5, 0.0));
            main.draw(&Text::new(
                a.clone(),
                (px - bx, py - by + 10),
                font(17.0).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(plot_err)?;
        }
        for (li, l) in self.y_text.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(0.0, li as f64 + 0.5));
            main.draw(&Text::new(
                l.clone(),
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

/// `s` with a leading space, or empty.
fn with_space(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" {s}")
    }
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
        let v = &self.view;
        let (left, right) = if v.difference {
            let (l, r) = body.split_horizontally(HEATMAP_SIZE.0 / 2);
            (l, Some(r))
        } else {
            (body, None)
        };

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
                caption: &v.value_label,
                unit: &v.unit,
                value: &mean_at,
                colour: &seq,
                range: (lo, hi),
                text: &|_, _, v| num(v, 1),
            },
        )?;

        if let Some(right) = right {
            self.draw_difference(&right)?;
        }
        let mut note = String::new();
        if self.view.reference.is_some() {
            note.push_str(&format!(
                "Black outline: {} cell {} = {}. ",
                v.reference_name,
                v.pair(),
                v.reference_pair()
            ));
        }
        note.push_str(&format!(
            "Cells: mean over n seeds; grey: no data. {} of {} cells with metrics.",
            self.counts.0, self.counts.1
        ));
        if !self.pooled_axes.is_empty() {
            note.push_str(&format!(" Pooled over: {}.", self.pooled_axes.join(", ")));
        }
        foot.draw(&Text::new(note, (20, 14), font(16.0)))
            .map_err(plot_err)?;
        Ok(())
    }
}

impl Heatmap {
    /// The difference-from-reference panel.
    fn draw_difference<DB: DrawingBackend>(&self, right: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let v = &self.view;

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
            format!("Difference from {} ({}){}", v.reference_name, v.reference_eq(), {
                let u = v.diff_unit();
                if u.is_empty() {
                    String::new()
                } else {
                    format!(", {u}")
                }
            })
        } else {
            format!(
                "Difference from {} ({}): no {} cell with data",
                v.reference_name,
                v.reference_eq(),
                v.reference_name
            )
        };
        self.draw_panel(
            right,
            Panel {
                caption: &caption,
                unit: v.diff_unit(),
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

        Ok(())
    }
}

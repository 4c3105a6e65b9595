//! The `scatter` kind: one point per `rows` group (mean over seeds, 95 % t-interval bars on both
//! axes), metric `x` against metric `y`, with the least-squares line and Spearman ρ / Pearson r
//! (bootstrap 95 % intervals over groups) in the legend. Fig. 3 is its user: linear accuracy
//! against prototype representation bias, one point per augmentation configuration.
//!
//! The prototype bias is either form ([`BiasForm`]): `bias_l2`, the paper's E‖μ̂_y − μ_x‖ on
//! unit-norm features, or the scale-free `bias_rel` (the same distance divided by the spread of
//! the μ_x around their mean, docs/paper.md), which a collapsed encoder cannot win. Claim (a) is
//! decided on both; `protoclr report --bias` swaps the x axis of a scatter of either.

use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use protoclr_formats::report::{PointLabels, ReportSpec};

use crate::load::{Experiment, CONFIG};
use crate::stats::{
    bootstrap_paired, least_squares, pearson, spearman, BootstrapCi, Summary, BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
};
use crate::style::{font, num, plot_err, Figure, ACCENT, POINT};

/// Pixel size of a scatter PNG.
pub const SCATTER_SIZE: (u32, u32) = (1200, 900);
/// x-axis label for `bias_l2`.
pub const X_LABEL: &str =
    "Prototype representation bias  E‖μ(y) − μ(x)‖  (L2 distance of unit-norm features)";
/// x-axis label for `bias_rel`.
pub const X_LABEL_REL: &str = "Scale-free prototype bias  E‖μ(y) − μ(x)‖ / E‖μ(x) − μ̄‖  (bias_rel)";

/// Which prototype bias a scatter (and claim (a)) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BiasForm {
    /// `bias_l2`: E_x‖μ̂_{y(x)} − μ_x‖ on unit-norm features.
    #[default]
    L2,
    /// `bias_rel`: `bias_l2` divided by E_x‖μ_x − μ̄‖ (scale-free).
    Rel,
}

impl BiasForm {
    /// The `eval` key of metrics.json.
    pub fn metric(self) -> &'static str {
        match self {
            BiasForm::L2 => "bias_l2",
            BiasForm::Rel => "bias_rel",
        }
    }

    /// The form a metric is, if it is a prototype bias.
    pub fn of_metric(metric: &str) -> Option<Self> {
        match metric {
            "bias_l2" => Some(BiasForm::L2),
            "bias_rel" => Some(BiasForm::Rel),
            _ => None,
        }
    }

    /// The x-axis label.
    pub fn x_label(self) -> &'static str {
        match self {
            BiasForm::L2 => X_LABEL,
            BiasForm::Rel => X_LABEL_REL,
        }
    }

    /// Whether any cell of `exp` with metrics has this bias.
    pub fn measured(self, exp: &Experiment) -> bool {
        measured(exp, self.metric())
    }
}

/// Whether any cell of `exp` with metrics has `metric`.
pub fn measured(exp: &Experiment, metric: &str) -> bool {
    exp.cells
        .column(metric)
        .ok()
        .and_then(|c| c.f64().ok().map(|c| c.iter().any(|v| v.is_some())))
        .unwrap_or(false)
}

/// How a scatter names and draws things: from the `report:` section, with the defaults of
/// docs/formats.md.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Metrics of the x and y axes.
    pub x: String,
    pub y: String,
    /// Columns whose values make one point (`label`: the label, else the varied keys).
    pub rows: Vec<String>,
    pub x_label: String,
    pub y_label: String,
    /// How the fit's legend and the notes name the metrics.
    pub x_name: String,
    pub y_name: String,
    pub highlight: Option<String>,
    pub labels: PointLabels,
    pub fit: bool,
}

impl View {
    /// The view a `scatter` spec asks for.
    pub fn from_spec(spec: &ReportSpec) -> Self {
        let x = spec.x.clone().unwrap_or_default();
        let y = spec.y.clone().unwrap_or_default();
        Self {
            x_label: spec.x_label.clone().unwrap_or_else(|| x.clone()),
            y_label: spec.y_label.clone().unwrap_or_else(|| y.clone()),
            x_name: spec.x_name.clone().unwrap_or_else(|| x.clone()),
            y_name: spec.y_name.clone().unwrap_or_else(|| y.clone()),
            rows: spec.rows.clone().unwrap_or_else(|| vec!["label".into()]),
            highlight: spec.highlight.clone(),
            labels: spec.labels.unwrap_or_default(),
            fit: spec.fit.unwrap_or(true),
            x,
            y,
        }
    }

    /// The same view with the prototype bias of `form` on the x axis (and its axis label).
    pub fn with_bias(mut self, form: BiasForm) -> Self {
        if BiasForm::of_metric(&self.x) != Some(form) {
            self.x = form.metric().into();
            self.x_label = form.x_label().into();
        }
        self
    }

    /// The prototype bias on the x axis, if it is one.
    pub fn bias(&self) -> Option<BiasForm> {
        BiasForm::of_metric(&self.x)
    }
}

/// One group.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: String,
    /// The x metric over seeds.
    pub x: Summary,
    /// The y metric over seeds.
    pub y: Summary,
}

/// Everything a scatter (and claim (a)) needs.
#[derive(Debug, Clone)]
pub struct Scatter {
    pub title: String,
    pub view: View,
    /// File stem (names the notes in the footer).
    pub stem: String,
    pub points: Vec<Point>,
    /// Groups without both metrics (no cell done, or the metric not measured).
    pub without_data: Vec<String>,
    /// `(intercept, slope)` of y on x.
    pub fit: Option<(f64, f64)>,
    pub spearman: BootstrapCi,
    pub pearson: BootstrapCi,
    /// `partial: k of n cells`, when cells are missing.
    pub partial: Option<String>,
    /// Cells with metrics / cells in the index.
    pub cells: (usize, usize),
}

/// The group name of each cell of `exp` for `rows`: `config` (label, else the varied keys) for
/// `[label]`, else `key=value` joined by `, `.
pub fn group_names(exp: &Experiment, rows: &[String]) -> Result<Vec<String>> {
    if rows.len() == 1 && rows[0] == "label" {
        return Ok(exp
            .cells
            .column(CONFIG)?
            .str()?
            .iter()
            .map(|s| s.unwrap_or("").to_string())
            .collect());
    }
    let mut cols = Vec::new();
    for r in rows {
        let Ok(c) = exp.cells.column(r) else {
            bail!(
                "index {} has no `{r}` column (varied keys: {})",
                exp.index_path.display(),
                exp.axes.join(", ")
            );
        };
        let c = c.cast(&polars::prelude::DataType::String)?;
        cols.push(
            c.str()?
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect::<Vec<_>>(),
        );
    }
    Ok((0..exp.cells.height())
        .map(|i| {
            rows.iter()
                .zip(&cols)
                .map(|(k, c)| format!("{k}={}", c[i]))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect())
}

impl Scatter {
    /// Aggregates the experiment over seeds as the `scatter` spec asks; `stem` names its files.
    pub fn from_spec(exp: &Experiment, spec: &ReportSpec, stem: &str) -> Result<Self> {
        Self::from_view(exp, &spec.title, stem, View::from_spec(spec))
    }

    /// As [`Scatter::from_spec`], from a [`View`].
    pub fn from_view(exp: &Experiment, title: &str, stem: &str, view: View) -> Result<Self> {
        let names = group_names(exp, &view.rows)?;
        let mut cells = exp.cells.clone();
        cells.with_column(polars::prelude::Column::new("__group".into(), names.clone()))?;
        let groups =
            crate::load::groups_from_frame(&crate::load::aggregate(&cells, &["__group"])?, &["__group"])?;
        let mut points = Vec::new();
        for g in &groups {
            if let (Some(x), Some(y)) = (g.get(&view.x), g.get(&view.y)) {
                points.push(Point {
                    label: g.key[0].clone(),
                    x: *x,
                    y: *y,
                });
            }
        }
        // Groups in the index with no usable cell at all.
        let mut without_data: Vec<String> = Vec::new();
        for c in &names {
            let has_point = points.iter().any(|p| &p.label == c);
            if !has_point && !without_data.iter().any(|w| w == c) {
                without_data.push(c.to_string());
            }
        }
        let title = format!("{title} ({}, profile {})", exp.name, exp.profile);
        let mut fig = Self::from_points(
            title,
            points,
            without_data,
            exp.title_tag(),
            (exp.with_metrics(), exp.total()),
        );
        fig.view = view;
        fig.stem = stem.into();
        Ok(fig)
    }

    /// Builds the figure data (fit, correlations, bootstrap intervals) from points.
    pub fn from_points(
        title: String,
        points: Vec<Point>,
        without_data: Vec<String>,
        partial: Option<String>,
        cells: (usize, usize),
    ) -> Self {
        let x: Vec<f64> = points.iter().map(|p| p.x.mean).collect();
        let y: Vec<f64> = points.iter().map(|p| p.y.mean).collect();
        Self {
            title,
            view: View {
                x: "x".into(),
                y: "y".into(),
                rows: vec!["label".into()],
                x_label: "x".into(),
                y_label: "y".into(),
                x_name: "x".into(),
                y_name: "y".into(),
                highlight: None,
                labels: PointLabels::Spread,
                fit: true,
            },
            stem: String::new(),
            fit: least_squares(&x, &y),
            spearman: bootstrap_paired(&x, &y, spearman, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED),
            pearson: bootstrap_paired(&x, &y, pearson, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED),
            points,
            without_data,
            partial,
            cells,
        }
    }

    /// Title line, with the partial marking.
    pub fn full_title(&self) -> String {
        match &self.partial {
            Some(p) => format!("{} — {p}", self.title),
            None => self.title.clone(),
        }
    }
}

/// `ρ = −0.83 [−0.97, −0.41]`-style legend text of a bootstrapped correlation.
pub fn corr_text(name: &str, b: &BootstrapCi) -> String {
    if !b.estimate.is_finite() {
        return format!("{name} undefined (n = {})", b.n);
    }
    match b.ci95 {
        Some((lo, hi)) => format!(
            "{name} = {}, 95% CI [{}, {}] (n = {})",
            num(b.estimate, 2),
            num(lo, 2),
            num(hi, 2),
            b.n
        ),
        None => format!("{name} = {}, CI undefined (n = {})", num(b.estimate, 2), b.n),
    }
}

/// Height of a point label in pixels (17-px font plus spacing).
const LABEL_HEIGHT: i32 = 20;
/// How far above its point a label sits by default (top edge, pixels).
const LABEL_RISE: i32 = 24;

/// Width in pixels of a label in the 17-px DejaVu Sans (an upper bound per character).
fn label_width(text: &str) -> i32 {
    text.chars().count() as i32 * 9
}

/// Top-left corners for point labels `(x, y, width)` (pixels): each label starts 10 px right of
/// and [`LABEL_RISE`] px above its point, and is moved down or up in steps of one label height,
/// nearest first, until it overlaps no label placed before it. Labels are placed from the top
/// point down, so clusters fan out evenly.
fn place_labels(anchors: &[(i32, i32, i32)]) -> Vec<(i32, i32)> {
    let mut order: Vec<usize> = (0..anchors.len()).collect();
    order.sort_by_key(|&i| (anchors[i].1, anchors[i].0));
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    let mut out = vec![(0, 0); anchors.len()];
    for i in order {
        let (px, py, w) = anchors[i];
        let free = |x0: i32, y0: i32| {
            placed
                .iter()
                .all(|b| x0 + w <= b.0 || x0 >= b.2 || y0 + LABEL_HEIGHT <= b.1 || y0 >= b.3)
        };
        let x0 = px + 10;
        let y0 = (0..200)
            .map(|k| {
                let step = (k + 1) / 2 * LABEL_HEIGHT;
                py - LABEL_RISE + if k % 2 == 1 { step } else { -step }
            })
            .find(|&y| free(x0, y))
            .unwrap_or(py - LABEL_RISE);
        placed.push((x0, y0, x0 + w, y0 + LABEL_HEIGHT));
        out[i] = (x0, y0);
    }
    out
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) || lo > hi {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= 0.0 {
        let pad = (lo.abs() * 0.05).max(0.05);
        (lo - pad, hi + pad)
    } else {
        (lo - 0.12 * span, hi + 0.12 * span)
    }
}

impl Figure for Scatter {
    fn size(&self) -> (u32, u32) {
        SCATTER_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(plot_err)?;
        let (body, foot) = root.split_vertically(SCATTER_SIZE.1 - 60);
        let err = |s: &Summary| s.ci95_half_width().unwrap_or(0.0);
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &self.points {
            x0 = x0.min(p.x.mean - err(&p.x));
            x1 = x1.max(p.x.mean + err(&p.x));
            y0 = y0.min(p.y.mean - err(&p.y));
            y1 = y1.max(p.y.mean + err(&p.y));
        }
        let (x0, x1) = padded(x0, x1);
        // Point labels are drawn to the right of their point: leave room for the rightmost one.
        let x1 = x1 + 0.15 * (x1 - x0);
        let (y0, y1) = padded(y0, y1);

        let mut chart = ChartBuilder::on(&body)
            .caption(self.full_title(), font(26.0))
            .margin(20)
            .x_label_area_size(70)
            .y_label_area_size(90)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(self.view.x_label.as_str())
            .y_desc(self.view.y_label.as_str())
            .axis_desc_style(font(20.0))
            .label_style(font(17.0))
            .x_label_formatter(&|v| num(*v, 3))
            .y_label_formatter(&|v| num(*v, 1))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(205, 205, 205))
            .draw()
            .map_err(plot_err)?;

        if self.points.is_empty() {
            body.draw(&Text::new(
                format!(
                    "no configuration has both {} and {} yet",
                    self.view.x_name, self.view.y_name
                ),
                (SCATTER_SIZE.0 as i32 / 2 - 230, SCATTER_SIZE.1 as i32 / 2),
                font(22.0),
            ))
            .map_err(plot_err)?;
        }

        // Least-squares line across the plotted x range.
        if let (Some((a, b)), true) = (self.fit, self.view.fit) {
            chart
                .draw_series(LineSeries::new(
                    [(x0, a + b * x0), (x1, a + b * x1)],
                    ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(format!(
                    "least squares: {} = {} {} {} × {}",
                    self.view.y_name,
                    num(a, 2),
                    if b < 0.0 { "−" } else { "+" },
                    num(b.abs(), 2),
                    self.view.x_name
                ))
                .legend(|(x, y)| {
                    PathElement::new(
                        [(x, y), (x + 24, y)],
                        ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(2),
                    )
                });
        }

        let bar = ShapeStyle::from(&POINT.mix(0.8)).stroke_width(2);
        chart
            .draw_series(self.points.iter().filter_map(|p| {
                let h = p.y.ci95_half_width()?;
                Some(ErrorBar::new_vertical(
                    p.x.mean,
                    p.y.mean - h,
                    p.y.mean,
                    p.y.mean + h,
                    bar,
                    10,
                ))
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(self.points.iter().filter_map(|p| {
                let h = p.x.ci95_half_width()?;
                Some(ErrorBar::new_horizontal(
                    p.y.mean,
                    p.x.mean - h,
                    p.x.mean,
                    p.x.mean + h,
                    bar,
                    10,
                ))
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(self.points.iter().map(|p| {
                let colour = if self.view.highlight.as_deref() == Some(p.label.as_str()) {
                    ACCENT
                } else {
                    POINT
                };
                EmptyElement::at((p.x.mean, p.y.mean)) + Circle::new((0, 0), 7, colour.filled())
            }))
            .map_err(plot_err)?
            .label("configuration: mean over seeds, bars 95% t-interval")
            .legend(|(x, y)| Circle::new((x + 12, y), 6, POINT.filled()));
        // Labels in pixels, moved apart where configurations cluster, with a leader line to
        // their point when moved.
        let texts: Vec<String> = self
            .points
            .iter()
            .map(|p| format!("{} (n={})", p.label, p.y.n))
            .collect();
        let anchors: Vec<(i32, i32, i32)> = self
            .points
            .iter()
            .zip(&texts)
            .map(|(p, t)| {
                let (px, py) = chart.backend_coord(&(p.x.mean, p.y.mean));
                (px, py, label_width(t))
            })
            .collect();
        let places = match self.view.labels {
            PointLabels::Spread => place_labels(&anchors),
            PointLabels::Fixed => anchors
                .iter()
                .map(|&(px, py, _)| (px + 10, py - LABEL_RISE))
                .collect(),
            PointLabels::None => Vec::new(),
        };
        for ((text, &(px, py, w)), (lx, ly)) in texts.iter().zip(&anchors).zip(places) {
            if ly != py - LABEL_RISE {
                body.draw(&PathElement::new(
                    [(px, py), (lx - 2, ly + LABEL_HEIGHT / 2)],
                    ShapeStyle::from(&RGBColor(150, 150, 150)).stroke_width(1),
                ))
                .map_err(plot_err)?;
            }
            // A light backing so that error bars behind a label do not cut through it.
            body.draw(&Rectangle::new(
                [(lx - 2, ly - 1), (lx + w - 4, ly + LABEL_HEIGHT - 2)],
                WHITE.mix(0.75).filled(),
            ))
            .map_err(plot_err)?;
            body.draw(&Text::new(text.clone(), (lx, ly), font(17.0)))
                .map_err(plot_err)?;
        }

        let correlations = if self.view.fit {
            vec![("Spearman ρ", &self.spearman), ("Pearson r", &self.pearson)]
        } else {
            Vec::new()
        };
        for (name, b) in correlations {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(plot_err)?
                .label(corr_text(name, b))
                .legend(|(x, y)| EmptyElement::at((x, y)));
        }
        let pos = match self.fit {
            Some((_, b)) if b > 0.0 => SeriesLabelPosition::LowerRight,
            _ => SeriesLabelPosition::UpperRight,
        };
        chart
            .configure_series_labels()
            .position(pos)
            .margin(12)
            .label_font(font(17.0))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;

        let mut note = if self.view.fit {
            format!(
                "ρ and r on configuration means; 95% CIs: percentile bootstrap over configurations \
                 (B = {BOOTSTRAP_RESAMPLES}, seed {BOOTSTRAP_SEED}). "
            )
        } else {
            String::new()
        };
        note.push_str(&format!(
            "Cells: {} of {} with metrics.",
            self.cells.0, self.cells.1
        ));
        match self.without_data.len() {
            0 => {}
            1..=3 => note.push_str(&format!(" No data: {}.", self.without_data.join(", "))),
            k => note.push_str(&format!(
                " No data for {k} configurations (see {}.notes.md).",
                self.stem
            )),
        }
        foot.draw(&Text::new(note, (20, 18), font(16.0)))
            .map_err(plot_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clustered_labels_do_not_overlap_and_lone_ones_stay_put() {
        // Five labels on (almost) the same point, one far away.
        let anchors = [
            (100, 200, 120),
            (101, 201, 90),
            (99, 199, 150),
            (100, 202, 60),
            (102, 200, 110),
            (600, 500, 80),
        ];
        let at = place_labels(&anchors);
        let boxes: Vec<(i32, i32, i32, i32)> = at
            .iter()
            .zip(&anchors)
            .map(|(&(x, y), &(_, _, w))| (x, y, x + w, y + LABEL_HEIGHT))
            .collect();
        for i in 0..boxes.len() {
            for j in i + 1..boxes.len() {
                let (a, b) = (boxes[i], boxes[j]);
                let apart = a.2 <= b.0 || a.0 >= b.2 || a.3 <= b.1 || a.1 >= b.3;
                assert!(apart, "labels {i} and {j} overlap: {a:?} {b:?}");
            }
        }
        assert_eq!(
            at[5],
            (610, 500 - LABEL_RISE),
            "a lone label keeps its default place"
        );
        // Five labels 20 px high fan out over about five label heights (one slot may be lost to
        // the anchors' few-pixel jitter), not further.
        let (lo, hi) = at[..5]
            .iter()
            .fold((i32::MAX, i32::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
        assert!(hi - lo <= 6 * LABEL_HEIGHT, "spread {lo}..{hi}");
    }
}

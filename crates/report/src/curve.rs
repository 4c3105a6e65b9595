//! The `curve` kind: a metric's seed mean (95 % t-interval bars) against one varied key `x`, one
//! line per value of another varied key `series` (one line without it). Numeric x values are
//! placed at their value; an x key with a non-numeric value is drawn in first-appearance order.

use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use protoclr_formats::report::ReportSpec;

use crate::heatmap::AxisValues;
use crate::load::Experiment;
use crate::stats::Summary;
use crate::style::{font, num, plot_err, Figure};

/// Pixel size of a curve PNG.
pub const CURVE_SIZE: (u32, u32) = (1200, 800);

/// Line colours, in series order (then repeated).
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// How a curve names things: from the `report:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub x: String,
    pub value: String,
    pub series: Option<String>,
    pub x_label: String,
    pub y_label: String,
    pub value_name: String,
}

impl View {
    /// The view a `curve` spec asks for.
    pub fn from_spec(spec: &ReportSpec) -> Self {
        let x = spec.x.clone().unwrap_or_default();
        let value = spec.value.clone().unwrap_or_default();
        Self {
            x_label: spec.x_label.clone().unwrap_or_else(|| x.clone()),
            y_label: spec
                .y_label
                .clone()
                .unwrap_or_else(|| format!("{value} (mean over seeds)")),
            value_name: spec.value_name.clone().unwrap_or_else(|| value.clone()),
            series: spec.series.clone(),
            x,
            value,
        }
    }
}

/// One line: the value over seeds at each x position with data.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// `series = value`, or the value's name for a single line.
    pub name: String,
    /// `(x position, summary)` in increasing x.
    pub points: Vec<(f64, Summary)>,
}

/// A metric over one key, one line per value of another.
#[derive(Debug, Clone)]
pub struct Curve {
    pub title: String,
    pub view: View,
    /// x tick labels (at positions 0, 1, … for a non-numeric key).
    pub x: AxisValues,
    pub lines: Vec<Line>,
    /// x values of a line without data: `(line, x)`.
    pub empty: Vec<(String, String)>,
    pub partial: Option<String>,
    pub counts: (usize, usize),
    /// Other varied keys, pooled within each point.
    pub pooled_axes: Vec<String>,
}

fn column(exp: &Experiment, key: &str) -> Result<Vec<String>> {
    let Ok(c) = exp.cells.column(key) else {
        bail!(
            "index {} has no `{key}` column (varied keys: {}); the curve of the report section \
             needs it",
            exp.index_path.display(),
            exp.axes.join(", ")
        );
    };
    let c = c.cast(&polars::prelude::DataType::String)?;
    Ok(c.str()?.iter().map(|s| s.unwrap_or("").to_string()).collect())
}

impl Curve {
    /// Aggregates the experiment over seeds as the `curve` spec asks.
    pub fn from_spec(exp: &Experiment, spec: &ReportSpec) -> Result<Self> {
        let view = View::from_spec(spec);
        let xcol = column(exp, &view.x)?;
        let x = AxisValues::of(&xcol.iter().map(String::as_str).collect::<Vec<_>>());
        let scol = match &view.series {
            Some(s) => column(exp, s)?,
            None => vec![String::new(); exp.cells.height()],
        };
        let series = AxisValues::of(&scol.iter().map(String::as_str).collect::<Vec<_>>());
        // Normalised keys: positions on each axis, so that `1` and `1.0` are one point.
        let pos = |a: &AxisValues, col: &[String]| -> Vec<u32> {
            col.iter()
                .map(|v| a.position_of(v).map(|p| p as u32).unwrap_or(u32::MAX))
                .collect()
        };
        let mut cells = exp.cells.clone();
        cells.with_column(polars::prelude::Column::new("__x".into(), pos(&x, &xcol)))?;
        cells.with_column(polars::prelude::Column::new("__s".into(), pos(&series, &scol)))?;
        let groups = crate::load::groups_from_frame(
            &crate::load::aggregate(&cells, &["__s", "__x"])?,
            &["__s", "__x"],
        )?;
        let position = |i: usize| x.numbers.as_ref().map(|n| n[i]).unwrap_or(i as f64);
        let mut lines = Vec::new();
        let mut empty = Vec::new();
        for (si, sname) in series.text.iter().enumerate() {
            let mut points = Vec::new();
            for xi in 0..x.len() {
                let hit = groups.iter().find(|g| {
                    g.key[0].parse::<usize>().ok() == Some(si) && g.key[1].parse::<usize>().ok() == Some(xi)
                });
                match hit.and_then(|g| g.get(&view.value)) {
                    Some(s) => points.push((position(xi), *s)),
                    None => empty.push((sname.clone(), x.text[xi].clone())),
                }
            }
            let name = match &view.series {
                Some(k) => format!("{k} = {sname}"),
                None => view.value_name.clone(),
            };
            lines.push(Line { name, points });
        }
        let pooled_axes = exp
            .axes
            .iter()
            .filter(|a| **a != view.x && Some(*a) != view.series.as_ref())
            .filter(|a| {
                let col = exp.cells.column(a).ok();
                col.and_then(|c| c.n_unique().ok()).unwrap_or(1) > 1
            })
            .cloned()
            .collect();
        Ok(Self {
            title: format!("{} ({}, profile {})", spec.title, exp.name, exp.profile),
            view,
            x,
            lines,
            empty,
            partial: exp.title_tag(),
            counts: (exp.with_metrics(), exp.total()),
            pooled_axes,
        })
    }

    /// Title line, with the partial marking.
    pub fn full_title(&self) -> String {
        match &self.partial {
            Some(p) => format!("{} — {p}", self.title),
            None => self.title.clone(),
        }
    }

    /// Markdown notes: each line's points, and the points without data.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "\n`{}` over `{}`{}: mean ± 95% t-interval half-width (n seeds).\n\n",
            self.view.value,
            self.view.x,
            self.view
                .series
                .as_ref()
                .map(|k| format!(", one line per `{k}`"))
                .unwrap_or_default()
        );
        for l in &self.lines {
            let pts: Vec<String> = l
                .points
                .iter()
                .map(|(x, p)| {
                    let xi = self
                        .x
                        .numbers
                        .as_ref()
                        .and_then(|n| n.iter().position(|v| v == x))
                        .unwrap_or(*x as usize);
                    format!(
                        "{} → {}{} (n={})",
                        self.x.text[xi],
                        num(p.mean, 2),
                        p.ci95_half_width()
                            .map(|h| format!(" ± {}", num(h, 2)))
                            .unwrap_or_default(),
                        p.n
                    )
                })
                .collect();
            s.push_str(&format!(
                "- {}: {}\n",
                l.name,
                if pts.is_empty() {
                    "no data".into()
                } else {
                    pts.join("; ")
                }
            ));
        }
        if !self.empty.is_empty() {
            s.push_str(&format!(
                "\nPoints with no data: {}\n",
                self.empty
                    .iter()
                    .map(|(l, x)| format!("({l}, {} = {x})", self.view.x))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.pooled_axes.is_empty() {
            s.push_str(&format!(
                "\nOther varied keys pooled within each point: {}\n",
                self.pooled_axes.join(", ")
            ));
        }
        s
    }
}

impl Figure for Curve {
    fn size(&self) -> (u32, u32) {
        CURVE_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(plot_err)?;
        let (body, foot) = root.split_vertically(CURVE_SIZE.1 - 50);
        let pts = self.lines.iter().flat_map(|l| l.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, s) in pts {
            let h = s.ci95_half_width().unwrap_or(0.0);
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(s.mean - h);
            y1 = y1.max(s.mean + h);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let pad = |lo: f64, hi: f64| {
            let span = if hi - lo > 1e-12 {
                hi - lo
            } else {
                lo.abs().max(1.0)
            };
            (lo - 0.08 * span, hi + 0.08 * span)
        };
        let (x0, x1) = pad(x0, x1);
        let (y0, y1) = pad(y0, y1);
        let mut chart = ChartBuilder::on(&body)
            .caption(self.full_title(), font(24.0))
            .margin(20)
            .x_label_area_size(70)
            .y_label_area_size(90)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        let numeric = self.x.numbers.is_some();
        let ticks = self.x.text.clone();
        let x_fmt = move |v: &f64| {
            if numeric {
                crate::heatmap::trim_num(*v)
            } else {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < ticks.len() {
                    ticks[i as usize].clone()
                } else {
                    String::new()
                }
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(self.view.x_label.as_str())
            .y_desc(self.view.y_label.as_str())
            .axis_desc_style(font(20.0))
            .label_style(font(16.0))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| num(*v, 2))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(205, 205, 205));
        if !numeric {
            mesh.x_labels(self.x.len().max(2) * 4 + 1);
        }
        mesh.draw().map_err(plot_err)?;
        // A line without data is left out of the figure (its notes say `no data`); colours stay
        // tied to the series' position.
        for (i, l) in self
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.points.is_empty())
        {
            let c = COLOURS[i % COLOURS.len()];
            let style = ShapeStyle::from(&c).stroke_width(3);
            chart
                .draw_series(LineSeries::new(l.points.iter().map(|(x, s)| (*x, s.mean)), style))
                .map_err(plot_err)?
                .label(l.name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
            chart
                .draw_series(l.points.iter().filter_map(|(x, s)| {
                    let h = s.ci95_half_width()?;
                    Some(ErrorBar::new_vertical(
                        *x,
                        s.mean - h,
                        s.mean,
                        s.mean + h,
                        ShapeStyle::from(&c.mix(0.8)).stroke_width(2),
                        10,
                    ))
                }))
                .map_err(plot_err)?;
            chart
                .draw_series(
                    l.points
                        .iter()
                        .map(|(x, s)| Circle::new((*x, s.mean), 6, c.filled())),
                )
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(12)
            .label_font(font(17.0))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        let mut note = format!(
            "Mean over n seeds, bars 95% t-interval. {} of {} cells with metrics.",
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

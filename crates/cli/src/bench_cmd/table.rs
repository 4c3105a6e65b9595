//! `protoclr bench table`: the Markdown tables of `benches/run.sh` — one row per setting, one
//! column per framework and variant (median img/s over the rounds with the range), and the
//! ratios of issue 14: protoclr f32 against the best f32 PyTorch column, protoclr bf16 against
//! the best bf16 one, with the peak RSS of each pair.
//!
//! Input: JSON lines from `protoclr bench step|infer --json` and `benches/torch_reference.py`.
//! A line is one measurement of a setting (`kind`, `model`, `width`, `batch`, `threads`) by a
//! column: `framework` (`protoclr`, `pytorch`, …), `precision` (`f32` when absent), PyTorch's
//! `variant` (`eager` when absent), `compile` and `memory_format`, and `ops` (`stock` makes a
//! column of its own). A line with `"skipped": "why"` records a variant that could not run; it
//! shows as "skipped", never as a number; a torch.compile line with `compiles_while_timed` > 0
//! (it recompiled during the timed steps) is flagged in its cell. Lines of other kinds
//! (`bench input`) are left out.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One benchmark configuration: what is measured, independent of the framework.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub kind: String,
    pub model: String,
    pub width: u64,
    pub batch: u64,
    pub threads: u64,
}

impl Setting {
    fn describe(&self) -> String {
        match self.kind.as_str() {
            "step" => format!(
                "train step {} width {} batch 2×{}",
                self.model, self.width, self.batch
            ),
            _ => format!(
                "inference {} width {} batch {}",
                self.model, self.width, self.batch
            ),
        }
    }
}

/// Numeric precision of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prec {
    F32,
    Bf16,
}

impl Prec {
    fn name(self) -> &'static str {
        match self {
            Prec::F32 => "f32",
            Prec::Bf16 => "bf16",
        }
    }
}

/// A framework in one configuration (protoclr f32, PyTorch channels_last+bf16, …). The derived
/// order is the table's column order: protoclr first, f32 before bf16, eager before compiled,
/// NCHW before channels_last.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    /// 0 protoclr, 1 pytorch, 2 anything else.
    rank: u8,
    pub precision: Prec,
    compile: bool,
    channels_last: bool,
    /// Header text.
    pub label: String,
    pub framework: String,
}

/// What one line recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum Measure {
    Ran {
        images_per_sec: f64,
        peak_rss_mb: Option<f64>,
        /// torch.compile recompilations during the timed steps (`compiles_while_timed`).
        compiles_while_timed: u64,
    },
    Skipped(String),
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub setting: Setting,
    pub column: Column,
    pub measure: Measure,
    /// The unit a protoclr bf16 step multiplied on (`bf16_unit`: `amx`, `avx512_bf16`, or `f32`
    /// for the f32 fallback), where the line records it.
    pub bf16_unit: Option<String>,
}

fn str_key<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v[key]
        .as_str()
        .ok_or_else(|| anyhow!("key \"{key}\" missing or not a string"))
}

fn u64_key(v: &Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .ok_or_else(|| anyhow!("key \"{key}\" missing or not a non-negative integer"))
}

/// The column a measurement line belongs to.
fn column_of(v: &Value) -> Result<Column> {
    let framework = str_key(v, "framework")?.to_string();
    let precision = match v.get("precision") {
        None => Prec::F32,
        Some(p) => match p.as_str() {
            Some("f32") => Prec::F32,
            Some("bf16") => Prec::Bf16,
            _ => bail!("key \"precision\" must be \"f32\" or \"bf16\", not {p}"),
        },
    };
    let compile = v["compile"].as_bool().unwrap_or(false);
    let channels_last = v["memory_format"].as_str() == Some("channels_last");
    let stock = v["ops"].as_str() == Some("stock");
    let (rank, label) = match framework.as_str() {
        "protoclr" => (
            0,
            format!(
                "protoclr{} {}",
                if stock { " stock" } else { "" },
                precision.name()
            ),
        ),
        "pytorch" => (1, format!("PyTorch {}", v["variant"].as_str().unwrap_or("eager"))),
        other => (
            2,
            format!("{other} {}", v["variant"].as_str().unwrap_or(precision.name())),
        ),
    };
    Ok(Column {
        rank,
        precision,
        compile,
        channels_last,
        label,
        framework,
    })
}

/// Parses one measurement line; `None` for kinds the table does not show.
pub fn parse_line(v: &Value) -> Result<Option<Line>> {
    let kind = str_key(v, "kind")?;
    if kind != "step" && kind != "infer" {
        return Ok(None);
    }
    let setting = Setting {
        kind: kind.to_string(),
        model: str_key(v, "model")?.to_string(),
        width: u64_key(v, "width")?,
        batch: u64_key(v, "batch")?,
        threads: u64_key(v, "threads")?,
    };
    let column = column_of(v)?;
    let measure = match v.get("skipped") {
        Some(why) => Measure::Skipped(why.as_str().map_or_else(|| why.to_string(), String::from)),
        None => Measure::Ran {
            images_per_sec: v["images_per_sec"]
                .as_f64()
                .ok_or_else(|| anyhow!("key \"images_per_sec\" missing or not a number"))?,
            peak_rss_mb: v["peak_rss_mb"].as_f64(),
            compiles_while_timed: v["compiles_while_timed"].as_u64().unwrap_or(0),
        },
    };
    Ok(Some(Line {
        setting,
        column,
        measure,
        bf16_unit: v["bf16_unit"].as_str().map(String::from),
    }))
}

/// Reads the JSON-lines files; an error names the file and line.
pub fn load(files: &[impl AsRef<Path>]) -> Result<Vec<Line>> {
    let mut lines = vec![];
    for f in files {
        let f = f.as_ref();
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        for (i, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(raw)
                .with_context(|| format!("{}:{}: not a JSON object", f.display(), i + 1))?;
            if let Some(line) = parse_line(&v).with_context(|| format!("{}:{}", f.display(), i + 1))? {
                lines.push(line);
            }
        }
    }
    Ok(lines)
}

/// Median of a non-empty list (mean of the two middle values for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// All lines of one setting and column, summarised.
#[derive(Debug, Default)]
pub struct Cell {
    pub ips: Vec<f64>,
    pub rss: Vec<f64>,
    pub skipped: Vec<String>,
    /// Rounds in which torch.compile still compiled during the timed steps.
    pub recompiled: usize,
}

impl Cell {
    /// Median img/s over the rounds that ran.
    pub fn median(&self) -> Option<f64> {
        (!self.ips.is_empty()).then(|| median(self.ips.clone()))
    }

    /// Largest peak RSS over the rounds.
    pub fn peak_rss(&self) -> Option<f64> {
        self.rss.iter().copied().reduce(f64::max)
    }

    fn rounds(&self) -> usize {
        self.ips.len() + self.skipped.len()
    }

    fn text(&self) -> String {
        let Some(m) = self.median() else {
            return if self.skipped.is_empty() {
                "–".into()
            } else {
                "skipped".into()
            };
        };
        let mut s = if self.ips.len() == 1 {
            format!("{m:.1}")
        } else {
            let lo = self.ips.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = self.ips.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{m:.1} ({lo:.1}–{hi:.1})")
        };
        if self.recompiled > 0 {
            s.push_str(&format!(
                ", compiled while timed in {} of {}",
                self.recompiled,
                self.rounds()
            ));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                ", skipped in {} of {}",
                self.skipped.len(),
                self.rounds()
            ));
        }
        s
    }
}

/// The measurements grouped by setting (in order of first appearance) and column.
pub struct Grid {
    pub settings: Vec<Setting>,
    pub columns: Vec<Column>,
    cells: BTreeMap<(usize, usize), Cell>,
    /// The bf16 units the lines name, in order of appearance.
    pub bf16_units: Vec<String>,
}

impl Grid {
    pub fn new(lines: &[Line]) -> Grid {
        let mut settings: Vec<Setting> = vec![];
        let mut columns: Vec<Column> = vec![];
        for l in lines {
            if !settings.contains(&l.setting) {
                settings.push(l.setting.clone());
            }
            if !columns.contains(&l.column) {
                columns.push(l.column.clone());
            }
        }
        columns.sort();
        let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
        for l in lines {
            let s = settings.iter().position(|s| *s == l.setting).expect("listed");
            let c = columns.iter().position(|c| *c == l.column).expect("listed");
            let cell = cells.entry((s, c)).or_default();
            match &l.measure {
                Measure::Ran {
                    images_per_sec,
                    peak_rss_mb,
                    compiles_while_timed,
                } => {
                    cell.ips.push(*images_per_sec);
                    cell.rss.extend(*peak_rss_mb);
                    cell.recompiled += usize::from(*compiles_while_timed > 0);
                }
                Measure::Skipped(why) => cell.skipped.push(why.clone()),
            }
        }
        let mut bf16_units: Vec<String> = vec![];
        for u in lines.iter().filter_map(|l| l.bf16_unit.as_ref()) {
            if !bf16_units.contains(u) {
                bf16_units.push(u.clone());
            }
        }
        Grid {
            settings,
            columns,
            cells,
            bf16_units,
        }
    }

    pub fn cell(&self, setting: usize, column: usize) -> Option<&Cell> {
        self.cells.get(&(setting, column))
    }

    /// protoclr's column at this precision (its own kernels, not `--ops stock`).
    fn ours(&self, prec: Prec) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.framework == "protoclr" && c.precision == prec && !c.label.contains(" stock "))
    }

    /// The PyTorch column with the highest median img/s at this precision in this setting.
    pub fn best_pytorch(&self, setting: usize, prec: Prec) -> Option<(usize, f64)> {
        (0..self.columns.len())
            .filter(|&c| self.columns[c].framework == "pytorch" && self.columns[c].precision == prec)
            .filter_map(|c| Some((c, self.cell(setting, c)?.median()?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// protoclr's median at `prec` over the best PyTorch column's: ratio and that column.
    pub fn ratio(&self, setting: usize, prec: Prec) -> Option<(f64, usize)> {
        let ours = self.cell(setting, self.ours(prec)?)?.median()?;
        let (best, theirs) = self.best_pytorch(setting, prec)?;
        Some((ours / theirs, best))
    }

    fn ratio_text(&self, setting: usize, prec: Prec) -> String {
        if let Some((r, best)) = self.ratio(setting, prec) {
            let variant = self.columns[best].label.trim_start_matches("PyTorch ");
            return format!("{r:.2}× vs {variant}");
        }
        let ours = self.ours(prec).and_then(|c| self.cell(setting, c));
        if ours.is_some_and(|c| c.median().is_none() && !c.skipped.is_empty()) {
            return "skipped".into();
        }
        "–".into()
    }

    fn rss_text(&self, setting: usize, prec: Prec) -> String {
        let mb = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.0}"));
        let ours = self
            .ours(prec)
            .and_then(|c| self.cell(setting, c))
            .and_then(Cell::peak_rss);
        let theirs = self
            .best_pytorch(setting, prec)
            .and_then(|(c, _)| self.cell(setting, c))
            .and_then(Cell::peak_rss);
        if ours.is_none() && theirs.is_none() {
            return "–".into();
        }
        format!("{} / {}", mb(ours), mb(theirs))
    }

    /// Both Markdown tables and the list of skipped variants with the reasons.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("img/s, median over the rounds (range):\n\n| setting | threads | rounds |");
        for c in &self.columns {
            out.push_str(&format!(" {} |", c.label));
        }
        out.push_str(&format!("\n|---|---|---|{}\n", "---|".repeat(self.columns.len())));
        for (s, setting) in self.settings.iter().enumerate() {
            let rounds = (0..self.columns.len())
                .filter_map(|c| self.cell(s, c).map(Cell::rounds))
                .max()
                .unwrap_or(0);
            out.push_str(&format!(
                "| {} | {} | {rounds} |",
                setting.describe(),
                setting.threads
            ));
            for c in 0..self.columns.len() {
                let text = self.cell(s, c).map_or("–".to_string(), Cell::text);
                out.push_str(&format!(" {text} |"));
            }
            out.push('\n');
        }
        out.push_str(
            "\nprotoclr against the best PyTorch column at equal precision (ratio of the medians), \
             and peak RSS in MB of protoclr / of that PyTorch column (largest over the rounds):\n\n\
             | setting | protoclr f32 ÷ best PyTorch f32 | protoclr bf16 ÷ best PyTorch bf16 | \
             peak RSS MB f32: protoclr / PyTorch | peak RSS MB bf16: protoclr / PyTorch |\n\
             |---|---|---|---|---|\n",
        );
        for (s, setting) in self.settings.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                setting.describe(),
                self.ratio_text(s, Prec::F32),
                self.ratio_text(s, Prec::Bf16),
                self.rss_text(s, Prec::F32),
                self.rss_text(s, Prec::Bf16)
            ));
        }
        if !self.bf16_units.is_empty() {
            let named: Vec<String> = self
                .bf16_units
                .iter()
                .map(|u| match u.as_str() {
                    "f32" => "f32 (the fallback: no bf16 unit outruns f32 FMAs on this CPU, so the step ran the f32 kernels)".to_string(),
                    other => format!("`{other}`"),
                })
                .collect();
            out.push_str(&format!(
                "
protoclr bf16 multiplied on: {}.
",
                named.join(", ")
            ));
        }
        let mut notes: Vec<(String, String, Vec<String>)> = vec![];
        for ((s, c), cell) in &self.cells {
            for why in &cell.skipped {
                let (label, setting) = (&self.columns[*c].label, self.settings[*s].describe());
                match notes.iter_mut().find(|(l, w, _)| l == label && w == why) {
                    Some((_, _, where_)) if where_.contains(&setting) => {}
                    Some((_, _, where_)) => where_.push(setting),
                    None => notes.push((label.clone(), why.clone(), vec![setting])),
                }
            }
        }
        if !notes.is_empty() {
            out.push_str("\nSkipped:\n\n");
            for (label, why, where_) in notes {
                out.push_str(&format!("- {label} ({}): {why}\n", where_.join("; ")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(fw: &str, extra: Value) -> Value {
        let mut v = json!({"framework": fw, "kind": "step", "model": "resnet18", "width": 16,
            "batch": 128, "threads": 2});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    fn infer(fw: &str, extra: Value) -> Value {
        let mut v = step(fw, extra);
        v["kind"] = "infer".into();
        v["batch"] = 512.into();
        v
    }

    fn ran(ips: f64, rss: f64) -> Value {
        json!({"images_per_sec": ips, "peak_rss_mb": rss})
    }

    fn with(mut a: Value, b: Value) -> Value {
        a.as_object_mut().unwrap().extend(b.as_object().unwrap().clone());
        a
    }

    fn torch(variant: &str) -> Value {
        let bf16 = variant.contains("bf16");
        json!({"variant": variant, "precision": if bf16 { "bf16" } else { "f32" },
            "autocast": if bf16 { "bf16" } else { "none" }, "compile": variant.contains("compile"),
            "memory_format": if variant.contains("channels_last") { "channels_last" } else { "contiguous" }})
    }

    /// Three rounds of the width-16 step in rotating order, and one (two for eager) of inference,
    /// as `benches/run.sh` writes them; the expected values are worked out by hand below.
    fn fixture() -> Vec<Value> {
        let bf16 = json!({"variant": "protoclr+bf16", "precision": "bf16"});
        let f32_ = json!({"variant": "protoclr", "precision": "f32"});
        let skip = json!({"skipped": "InductorError: CppCompileError: C++ compile error"});
        let mut rows = vec![];
        let round = [
            // protoclr f32, protoclr bf16, eager, channels_last, compile+cl, cl+bf16 (img/s, rss)
            [
                (500.0, 500.0),
                (900.0, 515.0),
                (400.0, 1200.0),
                (600.0, 1300.0),
                (610.0, 1400.0),
                (1000.0, 1250.0),
            ],
            [
                (420.0, 510.0),
                (700.0, 520.0),
                (350.0, 1190.0),
                (640.0, 1310.0),
                (500.0, 1390.0),
                (950.0, 1240.0),
            ],
            [
                (480.0, 505.0),
                (800.0, 517.0),
                (410.0, 1195.0),
                (620.0, 1290.0),
                (590.0, 1395.0),
                (980.0, 1245.0),
            ],
        ];
        for (r, m) in round.iter().enumerate() {
            let mut lines = vec![
                step("protoclr", with(f32_.clone(), ran(m[0].0, m[0].1))),
                step("protoclr", with(bf16.clone(), ran(m[1].0, m[1].1))),
                step("pytorch", with(torch("eager"), ran(m[2].0, m[2].1))),
                step("pytorch", with(torch("channels_last"), ran(m[3].0, m[3].1))),
                step(
                    "pytorch",
                    with(torch("compile+channels_last"), ran(m[4].0, m[4].1)),
                ),
                step("pytorch", with(torch("channels_last+bf16"), ran(m[5].0, m[5].1))),
                step("pytorch", with(torch("compile+channels_last+bf16"), skip.clone())),
            ];
            lines.rotate_left(r);
            rows.extend(lines);
        }
        rows.extend([
            infer("protoclr", with(f32_, ran(1900.0, 160.0))),
            infer(
                "protoclr",
                with(
                    bf16,
                    json!({"skipped": "this protoclr binary has no --precision flag"}),
                ),
            ),
            infer("pytorch", with(torch("eager"), ran(880.0, 770.0))),
            infer("pytorch", with(torch("eager"), ran(920.0, 780.0))),
            infer("pytorch", with(torch("channels_last"), ran(1200.0, 790.0))),
            infer(
                "pytorch",
                with(torch("compile+channels_last"), ran(1300.0, 900.0)),
            ),
            json!({"framework": "protoclr", "kind": "input", "threads": 2, "images_per_sec": 167.0}),
        ]);
        rows
    }

    fn write(rows: &[Value]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.jsonl");
        let text: String = rows.iter().map(|r| format!("{r}\n\n")).collect();
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn column(g: &Grid, label: &str) -> usize {
        g.columns
            .iter()
            .position(|c| c.label == label)
            .unwrap_or_else(|| panic!("no column {label}"))
    }

    #[test]
    fn the_bf16_unit_is_named_under_the_table_and_splits_no_column() {
        let bf16 = json!({"variant": "protoclr+bf16", "precision": "bf16"});
        let unit = |u: &str| with(with(bf16.clone(), json!({ "bf16_unit": u })), ran(600.0, 400.0));
        let skipped = with(bf16.clone(), json!({"skipped": "no bench infer --precision"}));
        let lines: Vec<Line> = [step("protoclr", unit("f32")), infer("protoclr", skipped)]
            .iter()
            .map(|v| parse_line(v).unwrap().unwrap())
            .collect();
        let g = Grid::new(&lines);
        let labels: Vec<&str> = g.columns.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["protoclr bf16"], "one column whatever the unit");
        assert_eq!(g.bf16_units, ["f32"]);
        let md = g.markdown();
        assert!(
            md.contains("protoclr bf16 multiplied on: f32 (the fallback"),
            "{md}"
        );
        let plain = Grid::new(&[parse_line(&step("protoclr", with(bf16, ran(600.0, 400.0))))
            .unwrap()
            .unwrap()]);
        assert!(!plain.markdown().contains("multiplied on"));
    }

    #[test]
    fn medians_best_columns_and_ratios_match_hand_values() {
        let (_dir, path) = write(&fixture());
        let lines = load(&[&path]).unwrap();
        assert_eq!(lines.len(), 3 * 7 + 6, "the input-kind line is left out");
        let g = Grid::new(&lines);
        let labels: Vec<&str> = g.columns.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "protoclr f32",
                "protoclr bf16",
                "PyTorch eager",
                "PyTorch channels_last",
                "PyTorch compile+channels_last",
                "PyTorch channels_last+bf16",
                "PyTorch compile+channels_last+bf16"
            ]
        );
        // Step: medians of the three rounds.
        let med = |s, l| g.cell(s, column(&g, l)).unwrap().median();
        assert_eq!(med(0, "protoclr f32"), Some(480.0));
        assert_eq!(med(0, "protoclr bf16"), Some(800.0));
        assert_eq!(med(0, "PyTorch channels_last"), Some(620.0));
        assert_eq!(med(0, "PyTorch compile+channels_last"), Some(590.0));
        assert_eq!(med(0, "PyTorch compile+channels_last+bf16"), None);
        // Best f32 column is channels_last (620 > 590 > 400): 480 / 620; bf16: 800 / 980.
        let (r, best) = g.ratio(0, Prec::F32).unwrap();
        assert_eq!(g.columns[best].label, "PyTorch channels_last");
        assert!((r - 480.0 / 620.0).abs() < 1e-12, "{r}");
        let (r, best) = g.ratio(0, Prec::Bf16).unwrap();
        assert_eq!(g.columns[best].label, "PyTorch channels_last+bf16");
        assert!((r - 800.0 / 980.0).abs() < 1e-12, "{r}");
        // Inference: eager's two rounds give the mean of the middle pair, 900; compile is best.
        assert_eq!(med(1, "PyTorch eager"), Some(900.0));
        let (r, best) = g.ratio(1, Prec::F32).unwrap();
        assert_eq!(g.columns[best].label, "PyTorch compile+channels_last");
        assert!((r - 1900.0 / 1300.0).abs() < 1e-12, "{r}");
        assert_eq!(g.ratio(1, Prec::Bf16), None);

        let md = g.markdown();
        let row = |start: &str| -> String {
            md.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start} in\n{md}"))
                .to_string()
        };
        assert_eq!(
            row("| train step resnet18 width 16 batch 2×128 | 2 |"),
            "| train step resnet18 width 16 batch 2×128 | 2 | 3 | 480.0 (420.0–500.0) | 800.0 (700.0–900.0) \
             | 400.0 (350.0–410.0) | 620.0 (600.0–640.0) | 590.0 (500.0–610.0) | 980.0 (950.0–1000.0) | skipped |"
        );
        assert_eq!(
            row("| inference resnet18 width 16 batch 512 | 2 |"),
            "| inference resnet18 width 16 batch 512 | 2 | 2 | 1900.0 | skipped | 900.0 (880.0–920.0) \
             | 1200.0 | 1300.0 | – | – |"
        );
        // Ratios, and peak RSS: largest over the rounds of protoclr and of the best column.
        assert_eq!(
            row("| train step resnet18 width 16 batch 2×128 | 0"),
            "| train step resnet18 width 16 batch 2×128 | 0.77× vs channels_last | 0.82× vs channels_last+bf16 \
             | 510 / 1310 | 520 / 1250 |"
        );
        assert_eq!(
            row("| inference resnet18 width 16 batch 512 | 1"),
            "| inference resnet18 width 16 batch 512 | 1.46× vs compile+channels_last | skipped | 160 / 900 | – |"
        );
        assert!(
            md.contains(
                "- PyTorch compile+channels_last+bf16 (train step resnet18 width 16 batch 2×128): \
                 InductorError: CppCompileError: C++ compile error\n"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "- protoclr bf16 (inference resnet18 width 16 batch 512): this protoclr binary has no --precision flag\n"
            ),
            "{md}"
        );
        // Header, separator and one row per setting in each table.
        assert_eq!(
            md.lines().filter(|l| l.starts_with('|')).count(),
            2 * (2 + 2),
            "{md}"
        );
    }

    #[test]
    fn lines_without_variant_keys_are_f32_eager_columns() {
        // What the first version of run.sh wrote: no precision, variant or memory_format.
        let rows = [
            step("pytorch", ran(200.0, 1400.0)),
            step("protoclr", with(json!({"ops": "custom"}), ran(300.0, 700.0))),
        ];
        let (_dir, path) = write(&rows);
        let g = Grid::new(&load(&[&path]).unwrap());
        let labels: Vec<&str> = g.columns.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["protoclr f32", "PyTorch eager"]);
        let md = g.markdown();
        assert!(md.contains("| 1.50× vs eager | – | 700 / 1400 | – |"), "{md}");
    }

    #[test]
    fn recompilation_while_timed_is_flagged_in_the_cell() {
        let v = torch("compile+channels_last");
        let rows = [
            step(
                "pytorch",
                with(
                    with(v.clone(), ran(400.0, 1.0)),
                    json!({"compiles_while_timed": 0}),
                ),
            ),
            step(
                "pytorch",
                with(with(v, ran(600.0, 1.0)), json!({"compiles_while_timed": 2})),
            ),
        ];
        let (_dir, path) = write(&rows);
        let md = Grid::new(&load(&[&path]).unwrap()).markdown();
        assert!(
            md.contains("| 2 | 500.0 (400.0–600.0), compiled while timed in 1 of 2 |"),
            "{md}"
        );
    }

    #[test]
    fn a_measurement_without_its_number_is_an_error_naming_the_line() {
        let rows = [
            step("pytorch", ran(200.0, 1.0)),
            step("protoclr", json!({"peak_rss_mb": 5.0})),
        ];
        let (_dir, path) = write(&rows);
        let err = format!("{:#}", load(&[&path]).unwrap_err());
        // Line 3: write() leaves an empty line after each row.
        assert!(
            err.contains("bench.jsonl:3") && err.contains("images_per_sec"),
            "{err}"
        );
        let rows = [step(
            "pytorch",
            json!({"precision": "fp8", "images_per_sec": 1.0}),
        )];
        let (_dir, path) = write(&rows);
        let err = format!("{:#}", load(&[&path]).unwrap_err());
        assert!(
            err.contains("bench.jsonl:1") && err.contains("precision"),
            "{err}"
        );
    }
}

//! The experiment file: parsing, validation and the included base files.

use crate::locate::{position, Seg};
use crate::value::{flow, merge};
use crate::yamlscan;
use anyhow::{anyhow, Context, Result};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// A list that must not be empty (an empty one is an error at its position in the file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NonEmpty<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-empty list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element()? {
                    out.push(x);
                }
                if out.is_empty() {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(NonEmpty(out))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// A mapping with string keys, in file order, without duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, T)> = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.iter().any(|(o, _)| *o == k) {
                        return Err(de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    let v = map.next_value()?;
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// One layer of a base: a file of a partial config (relative to the experiment file) or an
/// inline mapping.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    File(String),
    Inline(Mapping),
}

/// `base`: one layer or a list of layers, merged in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Layers(pub Vec<Layer>);

struct LayerVisitor;

impl<'de> Visitor<'de> for LayerVisitor {
    type Value = Layers;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping, a path, or a list of mappings and paths")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Layers, E> {
        Ok(Layers(vec![Layer::File(s.to_string())]))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Layers, A::Error> {
        let m = Mapping::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Layers(vec![Layer::Inline(m)]))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Layers, A::Error> {
        let mut out = Vec::new();
        while let Some(Single(l)) = seq.next_element::<Single>()? {
            out.push(l);
        }
        if out.is_empty() {
            return Err(de::Error::invalid_length(0, &"a non-empty list"));
        }
        Ok(Layers(out))
    }
}

struct Single(Layer);

impl<'de> Deserialize<'de> for Single {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Single;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping or a path")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Single, E> {
                Ok(Single(Layer::File(s.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Single, A::Error> {
                let m = Mapping::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Single(Layer::Inline(m)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Layers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LayerVisitor)
    }
}

/// What `protoclr report` builds from an experiment: the `report:` section, defined (and
/// checked on its own) in [`protoclr_formats::report`]; [`Experiment::parse`] also checks its
/// column names against the varied keys. It never enters a cell id.
pub use protoclr_formats::report::{ReportKind, ReportSpec};

/// Metric columns of the index CSV (`docs/formats.md`).
pub const METRIC_COLUMNS: &[&str] = &protoclr_formats::INDEX_METRIC_COLUMNS;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    description: String,
    #[serde(default)]
    base: Option<Layers>,
    profiles: OrderedMap<Mapping>,
    #[serde(default)]
    grid: Option<OrderedMap<NonEmpty<Value>>>,
    #[serde(default)]
    zip: Option<NonEmpty<OrderedMap<NonEmpty<Value>>>>,
    #[serde(default)]
    seeds: Option<NonEmpty<u64>>,
    #[serde(default)]
    exclude: Option<NonEmpty<OrderedMap<Value>>>,
    report: ReportSpec,
    #[serde(default)]
    confirm: Option<RawConfirm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfirm {
    select: RawSelect,
    reference: OrderedMap<Value>,
    seeds: NonEmpty<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    metric: String,
    #[serde(default = "yes")]
    maximize: bool,
    #[serde(default)]
    exclude: Option<NonEmpty<OrderedMap<Value>>>,
}

/// The `confirm:` section: a pre-registered confirmation stage (see [`crate::confirm`]). Once
/// every grid cell is finished, the configuration with the best mean of `metric` over the grid's
/// seeds (`eval.<metric>` of metrics.json), the `reference` and the `exclude`d ones left out, is
/// run again beside the reference on the fresh `seeds`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmSpec {
    /// Flat key of metrics.json `eval` the candidate is selected on (e.g. `val_linear_top1`).
    pub metric: String,
    /// Higher is better (default); `false`: lower is better.
    pub maximize: bool,
    /// Configurations that may not be selected (each entry: varied keys and/or `label`).
    pub exclude: Vec<Vec<(String, Value)>>,
    /// The configuration the candidate is compared with (never a candidate itself).
    pub reference: Vec<(String, Value)>,
    /// Fresh seeds of the confirmation cells: distinct, at least 2, disjoint from `seeds`.
    pub seeds: Vec<u64>,
}

/// A grid axis: a dotted key and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<Value>,
}

/// A zip group: keys varied together, optionally labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipGroup {
    pub labels: Option<Vec<String>>,
    pub keys: Vec<Axis>,
    pub len: usize,
}

/// A profile: the overlay it applies to the base.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub overlay: Value,
}

/// A parsed and validated experiment file.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub path: PathBuf,
    pub text: String,
    pub name: String,
    pub description: String,
    /// The merged `base` layers.
    pub base: Value,
    pub profiles: Vec<Profile>,
    pub grid: Vec<Axis>,
    pub zip: Vec<ZipGroup>,
    pub seeds: Option<Vec<u64>>,
    pub exclude: Vec<Vec<(String, Value)>>,
    pub report: ReportSpec,
    /// The confirmation stage, when the file has a `confirm:` section.
    pub confirm: Option<ConfirmSpec>,
    /// The varied keys, in column order: grid keys, then zip keys (without `label`).
    pub columns: Vec<String>,
    /// Files merged into the base or a profile, with their text (for locating errors).
    pub includes: Vec<(PathBuf, String)>,
}

/// Whether dotted keys `a` and `b` address the same value or one lies inside the other.
fn overlaps(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long == short || long.strip_prefix(short).is_some_and(|rest| rest.starts_with('.'))
}

/// Formats `FILE:LINE:COLUMN: message`.
pub fn at(file: &Path, text: &str, path: &[Seg], msg: impl fmt::Display) -> anyhow::Error {
    let p = position(text, path);
    anyhow!("{}:{}:{}: {msg}", file.display(), p.line, p.column)
}

fn yaml_error(file: &Path, e: &serde_norway::Error) -> anyhow::Error {
    let msg = e.to_string();
    match e.location() {
        Some(l) => {
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            anyhow!("{}:{}:{}: {msg}", file.display(), l.line(), l.column())
        }
        None => anyhow!("{}: {msg}", file.display()),
    }
}

/// Refuses text nested deeper than [`yamlscan::MAX_DEPTH`] before it reaches the parser (whose
/// time grows with the square of the depth), naming `file`, line and column.
fn check_depth(file: &Path, text: &str) -> Result<()> {
    match yamlscan::too_deep(text, yamlscan::MAX_DEPTH) {
        Some((line, column)) => Err(anyhow!(
            "{}:{line}:{column}: {}",
            file.display(),
            yamlscan::DEPTH_MESSAGE
        )),
        None => Ok(()),
    }
}

/// Reads a file of a partial config: a mapping (or empty).
pub fn read_layer_file(path: &Path) -> Result<(Value, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    check_depth(path, &text)?;
    let v: Value = serde_norway::from_str(&text).map_err(|e| yaml_error(path, &e))?;
    match v {
        Value::Null => Ok((Value::Mapping(Mapping::new()), text)),
        Value::Mapping(_) => Ok((v, text)),
        _ => Err(anyhow!(
            "{}:1:1: expected a mapping of config keys",
            path.display()
        )),
    }
}

/// Validates the `confirm:` section against the grid's seeds and varied keys.
fn confirm_spec(
    c: &RawConfirm,
    grid_seeds: Option<&[u64]>,
    columns: &[String],
    err: &dyn Fn(&[Seg], String) -> anyhow::Error,
) -> Result<ConfirmSpec> {
    let metric = &c.select.metric;
    if metric.is_empty()
        || !metric
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
    {
        return Err(err(
            &["confirm".into(), "select".into(), "metric".into()],
            format!("`confirm.select.metric` must be a flat key of metrics.json `eval` (e.g. val_linear_top1), got {metric:?}"),
        ));
    }
    let check_entry = |segs: Vec<Seg>, entry: &OrderedMap<Value>| -> Result<Vec<(String, Value)>> {
        if entry.0.is_empty() {
            return Err(err(
                &segs,
                "empty configuration: name varied keys and/or `label`".into(),
            ));
        }
        for (key, _) in &entry.0 {
            if key != "label" && !columns.contains(key) {
                let mut s = segs.clone();
                s.push(key.as_str().into());
                return Err(err(
                    &s,
                    format!(
                        "`{key}` is not varied by this experiment (a configuration is named by `label` and the varied keys: {}; seeds are chosen by `confirm.seeds`)",
                        columns.join(", ")
                    ),
                ));
            }
        }
        Ok(entry.0.clone())
    };
    let reference = check_entry(vec!["confirm".into(), "reference".into()], &c.reference)?;
    let mut exclude = Vec::new();
    for (i, entry) in c.select.exclude.iter().flat_map(|e| e.0.iter()).enumerate() {
        exclude.push(check_entry(
            vec!["confirm".into(), "select".into(), "exclude".into(), i.into()],
            entry,
        )?);
    }
    let seeds = c.seeds.0.clone();
    let at_seeds: Vec<Seg> = vec!["confirm".into(), "seeds".into()];
    let Some(grid_seeds) = grid_seeds else {
        return Err(err(
            &at_seeds,
            "a confirmation stage needs the grid's `seeds` (the candidate is selected on their mean)".into(),
        ));
    };
    if seeds.len() < 2 {
        return Err(err(
            &at_seeds,
            "`confirm.seeds` needs at least 2 seeds (the paired test estimates the spread of the differences)".into(),
        ));
    }
    for (i, s) in seeds.iter().enumerate() {
        if seeds[..i].contains(s) {
            return Err(err(
                &at_seeds,
                format!("seed {s} is listed twice in `confirm.seeds`"),
            ));
        }
    }
    let shared: Vec<String> = seeds
        .iter()
        .filter(|s| grid_seeds.contains(s))
        .map(u64::to_string)
        .collect();
    if !shared.is_empty() {
        return Err(err(
            &at_seeds,
            format!(
                "`confirm.seeds` must be fresh: seed(s) {} are also grid seeds (`seeds`), on which the candidate was selected",
                shared.join(", ")
            ),
        ));
    }
    Ok(ConfirmSpec {
        metric: metric.clone(),
        maximize: c.select.maximize,
        exclude,
        reference,
        seeds,
    })
}

impl Experiment {
    /// Reads and validates an experiment file.
    pub fn load(path: &Path) -> Result<Experiment> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment file {}", path.display()))?;
        Self::parse(path, text)
    }

    /// Validates the text of an experiment file; `path` names it in errors and anchors relative
    /// paths.
    pub fn parse(path: &Path, text: String) -> Result<Experiment> {
        check_depth(path, &text)?;
        let raw: Raw = serde_norway::from_str(&text).map_err(|e| yaml_error(path, &e))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let err = |segs: &[Seg], msg: String| at(path, &text, segs, msg);
        let mut includes = Vec::new();

        // Names become file names in the results folder: one rule for both (`protoclr_formats`).
        protoclr_formats::check_plain_name("`name`", &raw.name)
            .map_err(|e| err(&["name".into()], format!("{e}")))?;

        // Base layers.
        let mut base = Value::Mapping(Mapping::new());
        if let Some(layers) = &raw.base {
            for (i, layer) in layers.0.iter().enumerate() {
                let segs: Vec<Seg> = if layers.0.len() > 1 {
                    vec!["base".into(), i.into()]
                } else {
                    vec!["base".into()]
                };
                let v = match layer {
                    Layer::Inline(m) => Value::Mapping(m.clone()),
                    Layer::File(f) => {
                        let p = dir.join(f);
                        let (v, t) = read_layer_file(&p).map_err(|e| err(&segs, format!("{e:#}")))?;
                        includes.push((p, t));
                        v
                    }
                };
                merge(&mut base, &v).map_err(|e| err(&segs, format!("{e:#}")))?;
            }
        }

        // Profiles.
        let mut profiles = Vec::new();
        for (name, map) in &raw.profiles.0 {
            let segs: Vec<Seg> = vec!["profiles".into(), name.as_str().into()];
            protoclr_formats::check_plain_name("a profile name", name)
                .map_err(|e| err(&segs, format!("{e}")))?;
            let mut overlay = Value::Mapping(Mapping::new());
            let mut rest = map.clone();
            if let Some(b) = rest.remove("base") {
                let bsegs: Vec<Seg> = vec!["profiles".into(), name.as_str().into(), "base".into()];
                let layers: Layers =
                    serde_norway::from_value(b).map_err(|e| err(&bsegs, format!("`base`: {e}")))?;
                for layer in &layers.0 {
                    let v = match layer {
                        Layer::Inline(m) => Value::Mapping(m.clone()),
                        Layer::File(f) => {
                            let p = dir.join(f);
                            let (v, t) = read_layer_file(&p).map_err(|e| err(&bsegs, format!("{e:#}")))?;
                            includes.push((p, t));
                            v
                        }
                    };
                    merge(&mut overlay, &v).map_err(|e| err(&bsegs, format!("{e:#}")))?;
                }
            }
            merge(&mut overlay, &Value::Mapping(rest)).map_err(|e| err(&segs, format!("{e:#}")))?;
            profiles.push(Profile {
                name: name.clone(),
                overlay,
            });
        }
        for required in ["paper", "cpu"] {
            if !profiles.iter().any(|p| p.name == required) {
                return Err(err(
                    &["profiles".into()],
                    format!("profile `{required}` is missing (every experiment has `paper` and `cpu`)"),
                ));
            }
        }

        let check_key = |segs: &[Seg], key: &str| -> Result<()> {
            if key.is_empty() || key.split('.').any(|s| s.is_empty() || s.trim() != s) {
                return Err(err(segs, format!("`{key}` is not a dotted config key")));
            }
            Ok(())
        };

        // Grid.
        let mut columns: Vec<String> = Vec::new();
        let mut grid = Vec::new();
        if let Some(g) = &raw.grid {
            if g.0.is_empty() {
                return Err(err(&["grid".into()], "`grid` is empty".into()));
            }
            for (key, values) in &g.0 {
                let segs: Vec<Seg> = vec!["grid".into(), key.as_str().into()];
                check_key(&segs, key)?;
                if key == "label" {
                    return Err(err(&segs, "`label` belongs in a `zip` group".into()));
                }
                if let Some(other) = columns.iter().find(|c| overlaps(c, key)) {
                    return Err(err(
                        &segs,
                        format!("`{key}` and `{other}` are both varied: one would overwrite the other"),
                    ));
                }
                columns.push(key.clone());
                grid.push(Axis {
                    key: key.clone(),
                    values: values.0.clone(),
                });
            }
        }

        // Zip groups.
        let mut zip = Vec::new();
        if let Some(z) = &raw.zip {
            for (gi, group) in z.0.iter().enumerate() {
                let gsegs: Vec<Seg> = vec!["zip".into(), gi.into()];
                if group.0.is_empty() {
                    return Err(err(&gsegs, "empty `zip` group".into()));
                }
                let mut labels = None;
                let mut keys = Vec::new();
                let mut len: Option<(usize, String)> = None;
                for (key, values) in &group.0 {
                    let segs: Vec<Seg> = vec!["zip".into(), gi.into(), key.as_str().into()];
                    match &len {
                        None => len = Some((values.0.len(), key.clone())),
                        Some((n, first)) if *n != values.0.len() => {
                            return Err(err(&segs, format!(
                                "zip group {gi}: `{key}` has {} values but `{first}` has {n}; the keys of a group are varied together and need equal lengths",
                                values.0.len()
                            )));
                        }
                        _ => {}
                    }
                    if key == "label" {
                        let mut ls = Vec::new();
                        for v in &values.0 {
                            match v {
                                Value::String(s) => ls.push(s.clone()),
                                other => {
                                    return Err(err(
                                        &segs,
                                        format!("labels must be strings, got {}", flow(other)),
                                    ))
                                }
                            }
                        }
                        labels = Some(ls);
                        continue;
                    }
                    check_key(&segs, key)?;
                    if let Some(other) = columns.iter().find(|c| overlaps(c, key)) {
                        let what = if other == key {
                            format!("`{key}` is varied twice (grid or another zip group)")
                        } else {
                            format!(
                                "`{key}` and `{other}` are both varied (grid or another zip group): \
                                 one would overwrite the other"
                            )
                        };
                        return Err(err(&segs, what));
                    }
                    columns.push(key.clone());
                    keys.push(Axis {
                        key: key.clone(),
                        values: values.0.clone(),
                    });
                }
                let len = len.map(|(n, _)| n).unwrap_or(0);
                zip.push(ZipGroup { labels, keys, len });
            }
        }

        let seeds = raw.seeds.as_ref().map(|s| s.0.clone());
        if seeds.is_some() && columns.iter().any(|c| c == "seed") {
            let segs: Vec<Seg> = vec!["seeds".into()];
            return Err(err(
                &segs,
                "`seed` is varied by `grid`/`zip` and by `seeds`".into(),
            ));
        }

        // Exclude entries: keys must be varied.
        let mut exclude = Vec::new();
        if let Some(ex) = &raw.exclude {
            for (i, entry) in ex.0.iter().enumerate() {
                if entry.0.is_empty() {
                    return Err(err(&["exclude".into(), i.into()], "empty `exclude` entry".into()));
                }
                for (key, _) in &entry.0 {
                    let known = key == "label" || key == "seed" || columns.contains(key);
                    if !known {
                        let segs: Vec<Seg> = vec!["exclude".into(), i.into(), key.as_str().into()];
                        return Err(err(
                            &segs,
                            format!(
                                "`{key}` is not varied by this experiment (known: label, seed, {})",
                                columns.join(", ")
                            ),
                        ));
                    }
                }
                exclude.push(entry.0.clone());
            }
        }

        let confirm = match &raw.confirm {
            Some(c) => Some(confirm_spec(c, seeds.as_deref(), &columns, &err)?),
            None => None,
        };

        // Report: the section's own rules, then the named columns must be varied keys.
        let r = &raw.report;
        let report_path = |p: &[String]| -> Vec<Seg> {
            std::iter::once(Seg::from("report"))
                .chain(p.iter().map(|k| Seg::Key(k.clone())))
                .collect()
        };
        r.check().map_err(|e| err(&report_path(&e.path), e.to_string()))?;
        let known_col = |c: &str| c == "label" || c == "seed" || columns.iter().any(|k| k == c);
        for (path, what, c) in r.named() {
            if what == protoclr_formats::report::Names::Column && !known_col(c) {
                let field = format!("report.{}", path.join("."));
                return Err(err(
                    &report_path(&path[..1]),
                    format!(
                        "{field}: unknown column `{c}` (varied keys: {}; or label, seed)",
                        if columns.is_empty() {
                            "none".to_string()
                        } else {
                            columns.join(", ")
                        }
                    ),
                ));
            }
        }

        Ok(Experiment {
            path: path.to_path_buf(),
            name: raw.name,
            description: raw.description,
            base,
            profiles,
            grid,
            zip,
            seeds,
            exclude,
            report: raw.report,
            confirm,
            columns,
            includes,
            text,
        })
    }

    /// The profile named `name`.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.iter().find(|p| p.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.profiles.iter().map(|p| p.name.as_str()).collect();
            at(
                &self.path,
                &self.text,
                &["profiles".into()],
                format!("no profile `{name}` (profiles: {})", names.join(", ")),
            )
        })
    }

    /// An error located at `path` in the experiment file.
    pub fn error_at(&self, path: &[Seg], msg: impl fmt::Display) -> anyhow::Error {
        at(&self.path, &self.text, path, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Experiment> {
        Experiment::parse(Path::new("exp.yaml"), text.to_string())
    }

    const OK: &str = "\
name: t
description: test
base: {loss: {name: balanced}}
profiles:
  cpu: {model.width: 16}
  paper: {}
grid:
  loss.alpha: [0.5, 1]
zip:
  - label: [a, b]
    augment.remove: [[], [crop]]
seeds: [0, 1]
report: {kind: table, title: T, rows: [label], metrics: [linear_top1]}
";

    #[test]
    fn parses_a_valid_file() {
        let e = parse(OK).unwrap();
        assert_eq!(e.columns, vec!["loss.alpha", "augment.remove"]);
        assert_eq!(
            e.zip[0].labels.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(e.seeds, Some(vec![0, 1]));
    }

    fn err_of(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let msg = err_of(&OK.replace("seeds: [0, 1]", "seeds: [0, 1]\nsedes: [2]"));
        assert!(msg.starts_with("exp.yaml:13:1: "), "{msg}");
        assert!(msg.contains("sedes"), "{msg}");
    }

    #[test]
    fn wrong_type_has_line() {
        let msg = err_of(&OK.replace("seeds: [0, 1]", "seeds: [0, x]"));
        assert!(msg.starts_with("exp.yaml:12:"), "{msg}");
        let msg = err_of(&OK.replace("loss.alpha: [0.5, 1]", "loss.alpha: 0.5"));
        assert!(msg.starts_with("exp.yaml:8:"), "{msg}");
    }

    #[test]
    fn empty_list_has_line() {
        let msg = err_of(&OK.replace("loss.alpha: [0.5, 1]", "loss.alpha: []"));
        assert!(msg.starts_with("exp.yaml:8:15: "), "{msg}");
        let msg = err_of(&OK.replace("seeds: [0, 1]", "seeds: []"));
        assert!(msg.starts_with("exp.yaml:12:8: "), "{msg}");
    }

    #[test]
    fn a_key_and_its_prefix_are_not_both_varied() {
        // `augment` (zip) would overwrite the grid's `augment.remove`, or the other way round.
        let text = OK.replace(
            "    augment.remove: [[], [crop]]",
            "    augment: [{}, {remove: [crop]}]",
        );
        let text = text.replace("loss.alpha: [0.5, 1]", "augment.remove: [[], [flip]]");
        let msg = err_of(&text);
        assert!(
            msg.starts_with("exp.yaml:11:5: ")
                && msg.contains("`augment` and `augment.remove` are both varied"),
            "{msg}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // 100,000 nested brackets in the description (about a minute of libyaml's time): refused
        // at once, with the file, line and column.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let msg = err_of(&OK.replace("description: test", &format!("description: {deep}")));
        assert!(
            msg.starts_with("exp.yaml:2:78: ") && msg.contains("nested deeper"),
            "{msg}"
        );
        // The same in an included base file.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("base.yaml"), format!("loss:\n  tau: {deep}\n")).unwrap();
        let exp = tmp.path().join("exp.yaml");
        let text = OK.replace("base: {loss: {name: balanced}}", "base: base.yaml");
        let msg = format!("{:#}", Experiment::parse(&exp, text).unwrap_err());
        assert!(
            msg.contains("base.yaml:2:") && msg.contains("nested deeper"),
            "{msg}"
        );
    }

    #[test]
    fn semantic_errors_are_located() {
        // Zip lengths differ: found after parsing, located by scanning the text.
        let msg = err_of(&OK.replace("augment.remove: [[], [crop]]", "augment.remove: [[]]"));
        assert!(msg.starts_with("exp.yaml:11:5: "), "{msg}");
        assert!(msg.contains("equal lengths"), "{msg}");
        let msg = err_of(&OK.replace("  paper: {}\n", ""));
        assert!(
            msg.starts_with("exp.yaml:4:1: ") && msg.contains("paper"),
            "{msg}"
        );
        let msg = err_of(&OK.replace("seeds: [0, 1]", "seeds: [0, 1]\nexclude:\n  - loss.beta: 1"));
        assert!(
            msg.starts_with("exp.yaml:14:5: ") && msg.contains("loss.beta"),
            "{msg}"
        );
        let msg = err_of(&OK.replace("augment.remove", "loss.alpha"));
        assert!(
            msg.starts_with("exp.yaml:11:5: ") && msg.contains("twice"),
            "{msg}"
        );
        let msg = err_of(&OK.replace("metrics: [linear_top1]", "metrics: [top1]"));
        assert!(msg.starts_with("exp.yaml:13:") && msg.contains("top1"), "{msg}");
    }

    #[test]
    fn names_that_would_leave_the_results_folder_are_refused() {
        // Profile names become `results/<experiment>.<profile>.csv` and Slurm folder names.
        for bad in ["/../../../escaped2", "../up", "a/b", ".hidden", "a\\b"] {
            let text = OK.replace("  paper: {}", &format!("  paper: {{}}\n  {bad:?}: {{}}"));
            let msg = err_of(&text);
            // Located at the key where the locator finds it, else at `profiles`.
            let at = if bad.contains('\\') {
                "exp.yaml:4:1: "
            } else {
                "exp.yaml:7:3: "
            };
            assert!(
                msg.starts_with(at) && msg.contains("profile name"),
                "{bad}: {msg}"
            );
        }
        let msg = err_of(&OK.replace("  paper: {}", "  paper: {}\n  \"debug\\necho INJECTED\": {}"));
        assert!(msg.contains("control character"), "{msg}");
        let msg = err_of(&OK.replace("name: t", "name: ../t"));
        assert!(
            msg.starts_with("exp.yaml:1:1: ") && msg.contains("`name`"),
            "{msg}"
        );
    }

    const CONFIRM: &str =
        "confirm:\n  select:\n    metric: val_linear_top1\n  reference: {loss.alpha: 1}\n  seeds: [10, 11]\n";

    #[test]
    fn confirm_section_parses_with_defaults() {
        let e = parse(&format!("{OK}{CONFIRM}")).unwrap();
        let c = e.confirm.unwrap();
        assert_eq!(c.metric, "val_linear_top1");
        assert!(c.maximize);
        assert!(c.exclude.is_empty());
        assert_eq!(c.seeds, vec![10, 11]);
        assert_eq!(c.reference.len(), 1);
        assert!(parse(OK).unwrap().confirm.is_none());
    }

    #[test]
    fn confirm_seeds_must_be_fresh_and_located() {
        // Line 18 is `  seeds: …` of the confirm section (OK has 13 lines, 14 is `confirm:`).
        let msg = err_of(&format!("{OK}{}", CONFIRM.replace("[10, 11]", "[10, 1]")));
        assert!(msg.starts_with("exp.yaml:18:3: "), "{msg}");
        assert!(msg.contains("fresh") && msg.contains("seed(s) 1 "), "{msg}");
        let msg = err_of(&format!("{OK}{}", CONFIRM.replace("[10, 11]", "[10, 10]")));
        assert!(
            msg.starts_with("exp.yaml:18:3: ") && msg.contains("twice"),
            "{msg}"
        );
        let msg = err_of(&format!("{OK}{}", CONFIRM.replace("[10, 11]", "[10]")));
        assert!(
            msg.starts_with("exp.yaml:18:3: ") && msg.contains("at least 2"),
            "{msg}"
        );
        let msg = err_of(&format!("{}{CONFIRM}", OK.replace("seeds: [0, 1]\n", "")));
        assert!(msg.contains("needs the grid's `seeds`"), "{msg}");
    }

    #[test]
    fn confirm_keys_are_checked() {
        let msg = err_of(&format!(
            "{OK}{}",
            CONFIRM.replace("{loss.alpha: 1}", "{loss.beta: 1}")
        ));
        assert!(
            msg.starts_with("exp.yaml:17:3: ") && msg.contains("loss.beta"),
            "{msg}"
        );
        let msg = err_of(&format!(
            "{OK}{}",
            CONFIRM.replace("{loss.alpha: 1}", "{seed: 1}")
        ));
        assert!(msg.contains("`seed` is not varied"), "{msg}");
        let msg = err_of(&format!(
            "{OK}{}",
            CONFIRM.replace("metric: val_linear_top1", "metric: eval.val")
        ));
        assert!(
            msg.starts_with("exp.yaml:16:5: ") && msg.contains("flat key"),
            "{msg}"
        );
        let msg = err_of(&format!("{OK}{}", CONFIRM.replace("  seeds", "  sedes")));
        assert!(msg.contains("sedes"), "{msg}");
        let msg = err_of(&format!(
            "{OK}{}",
            CONFIRM.replace(
                "val_linear_top1\n",
                "val_linear_top1\n    exclude:\n      - {loss.gamma: 1}\n"
            )
        ));
        assert!(
            msg.starts_with("exp.yaml:18:7: ") && msg.contains("loss.gamma"),
            "{msg}"
        );
    }
}

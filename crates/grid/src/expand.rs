//! Expansion of an experiment into cells: grid (cartesian) × zip groups × seeds − exclude.

use crate::locate::Seg;
use crate::spec::Experiment;
use crate::value::{merge, same, set_dotted};
use anyhow::Result;
use serde_norway::Value;

/// One cell before resolution: its partial config and the values that identify it in the index.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSpec {
    /// The varied keys' values, in the experiment's column order.
    pub assignments: Vec<(String, Value)>,
    /// Labels of the zip entries, joined by ", " (None when no group has labels).
    pub label: Option<String>,
    /// The seed set by `seeds` (None when the experiment has no `seeds`).
    pub seed: Option<u64>,
    /// base ⊕ profile ⊕ assignments ⊕ seed.
    pub partial: Value,
}

impl CellSpec {
    /// The value of an index column (`label`, `seed` or a varied key) for `exclude` matching.
    pub fn column(&self, key: &str) -> Option<Value> {
        match key {
            "label" => self.label.clone().map(Value::String),
            "seed" => self.seed.map(|s| Value::Number(s.into())),
            _ => self
                .assignments
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()),
        }
    }
}

/// Indices of a mixed-radix counter over `radices` (first digit slowest); one empty combination
/// when `radices` is empty.
fn odometer(radices: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = radices.iter().product();
    (0..total)
        .map(|mut n| {
            let mut digits = vec![0; radices.len()];
            for i in (0..radices.len()).rev() {
                digits[i] = n % radices[i];
                n /= radices[i];
            }
            digits
        })
        .collect()
}

/// Expands the experiment for `profile`, in order (grid keys slowest first, then zip groups, then
/// seeds), without the excluded cells.
pub fn expand(exp: &Experiment, profile: &str) -> Result<Vec<CellSpec>> {
    let start = profile_start(exp, profile)?;

    let mut radices: Vec<usize> = exp.grid.iter().map(|a| a.values.len()).collect();
    radices.extend(exp.zip.iter().map(|g| g.len));
    let seeds: Vec<Option<u64>> = match &exp.seeds {
        Some(s) => s.iter().map(|&s| Some(s)).collect(),
        None => vec![None],
    };

    let mut cells = Vec::new();
    for digits in odometer(&radices) {
        let mut assignments = Vec::new();
        let mut labels = Vec::new();
        for (axis, &d) in exp.grid.iter().zip(&digits) {
            assignments.push((axis.key.clone(), axis.values[d].clone()));
        }
        for (group, &d) in exp.zip.iter().zip(&digits[exp.grid.len()..]) {
            for axis in &group.keys {
                assignments.push((axis.key.clone(), axis.values[d].clone()));
            }
            if let Some(ls) = &group.labels {
                labels.push(ls[d].clone());
            }
        }
        let label = (!labels.is_empty()).then(|| labels.join(", "));
        for &seed in &seeds {
            cells.push(cell_spec(exp, &start, &assignments, label.clone(), seed)?);
        }
    }

    // Exclusions: every entry must match at least one cell.
    let mut matched = vec![false; exp.exclude.len()];
    cells.retain(|cell| {
        let mut keep = true;
        for (i, entry) in exp.exclude.iter().enumerate() {
            let hit = entry
                .iter()
                .all(|(k, v)| cell.column(k).is_some_and(|cv| same(&cv, v)));
            if hit {
                matched[i] = true;
                keep = false;
            }
        }
        keep
    });
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(exp.error_at(
            &["exclude".into(), i.into()],
            format!("exclude entry {i} matches no cell of profile `{profile}`"),
        ));
    }
    Ok(cells)
}

/// base ⊕ profile overlay: the start of every cell of `profile`.
pub fn profile_start(exp: &Experiment, profile: &str) -> Result<Value> {
    let prof = exp.profile(profile)?;
    let mut start = exp.base.clone();
    merge(&mut start, &prof.overlay)
        .map_err(|e| exp.error_at(&["profiles".into(), profile.into()], format!("{e:#}")))?;
    Ok(start)
}

/// One cell: `start` (see [`profile_start`]) ⊕ the assignments ⊕ the seed (when given). Used by
/// the expansion and by the confirmation stage, so that a configuration on a fresh seed is built
/// exactly as on a grid seed.
pub fn cell_spec(
    exp: &Experiment,
    start: &Value,
    assignments: &[(String, Value)],
    label: Option<String>,
    seed: Option<u64>,
) -> Result<CellSpec> {
    let mut partial = start.clone();
    for (gi, (k, v)) in assignments.iter().enumerate() {
        set_dotted(&mut partial, k, v.clone()).map_err(|e| {
            let segs = locate_key(exp, k).unwrap_or_else(|| vec!["grid".into(), gi.into()]);
            exp.error_at(&segs, format!("{e:#}"))
        })?;
    }
    if let Some(s) = seed {
        set_dotted(&mut partial, "seed", Value::Number(s.into()))
            .map_err(|e| exp.error_at(&["seeds".into()], format!("{e:#}")))?;
    }
    Ok(CellSpec {
        assignments: assignments.to_vec(),
        label,
        seed,
        partial,
    })
}

/// The path of a varied key in the experiment file (`grid.KEY` or `zip[i].KEY`).
pub fn locate_key(exp: &Experiment, key: &str) -> Option<Vec<Seg>> {
    if exp.grid.iter().any(|a| a.key == key) {
        return Some(vec!["grid".into(), key.into()]);
    }
    exp.zip
        .iter()
        .position(|g| g.keys.iter().any(|a| a.key == key))
        .map(|i| vec!["zip".into(), i.into(), key.into()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn exp(text: &str) -> Experiment {
        Experiment::parse(Path::new("e.yaml"), text.to_string()).unwrap()
    }

    const TEXT: &str = "\
name: t
description: test
base: {loss.name: balanced}
profiles: {cpu: {model.width: 16}, paper: {model.width: 64}}
grid:
  loss.alpha: [0.5, 1, 1.5]
  loss.lambda: [0.5, 1]
zip:
  - label: [base, base − crop]
    augment.remove: [[], [crop]]
seeds: [0, 1, 2]
report: {kind: heatmap, title: T, x: loss.alpha, y: loss.lambda, value: linear_top1}
";

    #[test]
    fn counts_and_order() {
        let e = exp(TEXT);
        let cells = expand(&e, "cpu").unwrap();
        assert_eq!(cells.len(), 3 * 2 * 2 * 3);
        // Seeds innermost, then zip, grid keys slowest first.
        assert_eq!(cells[0].seed, Some(0));
        assert_eq!(cells[1].seed, Some(1));
        assert_eq!(cells[3].label.as_deref(), Some("base − crop"));
        assert_eq!(crate::value::flow(&cells[3].assignments[2].1), "[crop]");
        assert_eq!(crate::value::flow(&cells[6].assignments[1].1), "1");
        assert_eq!(crate::value::flow(&cells[12].assignments[0].1), "1");
        let p = &cells[3].partial;
        assert_eq!(
            crate::value::get_dotted(p, "model.width"),
            Some(&Value::Number(16.into()))
        );
        assert_eq!(
            crate::value::get_dotted(p, "loss.name"),
            Some(&Value::String("balanced".into()))
        );
        assert_eq!(
            crate::value::get_dotted(p, "seed"),
            Some(&Value::Number(0.into()))
        );
        let paper = expand(&e, "paper").unwrap();
        assert_eq!(
            crate::value::get_dotted(&paper[0].partial, "model.width"),
            Some(&Value::Number(64.into()))
        );
    }

    #[test]
    fn exclude_removes_matching_cells_with_normalised_numbers() {
        let text = TEXT.replace(
            "seeds: [0, 1, 2]\n",
            "seeds: [0, 1, 2]\nexclude:\n  - {loss.alpha: 1.0, loss.lambda: 5e-1}\n  - {label: base − crop, seed: 2}\n",
        );
        let cells = expand(&exp(&text), "cpu").unwrap();
        // −(1 α·λ combination × 2 zip × 3 seeds) − (5 remaining α·λ × 1 seed), the overlap counted once.
        assert_eq!(cells.len(), 36 - 6 - 5);
        let bad = text.replace("loss.lambda: 5e-1", "loss.lambda: 7");
        let err = format!("{:#}", expand(&exp(&bad), "cpu").unwrap_err());
        assert!(
            err.starts_with("e.yaml:13:3: ") && err.contains("matches no cell"),
            "{err}"
        );
    }

    #[test]
    fn no_grid_means_one_cell_per_seed() {
        let text = "name: t\ndescription: d\nprofiles: {cpu: {}, paper: {}}\nseeds: [3, 4]\nreport: {kind: table, title: T, rows: [seed], metrics: [knn_top1]}\n";
        let cells = expand(&exp(text), "cpu").unwrap();
        assert_eq!(cells.len(), 2);
        assert!(cells
            .iter()
            .all(|c| c.label.is_none() && c.assignments.is_empty()));
        let text = text.replace("seeds: [3, 4]\n", "");
        assert_eq!(expand(&exp(&text), "paper").unwrap().len(), 1);
    }
}

//! The confirmation stage: one pre-registered comparison, on fresh seeds, of the configuration
//! the grid selects with a reference configuration.
//!
//! An experiment with a `confirm:` section ([`ConfirmSpec`]) has two stages:
//! 1. the grid, as without the section (adding the section changes no grid cell or id);
//! 2. once every grid cell is finished (done or diverged; a failed cell blocks the stage until it
//!    is retried), the **selection**: among the configurations (the grid cells that share their
//!    label and varied values, one per seed), leaving out the reference and every configuration
//!    matching an entry of `confirm.select.exclude` or that diverged on a grid seed, the one with
//!    the best mean over the grid's seeds of `eval.<metric>` in the cells' `metrics.json`
//!    (`maximize: false`: the lowest). Ties (equal means) go to the configuration first in the
//!    expansion order. A done cell without a finite `eval.<metric>` is an error naming the cell,
//!    its file and the `metric` key. The selection is written atomically to
//!    `results/<name>.<profile>.selection.json` ([`Selection`], `docs/formats.md`) with every value
//!    it used;
//! 3. the **confirmation cells**: the candidate and the reference on each of `confirm.seeds`
//!    (seed-major: candidate then reference for each seed, so a part-run stage has whole pairs),
//!    built like grid cells (same base, profile and varied values, only `seed` differs), cached
//!    like them, listed in `results/<name>.<profile>.confirm.csv` and numbered after the grid's
//!    cells (`grid run-cell --index`).
//!
//! A written selection is reused as it is (deterministic, cached). It records its input: the
//! sorted ids of every grid cell and the canonical text of the rule (metric, direction,
//! reference, exclusions). If either differs from the current experiment (the grid, the code's
//! cell format, the dataset or the rule changed), the selection is **stale**: the stage waits
//! until the new grid is finished, then selects again and replaces the file (the old
//! confirmation cells stay in the cache under their ids). Changing only `confirm.seeds` keeps the
//! selection.

use crate::cache::{CellState, Results};
use crate::expand::{cell_spec, profile_start};
use crate::locate::Seg;
use crate::plan::{resolve_cells, Arm, Cell, Plan, Stage};
use crate::spec::ConfirmSpec;
use crate::value::{canonical, flow, same};
use crate::Backend;
use anyhow::{anyhow, Context, Result};
use protoclr_formats::fsutil::atomic_write;
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
use std::path::Path;

/// Version of the selection file's layout; a file of another version is stale.
pub const SELECTION_FORMAT: u32 = 1;

/// A configuration of the grid: its cells (one per seed), in expansion order.
#[derive(Debug, Clone)]
pub struct Configuration<'a> {
    pub cells: Vec<&'a Cell>,
}

impl<'a> Configuration<'a> {
    fn first(&self) -> &'a Cell {
        self.cells[0]
    }

    /// Whether every key of `entry` (`label` or a varied key) has the entry's value here.
    pub fn matches(&self, entry: &[(String, Value)]) -> bool {
        let spec = &self.first().spec;
        entry
            .iter()
            .all(|(k, v)| spec.column(k).is_some_and(|cv| same(&cv, v)))
    }

    /// `label k=v …` (no seed).
    pub fn describe(&self) -> String {
        let spec = &self.first().spec;
        let mut parts: Vec<String> = spec.label.iter().cloned().collect();
        parts.extend(spec.assignments.iter().map(|(k, v)| format!("{k}={}", flow(v))));
        if parts.is_empty() {
            "default".into()
        } else {
            parts.join(" ")
        }
    }

    fn values(&self) -> serde_json::Map<String, serde_json::Value> {
        self.first()
            .spec
            .assignments
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
    }
}

/// The configurations of a plan in order of first appearance.
pub fn configurations(plan: &Plan) -> Vec<Configuration<'_>> {
    let mut keys: Vec<String> = Vec::new();
    let mut out: Vec<Configuration> = Vec::new();
    for cell in &plan.cells {
        let mut m = Mapping::new();
        for (k, v) in &cell.spec.assignments {
            m.insert(Value::String(k.clone()), v.clone());
        }
        let key = format!("{:?}|{}", cell.spec.label, canonical(&Value::Mapping(m)));
        match keys.iter().position(|k| *k == key) {
            Some(i) => out[i].cells.push(cell),
            None => {
                keys.push(key);
                out.push(Configuration { cells: vec![cell] });
            }
        }
    }
    out
}

/// What each configuration is for the selection.
struct Roles {
    reference: usize,
    /// Per configuration: `Some(i)` when it matches `confirm.select.exclude[i]` (first match).
    excluded: Vec<Option<usize>>,
}

fn roles(plan: &Plan, configs: &[Configuration], spec: &ConfirmSpec) -> Result<Roles> {
    let exp = &plan.experiment;
    let matching: Vec<usize> = (0..configs.len())
        .filter(|&i| configs[i].matches(&spec.reference))
        .collect();
    let at_ref: Vec<Seg> = vec!["confirm".into(), "reference".into()];
    let reference = match matching[..] {
        [one] => one,
        [] => {
            return Err(exp.error_at(
                &at_ref,
                format!(
                    "`confirm.reference` matches no configuration of profile `{}`",
                    plan.profile
                ),
            ))
        }
        _ => {
            let names: Vec<String> = matching.iter().map(|&i| configs[i].describe()).collect();
            return Err(exp.error_at(
                &at_ref,
                format!(
                    "`confirm.reference` matches {} configurations ({}); name more keys so that it matches one",
                    names.len(),
                    names.join("; ")
                ),
            ));
        }
    };
    let mut excluded = vec![None; configs.len()];
    for (e, entry) in spec.exclude.iter().enumerate() {
        let mut hit = false;
        for (i, c) in configs.iter().enumerate() {
            if c.matches(entry) {
                hit = true;
                excluded[i].get_or_insert(e);
            }
        }
        if !hit {
            return Err(exp.error_at(
                &["confirm".into(), "select".into(), "exclude".into(), e.into()],
                format!(
                    "`confirm.select.exclude` entry {e} matches no configuration of profile `{}`",
                    plan.profile
                ),
            ));
        }
    }
    if (0..configs.len()).all(|i| i == reference || excluded[i].is_some()) {
        return Err(exp.error_at(
            &["confirm".into(), "select".into()],
            "no configuration is left to select: every one is the reference or excluded".to_string(),
        ));
    }
    Ok(Roles { reference, excluded })
}

/// Checks a `confirm:` section against the grid's configurations (when the plan is built, so
/// that a typo surfaces before the grid runs): the reference names exactly one configuration,
/// every exclusion at least one, and a candidate is left.
pub fn check(plan: &Plan, spec: &ConfirmSpec) -> Result<()> {
    roles(plan, &configurations(plan), spec).map(|_| ())
}

/// Orders configurations by their means, best first; ties keep the given (expansion) order.
/// Pure, so the selection rule can be tested and simulated on its own.
pub fn rank(means: &[f64], maximize: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..means.len()).collect();
    if maximize {
        order.sort_by(|&a, &b| means[b].total_cmp(&means[a]));
    } else {
        order.sort_by(|&a, &b| means[a].total_cmp(&means[b]));
    }
    order
}

/// One grid cell's selection value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellValue {
    pub cell_id: String,
    pub seed: Option<u64>,
    /// `eval.<metric>` (None: not done, or absent for the reference).
    pub value: Option<f64>,
}

/// A configuration in the selection file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// `label k=v …`.
    pub describe: String,
    pub label: Option<String>,
    /// The varied keys' values.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Mean of `value` over the grid seeds (None when a value is missing).
    pub mean: Option<f64>,
    pub cells: Vec<CellValue>,
    /// Why the configuration was not eligible (ineligible ones only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// `results/<name>.<profile>.selection.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub format: u32,
    pub experiment: String,
    pub profile: String,
    /// Canonical text of the rule (metric, maximize, reference, exclude).
    pub rule: String,
    pub metric: String,
    pub maximize: bool,
    pub grid_seeds: Vec<u64>,
    /// The input: sorted distinct ids of every grid cell.
    pub grid_cells: Vec<String>,
    /// The selected configuration (= `ranking[0]`).
    pub candidate: Choice,
    pub reference: Choice,
    /// Every eligible configuration, best first.
    pub ranking: Vec<Choice>,
    /// Excluded and diverged configurations, with why.
    pub ineligible: Vec<Choice>,
}

/// Canonical text of the selection rule.
pub fn rule_text(spec: &ConfirmSpec) -> String {
    let entry = |e: &[(String, Value)]| {
        let mut m = Mapping::new();
        for (k, v) in e {
            m.insert(Value::String(k.clone()), v.clone());
        }
        Value::Mapping(m)
    };
    let mut m = Mapping::new();
    m.insert("metric".into(), Value::String(spec.metric.clone()));
    m.insert("maximize".into(), Value::Bool(spec.maximize));
    m.insert("reference".into(), entry(&spec.reference));
    m.insert(
        "exclude".into(),
        Value::Sequence(spec.exclude.iter().map(|e| entry(e)).collect()),
    );
    canonical(&Value::Mapping(m))
}

/// Sorted distinct ids of a plan's cells.
pub fn cell_ids(plan: &Plan) -> Vec<String> {
    let mut ids: Vec<String> = plan.cells.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Reads `eval.<metric>` of a done cell: a finite number, else an error naming the cell, its
/// metrics.json and the `metric` key of the experiment file.
fn metric_of(plan: &Plan, results: &Results, cell: &Cell, metric: &str) -> Result<f64> {
    let path = results.cell_dir(&cell.id).join("metrics.json");
    let v = results
        .metrics(&cell.id)
        .and_then(|m| m.get("eval")?.get(metric)?.as_f64())
        .filter(|x| x.is_finite());
    v.ok_or_else(|| {
        plan.experiment.error_at(
            &["confirm".into(), "select".into(), "metric".into()],
            format!(
                "cell {} ({}): {} has no finite `eval.{metric}`; the selection needs it on every \
                 eligible grid cell (a cell trained by an older protoclr lacks new metrics: remove its folder \
                 to train it again, or choose another metric)",
                cell.id,
                cell.describe(),
                path.display()
            ),
        )
    })
}

/// Selects the candidate from a finished grid (see the module doc). Errors if a grid cell is not
/// finished, or an eligible done cell lacks the metric.
pub fn select(plan: &Plan, results: &Results, spec: &ConfirmSpec) -> Result<Selection> {
    let configs = configurations(plan);
    let roles = roles(plan, &configs, spec)?;
    let mut eligible: Vec<Choice> = Vec::new();
    let mut ineligible = Vec::new();
    let mut reference = None;
    for (i, conf) in configs.iter().enumerate() {
        let mut choice = Choice {
            describe: conf.describe(),
            label: conf.first().spec.label.clone(),
            values: conf.values(),
            mean: None,
            cells: Vec::new(),
            why: None,
        };
        let is_ref = i == roles.reference;
        let mut diverged = None;
        for cell in &conf.cells {
            let value = match results.recorded_state(&cell.id) {
                CellState::Done(_) if is_ref => results
                    .metrics(&cell.id)
                    .and_then(|m| m.get("eval")?.get(&spec.metric)?.as_f64())
                    .filter(|x| x.is_finite()),
                CellState::Done(_) if roles.excluded[i].is_some() => None,
                CellState::Done(_) => Some(metric_of(plan, results, cell, &spec.metric)?),
                CellState::Diverged(_) => {
                    diverged.get_or_insert(format!(
                        "diverged on seed {} (cell {})",
                        cell.seed_text(),
                        cell.short()
                    ));
                    None
                }
                other => {
                    return Err(anyhow!(
                        "{}.{}: cell {} ({}) is {}: the selection needs every grid cell finished",
                        plan.experiment.name,
                        plan.profile,
                        cell.id,
                        cell.describe(),
                        other.word()
                    ))
                }
            };
            choice.cells.push(CellValue {
                cell_id: cell.id.clone(),
                seed: cell.spec.seed,
                value,
            });
        }
        let values: Option<Vec<f64>> = choice.cells.iter().map(|c| c.value).collect();
        choice.mean = values.map(|v| v.iter().sum::<f64>() / v.len() as f64);
        if is_ref {
            reference = Some(choice);
        } else if let Some(e) = roles.excluded[i] {
            choice.why = Some(format!("excluded by `confirm.select.exclude` entry {e}"));
            ineligible.push(choice);
        } else if let Some(d) = diverged {
            choice.why = Some(d);
            ineligible.push(choice);
        } else {
            eligible.push(choice);
        }
    }
    let means: Vec<f64> = eligible
        .iter()
        .map(|c| c.mean.expect("every eligible cell has a value"))
        .collect();
    let order = rank(&means, spec.maximize);
    let ranking: Vec<Choice> = order.iter().map(|&i| eligible[i].clone()).collect();
    let candidate = ranking.first().cloned().ok_or_else(|| {
        anyhow!(
            "{}.{}: no configuration can be selected: every candidate diverged or is excluded",
            plan.experiment.name,
            plan.profile
        )
    })?;
    Ok(Selection {
        format: SELECTION_FORMAT,
        experiment: plan.experiment.name.clone(),
        profile: plan.profile.clone(),
        rule: rule_text(spec),
        metric: spec.metric.clone(),
        maximize: spec.maximize,
        grid_seeds: plan.experiment.seeds.clone().unwrap_or_default(),
        grid_cells: cell_ids(plan),
        candidate,
        reference: reference.expect("roles found the reference"),
        ranking,
        ineligible,
    })
}

/// Why a written selection does not belong to the current grid and rule (None: it does).
pub fn stale_reason(sel: &Selection, plan: &Plan, spec: &ConfirmSpec) -> Option<String> {
    if sel.format != SELECTION_FORMAT {
        return Some(format!(
            "format {} (this protoclr writes {SELECTION_FORMAT})",
            sel.format
        ));
    }
    if sel.experiment != plan.experiment.name || sel.profile != plan.profile {
        return Some(format!("made for {}.{}", sel.experiment, sel.profile));
    }
    if sel.rule != rule_text(spec) {
        return Some(format!("made with another rule ({})", sel.rule));
    }
    let ids = cell_ids(plan);
    if sel.grid_cells != ids {
        let changed = ids.iter().filter(|id| !sel.grid_cells.contains(id)).count();
        return Some(format!(
            "made from other grid cells ({changed} of the {} current cells are not among its {})",
            ids.len(),
            sel.grid_cells.len()
        ));
    }
    None
}

/// Reads a selection file; None when absent. An unreadable file is an error naming it.
pub fn read_selection(path: &Path) -> Result<Option<Selection>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        anyhow!(
            "{}: not a selection file ({e}); it is written by `protoclr grid run` — delete it to select again",
            path.display()
        )
    })
}

/// Writes a selection file atomically.
pub fn write_selection(path: &Path, sel: &Selection) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(sel)?;
    bytes.push(b'\n');
    atomic_write(path, &bytes)
}

/// The confirmation cells of a selection: candidate and reference on every `confirm.seeds`,
/// seed-major, numbered after the grid's cells.
pub fn confirm_plan(main: &Plan, sel: &Selection, backend: &dyn Backend) -> Result<Plan> {
    let exp = &main.experiment;
    let spec = exp
        .confirm
        .as_ref()
        .context("the experiment has no `confirm:` section")?;
    let find = |c: &Choice| -> Result<&Cell> {
        let id = c.cells.first().map(|v| v.cell_id.as_str()).unwrap_or("");
        main.cells
            .iter()
            .find(|x| x.id == id)
            .with_context(|| format!("the selection's cell {id} is not a grid cell"))
    };
    let candidate = find(&sel.candidate)?;
    let reference = find(&sel.reference)?;
    let start = profile_start(exp, &main.profile)?;
    let mut specs = Vec::new();
    for &seed in &spec.seeds {
        for (arm, cell) in [(Arm::Candidate, candidate), (Arm::Reference, reference)] {
            let s = cell_spec(
                exp,
                &start,
                &cell.spec.assignments,
                cell.spec.label.clone(),
                Some(seed),
            )?;
            specs.push((s, Some(arm)));
        }
    }
    let cells = resolve_cells(exp, &main.profile, backend, specs, main.cells.len())?;
    Ok(Plan {
        experiment: exp.clone(),
        profile: main.profile.clone(),
        cells,
        stage: Stage::Confirm,
    })
}

/// How the selection of a ready stage came about.
#[derive(Debug, Clone, PartialEq)]
pub enum Made {
    /// Read from the selection file.
    Reused,
    /// Made now (and written, when asked to).
    New,
    /// Made now, replacing a stale file (why it was stale).
    Replaced(String),
}

/// Where the confirmation stage stands.
#[derive(Debug, Clone)]
pub enum StageState {
    /// The grid is not finished: `unfinished` cells pending or running, `failed` failed (they
    /// block the selection until retried). `stale`: why an existing selection file is out of date.
    Waiting {
        unfinished: usize,
        failed: usize,
        stale: Option<String>,
    },
    /// The selection exists; `plan` holds the confirmation cells.
    Ready {
        plan: Box<Plan>,
        selection: Box<Selection>,
        made: Made,
    },
}

/// The confirmation stage of `main` (None: the experiment has none). Reuses a current selection
/// file; else, when the grid is finished, selects and (with `write`) writes the file.
pub fn stage(
    main: &Plan,
    results: &Results,
    backend: &dyn Backend,
    write: bool,
) -> Result<Option<StageState>> {
    let Some(spec) = &main.experiment.confirm else {
        return Ok(None);
    };
    let path = results.selection_path(&main.experiment.name, &main.profile);
    let existing = read_selection(&path)?;
    let stale = match &existing {
        Some(sel) => match stale_reason(sel, main, spec) {
            None => {
                let plan = confirm_plan(main, sel, backend)?;
                return Ok(Some(StageState::Ready {
                    plan: Box::new(plan),
                    selection: Box::new(sel.clone()),
                    made: Made::Reused,
                }));
            }
            Some(why) => Some(why),
        },
        None => None,
    };
    let (mut unfinished, mut failed) = (0, 0);
    for cell in main.unique() {
        match results.state(&cell.id) {
            CellState::Done(_) | CellState::Diverged(_) => {}
            CellState::Failed(_) => failed += 1,
            CellState::Running(_) | CellState::Pending(_) => unfinished += 1,
        }
    }
    if unfinished + failed > 0 {
        return Ok(Some(StageState::Waiting {
            unfinished,
            failed,
            stale,
        }));
    }
    let sel = select(main, results, spec)?;
    if write {
        write_selection(&path, &sel)?;
    }
    let plan = confirm_plan(main, &sel, backend)?;
    Ok(Some(StageState::Ready {
        plan: Box::new(plan),
        selection: Box::new(sel),
        made: match stale {
            Some(why) => Made::Replaced(why),
            None => Made::New,
        },
    }))
}

/// One line about the selection: candidate, its mean, the reference.
pub fn selection_line(sel: &Selection) -> String {
    format!(
        "{}.{}: candidate {} (mean {} = {} over grid seeds {:?}, best of {} eligible configurations) vs reference {}",
        sel.experiment,
        sel.profile,
        sel.candidate.describe,
        sel.metric,
        sel.candidate.mean.map(|m| format!("{m}")).unwrap_or_default(),
        sel.grid_seeds,
        sel.ranking.len(),
        sel.reference.describe
    )
}

/// One line about a stage that waits.
pub fn waiting_line(plan: &Plan, unfinished: usize, failed: usize, stale: Option<&str>) -> String {
    let mut s = format!(
        "{}.{}: the confirmation stage waits for the grid ({unfinished} cells pending or running, {failed} failed{})",
        plan.experiment.name,
        plan.profile,
        if failed > 0 {
            "; rerun with --retry-failed"
        } else {
            ""
        }
    );
    if let Some(why) = stale {
        s.push_str(&format!(
            "; the existing selection is stale ({why}) and is replaced once the grid is finished"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Outcome, StatusFile};
    use crate::spec::Experiment;

    /// Resolution is the identity; one dataset.
    struct Ident;

    impl Backend for Ident {
        fn resolve(&self, partial: Value, _origin: &str) -> Result<Value> {
            Ok(partial)
        }
        fn fingerprint(&self, _resolved: &Value) -> Result<String> {
            Ok("fp".into())
        }
        fn numerics_version(&self) -> u32 {
            2
        }
        fn train_command(&self, _c: &Path, _k: &Path, _t: usize) -> std::process::Command {
            std::process::Command::new("false")
        }
    }

    const TEXT: &str = "\
name: t
description: test
profiles: {cpu: {}, paper: {}}
grid:
  a: [0.5, 1, 1.5]
  l: [0.5, 1]
seeds: [0, 1]
report: {kind: heatmap, title: T, x: a, y: l, value: linear_top1}
confirm:
  select:
    metric: val_linear_top1
  reference: {a: 1, l: 1}
  seeds: [10, 11, 12]
";

    fn plan_of(text: &str) -> Plan {
        let e = Experiment::parse(Path::new("e.yaml"), text.to_string()).unwrap();
        Plan::build(&e, "cpu", &Ident).unwrap()
    }

    /// Records a finished cell with `eval` (None: diverged).
    fn finish(r: &Results, cell: &Cell, eval: Option<serde_json::Value>) {
        let dir = r.cell_dir(&cell.id);
        atomic_write(&dir.join("config.yaml"), b"x: 1\n").unwrap();
        let (status, outcome) = match &eval {
            Some(_) => ("completed", Outcome::Done),
            None => ("diverged", Outcome::Diverged),
        };
        let m = serde_json::json!({"status": status, "eval": eval});
        atomic_write(&dir.join("metrics.json"), m.to_string().as_bytes()).unwrap();
        let st = StatusFile {
            status: outcome,
            metrics_sha256: None,
            config_sha256: None,
            cell_format_version: 0,
            exit_code: Some(0),
            signal: None,
            error: None,
            runner_wall_s: None,
            finished_unix: 0,
            host: String::new(),
        };
        r.write_status(&cell.id, st).unwrap();
    }

    fn val(a: f64, l: f64, seed: u64) -> f64 {
        // 60 + 5a, + 2 when l < 1, ± 0.5 by seed: (1.5, 0.5) is the best, mean 69.5.
        let base = 60.0 + 5.0 * a + if l < 1.0 { 2.0 } else { 0.0 };
        base + if seed == 0 { 0.5 } else { -0.5 }
    }

    fn finish_grid(r: &Results, plan: &Plan, f: impl Fn(f64, f64, u64) -> Option<f64>) {
        for c in &plan.cells {
            let num = |k: &str| {
                crate::value::get_dotted(&c.spec.partial, k)
                    .and_then(Value::as_f64)
                    .unwrap()
            };
            let v = f(num("a"), num("l"), c.spec.seed.unwrap());
            let eval = v.map(|v| serde_json::json!({"val_linear_top1": v, "linear_top1": v - 1.0}));
            finish(r, c, eval);
        }
    }

    #[test]
    fn selects_the_best_mean_and_never_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let r = Results::new(dir.path());
        // The reference is by far the best on the grid: it must not be selected.
        let plan = plan_of(TEXT);
        finish_grid(&r, &plan, |a, l, s| {
            Some(if a == 1.0 && l == 1.0 { 99.0 } else { val(a, l, s) })
        });
        let sel = select(&plan, &r, plan.experiment.confirm.as_ref().unwrap()).unwrap();
        assert_eq!(sel.candidate.describe, "a=1.5 l=0.5");
        assert_eq!(sel.candidate.mean, Some(69.5));
        assert_eq!(sel.reference.describe, "a=1 l=1");
        assert_eq!(sel.reference.mean, Some(99.0));
        assert_eq!(sel.ranking.len(), 5);
        let means: Vec<f64> = sel.ranking.iter().map(|c| c.mean.unwrap()).collect();
        assert!(means.windows(2).all(|w| w[0] >= w[1]), "{means:?}");
        assert_eq!(sel.candidate.cells.len(), 2);
        assert_eq!(sel.candidate.cells[0].value, Some(70.0));
        assert_eq!(sel.grid_cells.len(), 12);
        // Lower is better.
        let min = plan_of(&TEXT.replace(
            "metric: val_linear_top1",
            "metric: val_linear_top1\n    maximize: false",
        ));
        let sel = select(&min, &r, min.experiment.confirm.as_ref().unwrap()).unwrap();
        assert_eq!(sel.candidate.describe, "a=0.5 l=1");
    }

    #[test]
    fn ties_exclusions_and_divergence() {
        let dir = tempfile::tempdir().unwrap();
        let r = Results::new(dir.path());
        let text = TEXT.replace(
            "    metric: val_linear_top1\n",
            "    metric: val_linear_top1\n    exclude:\n      - {a: 1.5, l: 0.5}\n",
        );
        let plan = plan_of(&text);
        // Every configuration ties at 50 except the excluded one (90) and a diverged one (95 on
        // seed 0, diverged on seed 1).
        finish_grid(&r, &plan, |a, l, s| match (a, l, s) {
            (1.5, 0.5, _) => Some(90.0),
            (1.5, 1.0, 0) => Some(95.0),
            (1.5, 1.0, _) => None,
            _ => Some(50.0),
        });
        let sel = select(&plan, &r, plan.experiment.confirm.as_ref().unwrap()).unwrap();
        // The first configuration in expansion order wins the tie.
        assert_eq!(sel.candidate.describe, "a=0.5 l=0.5");
        assert_eq!(sel.ranking.len(), 3);
        let why: Vec<(&str, &str)> = sel
            .ineligible
            .iter()
            .map(|c| (c.describe.as_str(), c.why.as_deref().unwrap()))
            .collect();
        assert_eq!(why.len(), 2);
        assert_eq!(
            why[0],
            ("a=1.5 l=0.5", "excluded by `confirm.select.exclude` entry 0")
        );
        assert!(
            why[1].0 == "a=1.5 l=1" && why[1].1.starts_with("diverged on seed 1"),
            "{why:?}"
        );
    }

    #[test]
    fn a_missing_metric_is_a_located_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = Results::new(dir.path());
        let plan = plan_of(TEXT);
        finish_grid(&r, &plan, |a, l, s| Some(val(a, l, s)));
        let victim = &plan.cells[3];
        finish(&r, victim, Some(serde_json::json!({"linear_top1": 50.0})));
        let err = format!(
            "{:#}",
            select(&plan, &r, plan.experiment.confirm.as_ref().unwrap()).unwrap_err()
        );
        assert!(err.starts_with("e.yaml:11:5: "), "{err}");
        assert!(
            err.contains(&victim.id) && err.contains("eval.val_linear_top1"),
            "{err}"
        );
        // An unfinished cell is an error too (stage() checks first and waits instead).
        std::fs::remove_dir_all(r.cell_dir(&victim.id)).unwrap();
        let err = format!(
            "{:#}",
            select(&plan, &r, plan.experiment.confirm.as_ref().unwrap()).unwrap_err()
        );
        assert!(err.contains("is pending"), "{err}");
    }

    #[test]
    fn the_reference_and_exclusions_must_name_configurations() {
        let build = |t: &str| {
            let e = Experiment::parse(Path::new("e.yaml"), t.to_string()).unwrap();
            format!("{:#}", Plan::build(&e, "cpu", &Ident).unwrap_err())
        };
        let err = build(&TEXT.replace("reference: {a: 1, l: 1}", "reference: {a: 2, l: 1}"));
        assert!(
            err.starts_with("e.yaml:12:3: ") && err.contains("matches no configuration"),
            "{err}"
        );
        let err = build(&TEXT.replace("reference: {a: 1, l: 1}", "reference: {a: 1}"));
        assert!(
            err.starts_with("e.yaml:12:3: ") && err.contains("matches 2 configurations"),
            "{err}"
        );
        let err = build(&TEXT.replace(
            "    metric: val_linear_top1\n",
            "    metric: val_linear_top1\n    exclude:\n      - {a: 7}\n",
        ));
        assert!(
            err.starts_with("e.yaml:13:7: ") && err.contains("matches no configuration"),
            "{err}"
        );
        let err = build(&TEXT.replace(
            "    metric: val_linear_top1\n",
            "    metric: val_linear_top1\n    exclude:\n      - {l: 0.5}\n      - {a: 0.5}\n      - {a: 1.5}\n",
        ));
        assert!(err.contains("no configuration is left"), "{err}");
    }

    #[test]
    fn the_stage_appears_once_the_grid_is_finished_and_its_selection_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let r = Results::new(dir.path());
        let plan = plan_of(TEXT);
        let path = r.selection_path("t", "cpu");
        // Part of the grid finished: the stage waits and writes nothing.
        for c in &plan.cells[..5] {
            finish(&r, c, Some(serde_json::json!({"val_linear_top1": 1.0})));
        }
        match stage(&plan, &r, &Ident, true).unwrap().unwrap() {
            StageState::Waiting {
                unfinished, failed, ..
            } => assert_eq!((unfinished, failed), (7, 0)),
            other => panic!("{other:?}"),
        }
        assert!(!path.exists());
        finish_grid(&r, &plan, |a, l, s| Some(val(a, l, s)));
        // `grid plan` (write = false) shows the stage without writing the file.
        assert!(matches!(
            stage(&plan, &r, &Ident, false).unwrap().unwrap(),
            StageState::Ready { made: Made::New, .. }
        ));
        assert!(!path.exists());
        let StageState::Ready { plan: cp, made, .. } = stage(&plan, &r, &Ident, true).unwrap().unwrap()
        else {
            panic!("not ready")
        };
        assert_eq!(made, Made::New);
        assert!(path.exists());
        assert_eq!(cp.stage, Stage::Confirm);
        // Seed-major pairs, numbered after the grid's cells, only the seed differs from the grid.
        let arms: Vec<(Option<Arm>, Option<u64>, usize)> =
            cp.cells.iter().map(|c| (c.arm, c.spec.seed, c.index)).collect();
        assert_eq!(
            arms,
            vec![
                (Some(Arm::Candidate), Some(10), 12),
                (Some(Arm::Reference), Some(10), 13),
                (Some(Arm::Candidate), Some(11), 14),
                (Some(Arm::Reference), Some(11), 15),
                (Some(Arm::Candidate), Some(12), 16),
                (Some(Arm::Reference), Some(12), 17),
            ]
        );
        let grid_twin = plan
            .cells
            .iter()
            .find(|c| c.spec.assignments == cp.cells[0].spec.assignments)
            .unwrap();
        let mut twin = grid_twin.spec.partial.clone();
        crate::value::set_dotted(&mut twin, "seed", Value::Number(10.into())).unwrap();
        assert_eq!(cp.cells[0].spec.partial, twin);
        assert!(cp.cells.iter().all(|c| !plan.cells.iter().any(|g| g.id == c.id)));

        // Reused as written, even when a grid metric changes afterwards.
        let before = std::fs::read(&path).unwrap();
        finish(&r, grid_twin, Some(serde_json::json!({"val_linear_top1": 0.0})));
        let StageState::Ready {
            plan: again, made, ..
        } = stage(&plan, &r, &Ident, true).unwrap().unwrap()
        else {
            panic!("not ready")
        };
        assert_eq!(made, Made::Reused);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(cell_ids(&again), cell_ids(&cp));

        // Another grid (a new value of `l`): the selection is stale; the stage waits for the new
        // cells, then selects again and replaces the file.
        let bigger = plan_of(&TEXT.replace("l: [0.5, 1]", "l: [0.5, 1, 2]"));
        match stage(&bigger, &r, &Ident, true).unwrap().unwrap() {
            StageState::Waiting {
                unfinished, stale, ..
            } => {
                assert_eq!(unfinished, 6);
                assert!(stale.unwrap().contains("other grid cells"));
            }
            other => panic!("{other:?}"),
        }
        finish_grid(&r, &bigger, |a, l, s| {
            Some(val(a, l, s) + if l == 2.0 { 10.0 } else { 0.0 })
        });
        let StageState::Ready { selection, made, .. } = stage(&bigger, &r, &Ident, true).unwrap().unwrap()
        else {
            panic!("not ready")
        };
        assert!(matches!(made, Made::Replaced(_)), "{made:?}");
        assert_eq!(selection.candidate.describe, "a=1.5 l=2");
        assert_eq!(read_selection(&path).unwrap().unwrap(), *selection);
        // A changed rule is stale too.
        let other_rule = plan_of(
            &TEXT
                .replace("l: [0.5, 1]", "l: [0.5, 1, 2]")
                .replace("val_linear_top1", "linear_top1"),
        );
        assert!(stale_reason(
            &selection,
            &other_rule,
            other_rule.experiment.confirm.as_ref().unwrap()
        )
        .unwrap()
        .contains("another rule"));
        // An unreadable selection file is an error naming it.
        std::fs::write(&path, b"{").unwrap();
        let err = format!("{:#}", stage(&bigger, &r, &Ident, true).unwrap_err());
        assert!(
            err.contains("t.cpu.selection.json") && err.contains("not a selection file"),
            "{err}"
        );
    }

    #[test]
    fn rank_breaks_ties_by_expansion_order() {
        assert_eq!(rank(&[1.0, 3.0, 2.0], true), vec![1, 2, 0]);
        assert_eq!(rank(&[1.0, 3.0, 2.0], false), vec![0, 2, 1]);
        // Equal means: the first in expansion order wins, in both directions.
        assert_eq!(rank(&[2.0, 5.0, 5.0, 1.0], true)[0], 1);
        assert_eq!(rank(&[2.0, 1.0, 5.0, 1.0], false)[0], 1);
    }
}

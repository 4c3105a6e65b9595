//! Text for `grid plan` and `grid status`: the cell table, counts and the time estimate.

use crate::cache::{CellState, Pending, Results};
use crate::plan::Plan;
use crate::value::flow;

/// Counts of cell states (distinct cells).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    pub total: usize,
    pub done: usize,
    pub diverged: usize,
    pub failed: usize,
    pub running: usize,
    pub pending: usize,
    /// Mean measured wall time (metrics.json `wall_time_s`) of the done cells.
    pub mean_wall_s: Option<f64>,
}

/// Counts the states of a plan's distinct cells.
pub fn counts(plan: &Plan, results: &Results) -> Counts {
    let mut c = Counts::default();
    let mut walls = Vec::new();
    for cell in plan.unique() {
        c.total += 1;
        match results.state(&cell.id) {
            CellState::Done(_) => {
                c.done += 1;
                if let Some(w) = results
                    .metrics(&cell.id)
                    .and_then(|m| m.get("wall_time_s").and_then(|w| w.as_f64()))
                {
                    walls.push(w);
                }
            }
            CellState::Diverged(_) => c.diverged += 1,
            CellState::Failed(_) => c.failed += 1,
            CellState::Running(_) => c.running += 1,
            CellState::Pending(_) => c.pending += 1,
        }
    }
    if !walls.is_empty() {
        c.mean_wall_s = Some(walls.iter().sum::<f64>() / walls.len() as f64);
    }
    c
}

/// `1h 02m`, `3m 05s`, `12s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The estimate of the time left for the cells still to run (pending and running).
pub fn eta_line(c: &Counts, workers: usize) -> String {
    let left = c.pending + c.running;
    if left == 0 {
        return "Time left: none, every cell is finished.".into();
    }
    match c.mean_wall_s {
        Some(mean) => {
            let workers = workers.max(1);
            let secs = mean * (left as f64 / workers as f64).ceil();
            format!(
                "Estimated time left: {} ({left} cells × {} measured mean of {} done cells, {workers} worker(s))",
                duration(secs),
                duration(mean),
                c.done
            )
        }
        None => {
            format!("Estimated time left: unknown (no cell of this plan has finished yet; {left} to run)")
        }
    }
}

/// The summary line.
pub fn counts_line(plan: &Plan, c: &Counts) -> String {
    let stage = match plan.stage {
        crate::plan::Stage::Grid => "",
        crate::plan::Stage::Confirm => ", confirmation stage",
    };
    format!(
        "{} (profile {}{stage}): {} cells — {} done, {} diverged, {} failed, {} running, {} pending",
        plan.experiment.name, plan.profile, c.total, c.done, c.diverged, c.failed, c.running, c.pending
    )
}

fn state_text(s: &CellState) -> String {
    match s {
        CellState::Done(_) => "cached".into(),
        CellState::Diverged(_) => "diverged".into(),
        CellState::Failed(_) => "failed".into(),
        CellState::Running(l) => format!("running (pid {} on {})", l.pid, l.host),
        CellState::Pending(Pending::New) => "new".into(),
        CellState::Pending(Pending::Interrupted) => "new (resumes)".into(),
        CellState::Pending(Pending::Corrupt(why)) => format!("new (corrupt entry: {why})"),
    }
}

/// The table of cells: index, id, state, label, seed, varied values.
pub fn cell_table(plan: &Plan, results: &Results) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec![
        "#".to_string(),
        "cell".into(),
        "state".into(),
        "label".into(),
        "seed".into(),
    ];
    let confirm = plan.stage == crate::plan::Stage::Confirm;
    if confirm {
        header.insert(3, "arm".into());
    }
    header.extend(plan.experiment.columns.iter().cloned());
    rows.push(header);
    for cell in &plan.cells {
        let mut row = vec![
            cell.index.to_string(),
            cell.short().to_string(),
            state_text(&results.state(&cell.id)),
            cell.spec.label.clone().unwrap_or_default(),
            cell.seed_text(),
        ];
        if confirm {
            row.insert(3, cell.arm.map(|a| a.as_str()).unwrap_or("").to_string());
        }
        for col in &plan.experiment.columns {
            row.push(
                cell.spec
                    .assignments
                    .iter()
                    .find(|(k, _)| k == col)
                    .map(|(_, v)| flow(v))
                    .unwrap_or_default(),
            );
        }
        rows.push(row);
    }
    let ncol = rows[0].len();
    let widths: Vec<usize> = (0..ncol)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{f}{}", " ".repeat(widths[i] - f.chars().count())))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_eta() {
        assert_eq!(duration(12.4), "12s");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(duration(3720.0), "1h 02m");
        let c = Counts {
            total: 10,
            done: 2,
            pending: 7,
            running: 1,
            mean_wall_s: Some(600.0),
            ..Default::default()
        };
        assert!(
            eta_line(&c, 2).starts_with("Estimated time left: 40m 00s"),
            "{}",
            eta_line(&c, 2)
        );
        let c = Counts {
            total: 3,
            pending: 3,
            ..Default::default()
        };
        assert!(eta_line(&c, 1).contains("unknown"));
    }
}

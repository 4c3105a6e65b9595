//! `compute.{md,tex,csv}`: what the committed results cost to compute — per experiment and stage
//! (grid, confirmation), the cells listed and done, the sum of their training processes' wall
//! times (`metrics.json` `wall_time_s`, which carries the time of earlier attempts of a resumed
//! cell) and core-hours (wall time × the cell's `threads`), and a total over distinct cells (a
//! cell shared by several experiments is computed once). It is the measured answer to "how long
//! does `make reproduce-all` take from an empty `results/`": the grid keeps every core busy with
//! one single-threaded cell, so on `C` cores the wall time is about core-hours / `C`, and on Slurm
//! with `N` such nodes about core-hours / (`N`·`C`) plus the longest cell.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::*;
use protoclr_formats::CellRecord;

use crate::load::{dedup_rows, index_path, read_index};
use crate::tables::tex_escape;

/// File stem of the table.
pub const STEM: &str = "compute";

/// What a set of done cells cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cost {
    /// Done and intact cells with a recorded wall time.
    pub done: usize,
    /// Sum of their `wall_time_s`, seconds.
    pub wall_s: f64,
    /// Sum of their `wall_time_s × threads`, seconds.
    pub core_s: f64,
}

impl Cost {
    fn add(&mut self, wall: f64, threads: u64) {
        self.done += 1;
        self.wall_s += wall;
        self.core_s += wall * threads as f64;
    }

    /// Mean wall time of a cell in minutes (`–` without cells).
    fn mean_min(&self) -> String {
        if self.done == 0 {
            "–".into()
        } else {
            format!("{:.1}", self.wall_s / self.done as f64 / 60.0)
        }
    }
}

/// One experiment stage's cells.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeRow {
    pub experiment: String,
    /// `grid` or `confirmation`.
    pub stage: &'static str,
    /// Distinct cell ids in its index.
    pub listed: usize,
    /// What its done cells cost.
    pub cost: Cost,
    /// Thread counts the done cells ran with.
    pub threads: BTreeSet<u64>,
}

/// The table: one row per stage with an index, and the distinct-cell total.
#[derive(Debug, Clone, PartialEq)]
pub struct Compute {
    pub profile: String,
    pub rows: Vec<ComputeRow>,
    /// Distinct done cells over every row (a cell in several rows counts once).
    pub total: Cost,
}

/// `wall_time_s` and `threads` of a done and intact cell.
fn cell_cost(results: &Path, id: &str) -> Option<(f64, u64)> {
    let (_, bytes) = CellRecord::read(&results.join("cells").join(id))
        .done_and_intact()
        .ok()?;
    let m: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let wall = m
        .get("wall_time_s")?
        .as_f64()
        .filter(|w| w.is_finite() && *w >= 0.0)?;
    let threads = m.get("threads").and_then(|t| t.as_u64()).unwrap_or(1).max(1);
    Some((wall, threads))
}

/// Cell ids of an index file, in file order: distinct, as [`dedup_rows`] leaves them.
fn index_ids(path: &Path) -> Result<Vec<String>> {
    let df = dedup_rows(path, read_index(path)?)?;
    Ok(df
        .column("cell_id")?
        .str()?
        .iter()
        .flatten()
        .map(str::to_string)
        .collect())
}

impl Compute {
    /// Reads the grid index (`<name>.<profile>.csv`) and the confirmation index
    /// (`<name>.<profile>.confirm.csv`) of each experiment that has them.
    pub fn load(results: &Path, experiments: &[String], profile: &str) -> Result<Self> {
        let mut rows = Vec::new();
        let mut counted: HashSet<String> = HashSet::new();
        let mut total = Cost::default();
        for name in experiments {
            for (stage, path) in [
                ("grid", index_path(results, name, profile)),
                (
                    "confirmation",
                    crate::confirm::confirm_index_path(results, name, profile),
                ),
            ] {
                if !path.is_file() {
                    continue;
                }
                let ids = index_ids(&path)?;
                let mut row = ComputeRow {
                    experiment: name.clone(),
                    stage,
                    listed: ids.len(),
                    cost: Cost::default(),
                    threads: BTreeSet::new(),
                };
                for id in ids {
                    let Some((wall, threads)) = cell_cost(results, &id) else {
                        continue;
                    };
                    row.cost.add(wall, threads);
                    row.threads.insert(threads);
                    if counted.insert(id) {
                        total.add(wall, threads);
                    }
                }
                rows.push(row);
            }
        }
        Ok(Self {
            profile: profile.to_string(),
            rows,
            total,
        })
    }

    fn threads_text(t: &BTreeSet<u64>) -> String {
        t.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    }

    /// The footnote: what the numbers are and how they turn into a wall time.
    pub fn footnote(&self) -> String {
        let core_h = self.total.core_s / 3600.0;
        format!(
            "Profile `{}`. Wall time: the training process of each done cell (`metrics.json` \
             `wall_time_s`; a resumed cell includes its earlier attempts), summed; core-hours: \
             wall time × the cell's threads. Cells listed by several experiments (shared table \
             rows) count once in the total. The grid runs one single-threaded cell per core, so \
             from an empty `results/` the {} distinct cells take about {:.1} h on 2 cores like \
             these; on Slurm, N nodes of 16 such cores would take about {:.1} h / N plus the \
             longest cell (an extrapolation: it assumes a core trains a cell as fast there as \
             here).",
            self.profile,
            self.total.done,
            core_h / 2.0,
            core_h / 16.0,
        )
    }

    /// Markdown version.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Compute: what the committed results took to train\n\n");
        s.push_str("| Experiment | Stage | Cells done / listed | Wall time (h) | Core-hours | Mean cell (min) | Threads a cell |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
        // `head`: the cells before "Cells"; `tail`: the last cell's content with its spaces.
        let line = |head: String, cells: String, c: &Cost, tail: String| {
            format!(
                "| {head} | {cells} | {:.2} | {:.2} | {} |{tail}|\n",
                c.wall_s / 3600.0,
                c.core_s / 3600.0,
                c.mean_min(),
            )
        };
        for r in &self.rows {
            s.push_str(&line(
                format!("{} | {}", r.experiment, r.stage),
                format!("{} / {}", r.cost.done, r.listed),
                &r.cost,
                format!(" {} ", Self::threads_text(&r.threads)),
            ));
        }
        let t = &self.total;
        s.push_str(&line(
            "**all (distinct cells)** |".into(),
            t.done.to_string(),
            t,
            " ".into(),
        ));
        s.push('\n');
        s.push_str(&self.footnote());
        s.push('\n');
        s
    }

    /// LaTeX (booktabs) version.
    pub fn latex(&self) -> String {
        let mut s = String::from("% Generated by `protoclr report all`; needs \\usepackage{booktabs}.\n");
        s.push_str("\\begin{table}[t]\n\\centering\n\\caption{Compute of the committed results}\n");
        s.push_str("\\label{tab:compute}\n\\begin{tabular}{llrrrr}\n\\toprule\n");
        s.push_str("Experiment & Stage & Cells & Wall (h) & Core-h & Mean cell (min) \\\\\n\\midrule\n");
        // `head`: the cells before "Cells".
        let line = |head: String, cells: String, c: &Cost| {
            format!(
                "{head} & {cells} & {:.2} & {:.2} & {} \\\\\n",
                c.wall_s / 3600.0,
                c.core_s / 3600.0,
                tex_escape(&c.mean_min()),
            )
        };
        for r in &self.rows {
            s.push_str(&line(
                format!("{} & {}", tex_escape(&r.experiment), r.stage),
                format!("{} / {}", r.cost.done, r.listed),
                &r.cost,
            ));
        }
        s.push_str("\\midrule\n");
        s.push_str(&line(
            "all (distinct) &".into(),
            self.total.done.to_string(),
            &self.total,
        ));
        s.push_str("\\bottomrule\n\\end{tabular}\n");
        s.push_str(&format!(
            "\\par\\smallskip{{\\footnotesize {}}}\n\\end{{table}}\n",
            tex_escape(&self.footnote())
        ));
        s
    }

    /// Machine-readable version (the CSV); the last row is the distinct-cell total
    /// (`stage` = `total`).
    pub fn frame(&self) -> Result<DataFrame> {
        let mut experiment: Vec<String> = self.rows.iter().map(|r| r.experiment.clone()).collect();
        let mut stage: Vec<&str> = self.rows.iter().map(|r| r.stage).collect();
        let mut listed: Vec<Option<u32>> = self.rows.iter().map(|r| Some(r.listed as u32)).collect();
        let costs = || self.rows.iter().map(|r| &r.cost).chain([&self.total]);
        let done: Vec<u32> = costs().map(|c| c.done as u32).collect();
        let wall: Vec<f64> = costs().map(|c| c.wall_s).collect();
        let core: Vec<f64> = costs().map(|c| c.core_s).collect();
        experiment.push("all".into());
        stage.push("total");
        listed.push(None);
        Ok(DataFrame::new_infer_height(vec![
            Column::new("experiment".into(), experiment),
            Column::new("stage".into(), stage),
            Column::new("cells_listed".into(), listed),
            Column::new("cells_done".into(), done),
            Column::new("wall_s".into(), wall),
            Column::new("core_s".into(), core),
        ])?)
    }

    /// Writes `compute.{md,tex,csv}` into `out`.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        crate::output::write_table(out, STEM, &self.markdown(), &self.latex(), self.frame()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protoclr_formats::{sha256_hex, Outcome, StatusFile};

    /// A done cell with the given wall time and threads, written the way the grid writes one.
    fn done_cell(results: &Path, id: &str, wall: f64, threads: u64) {
        let dir = results.join("cells").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let config = b"seed: 0\n".to_vec();
        let metrics = serde_json::json!({"status": "completed", "wall_time_s": wall, "threads": threads})
            .to_string()
            .into_bytes();
        std::fs::write(dir.join("config.yaml"), &config).unwrap();
        std::fs::write(dir.join("metrics.json"), &metrics).unwrap();
        let status = StatusFile {
            status: Outcome::Done,
            metrics_sha256: Some(sha256_hex(&metrics)),
            config_sha256: Some(sha256_hex(&config)),
            cell_format_version: 1,
            exit_code: Some(0),
            signal: None,
            error: None,
            runner_wall_s: Some(wall),
            finished_unix: 0,
            host: "test".into(),
        };
        std::fs::write(dir.join("status.json"), serde_json::to_vec(&status).unwrap()).unwrap();
    }

    fn index(results: &Path, file: &str, ids: &[&str]) {
        let mut s = String::from("cell_id,status,seed\n");
        for id in ids {
            s.push_str(&format!("{id},done,0\n"));
        }
        std::fs::write(results.join(file), s).unwrap();
    }

    #[test]
    fn sums_per_stage_and_counts_shared_cells_once() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        done_cell(r, "a", 600.0, 1);
        done_cell(r, "b", 300.0, 2);
        done_cell(r, "c", 120.0, 1);
        // "p" is pending: listed, not done, adds nothing; the repeated row of "a" counts once.
        index(r, "x.cpu.csv", &["a", "b", "p", "a"]);
        index(r, "x.cpu.confirm.csv", &["c"]);
        // y shares cell "a" with x.
        index(r, "y.cpu.csv", &["a"]);
        let c = Compute::load(r, &["x".into(), "y".into(), "z".into()], "cpu").unwrap();
        assert_eq!(c.rows.len(), 3, "z has no index and no row");
        let x = &c.rows[0];
        assert_eq!((x.stage, x.listed, x.cost.done), ("grid", 3, 2));
        assert_eq!((x.cost.wall_s, x.cost.core_s), (900.0, 1200.0));
        assert_eq!(x.threads, BTreeSet::from([1, 2]));
        assert_eq!((c.rows[1].stage, c.rows[1].cost.wall_s), ("confirmation", 120.0));
        assert_eq!((c.rows[2].experiment.as_str(), c.rows[2].cost.done), ("y", 1));
        assert_eq!(c.total.done, 3);
        assert_eq!((c.total.wall_s, c.total.core_s), (1020.0, 1320.0));
        let md = c.markdown();
        assert!(
            md.contains("| x | grid | 2 / 3 | 0.25 | 0.33 | 7.5 | 1, 2 |"),
            "{md}"
        );
        // 1320 core-seconds = 0.367 core-hours: 0.2 h on 2 cores.
        assert!(md.contains("about 0.2 h on 2 cores"), "{md}");
        let df = c.frame().unwrap();
        assert_eq!(df.height(), 4);
        assert!(c.latex().contains("all (distinct) & & 3 & 0.28 & 0.37"));
    }

    #[test]
    fn a_damaged_cell_is_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        done_cell(r, "a", 600.0, 1);
        std::fs::write(r.join("cells/a/metrics.json"), b"{\"wall_time_s\": 1}").unwrap();
        index(r, "x.cpu.csv", &["a"]);
        let c = Compute::load(r, &["x".into()], "cpu").unwrap();
        assert_eq!((c.rows[0].listed, c.rows[0].cost.done, c.total.done), (1, 0, 0));
        assert!(c.markdown().contains("| x | grid | 0 / 1 | 0.00 | 0.00 | – |"));
    }
}

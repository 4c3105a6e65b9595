//! Resolved cells and their content-addressed ids.

use crate::expand::{expand, locate_key, CellSpec};
use crate::locate::{locate, Seg};
use crate::spec::Experiment;
use crate::value::canonical;
use crate::{Backend, CELL_FORMAT_VERSION};
use anyhow::Result;
use serde_norway::Value;
use sha2::{Digest, Sha256};

/// The id of a cell: SHA-256 (hex) of the format version, the numerics version of the training
/// code, the canonical resolved config and the dataset fingerprint (the exact text hashed is in
/// `docs/formats.md`).
pub fn cell_id(resolved: &Value, fingerprint: &str, numerics_version: u32) -> String {
    let mut h = Sha256::new();
    h.update(format!("protoclr cell format {CELL_FORMAT_VERSION}\n"));
    h.update(format!("numerics {numerics_version}\n"));
    h.update(b"config ");
    h.update(canonical(resolved).as_bytes());
    h.update(b"\ndataset ");
    h.update(fingerprint.as_bytes());
    h.update(b"\n");
    hex::encode(h.finalize())
}

/// A fully resolved cell of an experiment.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Position in the experiment's expansion (after exclusion) — `run-cell --index` without a
    /// frozen list.
    pub index: usize,
    pub id: String,
    pub spec: CellSpec,
    pub resolved: Value,
    /// The arm of a confirmation cell (None for the grid's cells).
    pub arm: Option<Arm>,
}

/// The two arms of the confirmation stage (see [`crate::confirm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The configuration selected on the grid.
    Candidate,
    /// The configuration it is compared with (`confirm.reference`).
    Reference,
}

impl Arm {
    /// The word of the confirmation index's `arm` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Candidate => "candidate",
            Arm::Reference => "reference",
        }
    }
}

/// Which cells a plan holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The experiment's grid (index `<name>.<profile>.csv`).
    Grid,
    /// The confirmation stage (index `<name>.<profile>.confirm.csv`).
    Confirm,
}

impl Cell {
    /// The first 12 hex digits of the id.
    pub fn short(&self) -> &str {
        &self.id[..12]
    }

    /// The seed column: the seed set by `seeds`, else the resolved config's `seed`.
    pub fn seed_text(&self) -> String {
        self.spec
            .seed
            .map(|s| s.to_string())
            .or_else(|| crate::value::get_dotted(&self.resolved, "seed").map(crate::value::flow))
            .unwrap_or_default()
    }

    /// A short human name: the label and the varied values.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.spec.label {
            parts.push(l.clone());
        }
        for (k, v) in &self.spec.assignments {
            parts.push(format!("{k}={}", crate::value::flow(v)));
        }
        if let Some(s) = self.spec.seed {
            parts.push(format!("seed={s}"));
        }
        if let Some(a) = self.arm {
            parts.insert(0, format!("confirm {}", a.as_str()));
        }
        if parts.is_empty() {
            self.short().to_string()
        } else {
            parts.join(" ")
        }
    }
}

/// All cells of one experiment under one profile.
#[derive(Debug, Clone)]
pub struct Plan {
    pub experiment: Experiment,
    pub profile: String,
    pub cells: Vec<Cell>,
    pub stage: Stage,
}

impl Plan {
    /// Expands and resolves the experiment; resolution errors are located in the file (the
    /// varied key or profile key the error names, else the profile).
    pub fn build(exp: &Experiment, profile: &str, backend: &dyn Backend) -> Result<Plan> {
        let specs = expand(exp, profile)?;
        let cells = resolve_cells(exp, profile, backend, specs.into_iter().map(|s| (s, None)), 0)?;
        let plan = Plan {
            experiment: exp.clone(),
            profile: profile.to_string(),
            cells,
            stage: Stage::Grid,
        };
        if let Some(c) = &exp.confirm {
            // Checked now, not after the grid has run: the reference and the exclusions must name
            // configurations of this grid.
            crate::confirm::check(&plan, c)?;
        }
        Ok(plan)
    }

    /// The cells without repetitions of an id (first occurrence kept).
    pub fn unique(&self) -> Vec<&Cell> {
        let mut seen = std::collections::HashSet::new();
        self.cells.iter().filter(|c| seen.insert(c.id.as_str())).collect()
    }
}

/// Resolves cell specs (with their confirmation arm) into cells numbered from `first_index`.
pub fn resolve_cells(
    exp: &Experiment,
    profile: &str,
    backend: &dyn Backend,
    specs: impl IntoIterator<Item = (CellSpec, Option<Arm>)>,
    first_index: usize,
) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for (i, (spec, arm)) in specs.into_iter().enumerate() {
        let index = first_index + i;
        let origin = format!(
            "{} (profile {profile}, cell {index}: {})",
            exp.path.display(),
            describe_spec(&spec)
        );
        let resolved = backend
            .resolve(spec.partial.clone(), &origin)
            .map_err(|e| locate_resolve_error(exp, profile, e))?;
        let fp = backend
            .fingerprint(&resolved)
            .map_err(|e| anyhow::anyhow!("{origin}: dataset fingerprint: {e:#}"))?;
        let id = cell_id(&resolved, &fp, backend.numerics_version());
        cells.push(Cell {
            index,
            id,
            spec,
            resolved,
            arm,
        });
    }
    Ok(cells)
}

fn describe_spec(spec: &CellSpec) -> String {
    let mut parts: Vec<String> = spec
        .assignments
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::value::flow(v)))
        .collect();
    if let Some(s) = spec.seed {
        parts.push(format!("seed={s}"));
    }
    if parts.is_empty() {
        "no varied key".into()
    } else {
        parts.join(", ")
    }
}

/// The first `dotted.key` quoted with backticks in an error message.
fn quoted_key(msg: &str) -> Option<String> {
    let mut rest = msg;
    while let Some(i) = rest.find('`') {
        let after = &rest[i + 1..];
        let j = after.find('`')?;
        let k = &after[..j];
        if !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Some(k.to_string());
        }
        rest = &after[j + 1..];
    }
    None
}

/// Locates a resolution error: the key it names, looked up among the varied keys, the profile's
/// keys (dotted or nested), the base, and the included files; else the profile.
fn locate_resolve_error(exp: &Experiment, profile: &str, e: anyhow::Error) -> anyhow::Error {
    let msg = format!("{e:#}");
    if let Some(key) = quoted_key(&msg) {
        // The key itself or one of its prefixes may be the one written in the file.
        let parts: Vec<&str> = key.split('.').collect();
        for n in (1..=parts.len()).rev() {
            let k = parts[..n].join(".");
            if let Some(segs) = locate_key(exp, &k) {
                return exp.error_at(&segs, msg);
            }
        }
        let mut candidates: Vec<Vec<Seg>> = Vec::new();
        for split in 0..parts.len() {
            // `a.b.c` may be written as `a: {b.c: …}`, `a.b: {c: …}`, …
            let mut segs: Vec<Seg> = parts[..split].iter().map(|p| Seg::Key(p.to_string())).collect();
            segs.push(Seg::Key(parts[split..].join(".")));
            candidates.push(segs);
        }
        for c in &candidates {
            let mut p: Vec<Seg> = vec!["profiles".into(), profile.into()];
            p.extend(c.iter().cloned());
            if locate(&exp.text, &p).1 {
                return exp.error_at(&p, msg);
            }
            let mut b: Vec<Seg> = vec!["base".into()];
            b.extend(c.iter().cloned());
            if locate(&exp.text, &b).1 {
                return exp.error_at(&b, msg);
            }
        }
        for (path, text) in &exp.includes {
            for c in &candidates {
                if let (Some(pos), true) = locate(text, c) {
                    return anyhow::anyhow!("{}:{}:{}: {msg}", path.display(), pos.line, pos.column);
                }
            }
        }
    }
    exp.error_at(&["profiles".into(), profile.into()], msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn ids_are_stable_across_key_order_and_number_spelling() {
        let id = |text: &str, fp: &str| cell_id(&y(text), fp, 2);
        let a = id("{loss: {alpha: 1, tau: 0.5}, seed: 0}", "fp");
        let b = id("{seed: 0.0, loss: {tau: 5e-1, alpha: 1.0}}", "fp");
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, id("{loss: {alpha: 1.25, tau: 0.5}, seed: 0}", "fp"));
        assert_ne!(a, id("{loss: {alpha: 1, tau: 0.5}, seed: 1}", "fp"));
        assert_ne!(a, id("{loss: {alpha: 1, tau: 0.5}, seed: 0}", "other dataset"));
    }

    #[test]
    fn ids_hash_the_documented_text_and_change_with_the_numerics_version() {
        // The text of docs/formats.md ("Results folder"), hashed independently here.
        let v = y("{loss: {alpha: 1, tau: 0.5}, seed: 0}");
        let text = format!(
            "protoclr cell format {CELL_FORMAT_VERSION}\nnumerics 2\nconfig {}\ndataset fp\n",
            canonical(&v)
        );
        assert_eq!(cell_id(&v, "fp", 2), hex::encode(Sha256::digest(text.as_bytes())));
        // Same config and data, other numerics: another cell.
        assert_ne!(cell_id(&v, "fp", 2), cell_id(&v, "fp", 3));
    }

    #[test]
    fn quoted_keys() {
        assert_eq!(
            quoted_key("x.yaml: key `loss.gamma`: unknown field `gamma`").as_deref(),
            Some("loss.gamma")
        );
        assert_eq!(quoted_key("`loss.tau` must be > 0").as_deref(), Some("loss.tau"));
        assert_eq!(quoted_key("no key here"), None);
    }
}

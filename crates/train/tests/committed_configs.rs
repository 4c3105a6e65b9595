//! Every resolved config committed under `results/cells/*/config.yaml` reads into the typed
//! [`Config`] and serialises back to the same bytes.
//!
//! Those bytes are what a run hashes into `metrics.json`'s `config_sha256` and compares with the
//! `config.yaml` of its run folder (`run::train`), and what the CLI's grid backend re-reads as the
//! resolved value hashed into the cell id (`Config::to_yaml` → YAML value →
//! `protoclr_grid::plan::cell_id`). So a change to the config types that alters the text of any
//! committed cell (a renamed enum variant, another default, a field order) fails here.
//!
//! The cells trained by the current numerics ([`NUMERICS_VERSION`] in their `metrics.json`)
//! must come back byte for byte. The older, unversioned cells (no longer found under the current
//! ids, see `NUMERICS_VERSION`) predate keys added since as `null` defaults (`eval.val_images`):
//! they must come back byte for byte once those added `null` keys are left out, and nothing else
//! may differ.

use protoclr_formats::sha256_hex;
use protoclr_train::config::{from_value, parse_yaml_text, Config};
use protoclr_train::NUMERICS_VERSION;
use serde_norway::Value;
use std::path::Path;

/// Removes from `typed` the `null` entries whose key `file` lacks (recursively); returns the
/// dotted keys removed.
fn drop_added_nulls(typed: &mut Value, file: &Value, prefix: &str, removed: &mut Vec<String>) {
    let (Some(t), Some(f)) = (typed.as_mapping_mut(), file.as_mapping()) else {
        return;
    };
    let added: Vec<Value> = t
        .iter()
        .filter(|(k, v)| v.is_null() && !f.contains_key(*k))
        .map(|(k, _)| k.clone())
        .collect();
    for k in added {
        removed.push(format!("{prefix}{}", k.as_str().unwrap_or("?")));
        t.shift_remove(&k);
    }
    for (k, v) in t.iter_mut() {
        if let Some(fv) = f.get(k) {
            let p = format!("{prefix}{}.", k.as_str().unwrap_or("?"));
            drop_added_nulls(v, fv, &p, removed);
        }
    }
}

#[test]
fn committed_cell_configs_round_trip_byte_for_byte() {
    let cells = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results/cells");
    let (mut current, mut older) = (0, 0);
    let mut losses = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&cells).unwrap_or_else(|e| panic!("{}: {e}", cells.display())) {
        let dir = entry.unwrap().path();
        let path = dir.join("config.yaml");
        // A cell still training (here, not in a clean clone) has its config but no metrics yet.
        let (Ok(text), Ok(metrics)) = (
            std::fs::read_to_string(&path),
            std::fs::read_to_string(dir.join("metrics.json")),
        ) else {
            continue;
        };
        let origin = path.display().to_string();
        let cfg: Config =
            from_value(parse_yaml_text(&text, &origin).unwrap(), &origin).unwrap_or_else(|e| panic!("{e:#}"));
        losses.insert(cfg.loss.name.as_str());
        // The hash the run recorded is the hash of these bytes.
        let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
        assert_eq!(
            metrics["config_sha256"],
            sha256_hex(text.as_bytes()).as_str(),
            "{origin}"
        );
        if metrics["numerics_version"] == NUMERICS_VERSION {
            assert_eq!(
                cfg.to_yaml(),
                text,
                "{origin}: the resolved config serialises differently"
            );
            current += 1;
        } else {
            let file: Value = serde_norway::from_str(&text).unwrap();
            // Through the text, as the grid backend does (f32 values as written).
            let mut typed: Value = serde_norway::from_str(&cfg.to_yaml()).unwrap();
            let mut removed = vec![];
            drop_added_nulls(&mut typed, &file, "", &mut removed);
            assert_eq!(removed, ["eval.val_images"], "{origin}");
            assert_eq!(
                serde_norway::to_string(&typed).unwrap(),
                text,
                "{origin}: the resolved config serialises differently"
            );
            older += 1;
        }
    }
    // The committed results (65 cells of Fig. 3 and Fig. 5 on the CPU, of both contrastive
    // objectives), 12 of them trained by the current numerics.
    assert!(
        current >= 12 && current + older >= 60,
        "{current} current, {older} older cells"
    );
    assert!(losses.len() >= 2, "{losses:?}");
}

//! Checkpoints: one self-checking file per epoch.
//!
//! A checkpoint is **one file**, `ckpt-<config>-e<epoch>.safetensors` (`<config>`: the first 16
//! hex digits of the SHA-256 of the run's resolved config, `<epoch>`: epochs done, 5 digits). It
//! holds every tensor (parameters, batch-norm statistics, optimiser buffers `optim.m.*` /
//! `optim.v.*`, prototypes `proto.mu`) and, in the safetensors header's `__metadata__`, the run's
//! bookkeeping ([`CheckpointMeta`]: config hash, epochs done, epoch records, optimiser step,
//! prototype flags) and the SHA-256 of the tensors (names, dtypes, shapes and bytes in name
//! order). It is written to a temporary file in the same folder, fsynced, renamed into place and
//! the folder fsynced ([`protoclr_formats::fsutil::atomic_write`]), so a reader sees a whole checkpoint or
//! none: there is no pair of files that can disagree.
//!
//! The previous epoch's checkpoint is deleted only after the new one is published, so the
//! newest two are on disk while training (the newest one only after `metrics.json` is written).
//! Loading tries this config's checkpoints newest first; one that cannot be used (truncated,
//! unparsable metadata, hash mismatch, missing tensors or wrong shapes) is reported on stderr and
//! the next older one is tried, down to a fresh start at epoch 0. Checkpoints of other configs
//! have other names: they are never loaded and never overwritten. The pair
//! `state.safetensors` + `state.json` of earlier versions is still read (when nothing newer
//! exists) and removed once a checkpoint of the new kind is written.

use crate::loss::Prototypes;
use crate::metrics::EpochRecord;
use crate::model::SimClrModel;
use crate::optim::Optimizer;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use protoclr_formats::fsutil::{atomic_write_at, failpoint};
use protoclr_formats::sha256_of_file as sha256_file;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Value of the `format` metadata key.
pub const FORMAT: &str = "protoclr-checkpoint-1";

/// A run's bookkeeping stored with its tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    pub config_sha256: String,
    pub epochs_done: usize,
    pub epochs: Vec<EpochRecord>,
    pub optimizer_t: u64,
    pub proto_seen: Option<Vec<bool>>,
    /// SHA-256 of the tensors (see [`tensors_sha256`]); in legacy `state.json`: of the file.
    pub tensors_sha256: String,
    pub wall_time_s: f64,
}

/// File name of the checkpoint after `epoch` epochs of the config hashed `config_sha`.
pub fn file_name(config_sha: &str, epoch: usize) -> String {
    format!(
        "ckpt-{}-e{epoch:05}.safetensors",
        &config_sha[..16.min(config_sha.len())]
    )
}

/// This config's checkpoint files in `dir`, newest first, with their epoch.
pub fn list(dir: &Path, config_sha: &str) -> Vec<(usize, PathBuf)> {
    let prefix = format!("ckpt-{}-e", &config_sha[..16.min(config_sha.len())]);
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let epoch = name.strip_prefix(&prefix)?.strip_suffix(".safetensors")?;
            (epoch.len() == 5).then_some(())?;
            Some((epoch.parse().ok()?, e.path()))
        })
        .collect();
    found.sort_by_key(|e| std::cmp::Reverse(e.0));
    found
}

/// SHA-256 over tensors in name order: name, dtype, shape and data bytes of each.
fn hash_entries<'a>(mut entries: Vec<(&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, dtype, shape, data) in entries {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}").as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    hex::encode(h.finalize())
}

/// SHA-256 of the tensors of a safetensors file (what the metadata's `tensors_sha256` names).
pub fn tensors_sha256(st: &SafeTensors<'_>) -> String {
    let views = st.tensors();
    hash_entries(
        views
            .iter()
            .map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data()))
            .collect(),
    )
}

/// A tensor on the host: name, shape, values.
type HostTensor = (String, Vec<usize>, Vec<f32>);

/// A decoded checkpoint: metadata and tensors by name.
type Decoded = (CheckpointMeta, HashMap<String, Tensor>);

/// Everything a checkpoint holds, by name, on the host.
fn gather(model: &SimClrModel, opt: &Optimizer, protos: Option<&Prototypes>) -> Result<Vec<HostTensor>> {
    let mut out = Vec::new();
    for (name, t) in model.state()? {
        let t = t.to_dtype(DType::F32)?;
        out.push((name, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?));
    }
    for (prefix, bufs) in [("optim.m.", &opt.m), ("optim.v.", &opt.v)] {
        for (name, buf) in bufs {
            out.push((format!("{prefix}{name}"), vec![buf.len()], buf.clone()));
        }
    }
    if let Some(p) = protos {
        out.push(("proto.mu".into(), vec![p.num_classes, p.dim], p.mu.clone()));
    }
    Ok(out)
}

/// Serialises one checkpoint (tensors and metadata) into bytes.
pub fn encode(
    model: &SimClrModel,
    opt: &Optimizer,
    protos: Option<&Prototypes>,
    meta: &CheckpointMeta,
) -> Result<Vec<u8>> {
    let raw = gather(model, opt, protos)?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = raw
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let sha = hash_entries(
        views
            .iter()
            .map(|(n, v)| (*n, v.dtype(), v.shape(), v.data()))
            .collect(),
    );
    let mut meta = meta.clone();
    meta.tensors_sha256 = sha;
    let info = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("meta".to_string(), serde_json::to_string(&meta)?),
    ]);
    Ok(safetensors::serialize(
        views.iter().map(|(n, v)| (*n, v)),
        Some(info),
    )?)
}

/// Writes the checkpoint of `meta.epochs_done` epochs into `dir` (atomically), then deletes this
/// config's checkpoints older than the previous one and any legacy pair of this config.
pub fn save(
    dir: &Path,
    model: &SimClrModel,
    opt: &Optimizer,
    protos: Option<&Prototypes>,
    meta: &CheckpointMeta,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = encode(model, opt, protos, meta)?;
    let path = dir.join(file_name(&meta.config_sha256, meta.epochs_done));
    atomic_write_at(&path, &bytes, "ckpt")?;
    failpoint("ckpt");
    prune(dir, &meta.config_sha256, meta.epochs_done.saturating_sub(1))?;
    remove_legacy(dir, &meta.config_sha256);
    Ok(path)
}

/// Deletes this config's checkpoints of fewer than `keep_from` epochs.
pub fn prune(dir: &Path, config_sha: &str, keep_from: usize) -> Result<()> {
    for (epoch, path) in list(dir, config_sha) {
        if epoch < keep_from {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            failpoint("ckpt");
        }
    }
    Ok(())
}

/// A checkpoint read and checked, not yet applied.
pub struct Loaded {
    pub meta: CheckpointMeta,
    pub path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

/// Parses and checks the bytes of a checkpoint of the new kind.
pub fn decode(bytes: &[u8], config_sha: &str) -> Result<Decoded> {
    let (_, header) = SafeTensors::read_metadata(bytes).context("not a safetensors file")?;
    let info = header.metadata().as_ref().context("no metadata in the header")?;
    if info.get("format").map(String::as_str) != Some(FORMAT) {
        bail!("not a {FORMAT} file");
    }
    let meta: CheckpointMeta = serde_json::from_str(info.get("meta").context("no `meta` in the header")?)
        .context("metadata unreadable")?;
    if meta.config_sha256 != config_sha {
        bail!("it belongs to another config (sha256 {})", meta.config_sha256);
    }
    let st = SafeTensors::deserialize(bytes).context("tensor data unreadable (truncated?)")?;
    let got = tensors_sha256(&st);
    if got != meta.tensors_sha256 {
        bail!("tensor hash {got}, metadata says {}", meta.tensors_sha256);
    }
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("tensor `{name}` is {:?}, expected F32", view.dtype());
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(name, Tensor::from_vec(v, view.shape(), &Device::Cpu)?);
    }
    Ok((meta, tensors))
}

/// Reads a legacy `state.json` + `state.safetensors` pair.
fn decode_legacy(dir: &Path, config_sha: &str) -> Result<Decoded> {
    let meta_path = dir.join("state.json");
    let text = std::fs::read_to_string(&meta_path)
        .with_context(|| format!("cannot read {}", meta_path.display()))?;
    let meta: CheckpointMeta = serde_json::from_str(&text).context("metadata unreadable")?;
    if meta.config_sha256 != config_sha {
        bail!("it belongs to another config (sha256 {})", meta.config_sha256);
    }
    let tpath = dir.join("state.safetensors");
    let got = sha256_file(&tpath)?;
    if got != meta.tensors_sha256 {
        bail!(
            "{} has sha256 {got}, state.json says {}",
            tpath.display(),
            meta.tensors_sha256
        );
    }
    let tensors = candle_core::safetensors::load(&tpath, &Device::Cpu)?;
    Ok((meta, tensors))
}

/// Removes a legacy pair unless it belongs to another config.
fn remove_legacy(dir: &Path, config_sha: &str) {
    let meta_path = dir.join("state.json");
    let other = std::fs::read_to_string(&meta_path)
        .ok()
        .and_then(|t| serde_json::from_str::<CheckpointMeta>(&t).ok())
        .is_some_and(|m| m.config_sha256 != config_sha);
    if !other {
        let _ = std::fs::remove_file(dir.join("state.safetensors"));
        let _ = std::fs::remove_file(meta_path);
    }
}

/// Checks that a decoded checkpoint fits this run (epochs, tensor names and shapes).
fn fits(
    meta: &CheckpointMeta,
    tensors: &HashMap<String, Tensor>,
    model: &SimClrModel,
    protos: Option<&Prototypes>,
    epochs_planned: usize,
) -> Result<()> {
    if meta.epochs_done == 0 || meta.epochs_done > epochs_planned || meta.epochs.len() != meta.epochs_done {
        bail!(
            "it claims {} epochs done with {} epoch records (run plans {epochs_planned})",
            meta.epochs_done,
            meta.epochs.len()
        );
    }
    let shape_of = |k: &str| tensors.get(k).map(|t| t.dims().to_vec());
    for (name, t) in model.state()? {
        match shape_of(&name) {
            None => bail!("tensor `{name}` is missing"),
            Some(s) if s != t.dims() => {
                bail!("tensor `{name}` has shape {s:?}, the model's is {:?}", t.dims())
            }
            Some(_) => {}
        }
    }
    let sizes: HashMap<&str, usize> = model
        .params
        .vars
        .iter()
        .map(|(n, v)| (n.as_str(), v.elem_count()))
        .collect();
    for (k, t) in tensors {
        let opt_name = k.strip_prefix("optim.m.").or_else(|| k.strip_prefix("optim.v."));
        if let Some(n) = opt_name {
            if sizes.get(n) != Some(&t.elem_count()) || t.rank() != 1 {
                bail!("optimiser buffer `{k}` does not fit parameter `{n}`");
            }
        }
    }
    if let Some(p) = protos {
        if shape_of("proto.mu") != Some(vec![p.num_classes, p.dim]) {
            bail!(
                "prototypes `proto.mu` missing or not [{}, {}]",
                p.num_classes,
                p.dim
            );
        }
        if meta.proto_seen.as_ref().is_some_and(|s| s.len() != p.num_classes) {
            bail!("prototype flags do not fit {} classes", p.num_classes);
        }
    }
    Ok(())
}

/// Finds the newest usable checkpoint of this config in `dir`, reporting each unusable one on
/// stderr. `None`: start from epoch 0.
pub fn find(
    dir: &Path,
    config_sha: &str,
    model: &SimClrModel,
    protos: Option<&Prototypes>,
    epochs_planned: usize,
) -> Option<Loaded> {
    let mut candidates: Vec<(String, Result<Decoded>, PathBuf)> = Vec::new();
    let listed = list(dir, config_sha);
    let mut bad = 0;
    for (_, path) in &listed {
        let got = std::fs::read(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .and_then(|b| decode(&b, config_sha));
        candidates.push((path.display().to_string(), got, path.clone()));
    }
    let legacy = dir.join("state.json");
    let legacy_other = std::fs::read_to_string(&legacy)
        .ok()
        .and_then(|t| serde_json::from_str::<CheckpointMeta>(&t).ok())
        .is_some_and(|m| m.config_sha256 != config_sha);
    if legacy.exists() && !legacy_other {
        candidates.push((
            format!("{} (legacy)", legacy.display()),
            decode_legacy(dir, config_sha),
            legacy,
        ));
    }
    for (label, got, path) in candidates {
        let checked = got.and_then(|(meta, tensors)| {
            fits(&meta, &tensors, model, protos, epochs_planned)?;
            Ok((meta, tensors))
        });
        match checked {
            Ok((meta, tensors)) => {
                if bad > 0 {
                    eprintln!("resuming from {label} (epoch {})", meta.epochs_done);
                }
                return Some(Loaded { meta, path, tensors });
            }
            Err(e) => {
                bad += 1;
                eprintln!("warning: checkpoint {label} is unusable ({e:#}); trying an older one");
            }
        }
    }
    if bad > 0 {
        eprintln!(
            "warning: no usable checkpoint in {}; starting from epoch 0",
            dir.display()
        );
    }
    None
}

impl Loaded {
    /// Applies the checkpoint to the model, optimiser and prototypes ([`find`] checked that it
    /// fits, so this does not fail half-way on a bad file).
    pub fn apply(
        self,
        model: &SimClrModel,
        opt: &mut Optimizer,
        protos: Option<&mut Prototypes>,
    ) -> Result<CheckpointMeta> {
        model.load_state(&self.tensors)?;
        opt.m.clear();
        opt.v.clear();
        for (k, t) in &self.tensors {
            if let Some(name) = k.strip_prefix("optim.m.") {
                opt.m.insert(name.to_string(), t.to_vec1::<f32>()?);
            } else if let Some(name) = k.strip_prefix("optim.v.") {
                opt.v.insert(name.to_string(), t.to_vec1::<f32>()?);
            }
        }
        opt.t = self.meta.optimizer_t;
        if let Some(p) = protos {
            let mu = self
                .tensors
                .get("proto.mu")
                .context("checkpoint lacks the prototypes")?;
            p.mu = mu.flatten_all()?.to_vec1::<f32>()?;
            if let Some(seen) = &self.meta.proto_seen {
                p.seen = seen.clone();
            }
        }
        Ok(self.meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn model(width: usize) -> SimClrModel {
        let mut cfg = Config::default();
        cfg.model.width = width;
        cfg.model.proj_hidden = 16;
        cfg.model.proj_dim = 8;
        SimClrModel::new_on(&cfg.model, 7, &Device::Cpu).unwrap()
    }

    fn meta(sha: &str, epochs_done: usize) -> CheckpointMeta {
        CheckpointMeta {
            config_sha256: sha.into(),
            epochs_done,
            epochs: (1..=epochs_done)
                .map(|e| EpochRecord {
                    epoch: e,
                    loss: 1.0,
                    lr: 0.1,
                    images_per_sec: 1.0,
                    wall_s: 1.0,
                    mean_direction: None,
                    proto_train_acc: None,
                })
                .collect(),
            optimizer_t: 3,
            proto_seen: None,
            tensors_sha256: String::new(),
            wall_time_s: 2.0,
        }
    }

    #[test]
    fn round_trip_keeps_every_tensor_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "ab".repeat(32);
        let m = model(4);
        let mut opt = Optimizer::new(&Config::default().optim);
        let (name, var) = &m.params.vars[0];
        opt.m.insert(name.clone(), vec![0.5; var.elem_count()]);
        let path = save(dir.path(), &m, &opt, None, &meta(&sha, 2)).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            format!("ckpt-{}-e00002.safetensors", &sha[..16])
        );
        let fresh = model(4);
        // Another seed: different weights until the checkpoint is applied.
        let other = {
            let mut cfg = Config::default();
            cfg.model.width = 4;
            cfg.model.proj_hidden = 16;
            cfg.model.proj_dim = 8;
            SimClrModel::new_on(&cfg.model, 8, &Device::Cpu).unwrap()
        };
        let loaded = find(dir.path(), &sha, &other, None, 2).expect("a usable checkpoint");
        let mut opt2 = Optimizer::new(&Config::default().optim);
        let got = loaded.apply(&other, &mut opt2, None).unwrap();
        assert_eq!(got.epochs_done, 2);
        assert_eq!(opt2.t, 3);
        assert_eq!(opt2.m, opt.m);
        for ((_, a), (_, b)) in fresh.params.vars.iter().zip(&other.params.vars) {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn wrong_shapes_epochs_or_config_are_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "cd".repeat(32);
        let opt = Optimizer::new(&Config::default().optim);
        save(dir.path(), &model(4), &opt, None, &meta(&sha, 1)).unwrap();
        // A model of another width: tensors of the wrong shape → not used (epoch 0).
        assert!(find(dir.path(), &sha, &model(8), None, 2).is_none());
        // More epochs done than the run plans → not used; the older one is.
        save(dir.path(), &model(4), &opt, None, &meta(&sha, 2)).unwrap();
        assert_eq!(
            find(dir.path(), &sha, &model(4), None, 1).map(|l| l.meta.epochs_done),
            Some(1)
        );
        // The newest usable one wins; another config's files are ignored and left alone.
        assert_eq!(
            find(dir.path(), &sha, &model(4), None, 2).map(|l| l.meta.epochs_done),
            Some(2)
        );
        let other = "ef".repeat(32);
        assert!(find(dir.path(), &other, &model(4), None, 2).is_none());
        save(dir.path(), &model(4), &opt, None, &meta(&other, 1)).unwrap();
        assert_eq!(list(dir.path(), &sha).len(), 2);
        // Metadata naming another config inside a file named for this one: refused.
        let bytes = encode(&model(4), &opt, None, &meta(&other, 2)).unwrap();
        std::fs::write(dir.path().join(file_name(&sha, 2)), bytes).unwrap();
        assert_eq!(
            find(dir.path(), &sha, &model(4), None, 2).map(|l| l.meta.epochs_done),
            Some(1)
        );
    }

    #[test]
    fn a_legacy_pair_is_read_then_replaced() {
        // The layout of earlier versions: state.safetensors + state.json naming the file's hash.
        let dir = tempfile::tempdir().unwrap();
        let sha = "12".repeat(32);
        let m = model(4);
        let tpath = dir.path().join("state.safetensors");
        candle_core::safetensors::save(&m.state().unwrap(), &tpath).unwrap();
        let mut old = meta(&sha, 1);
        old.tensors_sha256 = sha256_file(&tpath).unwrap();
        let json = serde_json::to_string(&old).unwrap();
        std::fs::write(dir.path().join("state.json"), &json).unwrap();
        let got = find(dir.path(), &sha, &model(4), None, 2).expect("the legacy pair");
        assert_eq!(got.meta.epochs_done, 1);
        // Another config's pair is neither loaded nor removed.
        assert!(find(dir.path(), &"34".repeat(32), &model(4), None, 2).is_none());
        save(
            dir.path(),
            &m,
            &Optimizer::new(&Config::default().optim),
            None,
            &meta(&"34".repeat(32), 1),
        )
        .unwrap();
        assert!(tpath.exists());
        // A new checkpoint of its own config replaces it.
        save(
            dir.path(),
            &m,
            &Optimizer::new(&Config::default().optim),
            None,
            &meta(&sha, 2),
        )
        .unwrap();
        assert!(!tpath.exists() && !dir.path().join("state.json").exists());
        // A damaged pair is reported and skipped, not an error.
        std::fs::write(&tpath, b"short").unwrap();
        std::fs::write(dir.path().join("state.json"), &json).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        std::fs::rename(&tpath, d2.path().join("state.safetensors")).unwrap();
        std::fs::rename(dir.path().join("state.json"), d2.path().join("state.json")).unwrap();
        assert!(find(d2.path(), &sha, &model(4), None, 2).is_none());
    }
}

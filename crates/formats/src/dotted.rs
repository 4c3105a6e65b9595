//! Dotted keys (`model.width`) of nested YAML mappings: setting one, reading one, and the leaf
//! paths a value sets. One definition for the experiment files (`protoclr_grid::value`) and the
//! training config's `--set` overrides (`protoclr_train::config`); each caller words its errors.

use serde_norway::{Mapping, Value};

/// Why [`set_dotted`] could not set a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DottedError {
    /// A segment of the key is empty (`model..width`, `.width`).
    EmptySegment,
    /// The value at this prefix (`model`) exists and is not a mapping.
    NotAMapping(String),
}

/// Sets `dotted.key` to `value` in nested mappings, creating the intermediate ones (a null
/// becomes a mapping). Nothing is changed on an error.
pub fn set_dotted(root: &mut Value, key: &str, value: Value) -> Result<(), DottedError> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(DottedError::EmptySegment);
    }
    // Check the path first, so that a failure leaves `root` as it was.
    let mut probe = Some(&*root);
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        match probe {
            Some(Value::Null) | None => break,
            Some(v) => match v.as_mapping() {
                Some(m) => probe = m.get(*part),
                None => return Err(DottedError::NotAMapping(parts[..i].join("."))),
            },
        }
    }
    if let Some(v) = probe {
        if !v.is_null() && !v.is_mapping() {
            return Err(DottedError::NotAMapping(parts[..parts.len() - 1].join(".")));
        }
    }
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        if cur.is_null() {
            *cur = Value::Mapping(Mapping::new());
        }
        let map = cur.as_mapping_mut().expect("checked above");
        let k = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        cur = map.entry(k).or_insert(Value::Null);
    }
    unreachable!("a key has at least one segment")
}

/// Looks up `dotted.key` in nested mappings.
pub fn get_dotted<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.')
        .try_fold(root, |cur, part| cur.as_mapping()?.get(part))
}

/// The leaf paths `v` sets under `prefix`: the path itself for a non-mapping, the leaves of its
/// entries (dotted keys split into segments) for a non-empty mapping, nothing for an empty one.
/// A key that is not a string is named by `key_text`.
pub fn leaf_paths(
    prefix: Vec<String>,
    v: &Value,
    key_text: &dyn Fn(&Value) -> String,
    out: &mut Vec<Vec<String>>,
) {
    match v.as_mapping() {
        Some(m) => {
            for (k, v) in m {
                let mut p = prefix.clone();
                match k.as_str() {
                    Some(k) => p.extend(k.split('.').map(str::to_string)),
                    None => p.push(key_text(k)),
                }
                leaf_paths(p, v, key_text, out);
            }
        }
        None => out.push(prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn set_get_and_errors() {
        let mut v = y("{model: {width: 4}, seed: 1}");
        set_dotted(&mut v, "model.depth", y("18")).unwrap();
        set_dotted(&mut v, "optim.lr", y("0.1")).unwrap();
        assert_eq!(v, y("{model: {width: 4, depth: 18}, seed: 1, optim: {lr: 0.1}}"));
        assert_eq!(get_dotted(&v, "model.depth"), Some(&y("18")));
        assert_eq!(get_dotted(&v, "model.nothing"), None);
        assert_eq!(
            set_dotted(&mut v, "model..x", y("1")),
            Err(DottedError::EmptySegment)
        );
        let before = v.clone();
        assert_eq!(
            set_dotted(&mut v, "seed.x.y", y("1")),
            Err(DottedError::NotAMapping("seed".into()))
        );
        assert_eq!(
            set_dotted(&mut v, "model.width.x", y("1")),
            Err(DottedError::NotAMapping("model.width".into()))
        );
        assert_eq!(v, before, "a failed set changes nothing");
        let mut null = Value::Null;
        set_dotted(&mut null, "a.b", y("[1]")).unwrap();
        assert_eq!(null, y("{a: {b: [1]}}"));
    }

    #[test]
    fn leaves_of_dotted_and_nested_keys() {
        let mut out = Vec::new();
        leaf_paths(
            vec!["model".into()],
            &y("{width: 4, stem.kind: cifar, proj: {}, 1: x}"),
            &|k| format!("{k:?}"),
            &mut out,
        );
        let want: Vec<Vec<String>> = vec![
            vec!["model".into(), "width".into()],
            vec!["model".into(), "stem".into(), "kind".into()],
            vec!["model".into(), "Number(1)".into()],
        ];
        assert_eq!(out, want);
    }
}

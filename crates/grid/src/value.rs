//! YAML values: canonical serialisation (for hashing), flow formatting (for the index), dotted
//! keys and deep merges.

use anyhow::{bail, Result};
use serde_norway::{Mapping, Number, Value};
use std::fmt::Write;

/// Canonical text of a value: JSON-like, mapping keys sorted by their canonical text, numbers
/// normalised (an integral number is written as an integer whatever its spelling, so `1`, `1.0`
/// and `1e0` are equal; `-0.0` is `0`; other floats use the shortest round-trip decimal).
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&canonical_number(n)),
        Value::String(s) => out.push_str(&serde_json::to_string(s).expect("strings serialise")),
        Value::Sequence(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Mapping(map) => {
            let mut entries: Vec<(String, &Value)> = map.iter().map(|(k, v)| (canonical(k), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&k);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Tagged(t) => {
            let _ = write!(out, "!{}(", t.tag);
            write_canonical(&t.value, out);
            out.push(')');
        }
    }
}

/// Normalised text of a number (see [`canonical`]).
pub fn canonical_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    canonical_f64(f)
}

fn canonical_f64(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else if f == f.trunc() && f.abs() < 1e18 {
        // Integral: written as an integer (-0.0 becomes 0).
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Text of a number for people: as in [`canonical`] (integers written as integers, floats with
/// the shortest digits that round-trip), except that a float of magnitude ≥ 1e18 or < 1e-6 is
/// written in exponent form with the same shortest digits (`1e300`, `1.5e-7`): ECMAScript's
/// `Number.toString` rule, with the upper bound lowered to where positional digits would read
/// back as an out-of-range YAML integer. Only for display: [`canonical`] (cell ids) keeps the
/// positional form.
pub fn display_number(n: &Number) -> String {
    let text = canonical_number(n);
    match n.as_f64() {
        Some(f) if f.is_finite() && f != 0.0 && n.is_f64() => {
            let exp = format!("{f:e}");
            let e10: i32 = exp.rsplit('e').next().and_then(|e| e.parse().ok()).unwrap_or(0);
            if e10 >= 18 || e10 <= -7 {
                exp
            } else {
                text
            }
        }
        _ => text,
    }
}

/// Human-readable one-line YAML flow text: strings unquoted when safe, lists as `[a, b]`,
/// numbers as in [`display_number`].
pub fn flow(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => display_number(n),
        Value::String(s) => {
            let plain = !s.is_empty()
                && !s.contains([',', '[', ']', '{', '}', ':', '#', '"', '\'', '\n'])
                && s.trim() == s
                && serde_norway::from_str::<Value>(s).ok() == Some(Value::String(s.clone()));
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).expect("strings serialise")
            }
        }
        Value::Sequence(items) => {
            let parts: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Mapping(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Tagged(t) => format!("{} {}", t.tag, flow(&t.value)),
    }
}

/// Whether two values are equal after normalisation (`1 == 1.0`).
pub fn same(a: &Value, b: &Value) -> bool {
    canonical(a) == canonical(b)
}

/// Sets `dotted.key` to `value` in a mapping, creating intermediate mappings
/// ([`protoclr_formats::dotted::set_dotted`], shared with the training config's `--set`).
pub fn set_dotted(root: &mut Value, key: &str, value: Value) -> Result<()> {
    use protoclr_formats::dotted::DottedError;
    protoclr_formats::dotted::set_dotted(root, key, value).map_err(|e| match e {
        DottedError::EmptySegment => anyhow::anyhow!("key `{key}` has an empty segment"),
        DottedError::NotAMapping(prefix) => anyhow::anyhow!("key `{key}`: `{prefix}` is not a mapping"),
    })
}

/// Looks up `dotted.key` in nested mappings.
pub use protoclr_formats::dotted::get_dotted;

/// The leaf paths a value sets under `prefix` ([`protoclr_formats::dotted::leaf_paths`]; a key
/// that is not a string is named in flow style).
fn leaf_paths(prefix: Vec<String>, v: &Value, out: &mut Vec<Vec<String>>) {
    protoclr_formats::dotted::leaf_paths(prefix, v, &flow, out)
}

/// Which entry (by its key as written) sets each leaf of a mapping, and below which paths its
/// entries reach; a second entry setting the same leaf, or a leaf above or below one set by
/// another entry, is an error naming both keys. `{model.width: 4, model: {width: 8}}` is such
/// a mapping (in either order): without the check, the later entry would silently win.
#[derive(Default)]
pub struct LeafClaims(protoclr_formats::claims::LeafClaims<String>);

impl LeafClaims {
    /// Records that the entry written `who` sets `value` at the dotted `key`.
    pub fn claim(&mut self, who: &str, key: &str, value: &Value) -> Result<()> {
        let mut paths = Vec::new();
        leaf_paths(key.split('.').map(str::to_string).collect(), value, &mut paths);
        self.0
            .claim(who, &who.to_string(), paths)
            .map_err(|(leaf, other)| {
                anyhow::anyhow!("`{leaf}` is set twice in one mapping: by `{other}` and by `{who}`")
            })
    }
}

/// Merges `overlay` into `dst`: mappings are merged key by key (recursively; dotted keys of the
/// overlay address nested keys), anything else replaces. Two entries of one mapping that set the
/// same leaf are an error ([`LeafClaims`]); a later layer overriding an earlier one is not.
pub fn merge(dst: &mut Value, overlay: &Value) -> Result<()> {
    let Some(map) = overlay.as_mapping() else {
        *dst = overlay.clone();
        return Ok(());
    };
    let mut claims = LeafClaims::default();
    for (k, v) in map {
        if let Some(key) = k.as_str() {
            claims.claim(key, key, v)?;
        }
    }
    if !dst.is_mapping() {
        *dst = Value::Mapping(Mapping::new());
    }
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            bail!("mapping key {} is not a string", flow(k));
        };
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            bail!("key `{key}` has an empty segment");
        }
        let mut cur = &mut *dst;
        for part in &parts {
            if !cur.is_mapping() {
                *cur = Value::Mapping(Mapping::new());
            }
            let m = cur.as_mapping_mut().expect("made a mapping above");
            cur = m.entry(Value::String((*part).to_string())).or_insert(Value::Null);
        }
        if v.is_mapping() && cur.is_mapping() {
            merge(cur, v)?;
        } else if v.is_mapping() {
            *cur = Value::Mapping(Mapping::new());
            merge(cur, v)?;
        } else {
            *cur = v.clone();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn numbers_are_normalised() {
        for s in ["1", "1.0", "1e0", "1.00", "+1", "0.1e1"] {
            assert_eq!(canonical(&y(s)), "1", "{s}");
        }
        assert_eq!(canonical(&y("-0.0")), "0");
        assert_eq!(canonical(&y("0.5")), canonical(&y("5e-1")));
        assert_eq!(canonical(&y("0.06")), "0.06");
        assert_ne!(canonical(&y("'1'")), canonical(&y("1")));
    }

    #[test]
    fn keys_are_sorted() {
        assert_eq!(
            canonical(&y("{b: 1, a: {d: 2, c: 3}}")),
            canonical(&y("{a: {c: 3.0, d: 2}, b: 1}"))
        );
        assert_eq!(canonical(&y("{b: 1, a: 2}")), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn flow_text() {
        assert_eq!(flow(&y("[crop]")), "[crop]");
        assert_eq!(flow(&y("[crop, flip]")), "[crop, flip]");
        assert_eq!(flow(&y("[]")), "[]");
        assert_eq!(flow(&y("1.50")), "1.5");
        assert_eq!(flow(&y("'1'")), "\"1\"");
        assert_eq!(flow(&y("'a: b'")), "\"a: b\"");
    }

    #[test]
    fn a_leaf_set_twice_in_one_mapping_is_an_error() {
        for (overlay, leaf, by) in [
            (
                "{model.width: 4, model: {width: 8}}",
                "model.width",
                ["`model.width`", "`model`"],
            ),
            (
                "{model: {width: 8}, model.width: 4}",
                "model.width",
                ["`model`", "`model.width`"],
            ),
            ("{a: {b.c: 1}, a.b: {c: 2}}", "a.b.c", ["`a`", "`a.b`"]),
            (
                "{model: 4, model.width: 8}",
                "model",
                ["`model`", "`model.width`"],
            ),
            (
                "{x: {model.width: 4, model: {width: 8}}}",
                "model.width",
                ["`model.width`", "`model`"],
            ),
        ] {
            let mut base = y("{seed: 1}");
            let msg = format!("{:#}", merge(&mut base, &y(overlay)).unwrap_err());
            assert!(
                msg.contains(&format!("`{leaf}` is set twice")),
                "{overlay}: {msg}"
            );
            assert!(by.iter().all(|k| msg.contains(k)), "{overlay}: {msg}");
        }
        // Different leaves under the same prefix are fine, as is a later layer overriding.
        let mut base = y("{seed: 1}");
        merge(&mut base, &y("{model.width: 4, model: {arch: resnet50}}")).unwrap();
        merge(&mut base, &y("{model: {width: 8}}")).unwrap();
        assert_eq!(get_dotted(&base, "model.width"), Some(&y("8")));
        assert_eq!(get_dotted(&base, "model.arch"), Some(&y("resnet50")));
    }

    #[test]
    fn flow_prints_floats_in_shortest_round_trip_form() {
        for (text, shown) in [
            ("1e300", "1e300"),
            ("-1e300", "-1e300"),
            ("1e-300", "1e-300"),
            ("1.5e-7", "1.5e-7"),
            ("2.5e20", "2.5e20"),
            ("1e17", "100000000000000000"),
            ("0.06", "0.06"),
            ("1e-4", "0.0001"),
            ("1e-6", "0.000001"),
            ("123456.5", "123456.5"),
            ("1e6", "1000000"),
        ] {
            let v = y(text);
            assert_eq!(flow(&v), shown, "{text}");
            // Each printed form reads back as the same number.
            assert!(same(&y(shown), &v), "{text}");
        }
        // The canonical text (hashed into cell ids) is unchanged: positional digits.
        assert_eq!(canonical(&y("1e300")), format!("1{}", "0".repeat(300)));
        assert_eq!(canonical(&y("1e-5")), "0.00001");
    }

    #[test]
    fn merge_with_dotted_keys() {
        let mut base = y("{loss: {name: balanced, tau: 0.5}, seed: 1}");
        merge(&mut base, &y("{loss.alpha: 2, model: {width: 16}}")).unwrap();
        assert_eq!(
            canonical(&base),
            canonical(&y(
                "{loss: {name: balanced, tau: 0.5, alpha: 2}, seed: 1, model: {width: 16}}"
            ))
        );
        set_dotted(&mut base, "augment.remove", y("[crop]")).unwrap();
        assert_eq!(get_dotted(&base, "augment.remove"), Some(&y("[crop]")));
        assert!(set_dotted(&mut base, "seed.x", y("1")).is_err());
    }
}

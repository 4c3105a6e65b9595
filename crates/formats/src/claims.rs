//! Which entry set each leaf of a nested mapping: the check behind "a dotted key and a nested key
//! that set the same leaf are an error" (`{model.width: 4, model: {width: 8}}`), used for the
//! mappings of experiment files (`protoclr_grid::value::LeafClaims`) and for `--set` overrides
//! (`protoclr_train::config`).

use std::collections::HashMap;

/// Leaf paths (`["model", "width"]`) with the entry that set each: its label (as the error names
/// it) and its owner. Entries of the same owner may set a path again (an override); entries of
/// different owners may not set the same leaf, nor a leaf above or below one set by the other.
pub struct LeafClaims<O> {
    leaves: HashMap<Vec<String>, (String, O)>,
    inner: HashMap<Vec<String>, (String, O)>,
}

impl<O> Default for LeafClaims<O> {
    fn default() -> Self {
        LeafClaims {
            leaves: HashMap::new(),
            inner: HashMap::new(),
        }
    }
}

impl<O: Clone + PartialEq> LeafClaims<O> {
    /// Records that the entry labelled `who`, of `owner`, sets each of `paths`. On a clash with
    /// another owner's entry: Err((the dotted leaf, that entry's label)), nothing recorded for the
    /// clashing path.
    pub fn claim(&mut self, who: &str, owner: &O, paths: Vec<Vec<String>>) -> Result<(), (String, String)> {
        for p in paths {
            let clash = self
                .leaves
                .get(&p)
                .or_else(|| self.inner.get(&p))
                .map(|other| (p.join("."), other))
                .or_else(|| {
                    (1..p.len()).find_map(|n| self.leaves.get(&p[..n]).map(|o| (p[..n].join("."), o)))
                });
            if let Some((leaf, (other, other_owner))) = clash {
                if other_owner != owner {
                    return Err((leaf, other.clone()));
                }
            }
            for n in 1..p.len() {
                self.inner
                    .entry(p[..n].to_vec())
                    .or_insert_with(|| (who.to_string(), owner.clone()));
            }
            self.leaves.insert(p, (who.to_string(), owner.clone()));
        }
        Ok(())
    }
}

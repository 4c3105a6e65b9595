//! Choosing the "best" of several settings fairly: on validation accuracy (`val_linear_top1`,
//! mean over seeds), reporting the test accuracy of what was chosen.
//!
//! The validation split is drawn from the official training split, disjoint from the probe/kNN
//! bank (docs/formats.md), so a choice made on it does not peek at the test set. Cells written
//! before validation metrics existed have none: then the choice falls back to test accuracy and
//! every text that shows it says so ("selection on test, optimistic").

use std::fmt;

/// Metric every selection is made on when all candidates have it.
pub const VALIDATION_METRIC: &str = "val_linear_top1";
/// Metric reported for what was selected (and the fallback selection metric).
pub const TEST_METRIC: &str = "linear_top1";

/// What a selection was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Mean validation linear top-1 over seeds (every candidate has it).
    Validation,
    /// Mean test linear top-1: some candidate has no validation metrics (optimistic).
    Test,
}

impl Basis {
    /// Short phrase for tables and figure notes: `on validation` / `on test`.
    pub fn short(self) -> &'static str {
        match self {
            Basis::Validation => "on validation",
            Basis::Test => "on test",
        }
    }

    /// One sentence saying how the choice was made.
    pub fn sentence(self) -> &'static str {
        match self {
            Basis::Validation => {
                "Selection on validation: the setting with the highest mean validation linear \
                 top-1 (`val_linear_top1`, a split of the training set disjoint from the probe \
                 bank) is chosen, and its test accuracy is reported."
            }
            Basis::Test => {
                "Selection on test: these cells have no validation metrics (written before \
                 `val_linear_top1` existed), so the setting with the highest mean test linear \
                 top-1 is chosen and shown — optimistic, a maximum of noisy means."
            }
        }
    }
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Basis::Validation => "validation",
            Basis::Test => "test",
        })
    }
}

/// The outcome of a selection among candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// Position of the chosen candidate in the slice given to [`select_best`].
    pub index: usize,
    pub basis: Basis,
    /// Candidates it was chosen from (items with a test value).
    pub candidates: usize,
    /// Candidates without a validation value (> 0 forces [`Basis::Test`]).
    pub without_validation: usize,
}

/// Chooses the best item: among the items with a `test` value, the highest `val` if every one of
/// them has a `val` value, else the highest `test` (then [`Basis::Test`]). Ties keep the first.
/// `None` when no item has a test value.
pub fn select_best<T>(
    items: &[T],
    val: impl Fn(&T) -> Option<f64>,
    test: impl Fn(&T) -> Option<f64>,
) -> Option<Selection> {
    let candidates: Vec<usize> = (0..items.len()).filter(|&i| test(&items[i]).is_some()).collect();
    if candidates.is_empty() {
        return None;
    }
    let without_validation = candidates.iter().filter(|&&i| val(&items[i]).is_none()).count();
    let basis = if without_validation == 0 {
        Basis::Validation
    } else {
        Basis::Test
    };
    let key = |i: usize| {
        match basis {
            Basis::Validation => val(&items[i]),
            Basis::Test => test(&items[i]),
        }
        .unwrap_or(f64::NEG_INFINITY)
    };
    let mut best = candidates[0];
    for &i in &candidates[1..] {
        if key(i) > key(best) {
            best = i;
        }
    }
    Some(Selection {
        index: best,
        basis,
        candidates: candidates.len(),
        without_validation,
    })
}

/// The basis shared by several selections: [`Basis::Test`] if any was made on test.
pub fn combined_basis(bases: impl IntoIterator<Item = Basis>) -> Option<Basis> {
    bases.into_iter().fold(None, |acc, b| match (acc, b) {
        (Some(Basis::Test), _) | (_, Basis::Test) => Some(Basis::Test),
        _ => Some(Basis::Validation),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Item = (Option<f64>, Option<f64>); // (val, test)

    fn pick(items: &[Item]) -> Option<Selection> {
        select_best(items, |x| x.0, |x| x.1)
    }

    #[test]
    fn validation_decides_when_every_candidate_has_it() {
        // Test would pick item 0; validation picks item 1.
        let items = [(Some(50.0), Some(70.0)), (Some(60.0), Some(65.0)), (None, None)];
        let s = pick(&items).unwrap();
        assert_eq!(s.index, 1);
        assert_eq!(s.basis, Basis::Validation);
        assert_eq!((s.candidates, s.without_validation), (2, 0));
    }

    #[test]
    fn falls_back_to_test_when_a_candidate_lacks_validation() {
        let items = [
            (Some(50.0), Some(70.0)),
            (None, Some(65.0)),
            (Some(90.0), Some(60.0)),
        ];
        let s = pick(&items).unwrap();
        assert_eq!(s.index, 0);
        assert_eq!(s.basis, Basis::Test);
        assert_eq!((s.candidates, s.without_validation), (3, 1));
    }

    #[test]
    fn ties_keep_the_first_and_empty_is_none() {
        let items = [(Some(1.0), Some(1.0)), (Some(1.0), Some(2.0))];
        assert_eq!(pick(&items).unwrap().index, 0);
        assert!(pick(&[(Some(1.0), None)]).is_none());
        assert!(pick(&[]).is_none());
    }

    #[test]
    fn combined_basis_is_test_if_any_is() {
        assert_eq!(combined_basis([]), None);
        assert_eq!(
            combined_basis([Basis::Validation, Basis::Validation]),
            Some(Basis::Validation)
        );
        assert_eq!(
            combined_basis([Basis::Validation, Basis::Test]),
            Some(Basis::Test)
        );
    }
}

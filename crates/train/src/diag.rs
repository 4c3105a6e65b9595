//! What the projections of a training step say about the representation, cheaply, per step:
//! how far the views share one direction ([`ViewStats::mean_direction`], the collapse signal)
//! and, under the supervised prototype objective, how many views are nearest their own class
//! prototype ([`ViewStats::proto_correct`], the objective's training accuracy). The run averages
//! them over an epoch into its [`EpochRecord`](crate::metrics::EpochRecord).

use crate::bias::unit_f64 as unit;

/// Statistics of one step's projections `z` (`m` rows of `d` values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewStats {
    /// ‖(1/m) Σ ẑ_i‖ over the unit rows ẑ_i: 1 when every view points one way, about 1/√m for
    /// directions drawn at random.
    pub mean_direction: f64,
    /// Share of rows whose most similar prototype (cosine) is their label's; None without
    /// prototypes.
    pub proto_correct: Option<f64>,
}

/// The statistics of `z` (row-major `[m, d]`). With `protos` (row-major `[C, d]`) and `labels`
/// (len m), `proto_correct` compares each row with every prototype; a zero prototype (a class
/// not seen yet) never wins.
pub fn view_stats(z: &[f32], d: usize, labels: &[u32], protos: Option<&[f32]>) -> ViewStats {
    let m = z.len() / d.max(1);
    let rows: Vec<Vec<f64>> = z.chunks_exact(d).map(unit).collect();
    let mut sum = vec![0f64; d];
    for r in &rows {
        sum.iter_mut().zip(r).for_each(|(s, v)| *s += v);
    }
    let mean_direction = sum.iter().map(|s| s * s).sum::<f64>().sqrt() / m.max(1) as f64;
    let proto_correct = protos.map(|p| {
        // Unseen (zero) prototypes are left out of the comparison.
        let protos: Vec<(usize, Vec<f64>)> = p
            .chunks_exact(d)
            .enumerate()
            .filter(|(_, mu)| mu.iter().any(|&v| v != 0.0))
            .map(|(k, mu)| (k, unit(mu)))
            .collect();
        let correct = rows
            .iter()
            .zip(labels)
            .filter(|(r, &y)| {
                let best = protos
                    .iter()
                    .map(|(k, mu)| (*k, r.iter().zip(mu).map(|(a, b)| a * b).sum::<f64>()))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                best.is_some_and(|(k, _)| k == y as usize)
            })
            .count();
        correct as f64 / m.max(1) as f64
    });
    ViewStats {
        mean_direction,
        proto_correct,
    }
}

/// Running means of [`ViewStats`] over the steps of an epoch.
#[derive(Debug, Default, Clone)]
pub struct EpochStats {
    steps: usize,
    mean_direction: f64,
    proto_correct: Option<f64>,
}

impl EpochStats {
    /// Adds one step's statistics.
    pub fn add(&mut self, s: ViewStats) {
        self.steps += 1;
        self.mean_direction += s.mean_direction;
        if let Some(p) = s.proto_correct {
            *self.proto_correct.get_or_insert(0.0) += p;
        }
    }

    /// The means over the steps added: (mean direction, prototype accuracy); None when empty.
    pub fn means(&self) -> (Option<f64>, Option<f64>) {
        if self.steps == 0 {
            return (None, None);
        }
        let n = self.steps as f64;
        (Some(self.mean_direction / n), self.proto_correct.map(|p| p / n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_direction_gives_one_and_opposite_pairs_give_zero() {
        let same = [1.0f32, 2.0, 2.0, 4.0, 0.5, 1.0];
        assert!((view_stats(&same, 2, &[], None).mean_direction - 1.0).abs() < 1e-12);
        let opposite = [1.0f32, 0.0, -3.0, 0.0, 0.0, 2.0, 0.0, -1.0];
        assert!(view_stats(&opposite, 2, &[], None).mean_direction.abs() < 1e-12);
    }

    #[test]
    fn prototype_accuracy_counts_nearest_own_prototypes() {
        // Prototypes e0, e1, and a zero row (class 2 not seen yet: never nearest).
        let protos = [1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0];
        // Rows near e0, e1, e1 with labels 0, 1, 0: two of three right.
        let z = [3.0f32, 0.5, 0.2, 2.0, 0.1, 1.0];
        let s = view_stats(&z, 2, &[0, 1, 0], Some(&protos));
        assert!((s.proto_correct.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // Scaling a row changes nothing (cosines); a prototype of any norm counts by direction.
        let scaled = [30.0f32, 5.0, 0.02, 0.2, 0.1, 1.0];
        let big = [5.0f32, 0.0, 0.0, 0.5, 0.0, 0.0];
        assert_eq!(
            view_stats(&scaled, 2, &[0, 1, 0], Some(&big)).proto_correct,
            s.proto_correct
        );
        let mut e = EpochStats::default();
        e.add(s);
        e.add(ViewStats {
            mean_direction: 0.0,
            proto_correct: Some(0.0),
        });
        let (md, pc) = e.means();
        assert!((md.unwrap() - s.mean_direction / 2.0).abs() < 1e-12);
        assert!((pc.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }
}

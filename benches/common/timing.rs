//! Timing helpers the benches share (`#[path = "common/timing.rs"] mod timing;`).
// Each bench uses what it needs of these.
#![allow(dead_code)]

use std::time::Instant;

/// The median of `samples` (the upper middle one for an even count).
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Seconds each of `runs` calls of `f` took.
pub fn seconds_per_call(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// Timings of `a` and `b` in `pairs` pairs, in ABBA order: a pair's ratio `b / a` cancels
/// drift in machine load that spans seconds, and alternating who goes first cancels what the
/// first run of a pair pays. Each closure returns the seconds it measured.
pub struct Paired {
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub ratios: Vec<f64>,
}

pub fn paired(pairs: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> Paired {
    let mut out = Paired {
        a: Vec::new(),
        b: Vec::new(),
        ratios: Vec::new(),
    };
    for i in 0..pairs {
        let (ta, tb) = if i % 2 == 0 {
            let ta = a();
            (ta, b())
        } else {
            let tb = b();
            (a(), tb)
        };
        out.a.push(ta);
        out.b.push(tb);
        out.ratios.push(tb / ta);
    }
    out
}

impl Paired {
    /// The median of the per-pair ratios `b / a`.
    pub fn ratio(&self) -> f64 {
        median(&self.ratios)
    }

    /// The middle half of the per-pair ratios.
    pub fn middle_half(&self) -> (f64, f64) {
        let mut sorted = self.ratios.clone();
        sorted.sort_by(f64::total_cmp);
        (sorted[sorted.len() / 4], sorted[3 * sorted.len() / 4])
    }
}

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

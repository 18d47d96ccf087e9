//! LAT extraction time, the forward excluded: `probe::lat::fit` on activations already in
//! memory, for N contrast pairs x L layers x d, by method, beside scikit-learn's PCA on the same
//! shapes (the RepE reference: `PCA(n_components=1).fit` on each layer's pair differences),
//! measured in the same run by `benches/sklearn_lat.py` when Python has scikit-learn.
//!   cargo bench --bench lat
//!
//! Activations are seeded Gaussian noise with a planted copy/correct direction, so PCA has a
//! component to find. Times are the median of 5 runs.

#[path = "../src/process.rs"]
#[allow(dead_code)]
mod process;
use ndarray::{Array1, Array2};
use probe::lat::{fit, ContrastPair, LatMethod};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::process::Command;

/// (pairs, layers, d): Aligner-135M's study (SmolLM2: 30 layers, d 576), a bigger stimulus
/// set, and a 7B-shape reading (32 layers, d 4096).
const SHAPES: [(usize, usize, usize); 3] = [(150, 30, 576), (1024, 30, 576), (256, 32, 4096)];
const RUNS: usize = 5;

fn planted(pairs: usize, layers: usize, d: usize) -> (Vec<Array2<f32>>, Vec<ContrastPair>) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut normal = move || -> f32 {
        let (u1, u2): (f32, f32) = (rng.gen::<f32>().max(1e-12), rng.gen());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    };
    let acts = (0..layers)
        .map(|_| {
            let truth = Array1::from_iter((0..d).map(|_| normal()));
            let mut a = Array2::from_shape_fn((2 * pairs, d), |_| normal());
            for k in 0..pairs {
                let mut row = a.row_mut(2 * k + 1);
                row.scaled_add(0.3, &truth);
            }
            a
        })
        .collect();
    (
        acts,
        (0..pairs)
            .map(|k| ContrastPair {
                copy: 2 * k,
                correct: 2 * k + 1,
            })
            .collect(),
    )
}

#[path = "common/timing.rs"]
mod timing;

fn median_seconds(f: impl FnMut()) -> f64 {
    timing::median(&timing::seconds_per_call(RUNS, f))
}

/// scikit-learn's median seconds for one shape, or why there is none.
fn sklearn_seconds(pairs: usize, layers: usize, d: usize) -> Result<f64, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sklearn_lat.py");
    let out = Command::new("python3")
        .args([
            script,
            &pairs.to_string(),
            &layers.to_string(),
            &d.to_string(),
            &RUNS.to_string(),
        ])
        .output()
        .map_err(|e| format!("python3 did not run: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_string());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("unreadable sklearn output: {e}"))
}

fn main() {
    // The allocator settings `alens` runs with (freed memory kept in the process).
    process::keep_freed_memory();
    process::fix_thread_count();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("LAT extraction (fit only, the forward excluded), {threads} threads, median of {RUNS} runs");
    println!(
        "{:>24} | {:>10} | {:>10} | {:>12} | {:>9} | {:>9}",
        "pairs x layers x d", "mean-diff", "pca", "sklearn PCA", "mean-diff", "pca"
    );
    println!(
        "{:>24} | {:>10} | {:>10} | {:>12} | {:>9} | {:>9}",
        "", "s", "s", "s", "vs sklearn", "vs sklearn"
    );
    for (pairs, layers, d) in SHAPES {
        let (acts, contrast) = planted(pairs, layers, d);
        let mean_diff = median_seconds(|| {
            fit(&acts, &contrast, LatMethod::MeanDiff, 0.2, 0).expect("mean-diff fits");
        });
        let pca = median_seconds(|| {
            fit(&acts, &contrast, LatMethod::Pca, 0.2, 0).expect("PCA fits");
        });
        let shape = format!("{pairs} x {layers} x {d}");
        match sklearn_seconds(pairs, layers, d) {
            Ok(sk) => println!(
                "{shape:>24} | {mean_diff:>10.4} | {pca:>10.4} | {sk:>12.4} | {:>8.1}x | {:>8.1}x",
                sk / mean_diff,
                sk / pca
            ),
            Err(why) => println!("{shape:>24} | {mean_diff:>10.4} | {pca:>10.4} | skipped: {why}"),
        }
    }
}

//! The bf16 GEMM alone, on the shapes of a 110M-class Llama's linear layers (d 768, MLP
//! 2048, vocab 32000): many rows (a capture batch, prefill) and few (decoding), beside the
//! f32 GEMM on the same weights widened, in the same run:
//!   cargo bench -p kernels --bench bf16_gemm
use half::bf16;
use kernels::bf16::{Bf16Compute, PackedWeight};
use std::time::Instant;

/// Median seconds of `runs` calls after one warm-up.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut s: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    s.sort_by(f64::total_cmp);
    s[runs / 2]
}

fn main() {
    if !kernels::bf16::available() {
        println!("this CPU has no AVX512-BF16 (or ALENS_BF16_KERNELS=off): nothing to measure");
        return;
    }
    println!(
        "{:>5} {:>5} {:>6} | {:>8} {:>10} {:>8} {:>8} GFLOP/s | native / f32",
        "m", "k", "n", "f32", "f32 packed", "native", "exact"
    );
    for (m, k, n) in [
        (424, 768, 768),
        (424, 128, 2048),
        (424, 768, 2048),
        (424, 2048, 768),
        (1024, 768, 2048),
        (8, 768, 32000),
        (8, 768, 2048),
        (1, 2048, 768),
    ] {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.3).collect();
        let w: Vec<bf16> = (0..n * k)
            .map(|i| bf16::from_f32(((i * 53 % 89) as f32 - 44.0) / 310.0))
            .collect();
        let wide: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let packed = PackedWeight::pack(&w, n, k).expect("available");
        let packed_f32 = kernels::f32_matmul::PackedF32Weight::pack(&wide, n, k).expect("AVX-512F");
        let runs = if m * n * k > 100_000_000 { 7 } else { 31 };
        let flops = 2.0 * (m * n * k) as f64 / 1e9;
        let f32_s = time(runs, || drop(kernels::f32_matmul::matmul_t(&x, m, k, &wide, n)));
        let f32_packed = time(runs, || drop(packed_f32.matmul_t(&x, m)));
        let native = time(runs, || drop(packed.matmul_t(&x, m, Bf16Compute::Native)));
        let exact = time(runs, || drop(packed.matmul_t(&x, m, Bf16Compute::Exact)));
        println!(
            "{m:>5} {k:>5} {n:>6} | {:>8.1} {:>10.1} {:>8.1} {:>8.1}         | {:.2}x",
            flops / f32_s,
            flops / f32_packed,
            flops / native,
            flops / exact,
            f32_s / native
        );
    }
}

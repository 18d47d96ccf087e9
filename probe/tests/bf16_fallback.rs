//! A bf16 checkpoint on a CPU without AVX512-BF16: `ALENS_BF16_KERNELS=off` makes
//! `kernels::bf16::available()` say no, as such a CPU does, so every bf16 weight stays a
//! tensor and is cast to f32 per product (the path those CPUs have always taken). The results
//! must be the f32 path's: HF's within the goldens' 1e-4, whichever `Bf16Compute` is asked
//! for (neither applies without the kernels).
//!
//! The switch is read once per process, so this file is its own test binary and holds one
//! test, which sets it before anything reads it.

mod common;

use candle_core::{DType, Device};
use common::{at, max_abs_diff};
use kernels::bf16::Bf16Compute;
use probe::hooks::HookPoint;
use probe::model::LoadOptions;
use probe::Checkpoint;
use std::path::PathBuf;

#[test]
fn without_the_bf16_kernels_a_bf16_model_gives_the_f32_paths_results() {
    // SAFETY (std's, not an unsafe block): no other thread of this test binary reads the
    // environment yet.
    std::env::set_var("ALENS_BF16_KERNELS", "off");
    assert!(!kernels::bf16::available());

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/mistral_bf16");
    let golden = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = golden["token_ids"].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
    let mut logits_by_mode = Vec::new();
    for bf16_compute in [Bf16Compute::Native, Bf16Compute::Exact] {
        let options = LoadOptions {
            bf16_compute,
            ..LoadOptions::default()
        };
        let ckpt = Checkpoint::load_with(&dir, None, options, &Device::Cpu).unwrap();
        assert_eq!(ckpt.weight_dtype, DType::BF16, "weights stay in their stored dtype");
        let (cache, logits) = common::run(&ckpt, &ids);
        for i in 0..ckpt.config.num_hidden_layers {
            let key = format!("blocks.{i}.hook_resid_post");
            let err = max_abs_diff(&at(&cache, HookPoint::resid_post(i)), &golden[&key]);
            assert!(err <= 1e-4, "{bf16_compute:?} {key}: error {err}");
        }
        let err = max_abs_diff(&logits, &golden["logits"]);
        assert!(err <= 1e-4, "{bf16_compute:?} logits: error {err}");
        logits_by_mode.push(logits);
    }
    assert_eq!(max_abs_diff(&logits_by_mode[0], &logits_by_mode[1]), 0.0);
}

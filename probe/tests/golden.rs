//! Our forward pass against HF transformers on the same weights.
//!
//! `tests/golden/make_golden.py` builds four tiny random checkpoints (Llama GQA untied, Llama 3
//! rope scaling tied, Qwen2 with biases, Mistral bf16 with a sliding window) and saves HF's
//! outputs for fixed token ids. HF convention: `output_hidden_states[i + 1]` is the output of
//! decoder layer i for i < L - 1, but the last entry `hidden_states[L]` already has the final
//! norm applied. So we compare our `blocks.{i}.hook_resid_post` with a forward hook on
//! `model.layers[i]` (saved as `blocks.{i}.hook_resid_post`), and `hidden_states[L]` with our
//! `ln_final.hook_normalized`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{at, max_abs_diff};
use kernels::bf16::Bf16Compute;
use probe::hooks::HookPoint;
use probe::model::LoadOptions;
use probe::{Checkpoint, NoHooks, Positions};
use std::path::PathBuf;

const TOLERANCE: f32 = 1e-4;

fn golden_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name)
}

fn check(name: &str) {
    // Exact: f32-level products even for bf16 weights, so one tight tolerance fits all.
    let options = LoadOptions {
        bf16_compute: Bf16Compute::Exact,
        ..LoadOptions::default()
    };
    check_with(name, options, TOLERANCE, false);
}

/// `tolerance` bounds the max abs error, or with `relative` the max abs error over the
/// reference's largest value.
fn check_with(name: &str, options: LoadOptions, tolerance: f32, relative: bool) {
    let dir = golden_dir(name);
    let ckpt = Checkpoint::load_with(&dir, None, options, &Device::Cpu).unwrap();
    let golden = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = golden["token_ids"].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
    let (cache, logits) = common::run(&ckpt, &ids);
    let layers = ckpt.config.num_hidden_layers;
    let error = |ours: &Tensor, reference: &Tensor| {
        let err = max_abs_diff(ours, reference);
        if relative {
            err / reference
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        } else {
            err
        }
    };
    for i in 0..layers {
        let key = format!("blocks.{i}.hook_resid_post");
        let err = error(&at(&cache, HookPoint::resid_post(i)), &golden[&key]);
        assert!(err <= tolerance, "{name} {key}: error {err}");
        if i + 1 < layers {
            let err = error(
                &at(&cache, HookPoint::resid_post(i)),
                &golden[&format!("hidden_states.{}", i + 1)],
            );
            assert!(err <= tolerance, "{name} hidden_states.{}: {err}", i + 1);
        }
    }
    let err = error(&at(&cache, HookPoint::Embed), &golden["hidden_states.0"]);
    assert!(err <= tolerance, "{name} embeddings: {err}");
    let err = error(
        &at(&cache, HookPoint::FinalNorm),
        &golden[&format!("hidden_states.{layers}")],
    );
    assert!(err <= tolerance, "{name} final norm: {err}");
    let err = error(&logits, &golden["logits"]);
    assert!(err <= tolerance, "{name} logits: error {err}");

    // The same ids without hooks give the same logits: hooks that only read change nothing.
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let positions = Positions::contiguous(1, ids.len(), 0, &Device::Cpu).unwrap();
    let plain = ckpt.model.forward(&input, &positions, None, &mut NoHooks).unwrap();
    let plain_logits = ckpt.model.logits(&plain).unwrap().squeeze(0).unwrap();
    assert_eq!(max_abs_diff(&plain_logits, &logits), 0.0);
}

#[test]
fn llama_gqa_untied_matches_hf() {
    check("llama_gqa");
}

#[test]
fn llama3_rope_scaling_tied_matches_hf() {
    check("llama3_tied");
}

#[test]
fn qwen2_biases_match_hf() {
    check("qwen2_bias");
}

#[test]
fn mistral_bf16_sliding_window_matches_hf() {
    let ckpt = Checkpoint::load(&golden_dir("mistral_bf16")).unwrap();
    assert_eq!(ckpt.weight_dtype, DType::BF16, "weights stay in their stored dtype");
    check("mistral_bf16");
    // Native (the default): activations rounded to bf16 at each matmul, as torch computes a
    // bf16 model; each rounding is bf16's 2^-9 and they add up over the layers (measured:
    // 0.45% of the largest value after layer 0, 1.07% after layer 2), so the bound is
    // bf16-sized and relative.
    check_with("mistral_bf16", LoadOptions::default(), 2e-2, true);
}

/// `tests/golden/make_lora_golden.py`: a PEFT LoRA adapter (r 4, alpha 8, every projection,
/// random A and B) on llama_gqa, saved by peft, and HF + peft's outputs with it. Merged at load,
/// ours must give the same layer outputs and logits, and differ from the base.
#[test]
fn peft_lora_adapter_merged_at_load_matches_hf_peft() {
    use probe::model::adapter::LoraAdapter;
    let dir = golden_dir("lora_llama_gqa");
    let adapter = LoraAdapter::load(&dir).unwrap();
    let base = adapter.base_model().unwrap();
    assert_eq!(
        base.canonicalize().unwrap(),
        golden_dir("llama_gqa").canonicalize().unwrap()
    );
    let ckpt = Checkpoint::load_with_adapter(&base, Some(adapter), &Device::Cpu).unwrap();
    let golden = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = golden["token_ids"].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
    let (cache, logits) = common::run(&ckpt, &ids);
    for i in 0..ckpt.config.num_hidden_layers {
        let key = format!("blocks.{i}.hook_resid_post");
        let err = max_abs_diff(&at(&cache, HookPoint::resid_post(i)), &golden[&key]);
        assert!(err <= TOLERANCE, "{key}: error {err}");
    }
    let err = max_abs_diff(&logits, &golden["logits"]);
    assert!(err <= TOLERANCE, "logits: error {err}");

    let (_, base_logits) = common::run(&Checkpoint::load(&base).unwrap(), &ids);
    assert!(
        max_abs_diff(&base_logits, &golden["logits"]) > 1e-2,
        "the adapter must change the model"
    );
}

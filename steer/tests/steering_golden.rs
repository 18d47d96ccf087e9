//! Steering equals the standard PyTorch method: a forward hook on HF's `model.layers[l]`
//! adding `alpha * v` to its output (golden outputs from tests/golden/make_golden.py).

use candle_core::{DType, Device, Tensor};
use probe::{Checkpoint, NoHooks, Positions, Site};
use std::path::PathBuf;
use steer::generate::{generate, generate_batch, GenerationConfig};
use steer::steering::{SteerPositions, SteeringHook};
use steer::vectors::ControlVectors;

const LAYER: usize = 1;
const ALPHA: f64 = 1.5;

/// f32-level products for the bf16 model too, so one tight tolerance fits every golden.
fn load_exact(dir: &std::path::Path) -> Checkpoint {
    let options = probe::model::LoadOptions {
        bf16_compute: probe::model::Bf16Compute::Exact,
        ..Default::default()
    };
    Checkpoint::load_with(dir, None, options, &Device::Cpu).unwrap()
}

fn check(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name);
    let ckpt = load_exact(&dir);
    let golden = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    // A bare file with only layers.{i} tensors and no sidecar, as other tools write them.
    let vectors = ControlVectors::load(
        &dir.join("steer.safetensors"),
        ckpt.config.hidden_size,
        ckpt.config.num_hidden_layers,
    )
    .unwrap();
    assert!(vectors.metadata.is_none());
    let mut hook = SteeringHook::new(Site::ResidPost, SteerPositions::All);
    hook.add(&vectors, &[LAYER], ALPHA, &Device::Cpu).unwrap();

    let ids: Vec<u32> = golden["token_ids"].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let positions = Positions::contiguous(1, ids.len(), 0, &Device::Cpu).unwrap();
    let normed = ckpt.model.forward(&input, &positions, None, &mut hook).unwrap();
    let logits = ckpt.model.logits(&normed).unwrap().squeeze(0).unwrap();
    let err = (logits - &golden["steered_logits"])
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(err <= 1e-4, "{name}: steered logits differ from HF by {err}");

    let expected: Vec<u32> = golden["steered_greedy"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let config = GenerationConfig {
        ignore_eos: true,
        ..GenerationConfig::greedy(expected.len(), vec![])
    };
    let mut hook = SteeringHook::new(Site::ResidPost, SteerPositions::All);
    hook.add(&vectors, &[LAYER], ALPHA, &Device::Cpu).unwrap();
    let ours = generate(&ckpt.model, &ids[..4], &config, &mut hook).unwrap();
    assert_eq!(
        ours, expected,
        "{name}: KV-cached steered greedy differs from HF's uncached one"
    );

    // Batched over prompts of different lengths (left-padded), steered, each row equals the
    // same prompt generated alone.
    let prompts: Vec<Vec<u32>> = [4, 9, 2, 6].iter().map(|&n| ids[..n.min(ids.len())].to_vec()).collect();
    let mut hook = SteeringHook::new(Site::ResidPost, SteerPositions::All);
    hook.add(&vectors, &[LAYER], ALPHA, &Device::Cpu).unwrap();
    let batched = generate_batch(&ckpt.model, &prompts, &config, &mut hook).unwrap();
    for (prompt, row) in prompts.iter().zip(&batched) {
        let mut hook = SteeringHook::new(Site::ResidPost, SteerPositions::All);
        hook.add(&vectors, &[LAYER], ALPHA, &Device::Cpu).unwrap();
        assert_eq!(
            row,
            &generate(&ckpt.model, prompt, &config, &mut hook).unwrap(),
            "{name}: batched row differs"
        );
    }

    // Alpha 0 is bit-identical to no steering at all.
    let mut zero = SteeringHook::new(Site::ResidPost, SteerPositions::All);
    zero.add(&vectors, &[LAYER], 0.0, &Device::Cpu).unwrap();
    let a = generate(&ckpt.model, &ids[..4], &config, &mut zero).unwrap();
    let b = generate(&ckpt.model, &ids[..4], &config, &mut NoHooks).unwrap();
    assert_eq!(a, b);
}

#[test]
fn llama_gqa_steering_matches_hf() {
    check("llama_gqa");
}

#[test]
fn llama3_steering_matches_hf() {
    check("llama3_tied");
}

#[test]
fn qwen2_steering_matches_hf() {
    check("qwen2_bias");
}

#[test]
fn mistral_bf16_steering_matches_hf() {
    check("mistral_bf16");
}

#[test]
fn bad_vectors_and_alphas_are_refused() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama_gqa");
    let path = dir.join("steer.safetensors");
    let err = ControlVectors::load(&path, 16, 3).unwrap_err().to_string();
    assert!(err.contains("width 32") && err.contains("d_model is 16"), "{err}");
    let err = ControlVectors::load(&path, 32, 1).unwrap_err().to_string();
    assert!(err.contains("layer 1") && err.contains("1 layers"), "{err}");
    let vectors = ControlVectors::load(&path, 32, 3).unwrap();
    let mut hook = SteeringHook::new(Site::ResidPost, SteerPositions::All);
    assert!(hook
        .add(&vectors, &[1], f64::NAN, &Device::Cpu)
        .unwrap_err()
        .to_string()
        .contains("finite"));
    assert!(hook
        .add(&vectors, &[2], 1.0, &Device::Cpu)
        .unwrap_err()
        .to_string()
        .contains("no vector for layer 2"));

    let tmp = tempfile::tempdir().unwrap();
    let mut nan = vectors.clone();
    nan.vectors.get_mut(&1).unwrap()[3] = f32::NAN;
    let nan_path = tmp.path().join("nan.safetensors");
    nan.save(&nan_path).unwrap();
    assert!(ControlVectors::load(&nan_path, 32, 3)
        .unwrap_err()
        .to_string()
        .contains("NaN"));

    // GGUF round trip in llama.cpp's layout.
    let gguf = tmp.path().join("v.gguf");
    assert!(vectors.save_gguf(&gguf, "llama").unwrap().is_empty());
    let back = ControlVectors::load(&gguf, 32, 3).unwrap();
    assert_eq!(back.vectors, vectors.vectors);
}

/// Steering only the prompt or only the generated tokens equals HF's KV-cached greedy decoding
/// with a forward hook on `model.layers[l]` that adds `alpha * v` only in the prefill forward
/// (layer input longer than one token) or only in the decode forwards (one token each), golden
/// outputs from tests/golden/make_steer_positions_golden.py.
fn check_positions(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name);
    let ckpt = load_exact(&dir);
    let golden = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let reference = candle_core::safetensors::load(dir.join("steer_positions.safetensors"), &Device::Cpu).unwrap();
    let vectors = ControlVectors::load(
        &dir.join("steer.safetensors"),
        ckpt.config.hidden_size,
        ckpt.config.num_hidden_layers,
    )
    .unwrap();
    let alpha = reference["alpha"].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
    let ids: Vec<u32> = golden["token_ids"].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
    let prompt = &ids[..4];
    let hook = |positions: SteerPositions| {
        let mut hook = SteeringHook::new(Site::ResidPost, positions);
        hook.add(&vectors, &[LAYER], alpha, &Device::Cpu).unwrap();
        hook
    };
    let expected = |key: &str| -> Vec<u32> { reference[key].to_dtype(DType::U32).unwrap().to_vec1().unwrap() };

    // The first generated step under prompt-only steering: the prompt forward, last row.
    let input = Tensor::new(prompt, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let positions = Positions::contiguous(1, prompt.len(), 0, &Device::Cpu).unwrap();
    let normed = ckpt
        .model
        .forward(&input, &positions, None, &mut hook(SteerPositions::Prompt))
        .unwrap();
    let logits = ckpt
        .model
        .logits(&normed)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .get(prompt.len() - 1)
        .unwrap();
    let err = (logits - &reference["prompt_only_first_logits"])
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        err <= 1e-4,
        "{name}: prompt-only first-step logits differ from HF by {err}"
    );

    let unsteered = expected("unsteered_greedy");
    let config = GenerationConfig {
        ignore_eos: true,
        ..GenerationConfig::greedy(unsteered.len(), vec![])
    };
    let ours = generate(&ckpt.model, prompt, &config, &mut NoHooks).unwrap();
    assert_eq!(ours, unsteered, "{name}: unsteered greedy differs from HF's");
    let ours = generate(&ckpt.model, prompt, &config, &mut hook(SteerPositions::Prompt)).unwrap();
    assert_eq!(
        ours,
        expected("prompt_only_greedy"),
        "{name}: prompt-only steered greedy differs from HF's"
    );
    let ours = generate(&ckpt.model, prompt, &config, &mut hook(SteerPositions::Generated)).unwrap();
    assert_eq!(
        ours,
        expected("generated_only_greedy"),
        "{name}: generated-only steered greedy differs from HF's"
    );
}

#[test]
fn llama_gqa_position_steering_matches_hf() {
    check_positions("llama_gqa");
}

#[test]
fn llama3_position_steering_matches_hf() {
    check_positions("llama3_tied");
}

#[test]
fn qwen2_position_steering_matches_hf() {
    check_positions("qwen2_bias");
}

#[test]
fn mistral_bf16_position_steering_matches_hf() {
    check_positions("mistral_bf16");
}

/// `--site` moves the vector: adding it at `resid_pre` of layer l + 1 is adding it at
/// `resid_post` of layer l (the same tensor, bit for bit), while `attn_out` of layer l is
/// another place (the MLP of layer l sees the addition).
#[test]
fn the_site_is_where_the_vector_is_added() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama_gqa");
    let ckpt = load_exact(&dir);
    let vectors = ControlVectors::load(
        &dir.join("steer.safetensors"),
        ckpt.config.hidden_size,
        ckpt.config.num_hidden_layers,
    )
    .unwrap();
    let mut shifted = vectors.clone();
    shifted.vectors = vectors.vectors.iter().map(|(&l, v)| (l + 1, v.clone())).collect();
    let ids = Tensor::new(&[1u32, 5, 9, 2, 17], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let positions = Positions::contiguous(1, 5, 0, &Device::Cpu).unwrap();
    let logits = |v: &ControlVectors, layer: usize, site: Site| {
        let mut hook = steer::steering::Steering::new(
            v.clone(),
            vec![layer],
            site,
            SteerPositions::All,
            steer::steering::SteerMode::Add,
        )
        .unwrap()
        .at(ALPHA, &Device::Cpu)
        .unwrap();
        let normed = ckpt.model.forward(&ids, &positions, None, &mut hook).unwrap();
        ckpt.model
            .logits(&normed)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let post = logits(&vectors, LAYER, Site::ResidPost);
    assert_eq!(post, logits(&shifted, LAYER + 1, Site::ResidPre));
    assert_ne!(post, logits(&vectors, LAYER, Site::AttnOut));
}

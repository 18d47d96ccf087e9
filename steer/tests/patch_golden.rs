//! Activation patching equals the standard PyTorch method: an HF forward hook replacing a
//! module's output in the prefill, KV-cached greedy decoding after it (golden outputs from
//! tests/golden/make_patch_golden.py). And it is exact where it must be: patching every
//! position at resid_post reproduces the source run, the self-patch reproduces the clean run.

use candle_core::{DType, Device, Tensor};
use probe::{Checkpoint, Site};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use steer::generate::GenerationConfig;
use steer::patching::{batch_ranges, patch_batch, PatchPair, PatchPositions, PatchPrompt, PatchSettings};

const CASES: [(&str, PatchPositions, Site); 5] = [
    ("decision_resid_post", PatchPositions::Decision, Site::ResidPost),
    ("answer_resid_post", PatchPositions::Answer, Site::ResidPost),
    ("decision_attn_out", PatchPositions::Decision, Site::AttnOut),
    ("decision_mlp_out", PatchPositions::Decision, Site::MlpOut),
    ("all_resid_post", PatchPositions::All, Site::ResidPost),
];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name)
}

/// f32-level products for the bf16 model too, so one tolerance fits every golden.
fn load_exact(dir: &Path) -> Checkpoint {
    let options = probe::model::LoadOptions {
        bf16_compute: probe::model::Bf16Compute::Exact,
        ..Default::default()
    };
    Checkpoint::load_with(dir, None, options, &Device::Cpu).unwrap()
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn pairs(golden: &HashMap<String, Tensor>, case: &str) -> Vec<PatchPair> {
    let ids = golden[&format!("{case}.prompt_ids")].to_vec2::<i64>().unwrap();
    let spans = golden[&format!("{case}.answer_spans")].to_vec2::<i64>().unwrap();
    let prompt = |row: usize| PatchPrompt {
        ids: ids[row].iter().filter(|&&t| t >= 0).map(|&t| t as u32).collect(),
        answer: (spans[row][0] as usize, spans[row][1] as usize),
    };
    (0..2)
        .map(|pair| PatchPair {
            question: format!("question {pair}"),
            copy: prompt(2 * pair),
            correct: prompt(2 * pair + 1),
        })
        .collect()
}

fn settings(ckpt: &Checkpoint, positions: PatchPositions, site: Site, new_tokens: usize) -> PatchSettings {
    PatchSettings {
        site,
        layers: (0..ckpt.config.num_hidden_layers).collect(),
        positions,
        generation: GenerationConfig {
            ignore_eos: true,
            ..GenerationConfig::greedy(new_tokens, vec![])
        },
    }
}

fn check(name: &str) {
    let ckpt = load_exact(&dir(name));
    let golden = candle_core::safetensors::load(dir(name).join("patch.safetensors"), &Device::Cpu).unwrap();
    for (case, positions, site) in CASES {
        let pairs = pairs(&golden, case);
        let result = patch_batch(&ckpt.model, &pairs, 0, &settings(&ckpt, positions, site, 6)).unwrap();
        let first = ints(&golden[&format!("{case}.first_tokens")]);
        for (pair, p) in result.pairs.iter().enumerate() {
            assert_eq!(
                [p.copy_first_token as i64, p.correct_first_token as i64],
                [first[2 * pair], first[2 * pair + 1]],
                "{name} {case}: clean first tokens"
            );
        }
        let field = |key: &str| golden[&format!("{case}.{key}")].to_vec3::<f64>().unwrap();
        let flags = |key: &str| {
            golden[&format!("{case}.{key}")]
                .to_dtype(DType::I64)
                .unwrap()
                .to_vec3::<i64>()
                .unwrap()
        };
        let (change, switched, output_switched) =
            (field("logit_diff_change"), flags("switched"), flags("output_switched"));
        let (control_change, control_switched, control_changed) = (
            field("control_logit_diff_change"),
            flags("control_switched"),
            flags("control_changed"),
        );
        for (pair, p) in result.pairs.iter().enumerate() {
            for (layer, directions) in p.layers.iter().enumerate() {
                for (d, t) in directions.iter().enumerate() {
                    let at = format!("{name} {case} layer {layer} pair {pair} direction {d}");
                    assert!(
                        (t.logit_diff_change - change[layer][pair][d]).abs() <= 1e-4,
                        "{at}: logit diff change {} vs HF {}",
                        t.logit_diff_change,
                        change[layer][pair][d]
                    );
                    assert_eq!(t.switched as i64, switched[layer][pair][d], "{at}: switched");
                    assert_eq!(
                        t.output_switched as i64, output_switched[layer][pair][d],
                        "{at}: output switched"
                    );
                    let Some(c) = t.control else {
                        assert_eq!(control_switched[layer][pair][d], -1, "{at}: HF has a control here");
                        continue;
                    };
                    assert!(
                        (c.logit_diff_change - control_change[layer][pair][d]).abs() <= 1e-4,
                        "{at}: control logit diff change"
                    );
                    assert_eq!(
                        c.switched as i64, control_switched[layer][pair][d],
                        "{at}: control switched"
                    );
                    assert_eq!(
                        c.changed as i64, control_changed[layer][pair][d],
                        "{at}: control changed"
                    );
                }
            }
        }
        assert!(
            result.self_identical.iter().all(|&same| same),
            "{name} {case}: the self-patch must be the clean run bit for bit: {:?}",
            result.self_max_abs_logit_diff
        );
    }
}

#[test]
fn llama_gqa_patching_matches_hf() {
    check("llama_gqa");
}

#[test]
fn llama3_patching_matches_hf() {
    check("llama3_tied");
}

#[test]
fn qwen2_patching_matches_hf() {
    check("qwen2_bias");
}

#[test]
fn mistral_bf16_patching_matches_hf() {
    check("mistral_bf16");
}

/// Patching every position of the residual stream hands the target the source's whole state
/// after that layer: its first logits are the source's, bit for bit, at every layer.
#[test]
fn patching_every_position_reproduces_the_source_exactly() {
    let ckpt = load_exact(&dir("llama_gqa"));
    let golden = candle_core::safetensors::load(dir("llama_gqa").join("patch.safetensors"), &Device::Cpu).unwrap();
    let pairs = pairs(&golden, "all_resid_post");
    let result = patch_batch(
        &ckpt.model,
        &pairs,
        0,
        &settings(&ckpt, PatchPositions::All, Site::ResidPost, 1),
    )
    .unwrap();
    for p in &result.pairs {
        for directions in &p.layers {
            for t in directions {
                assert!(t.switched, "patching every position must switch the first token");
                assert_eq!(
                    t.logit_diff_recovered, 1.0,
                    "the patched run must be the source run exactly"
                );
            }
        }
    }
}

/// Patching no layer leaves the target as it was; a pair with equal first tokens is reported
/// unusable; prompts of different lengths are refused for every position.
#[test]
fn patching_nothing_changes_nothing_and_bad_input_is_refused() {
    let ckpt = load_exact(&dir("llama_gqa"));
    let golden = candle_core::safetensors::load(dir("llama_gqa").join("patch.safetensors"), &Device::Cpu).unwrap();
    let unequal = pairs(&golden, "decision_resid_post");
    let mut none = settings(&ckpt, PatchPositions::Decision, Site::ResidPost, 1);
    none.layers.clear();
    let result = patch_batch(&ckpt.model, &unequal, 0, &none).unwrap();
    assert!(result.pairs.iter().all(|p| p.layers.is_empty() && p.usable()));

    let err = patch_batch(
        &ckpt.model,
        &unequal,
        4,
        &settings(&ckpt, PatchPositions::All, Site::ResidPost, 1),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pair 5") && err.contains("same length"), "{err}");
    let err = patch_batch(
        &ckpt.model,
        &unequal[..1],
        0,
        &settings(&ckpt, PatchPositions::Decision, Site::ResidPost, 1),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at least two pairs"), "{err}");

    assert_eq!(batch_ranges(5, 2), vec![0..2, 2..5]);
    assert_eq!(batch_ranges(4, 2), vec![0..2, 2..4]);
    assert_eq!(batch_ranges(3, 8), vec![0..3]);
}

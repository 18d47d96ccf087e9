//! What steering costs: KV-cached greedy generation with a control vector at alpha = 1 on
//! two middle layers, against unsteered generation measured in the same run.
//!   cargo bench --bench steering

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use probe::{Model, ModelConfig, NoHooks, Site};
use std::collections::BTreeMap;
use std::time::Instant;
use steer::generate::{generate, GenerationConfig};
use steer::steering::{SteerPositions, SteeringHook};
use steer::vectors::ControlVectors;

const CONFIG: &str = r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 768,
    "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_key_value_heads": 12, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048}"#;
const PROMPT: usize = 48;
const NEW_TOKENS: usize = 32;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn main() {
    let cfg = ModelConfig::from_json(CONFIG).unwrap();
    let varmap = VarMap::new();
    let model = Model::load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg).unwrap();
    let prompt: Vec<u32> = (0..PROMPT).map(|i| (i * 131 % 32000) as u32).collect();
    let config = GenerationConfig { ignore_eos: true, ..GenerationConfig::greedy(NEW_TOKENS, vec![]) };
    let vectors = ControlVectors {
        vectors: (5..7).map(|l| (l, vec![0.01f32; 768])).collect::<BTreeMap<_, _>>(),
        metadata: None,
    };
    let runs = 15;
    let (mut plain, mut steered) = (Vec::new(), Vec::new());
    generate(&model, &prompt, &config, &mut NoHooks).unwrap();
    // Interleaved, so drift in machine load hits both cases alike.
    for _ in 0..runs {
        let t = Instant::now();
        generate(&model, &prompt, &config, &mut NoHooks).unwrap();
        plain.push(t.elapsed().as_secs_f64());
        let mut hook = SteeringHook::new(Site::ResidPost, SteerPositions::All);
        hook.add(&vectors, &[5, 6], 1.0, &Device::Cpu).unwrap();
        let t = Instant::now();
        generate(&model, &prompt, &config, &mut hook).unwrap();
        steered.push(t.elapsed().as_secs_f64());
    }
    let (plain, steered) = (median(plain), median(steered));
    println!("KV-cached greedy generation, prompt {PROMPT} + {NEW_TOKENS} new tokens, random 12-layer d768 Llama");
    println!("{:<38} {:>9} {:>10} {:>8}", "case", "ms", "tokens/s", "ratio");
    for (name, secs) in [("unsteered (baseline)", plain), ("steered, alpha 1 at layers 5-6", steered)] {
        println!("{name:<38} {:>9.1} {:>10.1} {:>7.3}x", secs * 1e3, NEW_TOKENS as f64 / secs, secs / plain);
    }
}

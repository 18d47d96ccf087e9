//! What steering costs: KV-cached greedy generation with a control vector at alpha = 1 on
//! two middle layers, against unsteered generation measured in the same run.
//!   cargo bench --bench steering

#[path = "../src/process.rs"]
#[allow(dead_code)]
mod process;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use probe::hooks::{HookPoint, Hooks};
use probe::{Model, ModelConfig, NoHooks, Site};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use steer::generate::{generate, GenerationConfig};
use steer::steering::{SteerPositions, SteeringHook};
use steer::vectors::ControlVectors;

const CONFIG: &str = r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 768,
    "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_key_value_heads": 12, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048}"#;
const PROMPT: usize = 48;
const NEW_TOKENS: usize = 32;

#[path = "common/timing.rs"]
mod timing;
use timing::median;

/// Times what a hook itself does inside a real generation: the steering cost without the
/// run-to-run noise of whole generations (a few % on a shared 2-core machine).
struct TimedHook<H> {
    inner: H,
    spent: Duration,
    calls: usize,
}

impl<H: Hooks> Hooks for TimedHook<H> {
    fn wants(&self, point: HookPoint) -> bool {
        self.inner.wants(point)
    }
    fn on(
        &mut self,
        point: HookPoint,
        activation: &candle_core::Tensor,
    ) -> anyhow::Result<Option<candle_core::Tensor>> {
        let t = Instant::now();
        let out = self.inner.on(point, activation);
        self.spent += t.elapsed();
        self.calls += 1;
        out
    }
}

fn main() {
    // The allocator settings `alens` runs with (freed memory kept in the process).
    process::keep_freed_memory();
    process::fix_thread_count();
    let cfg = ModelConfig::from_json(CONFIG).unwrap();
    let varmap = VarMap::new();
    let model = Model::load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg).unwrap();
    let prompt: Vec<u32> = (0..PROMPT).map(|i| (i * 131 % 32000) as u32).collect();
    let config = GenerationConfig {
        ignore_eos: true,
        ..GenerationConfig::greedy(NEW_TOKENS, vec![])
    };
    let vectors = ControlVectors {
        vectors: (5..7).map(|l| (l, vec![0.01f32; 768])).collect::<BTreeMap<_, _>>(),
        metadata: None,
    };
    let steered_hook = || {
        let mut hook = SteeringHook::new(Site::ResidPost, SteerPositions::All);
        hook.add(&vectors, &[5, 6], 1.0, &Device::Cpu).unwrap();
        hook
    };
    let time_plain = || {
        let t = Instant::now();
        generate(&model, &prompt, &config, &mut NoHooks).unwrap();
        t.elapsed().as_secs_f64()
    };
    let time_steered = || {
        let mut hook = steered_hook();
        let t = Instant::now();
        generate(&model, &prompt, &config, &mut hook).unwrap();
        t.elapsed().as_secs_f64()
    };
    time_plain();
    time_steered();
    let pairs = 25;
    let runs = timing::paired(pairs, time_plain, time_steered);
    let (q1, q3) = runs.middle_half();
    let (plain, steered, ratio) = (median(&runs.a), median(&runs.b), runs.ratio());
    println!("KV-cached greedy generation, prompt {PROMPT} + {NEW_TOKENS} new tokens, random 12-layer d768 Llama, {pairs} paired runs");
    println!("{:<38} {:>9} {:>10} {:>8}", "case", "ms", "tokens/s", "ratio");
    println!(
        "{:<38} {:>9.1} {:>10.1} {:>7.3}x",
        "unsteered (baseline)",
        plain * 1e3,
        NEW_TOKENS as f64 / plain,
        1.0
    );
    println!(
        "{:<38} {:>9.1} {:>10.1} {:>7.3}x",
        "steered, alpha 1 at layers 5-6",
        steered * 1e3,
        NEW_TOKENS as f64 / steered,
        ratio
    );
    println!("ratio = median of per-pair steered/unsteered; middle half of pairs {q1:.3}x .. {q3:.3}x");
    let mut timed = TimedHook {
        inner: steered_hook(),
        spent: Duration::ZERO,
        calls: 0,
    };
    let t = Instant::now();
    generate(&model, &prompt, &config, &mut timed).unwrap();
    let whole = t.elapsed().as_secs_f64();
    let spent = timed.spent.as_secs_f64();
    println!(
        "inside the steering hook: {:.3} ms over {} calls in one {:.1} ms generation = {:.3}% of it",
        spent * 1e3,
        timed.calls,
        whole * 1e3,
        100.0 * spent / whole
    );
}

//! Forward-pass throughput on a random 110M-parameter Llama (12 layers, d 768, vocab 32000),
//! batch 8 x 128 tokens, the shape HF transformers is compared at in the README.
//!
//! Prints tokens/s and ratios against the plain (unhooked) forward measured in this same run,
//! so the numbers compare like with like on whatever machine runs it:
//!   cargo bench --bench forward
//! `benches/hf_forward.py` measures HF transformers on the same shape and thread count.

#[path = "../src/process.rs"]
#[allow(dead_code)]
mod process;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kernels::bf16::Bf16Compute;
use probe::hooks::HookPoint;
use probe::{Model, ModelConfig, NoHooks, Positions};

const CONFIG: &str = r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 768,
    "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_key_value_heads": 12, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048}"#;
const BATCH: usize = 8;
const SEQ: usize = 128;

#[path = "common/timing.rs"]
mod timing;

/// Median seconds of `runs` calls after one warm-up.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    timing::median(&timing::seconds_per_call(runs, f))
}

fn main() {
    // The allocator settings `alens` runs with (freed memory kept in the process).
    process::keep_freed_memory();
    process::fix_thread_count();
    let amx = kernels::bf16::request_amx();
    let cfg = ModelConfig::from_json(CONFIG).unwrap();
    let varmap = VarMap::new();
    // Weights as Vars (they track ops) take candle's own matmul; a checkpoint's weights, as
    // loaded, take probe's frozen f32 matmul (the same bits, on one thread pool).
    let var_model = Model::load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg).unwrap();
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    let weights = |dtype: DType| -> std::collections::HashMap<String, Tensor> {
        let vars = varmap.data().lock().unwrap();
        // Detached: a tensor derived from a Var tracks ops, as weights being trained do.
        vars.iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().to_dtype(dtype).unwrap().detach()))
            .collect()
    };
    let model = Model::load(
        VarBuilder::from_tensors(weights(DType::F32), DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let ids: Vec<u32> = (0..BATCH * SEQ).map(|i| (i * 7919 % 32000) as u32).collect();
    let ids = Tensor::from_vec(ids, (BATCH, SEQ), &Device::Cpu).unwrap();
    let positions = Positions::contiguous(BATCH, SEQ, 0, &Device::Cpu).unwrap();
    let tokens = (BATCH * SEQ) as f64;
    let runs = 5;

    let plain = time(runs, || {
        let h = model.forward(&ids, &positions, None, &mut NoHooks).unwrap();
        model.logits(&h.narrow(1, SEQ - 1, 1).unwrap()).unwrap();
    });
    let candle_matmul = time(runs, || {
        let h = var_model.forward(&ids, &positions, None, &mut NoHooks).unwrap();
        var_model.logits(&h.narrow(1, SEQ - 1, 1).unwrap()).unwrap();
    });
    // The hooks' overhead is a few %, under this machine's run-to-run noise: timed in ABBA
    // pairs against the plain forward, the ratio being the median of the pairs' ratios.
    let points: Vec<HookPoint> = (0..cfg.num_hidden_layers).map(HookPoint::resid_post).collect();
    let seconds = |f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let hook_pairs = 20;
    let hooked = timing::paired(
        hook_pairs,
        || {
            seconds(&mut || {
                let h = model.forward(&ids, &positions, None, &mut NoHooks).unwrap();
                model.logits(&h.narrow(1, SEQ - 1, 1).unwrap()).unwrap();
            })
        },
        || {
            seconds(&mut || {
                // Every resid_post read to the host, as `alens capture --points resid_post` does.
                let (h, cache) = model.run_with_cache(&ids, &positions, points.iter().copied()).unwrap();
                model.logits(&h.narrow(1, SEQ - 1, 1).unwrap()).unwrap();
                for &point in &points {
                    // Flat, as capture reads its rows (`to_vec3` would build a Vec per row).
                    cache
                        .require(point)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                }
            })
        },
    );
    let with_logits = time(runs, || {
        let h = model.forward(&ids, &positions, None, &mut NoHooks).unwrap();
        model.logits(&h).unwrap();
    });
    // The same weights held in bf16 (as a bf16 checkpoint loads): multiplied on the CPU's
    // bf16 dot products where it has them (kernels::bf16), else cast per matmul.
    let mut bf16_model = Model::load(
        VarBuilder::from_tensors(weights(DType::BF16), DType::BF16, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let mut bf16_forward = |compute: Bf16Compute| {
        bf16_model.set_bf16_compute(compute);
        time(runs, || {
            let h = bf16_model.forward(&ids, &positions, None, &mut NoHooks).unwrap();
            bf16_model.logits(&h.narrow(1, SEQ - 1, 1).unwrap()).unwrap();
        })
    };
    let (bf16_native, bf16_exact) = (bf16_forward(Bf16Compute::Native), bf16_forward(Bf16Compute::Exact));
    println!(
        "random Llama, {:.0}M parameters, batch {BATCH} x {SEQ} tokens, {} threads",
        params as f64 / 1e6,
        candle_core::utils::get_num_threads()
    );
    println!("{:<56} {:>9} {:>10} {:>8}", "case", "ms", "tokens/s", "ratio");
    let kernel = match (amx, kernels::bf16::available()) {
        (true, _) => "AMX for many rows",
        (false, true) => "AVX512-BF16",
        (false, false) => "no AVX512-BF16: cast to f32",
    };
    let native_name = format!("plain forward, bf16 weights, native ({kernel})");
    let exact_name = format!("plain forward, bf16 weights, exact ({kernel})");
    let (q1, q3) = hooked.middle_half();
    let hooked_name = format!("forward + read all 12 resid_post to host (paired: {q1:.3}x..{q3:.3}x)");
    for (name, secs) in [
        ("plain forward (baseline)", plain),
        ("plain forward through candle's matmul (weights as Vars)", candle_matmul),
        (hooked_name.as_str(), plain * hooked.ratio()),
        ("forward + logits at every position", with_logits),
        (native_name.as_str(), bf16_native),
        (exact_name.as_str(), bf16_exact),
    ] {
        println!(
            "{name:<56} {:>9.1} {:>10.0} {:>7.3}x",
            secs * 1e3,
            tokens / secs,
            secs / plain
        );
    }
}

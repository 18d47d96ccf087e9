//! Decoding speed and memory by how the weights are held, measured in one run:
//!   cargo bench --bench decode
//! - an HF directory with f32 weights against the same weights in bf16 (multiplied on the
//!   CPU's bf16 dot products where it has them), one prompt and a batch of 32;
//! - a GGUF file dequantized to f32 against the same file with its matrices kept quantized
//!   (`--keep-quantized`).
//!
//! Models: a seeded random 110M-class Llama written here (never downloaded), and
//! SmolLM2-135M-Instruct (Q4_1, re-encoded as Q8_0 when kept) when
//! `alens fetch smollm2-135m-instruct` has cached it. Greedy, KV-cached, 48-token prompt +
//! 64 new tokens, every case timed in alternating order; tokens/s is the median of 5 runs.
//!
//! Batched: 32 prompts of 48 tokens decoded together (`generate_batch`, no padding), 64 new
//! tokens each, greedy; tokens/s counts every row's (32 x 64 / seconds), median of 3.
//!   cargo bench --bench decode -- --batched DIR
//! runs only that case, on DIR/f32 and DIR/bf16 (the checkpoints
//! `python benches/capture_vs_hf.py --make DIR` writes), for `benches/hf_decode_batched.py DIR`
//! to be alternated with; `BATCHED_TOKENS_OUT=FILE` writes each row's tokens there as JSON lines.
//!
//! "peak RSS" is the high-water mark of a fresh process that loads the model and decodes
//! (this bench re-run as a child), so one case's memory cannot hide in another's.

#[path = "../src/process.rs"]
#[allow(dead_code)]
mod process;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use probe::model::LoadOptions;
use probe::{Checkpoint, NoHooks};
use std::path::{Path, PathBuf};
use std::time::Instant;
use steer::generate::{generate, generate_batch, GenerationConfig};

const PROMPT: usize = 48;
const NEW_TOKENS: usize = 64;
const RUNS: usize = 5;
const BATCH_ROWS: usize = 32;
const BATCH_RUNS: usize = 3;

/// Peak resident set size of this process in bytes (`VmHWM` in `/proc/self/status`).
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

const CHILD_FLAG: &str = "--peak-rss-of";

/// Peak RSS of a fresh process that loads `path` and decodes a few tokens.
fn peak_rss_in_child(path: &Path, keep_quantized: bool) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            CHILD_FLAG,
            &path.display().to_string(),
            if keep_quantized { "kept" } else { "dense" },
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// The child's side of [`peak_rss_in_child`].
fn child(path: &Path, keep_quantized: bool) {
    let ckpt = Checkpoint::load_with(
        path,
        None,
        LoadOptions {
            keep_quantized,
            ..LoadOptions::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let prompt: Vec<u32> = (0..PROMPT as u32).collect();
    let config = GenerationConfig {
        ignore_eos: true,
        ..GenerationConfig::greedy(8, vec![])
    };
    generate(&ckpt.model, &prompt, &config, &mut NoHooks).unwrap();
    println!("{}", peak_resident_bytes());
}

const CONFIG: &str = r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 768,
    "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_key_value_heads": 12, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048}"#;

/// Seeded uniform values with std 0.02 (HF's initializer range), `[rows, cols]`.
fn random_matrix(rng: &mut rand::rngs::StdRng, rows: usize, cols: usize) -> Tensor {
    use rand::Rng;
    let a = 0.02f32 * 3f32.sqrt();
    let values: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-a..a)).collect();
    Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
}

/// The [`CONFIG`] Llama as an HF directory with its matrices stored in `dtype`.
fn write_random_dir(dir: &Path, dtype: candle_core::DType) {
    use rand::SeedableRng;
    let cfg = probe::ModelConfig::from_json(CONFIG).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let mut tensors = std::collections::HashMap::new();
    for (name, shape) in probe::model::config::expected_tensors(&cfg) {
        let t = match shape[..] {
            [rows, cols] => random_matrix(&mut rng, rows, cols).to_dtype(dtype).unwrap(),
            _ => Tensor::ones(shape[0], dtype, &Device::Cpu).unwrap(),
        };
        tensors.insert(name, t);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

/// The [`CONFIG`] Llama as llama.cpp would store it, its matrices in `dtype`; norms f32.
/// Seeded: the same file every run.
fn write_random_gguf(path: &Path, dtype: GgmlDType) {
    use gguf_file::Value;
    use rand::SeedableRng;
    let dev = Device::Cpu;
    let (d, ffn, layers, vocab) = (768usize, 2048usize, 12usize, 32000usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut random = |rows: usize, cols: usize| random_matrix(&mut rng, rows, cols);
    let norm = || QTensor::quantize(&Tensor::ones(d, candle_core::DType::F32, &dev).unwrap(), GgmlDType::F32).unwrap();
    let embedding = QTensor::quantize(&random(vocab, d), GgmlDType::F32).unwrap();
    let mut matrix = |rows: usize, cols: usize| QTensor::quantize(&random(rows, cols), dtype).unwrap();
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), embedding),
        ("output_norm.weight".into(), norm()),
        ("output.weight".into(), matrix(vocab, d)),
    ];
    for l in 0..layers {
        for (name, rows, cols) in [
            ("attn_q", d, d),
            ("attn_k", d, d),
            ("attn_v", d, d),
            ("attn_output", d, d),
            ("ffn_gate", ffn, d),
            ("ffn_up", ffn, d),
            ("ffn_down", d, ffn),
        ] {
            tensors.push((format!("blk.{l}.{name}.weight"), matrix(rows, cols)));
        }
        tensors.push((format!("blk.{l}.attn_norm.weight"), norm()));
        tensors.push((format!("blk.{l}.ffn_norm.weight"), norm()));
    }
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(d as u32)),
        ("llama.block_count", Value::U32(layers as u32)),
        ("llama.feed_forward_length", Value::U32(ffn as u32)),
        ("llama.attention.head_count", Value::U32(12)),
        ("llama.attention.head_count_kv", Value::U32(12)),
        ("llama.vocab_size", Value::U32(vocab as u32)),
        ("llama.context_length", Value::U32(2048)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
    ];
    let mut out = std::fs::File::create(path).unwrap();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &metadata, &tensors).unwrap();
}

struct Case {
    label: String,
    ckpt: Checkpoint,
    resident: u64,
    samples: Vec<f64>,
}

fn load(label: String, path: &Path, keep_quantized: bool) -> Case {
    let ckpt = Checkpoint::load_with(
        path,
        None,
        LoadOptions {
            keep_quantized,
            ..LoadOptions::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let resident = peak_rss_in_child(path, keep_quantized);
    Case {
        label,
        ckpt,
        resident,
        samples: Vec::new(),
    }
}

#[path = "common/timing.rs"]
mod timing;
use timing::median;

/// Decodes with every case in turn, alternating the order each round, and prints tokens/s
/// and resident memory with ratios against the first (dequantized) case.
fn compare(title: &str, mut cases: Vec<Case>) {
    let vocab = cases[0].ckpt.config.vocab_size as u32;
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| (i * 131 + 7) % vocab).collect();
    let config = GenerationConfig {
        ignore_eos: true,
        ..GenerationConfig::greedy(NEW_TOKENS, vec![])
    };
    for case in &cases {
        generate(&case.ckpt.model, &prompt, &config, &mut NoHooks).unwrap();
    }
    for round in 0..RUNS {
        for i in alternating(round, cases.len()) {
            let t = Instant::now();
            generate(&cases[i].ckpt.model, &prompt, &config, &mut NoHooks).unwrap();
            cases[i].samples.push(NEW_TOKENS as f64 / t.elapsed().as_secs_f64());
        }
    }
    println!("{title}: greedy decode, {PROMPT}-token prompt + {NEW_TOKENS} new tokens, median of {RUNS}");
    println!(
        "{:<44} {:>10} {:>8} {:>13} {:>8}",
        "case", "tokens/s", "ratio", "peak RSS MB", "ratio"
    );
    let (base_speed, base_rss) = (median(&cases[0].samples), cases[0].resident.max(1) as f64);
    for case in &cases {
        let speed = median(&case.samples);
        println!(
            "{:<44} {:>10.1} {:>7.2}x {:>13.0} {:>7.2}x",
            case.label,
            speed,
            speed / base_speed,
            case.resident as f64 / 1e6,
            case.resident as f64 / base_rss
        );
    }
    println!();
}

/// The cases' order in round `round`: forwards, then backwards, so drift falls on all alike.
fn alternating(round: usize, cases: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..cases).collect()
    } else {
        (0..cases).rev().collect()
    }
}

/// The batched case's prompts: `BATCH_ROWS` distinct rows of `PROMPT` ids, no padding (the
/// same ids `benches/hf_decode_batched.py` feeds HF).
fn batch_prompts(vocab: u32) -> Vec<Vec<u32>> {
    (0..BATCH_ROWS as u32)
        .map(|r| (0..PROMPT as u32).map(|i| (i * 131 + 7 + r * 977) % vocab).collect())
        .collect()
}

/// Decodes `BATCH_ROWS` prompts together with each of `cases` (label, checkpoint), in
/// alternating order, and prints tokens/s over all rows with ratios against the first case.
fn compare_batched(title: &str, cases: &[(String, &Checkpoint)]) {
    let vocab = cases[0].1.config.vocab_size as u32;
    let prompts = batch_prompts(vocab);
    let config = GenerationConfig {
        ignore_eos: true,
        ..GenerationConfig::greedy(NEW_TOKENS, vec![])
    };
    let tokens_out = std::env::var_os("BATCHED_TOKENS_OUT");
    let mut lines = String::new();
    for (label, ckpt) in cases {
        let rows = generate_batch(&ckpt.model, &prompts, &config, &mut NoHooks).unwrap();
        lines.push_str(&format!("{{\"case\": {label:?}, \"rows\": {rows:?}}}\n"));
    }
    if let Some(path) = tokens_out {
        std::fs::write(path, lines).unwrap();
    }
    let mut samples = vec![Vec::new(); cases.len()];
    for round in 0..BATCH_RUNS {
        for i in alternating(round, cases.len()) {
            let t = Instant::now();
            generate_batch(&cases[i].1.model, &prompts, &config, &mut NoHooks).unwrap();
            samples[i].push((BATCH_ROWS * NEW_TOKENS) as f64 / t.elapsed().as_secs_f64());
        }
    }
    println!(
        "{title}: batched greedy decode, {BATCH_ROWS} rows x ({PROMPT}-token prompt + {NEW_TOKENS} new tokens), median of {BATCH_RUNS}"
    );
    println!("{:<44} {:>10} {:>8}   runs", "case", "tokens/s", "ratio");
    let base = median(&samples[0]);
    for ((label, _), runs) in cases.iter().zip(&samples) {
        let speed = median(runs);
        let runs: Vec<String> = runs.iter().map(|r| format!("{r:.1}")).collect();
        println!("{label:<44} {speed:>10.1} {:>7.2}x   {}", speed / base, runs.join(" "));
    }
    println!();
}

fn load_dense(path: &Path) -> Checkpoint {
    Checkpoint::load_with(path, None, LoadOptions::default(), &Device::Cpu).unwrap()
}

fn cached_smollm2() -> Option<PathBuf> {
    probe::model::known::cached(&probe::model::known::SMOLLM2_135M_INSTRUCT)
}

fn main() {
    // The allocator settings `alens` runs with (freed memory kept in the process).
    process::keep_freed_memory();
    process::fix_thread_count();
    // Before any thread exists, as alens does: AMX for the prompt's prefill.
    let _ = kernels::bf16::request_amx();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD_FLAG) {
        return child(Path::new(&args[i + 1]), args[i + 2] == "kept");
    }
    let native = if kernels::bf16::available() {
        "AVX512-BF16"
    } else {
        "cast to f32"
    };
    if let Some(i) = args.iter().position(|a| a == "--batched") {
        let dir = Path::new(args.get(i + 1).expect("--batched DIR (holding f32/ and bf16/)"));
        let (f32_ckpt, bf16_ckpt) = (load_dense(&dir.join("f32")), load_dense(&dir.join("bf16")));
        let title = dir.display().to_string();
        return compare_batched(
            &title,
            &[
                ("f32 weights (baseline)".into(), &f32_ckpt),
                (format!("bf16 weights, native ({native})"), &bf16_ckpt),
            ],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (f32_dir, bf16_dir) = (dir.path().join("random-f32"), dir.path().join("random-bf16"));
    write_random_dir(&f32_dir, candle_core::DType::F32);
    write_random_dir(&bf16_dir, candle_core::DType::BF16);
    let (f32_ckpt, bf16_ckpt) = (load_dense(&f32_dir), load_dense(&bf16_dir));
    compare_batched(
        "random 12 x 768 Llama, HF directory",
        &[
            ("f32 weights (baseline)".into(), &f32_ckpt),
            (format!("bf16 weights, native ({native})"), &bf16_ckpt),
        ],
    );
    drop((f32_ckpt, bf16_ckpt));
    compare(
        "random 12 x 768 Llama, HF directory",
        vec![
            load("f32 weights (baseline)".into(), &f32_dir, false),
            load(format!("bf16 weights ({native})"), &bf16_dir, false),
        ],
    );
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0] {
        let path = dir.path().join(format!("random-{dtype:?}.gguf"));
        write_random_gguf(&path, dtype);
        let cases = vec![
            load(format!("{dtype:?} file, dequantized to f32 (baseline)"), &path, false),
            load(format!("{dtype:?} file, kept {dtype:?}"), &path, true),
        ];
        compare(&format!("random 12 x 768 Llama, {dtype:?}"), cases);
    }
    match cached_smollm2() {
        Some(path) => {
            let cases = vec![
                load("SmolLM2 Q4_1, dequantized to f32 (baseline)".into(), &path, false),
                load("SmolLM2 Q4_1, kept (re-encoded as Q8_0)".into(), &path, true),
            ];
            compare("SmolLM2-135M-Instruct", cases);
        }
        None => println!("SmolLM2-135M-Instruct is not cached: skipped (run `alens fetch smollm2-135m-instruct`)"),
    }
}

//! Mutation fuzzing of every reader of user files: the JSONL stimulus reader, the config
//! parser, the GGUF and safetensors model readers, the tokenizer, and the control-vector
//! readers (safetensors + sidecar, llama.cpp GGUF). Each iteration takes a
//! valid seed file, damages it (flipped bytes, truncation, inserted garbage, integer fields
//! set to extremes) and loads it: an error is fine, a panic is a failure. Seeded, so a
//! failure reproduces; `ALENS_FUZZ_ITERS=N` runs longer than CI's default.

use probe::model::ModelConfig;
use probe::Checkpoint;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn iterations(default: usize) -> usize {
    std::env::var("ALENS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One damaged copy of `seed`.
fn mutate(seed: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        if bytes.is_empty() {
            bytes.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..bytes.len());
        match rng.gen_range(0..6) {
            0 => bytes[at] ^= 1 << rng.gen_range(0..8),
            1 => bytes[at] = rng.gen(),
            2 => bytes.truncate(at),
            3 => {
                let junk: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                bytes.splice(at..at, junk);
            }
            // An integer field (a length, a count, a dimension) set to an extreme.
            4 => {
                let end = (at + 8).min(bytes.len());
                let extreme = [u64::MAX, u64::MAX / 2, 1 << 40, 0][rng.gen_range(0..4)].to_le_bytes();
                bytes[at..end].copy_from_slice(&extreme[..end - at]);
            }
            _ => {
                // A digit run in text formats made huge or negative.
                let text = ["99999999999999999999", "-1", "1e308", "NaN", "\u{0}", "\"", "{"][rng.gen_range(0..7)];
                bytes.splice(at..at, text.bytes());
            }
        }
    }
    bytes
}

/// Runs `load` on `iters` damaged copies of `seed`, written to `path`; panics name the seed
/// iteration so it can be replayed.
fn fuzz(name: &str, seed: &[u8], path: &Path, iters: usize, load: impl Fn(&Path)) {
    let mut rng = StdRng::seed_from_u64(0xf022 ^ name.len() as u64);
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for k in 0..iters {
        let bytes = mutate(seed, &mut rng);
        std::fs::write(path, &bytes).unwrap();
        if std::panic::catch_unwind(AssertUnwindSafe(|| load(path))).is_err() {
            // Kept beside the damaged file's directory, to replay (the harness's self-test keeps none).
            let keep = std::env::temp_dir().join(format!("alens-fuzz-{name}-{k}"));
            if name != "selftest" {
                let _ = std::fs::write(&keep, &bytes);
            }
            failures.push(keep);
        }
    }
    std::panic::set_hook(quiet);
    assert!(
        failures.is_empty(),
        "{name}: {} inputs panicked (kept at {failures:?})",
        failures.len()
    );
}

#[test]
fn stimulus_reader_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read(repo().join("notebooks-data/stimuli/copy-correct.jsonl")).unwrap();
    let seed = &seed[..seed.len().min(4096)];
    fuzz("jsonl", seed, &dir.path().join("d.jsonl"), iterations(400), |p| {
        let _ = probe::stimuli::read_jsonl(p);
    });
}

#[test]
fn config_parser_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    for model in [
        "notebooks-data/mini-aligner",
        "tests/golden/qwen2_bias",
        "tests/golden/llama3_tied",
    ] {
        let seed = std::fs::read(repo().join(model).join("config.json")).unwrap();
        fuzz("config", &seed, &dir.path().join("config.json"), iterations(300), |p| {
            let _ = std::fs::read_to_string(p).map(|t| ModelConfig::from_json(&t));
        });
    }
}

#[test]
fn gguf_model_reader_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["llama_q8_0.gguf", "qwen2_f32.gguf", "llama_q4_1_tied.gguf"] {
        let seed = std::fs::read(repo().join("tests/golden/gguf").join(file)).unwrap();
        fuzz("gguf", &seed, &dir.path().join("m.gguf"), iterations(150), |p| {
            let _ = Checkpoint::load(p);
        });
    }
}

#[test]
fn safetensors_model_reader_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("tests/golden/llama_gqa");
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let seed = std::fs::read(model.join("model.safetensors")).unwrap();
    let target = dir.path().join("model.safetensors");
    fuzz("safetensors", &seed, &target, iterations(150), |_| {
        let _ = Checkpoint::load(dir.path());
    });
    let tokenizer = std::fs::read(model.join("tokenizer.json")).unwrap();
    std::fs::write(&target, &seed).unwrap();
    fuzz(
        "tokenizer",
        &tokenizer,
        &dir.path().join("tokenizer.json"),
        iterations(150),
        |_| {
            let _ = Checkpoint::load(dir.path()).and_then(|c| c.tokenizer().map(|_| ()));
        },
    );
}

#[test]
fn vector_readers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = repo().join("notebooks-data/mini-aligner/copy-correct.safetensors");
    let load = |p: &Path| {
        let _ = steer::vectors::ControlVectors::load(p, 128, 6);
    };
    let vectors = dir.path().join("v.safetensors");
    fuzz(
        "vectors",
        &std::fs::read(&shipped).unwrap(),
        &vectors,
        iterations(300),
        load,
    );
    std::fs::copy(&shipped, &vectors).unwrap();
    let sidecar = std::fs::read(shipped.with_extension("json")).unwrap();
    fuzz("sidecar", &sidecar, &dir.path().join("v.json"), iterations(300), |_| {
        load(&vectors)
    });
    let gguf = dir.path().join("exported.gguf");
    steer::vectors::ControlVectors::load(&shipped, 128, 6)
        .unwrap()
        .save_gguf(&gguf, "llama")
        .unwrap();
    fuzz(
        "vector-gguf",
        &std::fs::read(&gguf).unwrap(),
        &dir.path().join("v.gguf"),
        iterations(300),
        load,
    );
}

/// The harness itself: a reader that panics is reported, so the targets above can fail.
#[test]
fn the_harness_reports_a_panicking_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    let outcome = std::panic::catch_unwind(|| {
        fuzz("selftest", b"seed", &path, 3, |p| {
            assert!(!p.exists(), "a planted panic")
        })
    });
    assert!(outcome.is_err());
}

/// Inputs the fuzzer once found panicking (kept in tests/fuzz-corpus), replayed every run.
#[test]
fn past_crashers_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("tests/golden/llama_gqa");
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(model.join(f), dir.path().join(f)).unwrap();
    }
    let corpus = repo().join("tests/fuzz-corpus/tokenizer");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        std::fs::copy(entry.unwrap().path(), dir.path().join("tokenizer.json")).unwrap();
        let loaded = std::panic::catch_unwind(|| Checkpoint::load(dir.path()).map(|_| ()));
        assert!(matches!(loaded, Ok(Err(_))), "a past crasher panicked or loaded");
        replayed += 1;
    }
    assert!(replayed > 0, "the corpus is empty");
}

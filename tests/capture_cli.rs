//! `alens capture` end to end: the exact command outside checks run, batching, bad input.

mod common;
use common::*;

#[test]
fn capture_token_ids_matches_hf_golden() {
    let dir = tempfile::tempdir().unwrap();
    // bf16 weights: exact gives the f32 path's numbers; native (the default) rounds the
    // activations to bf16 at each matmul, as torch does, so its bound is bf16-sized.
    // Bounds are on the max abs error over the reference's largest value (native measured
    // 0.45% to 1.07% from layer 0 to 2).
    let cases = [
        ("llama_gqa", "native", 1e-5),
        ("llama3_tied", "native", 1e-5),
        ("qwen2_bias", "native", 1e-5),
        ("mistral_bf16", "exact", 1e-5),
        ("mistral_bf16", "native", 2e-2),
    ];
    for (name, bf16_compute, tolerance) in cases {
        let out = dir.path().join(format!("{name}-{bf16_compute}.safetensors"));
        let model = golden(name);
        alens_ok(&[
            "capture",
            "--model",
            model.to_str().unwrap(),
            "--token-ids",
            "1,5,9,2",
            "--bf16-compute",
            bf16_compute,
            "--points",
            "resid_post,logits",
            "--out",
            out.to_str().unwrap(),
        ]);
        let ours = read_f32(&out);
        let reference = read_f32(&model.join("golden.safetensors"));
        for (key, (shape, values)) in &ours {
            let (ref_shape, ref_values) = &reference[key];
            assert_eq!(shape[0], 4, "{name} {key}");
            assert_eq!(shape[1], ref_shape[1]);
            // The reference ran 10 tokens; causal attention makes its first 4 rows ours.
            let reference = &ref_values[..values.len()];
            let err = max_abs_diff(values, reference) / reference.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(err <= tolerance, "{name} ({bf16_compute}) {key}: {err}");
        }
        assert_eq!(ours.len(), 4, "{name}: 3 layers + logits, got {:?}", ours.keys());
    }
}

fn write_records(path: &std::path::Path, n: usize) {
    let text: String = (0..n)
        .map(|i| {
            let words: Vec<String> = (0..(1 + i * 3 % 7)).map(|k| format!("w{}", (i + k) % 50)).collect();
            format!(
                "{{\"question\": \"w{} w{}\", \"answer\": \"{}\"}}\n",
                i % 9,
                i % 5,
                words.join(" ")
            )
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn batched_capture_equals_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("records.jsonl");
    write_records(&data, 7);
    let model = golden("qwen2_bias");
    let run = |batch: &str, positions: &str| {
        let out = dir.path().join(format!("b{batch}-{positions}.safetensors"));
        alens_ok(&[
            "capture",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--points",
            "resid_post,attn_out,logits",
            "--positions",
            positions,
            "--batch-size",
            batch,
            "--out",
            out.to_str().unwrap(),
        ]);
        read_f32(&out)
    };
    let single = run("1", "all");
    let batched = run("4", "all");
    for (key, (shape, values)) in &single {
        assert_eq!(&batched[key].0, shape);
        let err = max_abs_diff(values, &batched[key].1);
        assert!(err <= 1e-4, "{key}: padded batch differs from one at a time by {err}");
    }
    // --positions last keeps exactly each record's last row of the full capture.
    let last = run("3", "last");
    let (shape, values) = &last["blocks.2.hook_resid_post"];
    assert_eq!(shape, &vec![7, 32]);
    let bytes = std::fs::read(dir.path().join("b1-all.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let offsets: Vec<i64> = st
        .tensor("token_offsets")
        .unwrap()
        .data()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let full = &single["blocks.2.hook_resid_post"].1;
    for r in 0..7 {
        let row = (offsets[r + 1] - 1) as usize;
        assert!(max_abs_diff(&values[r * 32..(r + 1) * 32], &full[row * 32..(row + 1) * 32]) <= 1e-4);
    }
}

#[test]
fn npz_output_has_one_entry_per_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("acts.npz");
    alens_ok(&[
        "capture",
        "--model",
        golden("llama_gqa").to_str().unwrap(),
        "--prompt",
        "w1 w2 w3",
        "--points",
        "resid_pre,ln_final",
        "--layers",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..2], b"PK");
    let text = String::from_utf8_lossy(&bytes);
    for entry in [
        "blocks.1.hook_resid_pre.npy",
        "ln_final.hook_normalized.npy",
        "token_ids.npy",
    ] {
        assert!(text.contains(entry), "missing {entry}");
    }
    // BOS from the tokenizer's post-processor, then the three words: 4 rows.
    assert!(text.contains("'shape': (4, 32)"));
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let out = out.to_str().unwrap();
    let good = golden("llama_gqa");

    // A model directory with a malformed config, then one with a missing tensor.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(good.join(f), broken.join(f)).unwrap();
    }
    std::fs::write(broken.join("config.json"), "{not json").unwrap();
    let err = alens_err(&[
        "capture",
        "--model",
        broken.to_str().unwrap(),
        "--token-ids",
        "1",
        "--out",
        out,
    ]);
    assert!(err.contains("config.json"), "{err}");

    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(good.join("config.json")).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 4.into();
    std::fs::write(broken.join("config.json"), cfg.to_string()).unwrap();
    let err = alens_err(&[
        "capture",
        "--model",
        broken.to_str().unwrap(),
        "--token-ids",
        "1",
        "--out",
        out,
    ]);
    assert!(
        err.contains("model.layers.3.input_layernorm.weight") && err.contains("model.safetensors"),
        "{err}"
    );

    cfg["num_hidden_layers"] = 3.into();
    cfg["model_type"] = "gpt_neox".into();
    std::fs::write(broken.join("config.json"), cfg.to_string()).unwrap();
    assert!(alens_err(&[
        "capture",
        "--model",
        broken.to_str().unwrap(),
        "--token-ids",
        "1",
        "--out",
        out
    ])
    .contains("gpt_neox"));

    std::fs::write(broken.join("model.safetensors"), b"garbage").unwrap();
    cfg["model_type"] = "llama".into();
    std::fs::write(broken.join("config.json"), cfg.to_string()).unwrap();
    alens_err(&[
        "capture",
        "--model",
        broken.to_str().unwrap(),
        "--token-ids",
        "1",
        "--out",
        out,
    ]);

    let g = good.to_str().unwrap();
    assert!(alens_err(&[
        "capture",
        "--model",
        g,
        "--token-ids",
        "1",
        "--layers",
        "3",
        "--out",
        out
    ])
    .contains("out of range"));
    assert!(alens_err(&["capture", "--model", g, "--token-ids", "1,64", "--out", out]).contains("vocabulary"));
    assert!(alens_err(&["capture", "--model", g, "--token-ids", "1", "--out", "x.txt"]).contains(".safetensors"));
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    assert!(
        alens_err(&["capture", "--model", g, "--data", empty.to_str().unwrap(), "--out", out]).contains("no records")
    );
    std::fs::write(&empty, "{\"question\": 1}\n").unwrap();
    assert!(alens_err(&["capture", "--model", g, "--data", empty.to_str().unwrap(), "--out", out]).contains(":1:"));
    assert!(!std::path::Path::new(out).exists(), "a failed run leaves no output");
}

//! Helpers shared by the end-to-end tests: run the real binary, read its outputs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn golden(name: &str) -> PathBuf {
    repo().join("tests/golden").join(name)
}

pub fn alens(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_alens"))
        .args(args)
        .current_dir(repo())
        // The fast fixture; the default model (Aligner-135M) needs the fetched base.
        .env("ALENS_MODEL", "mini-aligner")
        .output()
        .expect("alens runs")
}

/// Runs alens and asserts success, returning stdout.
pub fn alens_ok(args: &[&str]) -> String {
    let out = alens(args);
    assert!(
        out.status.success(),
        "alens {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs alens expecting a clean failure: exit code 1, one `error:` line, no panic.
pub fn alens_err(args: &[&str]) -> String {
    let out = alens(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "alens {args:?} should fail cleanly: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(
        stderr.trim().starts_with("error:") && stderr.trim().lines().count() == 1,
        "not one clear line: {stderr}"
    );
    stderr
}

/// All f32 tensors of a safetensors file, as (shape, values).
pub fn read_f32(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            let values = v
                .data()
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, (v.shape().to_vec(), values))
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Runs alens with `args`, kills it with SIGKILL once its `journal` holds more than `batches`
/// finished batches, and returns how many it holds.
pub fn kill_after_batches(args: &[String], journal: &std::path::Path, batches: usize) -> usize {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_alens"))
        .args(args)
        .current_dir(repo())
        .env("ALENS_MODEL", "mini-aligner")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let done = || {
        std::fs::read_to_string(journal)
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while done() <= batches {
        assert!(started.elapsed().as_secs() < 120, "alens {args:?} journals no batches");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    done()
}

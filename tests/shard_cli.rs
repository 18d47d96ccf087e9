//! `--shard I/N` and `alens merge` on the mini-aligner: for capture, eval, sweep and LAT's
//! reading, the shards merged equal the run on one machine byte for byte, apart from the
//! provenance (which lists the shards); bad specs and bad sets of shards are refused with one
//! line and leave nothing behind.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// The shard counts tested: one, two, three, and more shards than the 5 eval and sweep records.
const COUNTS: [usize; 4] = [1, 2, 3, 7];

fn first_lines(from: &str, n: usize, to: &Path) {
    let text = std::fs::read_to_string(repo().join(from)).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `args` unsharded into `whole`, then sharded N ways into `{stem}.{N}.{i}{ext}`, merged
/// by `merge` into `{stem}.{N}.merged{ext}`; returns (whole, merged files by N).
fn shard_and_merge(
    dir: &Path,
    args: &[&str],
    out_flag: &str,
    ext: &str,
    merge: &dyn Fn(&[String], &Path),
) -> (PathBuf, Vec<PathBuf>) {
    let whole = dir.join(format!("whole{ext}"));
    let mut full: Vec<&str> = args.to_vec();
    let whole_s = s(&whole);
    full.extend([out_flag, whole_s.as_str()]);
    alens_ok(&full);
    let mut merged = Vec::new();
    for n in COUNTS {
        let shards: Vec<String> = (0..n).map(|i| s(&dir.join(format!("shard.{n}.{i}{ext}")))).collect();
        for (i, shard) in shards.iter().enumerate() {
            let spec = format!("{i}/{n}");
            let mut run: Vec<&str> = args.to_vec();
            run.extend([out_flag, shard.as_str(), "--shard", spec.as_str()]);
            alens_ok(&run);
        }
        // Any order: the shards say which they are.
        let mut reversed = shards.clone();
        reversed.reverse();
        let out = dir.join(format!("merged.{n}{ext}"));
        merge(&reversed, &out);
        merged.push(out);
    }
    (whole, merged)
}

fn alens_merge(shards: &[String], out: &Path) {
    let mut args = vec!["merge".to_string(), "--out".to_string(), s(out)];
    args.extend(shards.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    alens_ok(&args);
}

/// A pretty JSON report whose last entry is its provenance: equal up to it, and the merged
/// provenance lists the shards.
fn assert_same_json(whole: &Path, merged: &Path, shards: usize) {
    let (a, b) = (
        std::fs::read_to_string(whole).unwrap(),
        std::fs::read_to_string(merged).unwrap(),
    );
    let cut = |t: &str| {
        t.find("\n  \"provenance\": ")
            .map(|k| t[..k].to_string())
            .expect("a provenance entry")
    };
    assert_eq!(
        cut(&a),
        cut(&b),
        "{} differs from {}",
        merged.display(),
        whole.display()
    );
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["provenance"]["shards"].as_array().map(Vec::len), Some(shards), "{b}");
    assert!(v.get("shard").is_none() && v.get("outcomes").is_none());
}

/// A safetensors file's header (without the provenance) and its data section.
fn safetensors_parts(path: &Path) -> (serde_json::Value, Vec<u8>, Option<serde_json::Value>) {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let provenance = header
        .get_mut("__metadata__")
        .and_then(|m| m.as_object_mut())
        .and_then(|m| m.remove("provenance"))
        .map(|p| serde_json::from_str(p.as_str().unwrap()).unwrap());
    (header, bytes[8 + len..].to_vec(), provenance)
}

fn assert_same_safetensors(whole: &Path, merged: &Path, shards: usize) {
    let (ha, da, _) = safetensors_parts(whole);
    let (hb, db, pb) = safetensors_parts(merged);
    assert_eq!(ha, hb, "{} header differs from {}", merged.display(), whole.display());
    assert!(da == db, "{} data differs from {}", merged.display(), whole.display());
    let pb: serde_json::Value = pb.expect("a provenance");
    assert_eq!(pb["shards"].as_array().map(Vec::len), Some(shards));
}

#[test]
fn capture_shards_merge_to_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    // 12 records in batches of 2: shards are whole windows of 4 batches, so 2 hold records.
    first_lines("notebooks-data/corpus/test.jsonl", 12, &data);
    for positions in ["all", "last"] {
        let sub = dir.path().join(positions);
        std::fs::create_dir(&sub).unwrap();
        let data = s(&data);
        let args = [
            "capture",
            "--data",
            &data,
            "--points",
            "resid_post,logits",
            "--layers",
            "0-1",
            "--positions",
            positions,
            "--batch-size",
            "2",
        ];
        let (whole, merged) = shard_and_merge(&sub, &args, "--out", ".safetensors", &alens_merge);
        for (n, m) in COUNTS.iter().zip(&merged) {
            assert_same_safetensors(&whole, m, *n);
        }
    }
}

/// Merges with extra outputs: `merge --out OUT EXTRA... SHARDS...`, each of `extra` a flag and
/// the file it names beside OUT (`{OUT stem}.{name}`).
fn alens_merge_with(extra: &[(&str, &str)], inputs: &[&str]) -> impl Fn(&[String], &Path) {
    let extra: Vec<(String, String)> = extra.iter().map(|(f, n)| (f.to_string(), n.to_string())).collect();
    let inputs: Vec<String> = inputs.iter().map(|i| i.to_string()).collect();
    move |shards: &[String], out: &Path| {
        let mut args = vec!["merge".to_string(), "--out".to_string(), s(out)];
        for (flag, name) in &extra {
            args.extend([flag.clone(), s(&beside(out, name))]);
        }
        args.extend(inputs.iter().cloned());
        args.extend(shards.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        alens_ok(&args);
    }
}

/// `whole.json` -> `whole.{name}`.
fn beside(path: &Path, name: &str) -> PathBuf {
    path.with_extension(name)
}

fn assert_same_bytes(whole: &Path, merged: &Path) {
    assert!(
        std::fs::read(whole).unwrap() == std::fs::read(merged).unwrap(),
        "{} differs from {}",
        merged.display(),
        whole.display()
    );
}

#[test]
fn eval_shards_merge_to_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    first_lines("notebooks-data/corpus/test.jsonl", 5, &data);
    let data = s(&data);
    let args = ["eval", "--data", &data, "--batch-size", "2", "--max-new-tokens", "16"];
    let merge = alens_merge_with(&[("--outputs", "outputs.jsonl")], &["--data", &data]);
    let (whole, merged) = shard_and_merge(dir.path(), &args, "--json", ".json", &merge);
    // The unsharded run's --outputs, for the merged ones to equal.
    let whole_outputs = beside(&whole, "outputs.jsonl");
    let (json, outputs) = (s(&dir.path().join("again.json")), s(&whole_outputs));
    let mut again = args.to_vec();
    again.extend(["--json", json.as_str(), "--outputs", outputs.as_str()]);
    alens_ok(&again);
    for (n, m) in COUNTS.iter().zip(&merged) {
        assert_same_json(&whole, m, *n);
        assert_same_bytes(&whole_outputs, &beside(m, "outputs.jsonl"));
    }
}

#[test]
fn sweep_shards_merge_to_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    first_lines("notebooks-data/corpus/test.jsonl", 5, &data);
    let data = s(&data);
    let args = [
        "sweep",
        "--data",
        &data,
        "--alphas",
        "-2,0,2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "12",
        "--random-control",
        "1",
    ];
    let merge = alens_merge_with(&[("--csv", "csv"), ("--figure", "png")], &[]);
    let (whole, merged) = shard_and_merge(dir.path(), &args, "--json", ".json", &merge);
    let (csv, png) = (beside(&whole, "csv"), beside(&whole, "png"));
    let (json, csv_s, png_s) = (s(&dir.path().join("again.json")), s(&csv), s(&png));
    let mut again = args.to_vec();
    again.extend([
        "--json",
        json.as_str(),
        "--csv",
        csv_s.as_str(),
        "--out",
        png_s.as_str(),
    ]);
    alens_ok(&again);
    for (n, m) in COUNTS.iter().zip(&merged) {
        assert_same_json(&whole, m, *n);
        assert_same_bytes(&csv, &beside(m, "csv"));
        assert_same_bytes(&png, &beside(m, "png"));
    }
}

#[test]
fn lat_reading_shards_fit_the_single_run_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("stimuli.jsonl");
    first_lines("notebooks-data/stimuli/copy-correct.jsonl", 16, &data);
    let data = s(&data);
    let args = ["lat", "--data", &data, "--seed", "0", "--batch-size", "2"];
    let fit = |shards: &[String], out: &Path| {
        let out = s(out);
        let mut run = vec![
            "lat",
            "--data",
            &data,
            "--seed",
            "0",
            "--batch-size",
            "2",
            "--out",
            &out,
            "--from-shards",
        ];
        run.extend(shards.iter().map(String::as_str));
        alens_ok(&run);
    };
    let (whole, merged) = shard_and_merge(dir.path(), &args, "--out", ".safetensors", &fit);
    for (n, m) in COUNTS.iter().zip(&merged) {
        assert_eq!(
            std::fs::read(&whole).unwrap(),
            std::fs::read(m).unwrap(),
            "vectors of {n} shards"
        );
        assert_same_json(&whole.with_extension("json"), &m.with_extension("json"), *n);
    }
}

/// Runs alens expecting a refusal: a failure with exactly one `error:` line, no panic, and no
/// file added to or changed in `dir` (clap's usage errors exit 2, alens' own 1).
fn refused(dir: &Path, args: &[&str]) -> String {
    let listing = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (s(&p), std::fs::read(&p).unwrap_or_default()))
            .collect();
        files.sort();
        files
    };
    let before = listing();
    let out = alens(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "alens {args:?} should fail");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    assert!(listing() == before, "alens {args:?} left or changed files: {stderr}");
    stderr
}

#[test]
fn bad_specs_and_bad_sets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    first_lines("notebooks-data/corpus/test.jsonl", 5, &data);
    let other = dir.path().join("other.jsonl");
    first_lines("notebooks-data/corpus/test.jsonl", 4, &other);
    let p = |n: &str| s(&dir.path().join(n));
    let data_s = s(&data);
    for bad in ["3/3", "0/0", "-1/2", "a/b", "1", "1/2/3"] {
        let err = refused(
            dir.path(),
            &["eval", "--data", &data_s, "--json", &p("x.json"), "--shard", bad],
        );
        assert!(err.contains("shard"), "{bad}: {err}");
    }
    let eval = |spec: &str, data: &str, out: &str, tokens: &str| {
        alens_ok(&[
            "eval",
            "--data",
            data,
            "--json",
            &p(out),
            "--max-new-tokens",
            tokens,
            "--shard",
            spec,
        ]);
    };
    eval("0/3", &data_s, "e0.json", "8");
    eval("1/3", &data_s, "e1.json", "8");
    eval("2/3", &data_s, "e2.json", "8");
    eval("2/3", &s(&other), "other2.json", "8");
    eval("2/3", &data_s, "tokens2.json", "9");
    alens_ok(&[
        "capture",
        "--data",
        &data_s,
        "--out",
        &p("c0.safetensors"),
        "--shard",
        "0/1",
    ]);
    let merge = |shards: &[&str]| {
        let mut args = vec!["merge".to_string(), "--out".to_string(), p("m.json")];
        args.extend(shards.iter().map(|n| p(n)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(dir.path(), &args)
    };
    assert!(merge(&["e0.json", "e1.json"]).contains("missing"));
    assert!(merge(&["e0.json", "e1.json", "e1.json", "e2.json"]).contains("twice"));
    assert!(merge(&["e0.json", "e1.json", "other2.json"]).contains("data"));
    assert!(merge(&["e0.json", "e1.json", "tokens2.json"]).contains("option"));
    assert!(merge(&["e0.json", "e1.json", "c0.safetensors"]).contains("c0.safetensors"));
    assert!(merge(&["e0.json", "e1.json", "e2.json", "c0.safetensors"]).contains("c0.safetensors"));
    let shards = [p("e0.json"), p("e1.json"), p("e2.json")];
    let merge_with = |extra: &[&str]| {
        let out = p("m.json");
        let mut args = vec!["merge", "--out", out.as_str()];
        args.extend(extra);
        args.extend(shards.iter().map(String::as_str));
        refused(dir.path(), &args)
    };
    let (outputs, csv) = (p("m.jsonl"), p("m.csv"));
    assert!(merge_with(&["--outputs", &outputs, "--data", &s(&other)]).contains("--data"));
    assert!(merge_with(&["--outputs", &outputs]).contains("--data"));
    assert!(merge_with(&["--csv", &csv]).contains("sweep"));
    // A file that is not a shard at all.
    alens_ok(&[
        "eval",
        "--data",
        &data_s,
        "--json",
        &p("plain.json"),
        "--max-new-tokens",
        "8",
    ]);
    assert!(merge(&["plain.json"]).contains("not a shard"));
}

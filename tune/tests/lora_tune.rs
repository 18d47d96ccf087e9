//! LoRA fine-tuning on a tiny golden checkpoint: the loss falls, the saved PEFT adapter merged
//! at load computes what the trained model computes, and a run stopped midway and resumed
//! ends with the very same adapter as an uninterrupted one.

use candle_core::{Device, Tensor};
use probe::model::adapter::LoraAdapter;
use probe::stimuli::StimulusRecord;
use probe::{AlignerTemplate, Checkpoint, NoHooks, Positions};
use std::path::{Path, PathBuf};
use tune::lora::{tune, LoraOptions, TuneReport};

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/llama_gqa")
}

/// Word-level records the golden tokenizer knows (w0..w59): copy cases and corrections.
fn records() -> Vec<StimulusRecord> {
    (0..12)
        .map(|i| {
            let question = format!("w{} w{}", 4 + i, 20 + i);
            let answer = format!("w{} w{}", 30 + i % 5, 40 + i % 7);
            let correction = if i % 3 == 0 {
                answer.clone()
            } else {
                format!("w{} w{} w{}", 50 + i % 4, 10 + i, 55)
            };
            StimulusRecord {
                question,
                answer,
                correction: Some(correction),
                category: None,
            }
        })
        .collect()
}

fn template() -> AlignerTemplate {
    AlignerTemplate::new("w1 {question} w2 {answer} w3").unwrap()
}

fn options() -> LoraOptions {
    LoraOptions {
        rank: 4,
        alpha: 8.0,
        steps: 24,
        batch_size: 4,
        learning_rate: 1e-2,
        warmup_steps: 2,
        seed: 5,
        ..Default::default()
    }
}

fn run(out: &Path, resume: bool, stop_after: Option<usize>) -> anyhow::Result<TuneReport> {
    run_with(&options(), out, resume, stop_after, &mut Vec::new())
}

/// As [`run`] with `opts`, pushing each step's loss to `losses`.
fn run_with(
    opts: &LoraOptions,
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
    losses: &mut Vec<f64>,
) -> anyhow::Result<TuneReport> {
    let mut ckpt = Checkpoint::load(&base()).unwrap();
    tune(
        &mut ckpt,
        &template(),
        &records(),
        opts,
        "../llama_gqa",
        out,
        5,
        resume,
        &mut |step, loss, _| {
            losses.push(loss);
            if Some(step) == stop_after {
                anyhow::bail!("stopped at step {step}");
            }
            Ok(())
        },
    )
}

fn logits(ckpt: &Checkpoint) -> Vec<f32> {
    let ids = Tensor::new(&[1u32, 5, 9, 2, 17, 33], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let positions = Positions::contiguous(1, 6, 0, &Device::Cpu).unwrap();
    let normed = ckpt.model.forward(&ids, &positions, None, &mut NoHooks).unwrap();
    ckpt.model
        .logits(&normed)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn loss_falls_and_the_saved_adapter_is_the_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    let mut trained = Checkpoint::load(&base()).unwrap();
    let report = tune(
        &mut trained,
        &template(),
        &records(),
        &options(),
        "../llama_gqa",
        &out,
        0,
        false,
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    assert!(report.final_loss < 0.5 * report.first_loss, "{report:?}");
    // Per layer, r * (in + out) for q, o [32 x 32]; k, v [16 x 32]; gate, up [48 x 32]; down [32 x 48].
    let per_layer = 4 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 48) * 3);
    assert_eq!(report.trainable_parameters, 3 * per_layer);

    let adapter = LoraAdapter::load(&out).unwrap();
    let merged = Checkpoint::load_with_adapter(&base(), Some(adapter), &Device::Cpu).unwrap();
    let (a, b) = (logits(&trained), logits(&merged));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "merged adapter differs from the trained model by {worst}");
    let plain = logits(&Checkpoint::load(&base()).unwrap());
    assert!(
        a.iter().zip(&plain).any(|(x, y)| (x - y).abs() > 1e-2),
        "training changed nothing"
    );
}

#[test]
fn a_stopped_run_resumes_to_the_same_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    run(&whole, false, None).unwrap();
    // Stopped after step 12 (0-based), i.e. 13 steps done: the last checkpoint is at 10.
    assert!(run(&parts, false, Some(12)).is_err());
    run(&parts, true, None).unwrap();
    let read = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert_eq!(read(&whole), read(&parts), "resume must continue bit for bit");
    // And the same seed twice gives the same bytes.
    let again = dir.path().join("again");
    run(&again, false, None).unwrap();
    assert_eq!(read(&whole), read(&again));
}

/// The fused ops train the same model as candle's composed graph: the same first loss, the
/// losses step for step within summation-order noise, an adapter computing nearly the same
/// logits. And a fused run is as reproducible: stopped and resumed, it ends on the same bytes.
#[test]
fn fused_training_follows_the_composed_graph_and_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let fused = LoraOptions {
        fused: true,
        ..options()
    };
    let (mut composed_losses, mut fused_losses) = (Vec::new(), Vec::new());
    run_with(
        &options(),
        &dir.path().join("composed"),
        false,
        None,
        &mut composed_losses,
    )
    .unwrap();
    run_with(&fused, &dir.path().join("fused"), false, None, &mut fused_losses).unwrap();
    assert!(
        (composed_losses[0] - fused_losses[0]).abs() < 1e-5,
        "{composed_losses:?} vs {fused_losses:?}"
    );
    for (step, (c, f)) in composed_losses.iter().zip(&fused_losses).enumerate() {
        assert!(
            (c - f).abs() < 1e-2 * c.max(0.1),
            "step {step}: composed {c}, fused {f}"
        );
    }
    let load = |dir: &Path| {
        Checkpoint::load_with_adapter(&base(), Some(LoraAdapter::load(dir).unwrap()), &Device::Cpu).unwrap()
    };
    let (a, b) = (
        logits(&load(&dir.path().join("composed"))),
        logits(&load(&dir.path().join("fused"))),
    );
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(
        worst < 1e-2,
        "fused and composed adapters differ by {worst} in the logits"
    );

    let parts = dir.path().join("fused-parts");
    assert!(run_with(&fused, &parts, false, Some(12), &mut Vec::new()).is_err());
    run_with(&fused, &parts, true, None, &mut Vec::new()).unwrap();
    let read = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert_eq!(
        read(&dir.path().join("fused")),
        read(&parts),
        "a fused run must resume bit for bit"
    );
}

/// A second phase starts from the first phase's factors: with a vanishing learning rate it
/// ends where the first phase did (f16-stored factors included), and an adapter of another
/// rank is refused.
#[test]
fn a_second_phase_starts_from_the_given_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    run(&first, false, None).unwrap();
    tune::lora::convert_adapter(&first, candle_core::DType::F16).unwrap();
    let opts = LoraOptions {
        steps: 1,
        learning_rate: 1e-30,
        init_adapter: Some(first.clone()),
        ..options()
    };
    let mut ckpt = Checkpoint::load(&base()).unwrap();
    tune(
        &mut ckpt,
        &template(),
        &records(),
        &opts,
        "../llama_gqa",
        &second,
        0,
        false,
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    let load = |dir: &Path| {
        Checkpoint::load_with_adapter(&base(), Some(LoraAdapter::load(dir).unwrap()), &Device::Cpu).unwrap()
    };
    let (a, b) = (logits(&load(&first)), logits(&load(&second)));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "the second phase did not start from the first: {worst}");

    let other_rank = LoraOptions {
        rank: 2,
        alpha: 4.0,
        ..opts
    };
    let mut ckpt = Checkpoint::load(&base()).unwrap();
    let err = tune(
        &mut ckpt,
        &template(),
        &records(),
        &other_rank,
        "../llama_gqa",
        &dir.path().join("third"),
        0,
        false,
        &mut |_, _, _| Ok(()),
    );
    assert!(err.unwrap_err().to_string().contains("another rank"));
}

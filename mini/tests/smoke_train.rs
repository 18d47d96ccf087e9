//! A tiny training run: a few steps on a few records must lower the loss and write a
//! checkpoint that probe loads back and that generates.

use mini::train::{train, TrainOptions};
use probe::Checkpoint;

fn tiny(seed: u64) -> TrainOptions {
    TrainOptions {
        seed,
        steps: 30,
        identity_steps: 0,
        correction_learning_rate: None,
        batch_size: 8,
        learning_rate: 3e-3,
        warmup_steps: 5,
        train_records: 200,
        vocab_size: 300,
        layers: 2,
        hidden: 32,
        heads: 2,
        kv_heads: 1,
        intermediate: 64,
        ..TrainOptions::default()
    }
}

#[test]
fn smoke_training_lowers_loss_and_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    let report = train(&tiny(5), dir.path(), &mut |_, loss| losses.push(loss)).unwrap();
    let early: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let late: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(late < 0.8 * early, "loss did not go down: {early:.3} -> {late:.3}");

    let ckpt = Checkpoint::load(dir.path()).unwrap();
    assert_eq!(ckpt.config.num_hidden_layers, 2);
    assert_eq!(ckpt.eos_token_ids, vec![2]);
    assert!(
        ckpt.tokenizer()
            .unwrap()
            .encode("what is the capital of france?")
            .unwrap()[0]
            == 1,
        "BOS first"
    );

    // Same seed, same machine: bit-identical weights.
    let again = tempfile::tempdir().unwrap();
    let report2 = train(&tiny(5), again.path(), &mut |_, _| {}).unwrap();
    assert_eq!(report.final_loss.to_bits(), report2.final_loss.to_bits());
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        std::fs::read(again.path().join("model.safetensors")).unwrap()
    );
}

#[test]
fn identity_warm_up_trains_a_different_model_and_must_leave_steps_for_corrections() {
    let plain = tempfile::tempdir().unwrap();
    train(&tiny(6), plain.path(), &mut |_, _| {}).unwrap();
    let warmed = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        identity_steps: 10,
        correction_learning_rate: Some(1e-3),
        ..tiny(6)
    };
    train(&opts, warmed.path(), &mut |_, _| {}).unwrap();
    Checkpoint::load(warmed.path()).unwrap();
    assert_ne!(
        std::fs::read(plain.path().join("model.safetensors")).unwrap(),
        std::fs::read(warmed.path().join("model.safetensors")).unwrap()
    );

    let all_identity = TrainOptions {
        identity_steps: 30,
        ..tiny(6)
    };
    let err = train(&all_identity, tempfile::tempdir().unwrap().path(), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("identity warm-up steps (30) must be fewer than all steps (30)"),
        "{err}"
    );
    let no_warm_up = TrainOptions {
        correction_learning_rate: Some(1e-3),
        ..tiny(6)
    };
    let err = train(&no_warm_up, tempfile::tempdir().unwrap().path(), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs an identity warm-up"), "{err}");
    for bad in [f64::NAN, -1.0, 0.0] {
        let opts = TrainOptions {
            identity_steps: 10,
            correction_learning_rate: Some(bad),
            ..tiny(6)
        };
        let out = tempfile::tempdir().unwrap();
        let err = train(&opts, out.path(), &mut |_, _| {}).unwrap_err().to_string();
        assert!(
            err.contains("correction-phase learning rate must be a positive number"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "nothing written");
    }
}

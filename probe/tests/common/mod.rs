//! What the golden tests share: one sequence through the model with every activation kept.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use probe::hooks::{HookPoint, Hooks};
use probe::{Checkpoint, Positions};
use std::collections::HashMap;

/// Keeps every hook point's activation of a one-sequence batch, as `[seq, d]`.
pub struct Keep(pub HashMap<HookPoint, Tensor>);

impl Hooks for Keep {
    fn wants(&self, _: HookPoint) -> bool {
        true
    }
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> anyhow::Result<Option<Tensor>> {
        self.0.insert(point, activation.squeeze(0)?);
        Ok(None)
    }
}

/// Runs `ids` as one sequence from position 0: every activation kept, and the logits `[seq, vocab]`.
pub fn run(ckpt: &Checkpoint, ids: &[u32]) -> (Keep, Tensor) {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let positions = Positions::contiguous(1, ids.len(), 0, &Device::Cpu).unwrap();
    let mut keep = Keep(HashMap::new());
    let normed = ckpt.model.forward(&input, &positions, None, &mut keep).unwrap();
    let logits = ckpt.model.logits(&normed).unwrap().squeeze(0).unwrap();
    (keep, logits)
}

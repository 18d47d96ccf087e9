//! What the golden tests share: one sequence through the model with every activation kept.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use probe::hooks::HookPoint;
use probe::{Cache, Checkpoint, Positions};

/// Runs `ids` as one sequence from position 0 with every hook point cached, and returns the
/// cache and the logits `[seq, vocab]`.
pub fn run(ckpt: &Checkpoint, ids: &[u32]) -> (Cache, Tensor) {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let positions = Positions::contiguous(1, ids.len(), 0, &Device::Cpu).unwrap();
    let points = HookPoint::all(ckpt.config.num_hidden_layers);
    let (normed, cache) = ckpt.model.run_with_cache(&input, &positions, points).unwrap();
    let logits = ckpt.model.logits(&normed).unwrap().squeeze(0).unwrap();
    (cache, logits)
}

/// The cached activation at `point` of the one sequence, `[seq, d]`.
pub fn at(cache: &Cache, point: HookPoint) -> Tensor {
    cache.require(point).unwrap().squeeze(0).unwrap()
}

/// The largest |a - b| over two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

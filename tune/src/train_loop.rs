//! The step loop every training run shares: loss, backward, clip, learning rate, optimizer.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;

/// Scales the gradients so their global norm is at most `max_norm`; returns the norm before.
pub fn clip_gradients(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut squared = 0.0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            squared += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = squared.sqrt();
    if !norm.is_finite() {
        bail!("gradient norm is {norm}: training diverged");
    }
    if norm > max_norm {
        let scale = max_norm / norm;
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// One optimisation step on `loss`: backward, clip to `max_grad_norm`, step at `lr`.
/// Returns the loss value.
pub fn step<O: Optimizer>(loss: &Tensor, vars: &[Var], optimizer: &mut O, lr: f64, max_grad_norm: f64) -> Result<f64> {
    let value = loss.to_scalar::<f32>()? as f64;
    if !value.is_finite() {
        bail!("the loss is {value}: training diverged");
    }
    let mut grads = loss.backward()?;
    clip_gradients(&mut grads, vars, max_grad_norm)?;
    optimizer.set_learning_rate(lr);
    optimizer.step(&grads)?;
    Ok(value)
}

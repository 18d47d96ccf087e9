//! AdamW with its moments in the open, so a checkpoint can hold them and a resumed run
//! continues bit for bit. The update is candle-nn's `AdamW` step, operation for operation.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

pub struct AdamW {
    vars: Vec<(Var, Var, Var)>,
    step: usize,
    params: AdamWParams,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|v| {
                let zeros = || Var::zeros(v.shape(), v.dtype(), v.device());
                Ok((zeros()?, zeros()?, v))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { vars, step: 0, params })
    }

    pub fn steps_taken(&self) -> usize {
        self.step
    }

    /// The moments by parameter index, for a checkpoint: `m.{i}` and `v.{i}`.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (m, v, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{i}"), m.as_tensor().clone());
            out.insert(format!("v.{i}"), v.as_tensor().clone());
        }
        out
    }

    /// Restores moments written by [`AdamW::state`] after `steps` steps.
    pub fn restore(&mut self, state: &HashMap<String, Tensor>, steps: usize) -> Result<()> {
        for (i, (m, v, p)) in self.vars.iter().enumerate() {
            for (name, slot) in [(format!("m.{i}"), m), (format!("v.{i}"), v)] {
                let Some(t) = state.get(&name) else {
                    bail!("the optimizer state has no {name}")
                };
                if t.dims() != p.dims() {
                    bail!(
                        "optimizer state {name} has shape {:?}, the parameter {:?}",
                        t.dims(),
                        p.dims()
                    );
                }
                slot.set(t)?;
            }
        }
        self.step = steps;
        Ok(())
    }
}

impl candle_nn::Optimizer for AdamW {
    type Config = AdamWParams;

    fn new(vars: Vec<Var>, params: AdamWParams) -> candle_core::Result<Self> {
        AdamW::new(vars, params).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let AdamWParams {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.params;
        let lr_lambda = lr * weight_decay;
        let scale_m = 1f64 / (1f64 - beta1.powi(self.step as i32));
        let scale_v = 1f64 / (1f64 - beta2.powi(self.step as i32));
        for (m, v, var) in &self.vars {
            let theta = var.as_tensor();
            if let Some(g) = grads.get(theta) {
                let next_m = ((m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
                let next_v = ((v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                let m_hat = (&next_m * scale_m)?;
                let v_hat = (&next_v * scale_v)?;
                let next_theta = (theta * (1f64 - lr_lambda))?;
                let adjusted_grad = (m_hat / (v_hat.sqrt()? + eps)?)?;
                let next_theta = (next_theta - (adjusted_grad * lr)?)?;
                m.set(&next_m)?;
                v.set(&next_v)?;
                var.set(&next_theta)?;
            }
        }
        Ok(())
    }
}

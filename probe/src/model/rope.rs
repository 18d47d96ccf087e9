//! Rotary position embeddings, HF's non-interleaved ("rotate half") convention.

use super::config::{ModelConfig, RopeScaling};
use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};

/// Inverse frequencies per rotary pair, after any `rope_scaling`.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Tensor,
}

impl Rope {
    pub fn new(cfg: &ModelConfig, device: &Device) -> Result<Self> {
        let dim = cfg.head_dim;
        let base: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / dim as f64))
            .collect();
        let scaled: Vec<f32> = base
            .iter()
            .enumerate()
            .map(|(i, &f)| scale_frequency(i, f, &cfg.rope_scaling) as f32)
            .collect();
        Ok(Self {
            inv_freq: Tensor::new(scaled, device)?,
        })
    }

    /// `(cos, sin)` of shape `[batch, 1, seq, head_dim]` for integer positions `[batch, seq]`.
    /// Angles are computed in f32 from the positions, as HF does, so any position is exact.
    pub fn cos_sin(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, s) = positions.dims2()?;
        let half = self.inv_freq.dim(0)?;
        let pos = positions.to_dtype(DType::F32)?.reshape((b, s, 1))?;
        let angles = pos.broadcast_mul(&self.inv_freq.reshape((1, 1, half))?)?;
        let angles = Tensor::cat(&[&angles, &angles], D::Minus1)?.unsqueeze(1)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// `x * cos + rotate_half(x) * sin` for `x` of shape `[batch, heads, seq, head_dim]`.
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
    }
}

fn scale_frequency(index: usize, freq: f64, scaling: &RopeScaling) -> f64 {
    match *scaling {
        RopeScaling::None => freq,
        RopeScaling::Factors(ref factors) => freq / factors.get(index).copied().unwrap_or(1.0),
        RopeScaling::Linear { factor } => freq / factor,
        // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band
        // between is interpolated smoothly (transformers' `_compute_llama3_parameters`).
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_freq_wavelen = old / low_freq_factor;
            let high_freq_wavelen = old / high_freq_factor;
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_freq_wavelen {
                freq
            } else if wavelen > low_freq_wavelen {
                freq / factor
            } else {
                let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * freq / factor + smooth * freq
            }
        }
    }
}

//! A linear layer whose weight stays in the checkpoint's dtype.
//!
//! A 7B bf16 checkpoint is 14 GB; upcasting it whole to f32 would not fit in 24 GiB. So the
//! weight is kept as stored and cast per call, one matrix at a time, while activations and
//! accumulation stay in f32.

use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};

#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`, as PyTorch stores it.
    weight: Tensor,
    bias: Option<Tensor>,
    /// A trainable low-rank delta beside the frozen weight, while fine-tuning with LoRA.
    lora: Option<LoraDelta>,
}

/// LoRA's `scale * B @ A` next to a frozen weight (Hu et al. 2021): `A` `[r, in]`, `B`
/// `[out, r]`, both f32 and trainable. Kept apart, not merged, so only `A` and `B` get
/// gradients; a finished adapter is merged at load instead (`super::adapter`).
#[derive(Debug, Clone)]
pub struct LoraDelta {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

/// HF's `initializer_range` default: used only when training from scratch.
pub const INIT_STD: f64 = 0.02;

impl Linear {
    pub fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Randn { mean: 0.0, stdev: INIT_STD })?;
        let bias = if bias {
            Some(vb.get_with_hints_dtype(out_dim, "bias", Init::Const(0.0), DType::F32)?)
        } else {
            None
        };
        Ok(Self { weight, bias, lora: None })
    }

    /// `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[0], d[1])
    }

    pub fn set_lora(&mut self, delta: Option<LoraDelta>) {
        self.lora = delta;
    }

    pub fn lora(&self) -> Option<&LoraDelta> {
        self.lora.as_ref()
    }

    pub fn from_weight(weight: Tensor) -> Self {
        Self { weight, bias: None, lora: None }
    }

    /// `x @ W^T + b` for `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = if self.weight.dtype() == x.dtype() {
            self.weight.clone()
        } else {
            self.weight.to_dtype(x.dtype())?
        };
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("linear input has a feature dimension");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, in_dim))?;
        // While training, the frozen weight must not get a gradient: candle's matmul backward
        // computes one for both sides, which doubles the cost of every backward and holds a
        // weight-sized gradient per layer. The frozen matmul passes the gradient to x only.
        let y = if x2.track_op() && !w.track_op() && x2.device().is_cpu() && x2.dtype() == DType::F32 {
            x2.contiguous()?.apply_op1(FrozenMatmul { weight: w.clone() })?
        } else {
            x2.matmul(&w.t()?)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let y = match &self.lora {
            Some(l) => {
                (y + (x2.matmul(&l.a.t()?)?.matmul(&l.b.t()?)? * l.scale)?)?
            }
            None => y,
        };
        let mut out_dims = dims;
        if let Some(features) = out_dims.last_mut() {
            *features = w.dim(0)?;
        }
        Ok(y.reshape(out_dims)?)
    }
}

/// `x @ W^T` for a constant `W`: the backward returns the gradient of `x` alone.
struct FrozenMatmul {
    /// `[out, in]`, f32.
    weight: Tensor,
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &candle_core::CpuStorage, layout: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("frozen matmul takes f32 activations");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen matmul takes contiguous activations");
        };
        let x = Tensor::from_slice(&data[start..end], layout.shape(), &candle_core::Device::Cpu)?;
        let y = x.matmul(&self.weight.t()?)?;
        let shape = y.shape().clone();
        Ok((candle_core::CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.weight)?))
    }
}

//! A linear layer whose weight stays in the checkpoint's dtype.
//!
//! A 7B bf16 checkpoint is 14 GB; upcasting it whole to f32 would not fit in 24 GiB. So the
//! weight is kept as stored, while activations and accumulation stay in f32: a bf16 weight is
//! multiplied as stored on CPUs with AVX512-BF16 or AMX (`super::bf16`, as `Bf16Compute`
//! says), and otherwise cast per call, one matrix at a time. A GGUF matrix loaded with `keep_quantized` stays in its ggml
//! block format and multiplies through candle's quantized kernels (`QMatMul`): decoding reads
//! a quarter to an eighth of the bytes, and the residual stream around it is still f32.

use super::bf16::Bf16Compute;
use super::llama::Autograd;
use anyhow::{bail, Result};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use candle_nn::{Init, VarBuilder};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    /// A trainable low-rank delta beside the frozen weight, while fine-tuning with LoRA.
    lora: Option<LoraDelta>,
    /// How f32 activations meet a bf16 weight on CPUs with bf16 dot products.
    bf16_compute: Bf16Compute,
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

/// The weight matrix, `[out, in]` as PyTorch stores it.
#[derive(Debug, Clone)]
enum Weight {
    /// In the checkpoint's dtype (f32, f16 or bf16).
    Dense(Tensor),
    /// A ggml block-quantized matrix (Q4_0 ... Q8_0, k-quants), multiplied without
    /// dequantizing it.
    Quantized { matmul: Arc<QMatMul>, out_dim: usize, in_dim: usize },
}

/// Quantized matrices to build linears from instead of reading dense weights, by their HF
/// weight names (`model.layers.3.self_attn.q_proj.weight`). Each is taken once.
#[derive(Debug, Default)]
pub struct QuantizedMatrices(pub HashMap<String, QTensor>);

impl QuantizedMatrices {
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// HF's `initializer_range` default: used only when training from scratch.
pub const INIT_STD: f64 = 0.02;

impl Linear {
    pub fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Self::load_from(vb, in_dim, out_dim, bias, &mut QuantizedMatrices::default())
    }

    /// As [`Linear::load`], but the weight comes from `quantized` when it holds this layer's.
    pub fn load_from(
        vb: &VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        quantized: &mut QuantizedMatrices,
    ) -> Result<Self> {
        let name = format!("{}.weight", vb.prefix());
        let weight = match quantized.0.remove(&name) {
            Some(q) => {
                if q.shape().dims() != [out_dim, in_dim] {
                    bail!("quantized {name} has shape {:?}, the config implies [{out_dim}, {in_dim}]", q.shape().dims());
                }
                Weight::Quantized { matmul: Arc::new(QMatMul::from_qtensor(q)?), out_dim, in_dim }
            }
            None => Weight::Dense(vb.get_with_hints((out_dim, in_dim), "weight", Init::Randn { mean: 0.0, stdev: INIT_STD })?),
        };
        let bias = if bias {
            Some(vb.get_with_hints_dtype(out_dim, "bias", Init::Const(0.0), DType::F32)?)
        } else {
            None
        };
        Ok(Self { weight, bias, lora: None, bf16_compute: Bf16Compute::default() })
    }

    /// `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        match &self.weight {
            Weight::Dense(w) => {
                let d = w.dims();
                (d[0], d[1])
            }
            Weight::Quantized { out_dim, in_dim, .. } => (*out_dim, *in_dim),
        }
    }

    /// Whether the weight is held block-quantized.
    pub fn is_quantized(&self) -> bool {
        matches!(self.weight, Weight::Quantized { .. })
    }

    pub fn set_bf16_compute(&mut self, compute: Bf16Compute) {
        self.bf16_compute = compute;
    }

    pub fn set_lora(&mut self, delta: Option<LoraDelta>) {
        self.lora = delta;
    }

    pub fn lora(&self) -> Option<&LoraDelta> {
        self.lora.as_ref()
    }

    pub fn from_weight(weight: Tensor) -> Self {
        Self { weight: Weight::Dense(weight), bias: None, lora: None, bf16_compute: Bf16Compute::default() }
    }

    /// `x @ W^T + b` for `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_in(x, Autograd::Off)
    }

    /// As [`Linear::forward`], built from the ops `autograd` asks for: with
    /// [`Autograd::Fused`], the frozen product and an attached LoRA delta are one op
    /// (`super::fused::lora_linear`).
    pub fn forward_in(&self, x: &Tensor, autograd: Autograd) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("linear input has a feature dimension");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, in_dim))?;
        let with_bias = |y: Tensor| -> Result<Tensor> {
            Ok(match &self.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            })
        };
        let y = match (&self.weight, &self.lora) {
            (Weight::Dense(weight), Some(l)) if autograd == Autograd::Fused && x2.dtype() == DType::F32 && x2.device().is_cpu() => {
                with_bias(super::fused::lora_linear(&x2, &weight.to_dtype(DType::F32)?, &l.a, &l.b, l.scale)?)?
            }
            _ => {
                let y = with_bias(self.frozen_product(&x2)?)?;
                match &self.lora {
                    Some(l) => {
                        // The scale goes on B^T (`[r, out]`), not on the `[rows, out]` product:
                        // a small op instead of a big one, forward and back. For a power-of-two
                        // scale (peft's usual alpha = 2r) the result is the same to the bit.
                        (y + x2.matmul(&l.a.t()?)?.matmul(&(l.b.t()? * l.scale)?)?)?
                    }
                    None => y,
                }
            }
        };
        let mut out_dims = dims;
        if let Some(features) = out_dims.last_mut() {
            *features = self.dims().0;
        }
        Ok(y.reshape(out_dims)?)
    }

    /// `x2 @ W^T` for `x2` `[rows, in]`, in the way the weight's storage and the need for a
    /// gradient call for.
    fn frozen_product(&self, x2: &Tensor) -> Result<Tensor> {
        let in_dim = x2.dim(1)?;
        Ok(match &self.weight {
            Weight::Dense(weight)
                if weight.dtype() == DType::BF16
                    && weight.is_contiguous()
                    && x2.dtype() == DType::F32
                    && !x2.track_op()
                    && x2.device().is_cpu()
                    && in_dim.is_multiple_of(32)
                    && super::bf16::available() =>
            {
                x2.contiguous()?.apply_op2_no_bwd(weight, &Bf16Matmul(self.bf16_compute))?
            }
            Weight::Dense(weight) => {
                let w = if weight.dtype() == x2.dtype() { weight.clone() } else { weight.to_dtype(x2.dtype())? };
                // While training, the frozen weight must not get a gradient: candle's matmul
                // backward computes one for both sides, which doubles the cost of every
                // backward and holds a weight-sized gradient per layer. The frozen matmul
                // passes the gradient to x only; untracked, it is the same product, faster.
                if !w.track_op() && x2.device().is_cpu() && x2.dtype() == DType::F32 {
                    let op = FrozenMatmul { weight: w.contiguous()?, gradient: false };
                    if x2.track_op() { x2.contiguous()?.apply_op1(op)? } else { x2.contiguous()?.apply_op1_no_bwd(&op)? }
                } else {
                    x2.matmul(&w.t()?)?
                }
            }
            Weight::Quantized { matmul, .. } => {
                // candle's quantized matmul has no backward: it would silently cut the
                // gradient of everything below it.
                if x2.track_op() {
                    bail!("a quantized weight cannot be trained through; load the model without keep_quantized");
                }
                matmul.forward(&x2.to_dtype(DType::F32)?.contiguous()?)?
            }
        })
    }
}

/// `x @ W^T` for f32 `x` and a bf16 `W`, on the CPU's bf16 dot products (see `super::bf16`).
struct Bf16Matmul(Bf16Compute);

impl candle_core::CustomOp2 for Bf16Matmul {
    fn name(&self) -> &'static str {
        "bf16-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &candle_core::CpuStorage,
        x_layout: &candle_core::Layout,
        w: &candle_core::CpuStorage,
        w_layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (candle_core::CpuStorage::F32(x), candle_core::CpuStorage::BF16(w)) = (x, w) else {
            candle_core::bail!("bf16 matmul takes f32 activations and a bf16 weight");
        };
        let (Some((x0, x1)), Some((w0, w1))) = (x_layout.contiguous_offsets(), w_layout.contiguous_offsets()) else {
            candle_core::bail!("bf16 matmul takes contiguous operands");
        };
        let (m, k) = x_layout.shape().dims2()?;
        let (n, wk) = w_layout.shape().dims2()?;
        if k != wk {
            candle_core::bail!("bf16 matmul: activations have {k} features, the weight {wk}");
        }
        match super::bf16::matmul_t(&x[x0..x1], m, k, &w[w0..w1], n, self.0) {
            Some(y) => Ok((candle_core::CpuStorage::F32(y), (m, n).into())),
            None => candle_core::bail!("bf16 matmul is not available on this CPU or shape"),
        }
    }
}

/// `x @ W^T` for a constant `W`: the backward returns the gradient of `x` alone (`g @ W`,
/// the same op the other way). Both products run on `super::f32_matmul` (the same bits as
/// candle's matmul, on one pool).
struct FrozenMatmul {
    /// `[out, in]`, f32, contiguous.
    weight: Tensor,
    /// False: `x @ W^T`; true: `g @ W`, the gradient passed back to `x`.
    gradient: bool,
}

/// `f` on the contiguous f32 data of a CPU tensor.
pub(crate) fn with_f32_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        candle_core::bail!("frozen matmul takes a contiguous f32 CPU weight");
    };
    Ok(f(&data[start..end]))
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        if self.gradient { "frozen-matmul-grad" } else { "frozen-matmul" }
    }

    fn cpu_fwd(&self, storage: &candle_core::CpuStorage, layout: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (candle_core::CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("frozen matmul takes contiguous f32 activations");
        };
        let data = &data[start..end];
        let (m, features) = layout.shape().dims2()?;
        let (out_dim, in_dim) = self.weight.dims2()?;
        let (expected, produced) = if self.gradient { (out_dim, in_dim) } else { (in_dim, out_dim) };
        if features != expected {
            candle_core::bail!("frozen matmul: {features} features against a [{out_dim}, {in_dim}] weight");
        }
        let y = with_f32_data(&self.weight, |w| match self.gradient {
            false => super::f32_matmul::matmul_t(data, m, in_dim, w, out_dim),
            true => super::f32_matmul::matmul(data, m, out_dim, w, in_dim),
        })?;
        Ok((candle_core::CpuStorage::F32(y), (m, produced).into()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if self.gradient {
            candle_core::bail!("frozen matmul: no second derivative");
        }
        frozen_input_grad(grad_res, &self.weight).map(Some)
    }
}

/// `g @ W` for a frozen f32 `W` `[out, in]`: the gradient a linear layer passes back to its
/// input, on `super::f32_matmul`.
pub(crate) fn frozen_input_grad(grad: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    grad.contiguous()?.apply_op1_no_bwd(&FrozenMatmul { weight: weight.contiguous()?, gradient: true })
}

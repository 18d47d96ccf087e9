//! A linear layer whose weight stays in the checkpoint's dtype.
//!
//! A 7B bf16 checkpoint is 14 GB; upcasting it whole to f32 would not fit in 24 GiB. So the
//! weight is kept in its dtype, while activations and accumulation stay in f32: a bf16 weight
//! is repacked once, at load, into the layout the AVX512-BF16 kernel reads and multiplied
//! there (`kernels::bf16`, as `Bf16Compute` says; as stored where AMX tiles take it), and
//! otherwise cast per call, one matrix at a time. A GGUF matrix loaded with `keep_quantized` stays in its ggml
//! block format and multiplies through candle's quantized kernels (`QMatMul`): decoding reads
//! a quarter to an eighth of the bytes, and the residual stream around it is still f32.

use anyhow::{bail, Result};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use candle_nn::{Init, VarBuilder};
use kernels::bf16::{Bf16Compute, PackedWeight};
use kernels::f32_matmul::PackedF32Weight;
use kernels::frozen::{Bf16Matmul, FrozenMatmul, PackedBf16Matmul, PackedF32Matmul};
use std::collections::HashMap;
use std::sync::Arc;

/// Which ops the forward is built from: inference (`Off`: the fused ops' forwards, which
/// are the composed ops' values to the bit), or ops autograd can differentiate, composed
/// from candle's elementwise ops or fused (`kernels::fused`: one pass each way, a different
/// summation order in the backward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Autograd {
    #[default]
    Off,
    Composed,
    Fused,
}

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
    /// A bf16 matrix in the AVX512-BF16 kernel's layout, packed at load in place of the
    /// tensor (so a bf16 model is held once, in two bytes a value).
    PackedBf16(Arc<PackedWeight>),
    /// An f32 matrix packed at load for inference (`kernels::f32_matmul::PackedF32Weight`), in
    /// place of the tensor; training unpacks it first ([`Linear::unpack_f32`]).
    PackedF32(Arc<PackedF32Weight>),
    /// A ggml block-quantized matrix (Q4_0 ... Q8_0, k-quants), multiplied without
    /// dequantizing it.
    Quantized {
        matmul: Arc<QMatMul>,
        out_dim: usize,
        in_dim: usize,
    },
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
                    bail!(
                        "quantized {name} has shape {:?}, the config implies [{out_dim}, {in_dim}]",
                        q.shape().dims()
                    );
                }
                Weight::Quantized {
                    matmul: Arc::new(QMatMul::from_qtensor(q)?),
                    out_dim,
                    in_dim,
                }
            }
            None => Weight::dense(vb.get_with_hints(
                (out_dim, in_dim),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
            )?),
        };
        let bias = if bias {
            Some(vb.get_with_hints_dtype(out_dim, "bias", Init::Const(0.0), DType::F32)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            lora: None,
            bf16_compute: Bf16Compute::default(),
        })
    }

    /// `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        match &self.weight {
            Weight::Dense(w) => {
                let d = w.dims();
                (d[0], d[1])
            }
            Weight::PackedBf16(packed) => packed.dims(),
            Weight::PackedF32(packed) => packed.dims(),
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

    /// Puts an f32 weight packed for inference back as a tensor, for training: its backward
    /// multiplies by the weight as stored, and unpacking once beats unpacking every step.
    pub fn unpack_f32(&mut self) -> Result<()> {
        if let Weight::PackedF32(_) = &self.weight {
            self.weight = Weight::Dense(self.dense_weight()?);
        }
        Ok(())
    }

    pub fn set_lora(&mut self, delta: Option<LoraDelta>) {
        self.lora = delta;
    }

    pub fn lora(&self) -> Option<&LoraDelta> {
        self.lora.as_ref()
    }

    pub fn from_weight(weight: Tensor) -> Self {
        Self {
            weight: Weight::dense(weight),
            bias: None,
            lora: None,
            bf16_compute: Bf16Compute::default(),
        }
    }

    /// `x @ W^T + b` for `x` of shape `[..., in]`, built from the ops `autograd` asks for:
    /// with [`Autograd::Fused`], the frozen product and an attached LoRA delta are one op
    /// (`kernels::fused::lora_linear`).
    pub fn forward(&self, x: &Tensor, autograd: Autograd) -> Result<Tensor> {
        self.forward_rows(x, autograd, None)
    }

    /// [`Linear::forward`] where only the flat rows `selected` of `x` (ascending) are read: a
    /// packed weight (f32, or bf16 for the AVX512-BF16 kernel) multiplies those alone and
    /// leaves the other rows' outputs unspecified (zero, or the bias); any other weight
    /// computes every row.
    pub fn forward_rows(&self, x: &Tensor, autograd: Autograd, selected: Option<&[usize]>) -> Result<Tensor> {
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
            (Weight::Dense(_) | Weight::PackedBf16(_) | Weight::PackedF32(_), Some(l))
                if autograd == Autograd::Fused && x2.dtype() == DType::F32 && x2.device().is_cpu() =>
            {
                with_bias(kernels::fused::lora_linear(
                    &x2,
                    &self.dense_weight()?.to_dtype(DType::F32)?,
                    &l.a,
                    &l.b,
                    l.scale,
                )?)?
            }
            _ => {
                let y = with_bias(self.frozen_product(&x2, selected)?)?;
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
    fn frozen_product(&self, x2: &Tensor, rows: Option<&[usize]>) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Dense(weight)
                if weight.dtype() == DType::BF16
                    && weight.is_contiguous()
                    && x2.dtype() == DType::F32
                    && !x2.track_op()
                    && x2.device().is_cpu()
                    && kernels::bf16::available() =>
            {
                x2.contiguous()?
                    .apply_op2_no_bwd(weight, &Bf16Matmul(self.bf16_compute))?
            }
            Weight::PackedBf16(packed) if x2.dtype() == DType::F32 && !x2.track_op() && x2.device().is_cpu() => {
                x2.contiguous()?.apply_op1_no_bwd(&PackedBf16Matmul {
                    weight: packed,
                    compute: self.bf16_compute,
                    rows,
                })?
            }
            Weight::PackedF32(packed) if x2.dtype() == DType::F32 && !x2.track_op() && x2.device().is_cpu() => x2
                .contiguous()?
                .apply_op1_no_bwd(&PackedF32Matmul { weight: packed, rows })?,
            Weight::PackedBf16(_) | Weight::PackedF32(_) => cast_product(&self.dense_weight()?, x2)?,
            Weight::Dense(weight) => cast_product(weight, x2)?,
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

    /// The weight as a tensor `[out, in]` in its dtype (a packed one unpacked: for the rare
    /// paths that need it whole, such as training through a bf16 weight).
    fn dense_weight(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Dense(weight) => weight.clone(),
            Weight::PackedBf16(packed) => kernels::frozen::unpack_bf16(packed)?,
            Weight::PackedF32(packed) => kernels::frozen::unpack_f32(packed)?,
            Weight::Quantized { matmul, .. } => bail!("a quantized weight has no dense form here ({matmul:?})"),
        })
    }
}

impl Weight {
    /// A dense weight as it will be multiplied: a contiguous bf16 matrix on the CPU packed
    /// for the AVX512-BF16 kernel where it runs (and AMX tiles, which read the weight as
    /// stored, are not in use), a frozen f32 one for the packed f32 product where it runs,
    /// any other kept as it is.
    fn dense(weight: Tensor) -> Weight {
        if weight.dtype() == DType::F32 && weight.device().is_cpu() && !weight.track_op() {
            return match kernels::frozen::pack_f32(&weight) {
                Some(packed) => Weight::PackedF32(Arc::new(packed)),
                None => Weight::Dense(weight),
            };
        }
        let packable = weight.dtype() == DType::BF16
            && weight.device().is_cpu()
            && !weight.track_op()
            && kernels::bf16::available()
            && !kernels::bf16::amx_available();
        if !packable {
            return Weight::Dense(weight);
        }
        match kernels::frozen::pack_bf16(&weight) {
            Some(packed) => Weight::PackedBf16(Arc::new(packed)),
            None => Weight::Dense(weight),
        }
    }
}

/// `x2 @ W^T` for a weight held as a tensor, cast to the activations' dtype if need be.
fn cast_product(weight: &Tensor, x2: &Tensor) -> Result<Tensor> {
    let w = if weight.dtype() == x2.dtype() {
        weight.clone()
    } else {
        weight.to_dtype(x2.dtype())?
    };
    // While training, the frozen weight must not get a gradient: candle's matmul
    // backward computes one for both sides, which doubles the cost of every
    // backward and holds a weight-sized gradient per layer. The frozen matmul
    // passes the gradient to x only; untracked, it is the same product, faster.
    Ok(if !w.track_op() && x2.device().is_cpu() && x2.dtype() == DType::F32 {
        let op = FrozenMatmul {
            weight: w.contiguous()?,
            gradient: false,
        };
        if x2.track_op() {
            x2.contiguous()?.apply_op1(op)?
        } else {
            x2.contiguous()?.apply_op1_no_bwd(&op)?
        }
    } else {
        x2.matmul(&w.t()?)?
    })
}

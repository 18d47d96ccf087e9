//! The frozen weight's products as candle custom ops: `x @ W^T` for a bf16 `W` on the CPU's
//! bf16 dot products, as stored ([`Bf16Matmul`]) or packed at load ([`PackedBf16Matmul`]),
//! and for an f32 `W` that must get no gradient ([`FrozenMatmul`]), whose backward passes the
//! gradient to `x` alone.

use crate::bf16::{Bf16Compute, PackedWeight};
use crate::f32_matmul::PackedF32Weight;
use candle_core::Tensor;

/// `x @ W^T` for f32 `x` and a bf16 `W`, on the CPU's bf16 dot products (see `super::bf16`).
pub struct Bf16Matmul(pub Bf16Compute);

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
        match crate::bf16::matmul_t(&x[x0..x1], m, k, &w[w0..w1], n, self.0) {
            Some(y) => Ok((candle_core::CpuStorage::F32(y), (m, n).into())),
            None => candle_core::bail!("bf16 matmul is not available on this CPU or shape"),
        }
    }
}

/// `x @ W^T` for f32 `x` and a bf16 `W` packed once ([`PackedWeight`]), on the CPU's bf16
/// dot products (see `super::bf16`).
pub struct PackedBf16Matmul<'a> {
    pub weight: &'a PackedWeight,
    pub compute: Bf16Compute,
    /// Only these rows of `x` (ascending), the others' outputs zero
    /// ([`PackedWeight::matmul_t_rows`]); `None`: every row.
    pub rows: Option<&'a [usize]>,
}

impl candle_core::CustomOp1 for PackedBf16Matmul<'_> {
    fn name(&self) -> &'static str {
        "packed-bf16-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        check_rows("bf16 matmul", self.rows, layout)?;
        packed_product("bf16 matmul", x, layout, self.weight.dims(), |x, m| {
            self.weight.matmul_t_rows(x, m, self.compute, self.rows)
        })
    }
}

/// An error unless `rows` (if any) are strictly ascending rows of the activations `layout`.
fn check_rows(op: &str, rows: Option<&[usize]>, layout: &candle_core::Layout) -> candle_core::Result<()> {
    if let Some(rows) = rows {
        let m = layout.shape().dims().first().copied().unwrap_or(0);
        if !rows.windows(2).all(|w| w[0] < w[1]) || rows.last().is_some_and(|&r| r >= m) {
            candle_core::bail!("{op}: the selected rows are not ascending rows of the {m}");
        }
    }
    Ok(())
}

/// `x` `[m, k]` (contiguous f32 activations) times the transpose of a packed weight of
/// `dims` `[n, k]`, by `multiply(x, m)`: the checks and the output both packed ops share.
fn packed_product(
    op: &str,
    x: &candle_core::CpuStorage,
    layout: &candle_core::Layout,
    (n, wk): (usize, usize),
    multiply: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
    let (candle_core::CpuStorage::F32(x), Some((x0, x1))) = (x, layout.contiguous_offsets()) else {
        candle_core::bail!("{op} takes contiguous f32 activations");
    };
    let (m, k) = layout.shape().dims2()?;
    if k != wk {
        candle_core::bail!("{op}: activations have {k} features, the weight {wk}");
    }
    Ok((candle_core::CpuStorage::F32(multiply(&x[x0..x1], m)), (m, n).into()))
}

/// A bf16 CPU matrix `[n, k]` packed for [`PackedBf16Matmul`]; `None` for any other tensor or
/// where the kernels do not run.
pub fn pack_bf16(weight: &Tensor) -> Option<PackedWeight> {
    let (n, k) = weight.dims2().ok()?;
    let (storage, layout) = weight.storage_and_layout();
    let (candle_core::Storage::Cpu(candle_core::CpuStorage::BF16(data)), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    else {
        return None;
    };
    PackedWeight::pack(&data[start..end], n, k)
}

/// A packed weight back as the `[n, k]` bf16 tensor it was packed from.
pub fn unpack_bf16(weight: &PackedWeight) -> candle_core::Result<Tensor> {
    Tensor::from_vec(weight.unpack(), weight.dims(), &candle_core::Device::Cpu)
}

/// `x @ W^T` for f32 `x` and an f32 `W` packed once ([`PackedF32Weight`]): gemm's bits for
/// two rows or more, without repacking the weight at every call.
pub struct PackedF32Matmul<'a> {
    pub weight: &'a PackedF32Weight,
    /// Only these rows of `x` (ascending), the others' outputs zero
    /// ([`PackedF32Weight::matmul_t_rows`]); `None`: every row.
    pub rows: Option<&'a [usize]>,
}

impl candle_core::CustomOp1 for PackedF32Matmul<'_> {
    fn name(&self) -> &'static str {
        "packed-f32-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        check_rows("packed f32 matmul", self.rows, layout)?;
        packed_product("packed f32 matmul", x, layout, self.weight.dims(), |x, m| {
            self.weight.matmul_t_rows(x, m, self.rows)
        })
    }
}

/// An f32 CPU matrix `[n, k]` packed for [`PackedF32Matmul`]; `None` for any other tensor or
/// where the packed product does not run.
pub fn pack_f32(weight: &Tensor) -> Option<PackedF32Weight> {
    let (n, k) = weight.dims2().ok()?;
    with_f32_data(weight, |data| PackedF32Weight::pack(data, n, k)).ok()?
}

/// A packed f32 weight back as the `[n, k]` tensor it was packed from.
pub fn unpack_f32(weight: &PackedF32Weight) -> candle_core::Result<Tensor> {
    Tensor::from_vec(weight.unpack(), weight.dims(), &candle_core::Device::Cpu)
}

/// `x @ W^T` for a constant `W`: the backward returns the gradient of `x` alone (`g @ W`,
/// the same op the other way). Both products run on `crate::f32_matmul` (the same bits as
/// candle's matmul, on one pool).
pub struct FrozenMatmul {
    /// `[out, in]`, f32, contiguous.
    pub weight: Tensor,
    /// False: `x @ W^T`; true: `g @ W`, the gradient passed back to `x`.
    pub gradient: bool,
}

/// `f` on the contiguous f32 data of a CPU tensor.
pub fn with_f32_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    else {
        candle_core::bail!("frozen matmul takes a contiguous f32 CPU weight");
    };
    Ok(f(&data[start..end]))
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        if self.gradient {
            "frozen-matmul-grad"
        } else {
            "frozen-matmul"
        }
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (candle_core::CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("frozen matmul takes contiguous f32 activations");
        };
        let data = &data[start..end];
        let (m, features) = layout.shape().dims2()?;
        let (out_dim, in_dim) = self.weight.dims2()?;
        let (expected, produced) = if self.gradient {
            (out_dim, in_dim)
        } else {
            (in_dim, out_dim)
        };
        if features != expected {
            candle_core::bail!("frozen matmul: {features} features against a [{out_dim}, {in_dim}] weight");
        }
        let y = with_f32_data(&self.weight, |w| match self.gradient {
            false => crate::f32_matmul::matmul_t(data, m, in_dim, w, out_dim),
            true => crate::f32_matmul::matmul(data, m, out_dim, w, in_dim),
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
/// input, on `crate::f32_matmul`.
pub fn frozen_input_grad(grad: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    grad.contiguous()?.apply_op1_no_bwd(&FrozenMatmul {
        weight: weight.contiguous()?,
        gradient: true,
    })
}

//! The plain tensor moves of the inference forward on the kernels' pool: the residual
//! stream's adds and the swaps between `[batch, seq, heads, head_dim]` and
//! `[batch, heads, seq, head_dim]` around attention. candle runs these on the calling thread
//! where `CANDLE_NUM_THREADS=1` (a shared node's setting), with the pool's other threads
//! idle. The values are candle's (an f32 add, a copy); no gradient is kept.

use crate::fused::by_rows;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// `a + b` for two f32 CPU tensors of one shape.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        bail!("pooled add: shapes {:?} and {:?}", a.dims(), b.dims());
    }
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &Add)
}

struct Add;

/// Rows of this many floats are what the pool's tasks share out.
const ROW: usize = 4096;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "pooled-add"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (f32s(a, al)?, f32s(b, bl)?);
        let n = a.len();
        let mut out = by_rows(n / ROW, ROW, |r, y| {
            for ((y, a), b) in y.iter_mut().zip(&a[r * ROW..]).zip(&b[r * ROW..]) {
                *y = a + b;
            }
        });
        out.extend(a[n - n % ROW..].iter().zip(&b[n - n % ROW..]).map(|(a, b)| a + b));
        Ok((CpuStorage::F32(out), al.shape().clone()))
    }
}

/// `x` `[a, b, c, d]` as the contiguous `[a, c, b, d]` (candle's `x.transpose(1, 2)?.contiguous()`).
pub fn swap_middle_axes(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&SwapMiddle)
}

struct SwapMiddle;

impl CustomOp1 for SwapMiddle {
    fn name(&self) -> &'static str {
        "pooled-swap-middle-axes"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(x, layout)?;
        let (a, b, c, d) = layout.shape().dims4()?;
        // Output row (i, k, j) of `d` floats is input row (i, j, k).
        let out = by_rows(a * c * b, d, |row, y| {
            let (i, k, j) = (row / (c * b), (row / b) % c, row % b);
            let from = ((i * b + j) * c + k) * d;
            y.copy_from_slice(&x[from..from + d]);
        });
        Ok((CpuStorage::F32(out), (a, c, b, d).into()))
    }
}

fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => bail!("pooled ops take contiguous f32 CPU tensors"),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn moves_are_candles_to_the_bit() {
        let dev = Device::Cpu;
        let bits = crate::testing::tensor_bits;
        for shape in [(3usize, 37usize, 4usize, 64usize), (1, 1, 1, 5), (2, 300, 12, 64)] {
            let x = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let y = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            assert_eq!(bits(&super::add(&x, &y).unwrap()), bits(&(&x + &y).unwrap()));
            let swapped = super::swap_middle_axes(&x).unwrap();
            assert_eq!(swapped.dims(), &[shape.0, shape.2, shape.1, shape.3]);
            assert_eq!(bits(&swapped), bits(&x.transpose(1, 2).unwrap().contiguous().unwrap()));
        }
        let (x, y) = (
            Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap(),
            Tensor::zeros(5, candle_core::DType::F32, &dev).unwrap(),
        );
        assert!(super::add(&x, &y).is_err());
    }
}

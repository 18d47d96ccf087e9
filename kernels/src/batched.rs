//! Products of two activations batched over their leading dimensions: attention's scores
//! (`q @ k^T`) and its weighted values (`probs @ v`), one `gemm` per batch entry, the
//! entries spread over the kernels' pool.
//!
//! candle's CPU matmul runs the entries one after another, each on candle's thread count
//! (one on a shared node, where `CANDLE_NUM_THREADS=1`), after zero-filling the output. Here
//! each entry gets the very `gemm` call candle makes for it (the same shape, strides and
//! single-threaded kernels), so the values are candle's to the bit; only the entries run
//! side by side, and the output is written once.

use crate::parallel::SendPtr;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `a @ b` over the last two dimensions, batched over the others: `a` `[.., m, k]`, `b`
/// `[.., k, n]` with the same leading dimensions, f32 on the CPU, any strides. The result is
/// candle's `a.matmul(b)` to the bit (a `b` shared across the batch, stride 0, takes candle's
/// own matmul, which folds the batch into one product).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shared_rhs = b.rank() > 2 && b.layout().stride()[..b.rank() - 2].iter().all(|&s| s == 0);
    if !a.device().is_cpu() || a.dtype() != candle_core::DType::F32 || shared_rhs {
        return a.matmul(b);
    }
    a.apply_op2_no_bwd(b, &BatchedMatmul)
}

struct BatchedMatmul;

/// The offset of batch entry `index` (row-major over `dims`) in a tensor with `strides`.
fn entry_offset(mut index: usize, dims: &[usize], strides: &[usize]) -> usize {
    let mut offset = 0;
    for (&dim, &stride) in dims.iter().zip(strides).rev() {
        offset += (index % dim) * stride;
        index /= dim;
    }
    offset
}

impl CustomOp2 for BatchedMatmul {
    fn name(&self) -> &'static str {
        "batched-matmul"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (a, b) else {
            bail!("batched matmul takes f32 operands");
        };
        let (ad, bd) = (al.shape().dims(), bl.shape().dims());
        let rank = ad.len();
        if rank < 2 || bd.len() != rank || ad[..rank - 2] != bd[..rank - 2] || ad[rank - 1] != bd[rank - 2] {
            bail!("batched matmul: shapes {ad:?} and {bd:?} do not multiply");
        }
        let (m, k, n) = (ad[rank - 2], ad[rank - 1], bd[rank - 1]);
        let batch_dims = &ad[..rank - 2];
        let entries: usize = batch_dims.iter().product();
        let (astr, bstr) = (al.stride(), bl.stride());
        let mut out = Vec::<f32>::with_capacity(entries * m * n);
        if k == 0 {
            out.resize(entries * m * n, 0.0); // gemm leaves an empty product's output unwritten
        } else if m * n > 0 {
            let (a0, b0) = (al.start_offset(), bl.start_offset());
            let dst = SendPtr(out.as_mut_ptr());
            let per = entries.div_ceil(crate::parallel::threads() * 4).max(1);
            crate::parallel::for_each(entries.div_ceil(per), |chunk| {
                for entry in chunk * per..((chunk + 1) * per).min(entries) {
                    let lhs = a0 + entry_offset(entry, batch_dims, &astr[..rank - 2]);
                    let rhs = b0 + entry_offset(entry, batch_dims, &bstr[..rank - 2]);
                    // SAFETY: the layouts address `[m, k]` and `[k, n]` matrices with these row
                    // and column strides from `lhs` and `rhs`, inside `a` and `b` (candle
                    // checked the layouts against the storages); entry `entry` writes its own
                    // `m * n` floats of `out`, which outlives the pool call. The arguments are
                    // the ones candle's matmul passes for this entry.
                    unsafe {
                        crate::f32_matmul::gemm_into(
                            dst.get().add(entry * m * n),
                            n,
                            m,
                            n,
                            k,
                            (a[lhs..].as_ptr(), astr[rank - 2], astr[rank - 1]),
                            (b[rhs..].as_ptr(), bstr[rank - 2], bstr[rank - 1]),
                        )
                    }
                }
            });
            // SAFETY: every entry's gemm wrote all of its `m * n` outputs (read_dst false).
            unsafe { out.set_len(entries * m * n) };
        }
        let mut shape = batch_dims.to_vec();
        shape.extend([m, n]);
        Ok((CpuStorage::F32(out), shape.into()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// Attention's two products, on contiguous and strided operands (a transposed key, a
    /// cache's narrowed buffer), are candle's matmul to the bit.
    #[test]
    fn products_are_candles_matmul_to_the_bit() {
        let dev = Device::Cpu;
        let bits = crate::testing::tensor_bits;
        let q = Tensor::randn(0f32, 1.0, (3, 4, 2 * 37, 64), &dev).unwrap();
        let cache = Tensor::randn(0f32, 1.0, (3, 4, 50, 64), &dev).unwrap();
        let k = cache.narrow(2, 0, 37).unwrap();
        let scores = super::matmul(&q, &k.t().unwrap()).unwrap();
        assert_eq!(scores.dims(), &[3, 4, 74, 37]);
        assert_eq!(bits(&scores), bits(&q.matmul(&k.t().unwrap()).unwrap()));
        let probs = Tensor::rand(0f32, 1.0, (3, 4, 74, 37), &dev).unwrap();
        let weighted = super::matmul(&probs, &k).unwrap();
        assert_eq!(bits(&weighted), bits(&probs.matmul(&k).unwrap()));
        // Two dimensions (no batch), and an empty inner dimension.
        let (x, y) = (
            Tensor::randn(0f32, 1.0, (9, 5), &dev).unwrap(),
            Tensor::randn(0f32, 1.0, (5, 7), &dev).unwrap(),
        );
        assert_eq!(bits(&super::matmul(&x, &y).unwrap()), bits(&x.matmul(&y).unwrap()));
        let (x, y) = (
            Tensor::zeros((2, 3, 0), candle_core::DType::F32, &dev).unwrap(),
            Tensor::zeros((2, 0, 4), candle_core::DType::F32, &dev).unwrap(),
        );
        assert_eq!(
            super::matmul(&x, &y).unwrap().to_vec3::<f32>().unwrap(),
            vec![vec![vec![0f32; 4]; 3]; 2]
        );
    }
}

//! `e^x` over a slice of f32, sixteen at a time, with the bits of glibc's `expf` (the one
//! `f32::exp` calls, and so candle's composed softmax and SiLU), so the one-pass inference ops
//! stay the composed ops' values to the bit while their exponentials stop being a libm call
//! each.
//!
//! glibc's `expf` (sysdeps/ieee754/flt-32/e_expf.c, the FMA build picked on AVX2/FMA CPUs)
//! works in f64: `x * 32/ln 2 = k + r`, `2^(k/32)` from a 32-entry table and the exponent
//! bits, `2^(r/32)` from a cubic, rounded once to f32. The same operations in the same order,
//! with the same fused multiply-adds, give the same f64 and so the same f32. Arguments off
//! its fast path (|x| >= 88, NaN) take `f32::exp` itself, except the underflows to zero that
//! a softmax's masked entries are. Before first use the vector path is checked against
//! `f32::exp` on this machine; another libm (another rounding) keeps the plain calls.

use std::sync::OnceLock;

/// `x` becomes `e^x`, each value as `f32::exp` gives it.
pub fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if vector_matches_libm() {
        let mut chunks = x.chunks_exact_mut(16);
        for chunk in &mut chunks {
            // SAFETY: `vector_matches_libm()` checked AVX-512F; the chunk holds 16 floats.
            unsafe { x86::exp16(chunk) };
        }
        chunks.into_remainder().iter_mut().for_each(|v| *v = v.exp());
        return;
    }
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// Whether the vector path runs here and gives `f32::exp`'s bits on a spread of arguments
/// (checked once per process).
fn vector_matches_libm() -> bool {
    static MATCHES: OnceLock<bool> = OnceLock::new();
    *MATCHES.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            let probes = probes();
            let mut ours = probes.clone();
            for chunk in ours.chunks_exact_mut(16) {
                // SAFETY: AVX-512F was detected; the chunk holds 16 floats.
                unsafe { x86::exp16(chunk) };
            }
            return ours.iter().zip(&probes).all(|(o, p)| o.to_bits() == p.exp().to_bits());
        }
        false
    })
}

/// Arguments across the whole range (both paths, every table entry, the edges of underflow
/// and overflow): a multiple of 16 of them.
fn probes() -> Vec<f32> {
    let mut v: Vec<f32> = (0..4000)
        .map(|i| -110.0 + i as f32 * 0.05 + (i % 7) as f32 * 1e-3)
        .collect();
    v.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        88.7,
        88.73,
        -87.3,
        -103.2,
        -103.5,
        -104.0,
        f32::MIN,
        f32::MAX,
    ]);
    v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0, -1.0, 0.5]);
    let mut state = 0x9e37_79b9u32;
    while !v.len().is_multiple_of(16) || v.len() < 8192 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        v.push(f32::from_bits(state));
    }
    v
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `2^(i/32)` as f64 bits with `i << 47` taken off (glibc's `__exp2f_data.tab`), so that
    /// adding `k << 47` to entry `k % 32` scales it by `2^(k/32)`.
    const TABLE: [u64; 32] = [
        0x3ff0000000000000,
        0x3fefd9b0d3158574,
        0x3fefb5586cf9890f,
        0x3fef9301d0125b51,
        0x3fef72b83c7d517b,
        0x3fef54873168b9aa,
        0x3fef387a6e756238,
        0x3fef1e9df51fdee1,
        0x3fef06fe0a31b715,
        0x3feef1a7373aa9cb,
        0x3feedea64c123422,
        0x3feece086061892d,
        0x3feebfdad5362a27,
        0x3feeb42b569d4f82,
        0x3feeab07dd485429,
        0x3feea47eb03a5585,
        0x3feea09e667f3bcd,
        0x3fee9f75e8ec5f74,
        0x3feea11473eb0187,
        0x3feea589994cce13,
        0x3feeace5422aa0db,
        0x3feeb737b0cdc5e5,
        0x3feec49182a3f090,
        0x3feed503b23e255d,
        0x3feee89f995ad3ad,
        0x3feeff76f2fb5e47,
        0x3fef199bdd85529c,
        0x3fef3720dcef9069,
        0x3fef5818dcfba487,
        0x3fef7c97337b9b5f,
        0x3fefa4afa2a490da,
        0x3fefd0765b6e4540,
    ];
    /// 32 / ln 2, and the cubic for `2^(r/32)` (`__exp2f_data.invln2_scaled`, `poly_scaled`).
    const INV_LN2_32: u64 = 0x40471547652b82fe;
    const C0: u64 = 0x3ebc6af84b912394;
    const C1: u64 = 0x3f2ebfce50fac4f3;
    const C2: u64 = 0x3f962e42ff0c52d6;
    /// 1.5 * 2^52: adding it rounds to an integer in the low mantissa bits.
    const SHIFT: u64 = 0x4338000000000000;
    /// Below log(2^-150) the result is +0.
    const UNDERFLOW: f32 = -103.972_08;
    /// The top 12 bits of |x| from which glibc leaves the fast path (|x| >= 88).
    const SLOW_TOP12: u32 = 0x42a;

    /// `e^x` for 8 f64-widened f32s, glibc's fast path, operation for operation.
    #[target_feature(enable = "avx512f")]
    fn exp8(xd: __m512d, tables: [__m512i; 4]) -> __m256 {
        let inv_ln2 = _mm512_set1_pd(f64::from_bits(INV_LN2_32));
        let shift = _mm512_set1_pd(f64::from_bits(SHIFT));
        let kd = _mm512_fmadd_pd(inv_ln2, xd, shift);
        let ki = _mm512_castpd_si512(kd);
        let kd = _mm512_sub_pd(kd, shift);
        let r = _mm512_fmsub_pd(inv_ln2, xd, kd);
        let index = _mm512_and_si512(ki, _mm512_set1_epi64(31));
        let low = _mm512_permutex2var_epi64(tables[0], index, tables[1]);
        let high = _mm512_permutex2var_epi64(tables[2], index, tables[3]);
        let upper = _mm512_test_epi64_mask(index, _mm512_set1_epi64(16));
        let t = _mm512_mask_blend_epi64(upper, low, high);
        let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
        let z = _mm512_fmadd_pd(
            r,
            _mm512_set1_pd(f64::from_bits(C0)),
            _mm512_set1_pd(f64::from_bits(C1)),
        );
        let r2 = _mm512_mul_pd(r, r);
        let y = _mm512_fmadd_pd(r, _mm512_set1_pd(f64::from_bits(C2)), _mm512_set1_pd(1.0));
        let y = _mm512_fmadd_pd(z, r2, y);
        _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
    }

    /// `x` (16 floats) becomes `e^x`, `f32::exp`'s bits where glibc is the libm.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and `x` must hold at least 16 floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp16(x: &mut [f32]) {
        debug_assert!(x.len() >= 16);
        // SAFETY: the table is 32 u64, four vectors of 8.
        let tables = std::array::from_fn(|i| unsafe { _mm512_loadu_si512(TABLE.as_ptr().add(8 * i).cast()) });
        // SAFETY: `x` holds 16 floats.
        let v = unsafe { _mm512_loadu_ps(x.as_ptr()) };
        let low = exp8(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), tables);
        let upper_half = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let high = exp8(_mm512_cvtps_pd(upper_half), tables);
        let out = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(low)),
            _mm256_castps_pd(high),
        ));
        let top12 = _mm512_and_si512(
            _mm512_srli_epi32::<20>(_mm512_castps_si512(v)),
            _mm512_set1_epi32(0x7ff),
        );
        let slow = _mm512_cmpgt_epu32_mask(top12, _mm512_set1_epi32(SLOW_TOP12 as i32));
        let zero = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_set1_ps(UNDERFLOW));
        // SAFETY: as the load.
        unsafe { _mm512_storeu_ps(x.as_mut_ptr(), _mm512_mask_blend_ps(zero, out, _mm512_setzero_ps())) };
        let mut rest = slow & !zero;
        while rest != 0 {
            let lane = rest.trailing_zeros() as usize;
            // The arguments glibc treats apart (overflow, NaN, the edge of underflow) keep
            // its own answer.
            // SAFETY: `lane < 16`; `v` is the 16 floats loaded above.
            x[lane] = unsafe { std::mem::transmute::<__m512, [f32; 16]>(v) }[lane].exp();
            rest &= rest - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every 61st f32 bit pattern (about 70 million: every exponent, both signs, NaNs and
    /// infinities) gives `f32::exp`'s bits, whichever path runs. The exhaustive check of all
    /// 2^32 is `exp::tests::every_f32 -- --ignored` (in release, a few minutes).
    #[test]
    fn a_spread_of_f32s_gives_libms_bits() {
        check_stride(if cfg!(debug_assertions) { 997 } else { 61 });
    }

    #[test]
    #[ignore]
    fn every_f32() {
        check_stride(1);
    }

    fn check_stride(stride: u64) {
        let mut batch = Vec::with_capacity(4096);
        let flush = |batch: &mut Vec<f32>| {
            let mut ours = batch.clone();
            super::exp_in_place(&mut ours);
            for (o, x) in ours.iter().zip(batch.iter()) {
                assert_eq!(o.to_bits(), x.exp().to_bits(), "exp({x:e}) ({:#010x})", x.to_bits());
            }
            batch.clear();
        };
        for bits in (0..=u32::MAX as u64).step_by(stride as usize) {
            batch.push(f32::from_bits(bits as u32));
            if batch.len() == 4096 {
                flush(&mut batch);
            }
        }
        flush(&mut batch);
        assert!(
            super::vector_matches_libm() || !is_x86_feature_detected!("avx512f"),
            "the vector path was turned off"
        );
    }
}

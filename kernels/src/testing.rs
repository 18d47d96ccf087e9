//! What the kernels' tests compare with: values as their bits, and a row selection's output.

use candle_core::Tensor;

/// The bit patterns of `v`, so that `assert_eq!` compares values to the bit (NaNs included).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// The bit patterns of an f32 tensor's values, in row-major order.
pub fn tensor_bits(t: &Tensor) -> Vec<u32> {
    bits(&t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
}

/// `some`, a product of the rows `selected` alone (rows of `n` values), holds `all`'s rows
/// to the bit where selected and zeros elsewhere.
pub fn assert_selected_rows(some: &[f32], all: &[f32], selected: &[usize], n: usize, case: &str) {
    assert_eq!(some.len(), all.len(), "{case}");
    for (r, (got, full)) in some.chunks(n).zip(all.chunks(n)).enumerate() {
        let expected = if selected.contains(&r) { bits(full) } else { vec![0; n] };
        assert_eq!(bits(got), expected, "selected row {r}, {case}");
    }
}

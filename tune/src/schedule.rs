//! Learning-rate schedules.

/// Linear warm-up over `warmup` steps to `peak`, then cosine decay to a tenth of the peak at
/// `total` steps.
pub fn warmup_cosine(peak: f64, warmup: usize, total: usize, step: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_a_tenth() {
        assert!((warmup_cosine(1.0, 10, 100, 9) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 10, 100, 0) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 10, 100, 100) - 0.1).abs() < 1e-12);
    }
}

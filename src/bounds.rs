//! Upper (and lower) bounds of every count flag, checked when the command line is parsed, so
//! no typo such as `--n 1e12` or `--batch-size 0` reaches an allocation or a loop.

/// A count in `[LO, HI]`: `value_parser = bounds::count::<LO, HI>`.
pub fn count<const LO: usize, const HI: usize>(text: &str) -> Result<usize, String> {
    let value: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if !(LO..=HI).contains(&value) {
        return Err(format!("{value} is out of range: must be between {LO} and {HI}"));
    }
    Ok(value)
}

/// A sampling temperature: 0 (greedy) or in [0.001, 100]; below that the scaled logits
/// overflow to infinity, above it sampling is uniform noise.
pub fn temperature(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    if value == 0.0 || (1e-3..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{value:e} is out of range: 0 (greedy) or between 0.001 and 100"
        ))
    }
}

/// A share in (0, 1].
pub fn share(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!("{value:e} is out of range: must be in (0, 1]"))
    }
}

/// A shard of a job array, `I/N` with 0 <= I < N (`--shard`).
pub fn shard(text: &str) -> Result<probe::shard::ShardSpec, String> {
    text.parse().map_err(|e: anyhow::Error| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_bounded() {
        assert_eq!(super::count::<1, 10>("10"), Ok(10));
        assert!(super::count::<1, 10>("0").is_err());
        assert!(super::count::<1, 10>("11").is_err());
        assert!(super::count::<1, 10>("1e12").is_err());
        assert!(super::count::<1, 10>("-1").is_err());
        assert!(
            super::temperature("1e-300").is_err()
                && super::temperature("nan").is_err()
                && super::temperature("0").is_ok()
        );
        assert!(super::share("0").is_err() && super::share("inf").is_err() && super::share("1").is_ok());
    }
}

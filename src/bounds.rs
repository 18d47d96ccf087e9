//! Upper (and lower) bounds of every count flag, checked when the command line is parsed, so
//! no typo such as `--n 1e12` or `--batch-size 0` reaches an allocation or a loop.

/// A count in `[LO, HI]`: `value_parser = bounds::count::<LO, HI>`.
pub fn count<const LO: usize, const HI: usize>(text: &str) -> Result<usize, String> {
    let value: usize = text.trim().parse().map_err(|_| format!("{text:?} is not a whole number"))?;
    if !(LO..=HI).contains(&value) {
        return Err(format!("{value} is out of range: must be between {LO} and {HI}"));
    }
    Ok(value)
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
    }
}

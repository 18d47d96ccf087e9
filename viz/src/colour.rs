//! A diverging colour map centred at 0 (blue = negative, white = 0, red = positive), the usual
//! choice for signed projections such as LAT scores, with a stated limit: RepE's scans clip
//! standardised scores at a fixed bound so one extreme cell cannot wash the rest out.

use plotters::style::RGBColor;

/// How values become colours: `[-limit, limit]` maps onto blue-white-red, values beyond the
/// limit are drawn at full colour (and counted as clipped).
#[derive(Debug, Clone, PartialEq)]
pub struct ColourScale {
    /// Half-width of the scale: the value drawn at full saturation. Positive.
    pub limit: f64,
    /// The colour bar's label: what the values are and the rule that set the limit.
    pub label: String,
    /// True when the limit is a fixed bound the data may exceed (a clip), false when it is
    /// the data's own largest magnitude; only a clip reports the share of cells beyond it.
    pub clipped: bool,
}

impl ColourScale {
    /// A fixed bound: values beyond `±limit` saturate.
    pub fn clip(limit: f64, label: impl Into<String>) -> Self {
        Self {
            limit: if limit.is_finite() && limit > 0.0 { limit } else { 1.0 },
            label: label.into(),
            clipped: true,
        }
    }

    /// A symmetric scale reaching the largest finite magnitude among `values` (a panel on
    /// its own scale, such as a difference of two others).
    pub fn symmetric<'a>(values: impl IntoIterator<Item = &'a f64>, label: impl Into<String>) -> Self {
        let max = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(v.abs()));
        Self {
            limit: if max > 0.0 { max } else { 1.0 },
            label: label.into(),
            clipped: false,
        }
    }

    /// The signed share of full saturation `value` is drawn with: -1 full blue, 0 white,
    /// +1 full red. Non-finite values are drawn white.
    pub fn saturation(&self, value: f64) -> f64 {
        if value.is_finite() {
            (value / self.limit).clamp(-1.0, 1.0)
        } else {
            0.0
        }
    }

    /// The colour a cell of `value` is filled with.
    pub fn colour(&self, value: f64) -> RGBColor {
        diverging(self.saturation(value))
    }

    /// Share of the finite `values` beyond the limit, drawn at full colour.
    pub fn clipped_share<'a>(&self, values: impl IntoIterator<Item = &'a f64>) -> f64 {
        let (mut n, mut beyond) = (0usize, 0usize);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            n += 1;
            beyond += usize::from(v.abs() > self.limit);
        }
        if n == 0 {
            0.0
        } else {
            beyond as f64 / n as f64
        }
    }
}

/// The end colours: ColorBrewer RdBu's darkest blue and red.
pub(crate) const COLD: (f64, f64, f64) = (33.0, 102.0, 172.0);
pub(crate) const HOT: (f64, f64, f64) = (178.0, 24.0, 43.0);

/// Blue-white-red for a signed saturation `t` in `[-1, 1]`.
pub fn diverging(t: f64) -> RGBColor {
    let t = if t.is_finite() { t.clamp(-1.0, 1.0) } else { 0.0 };
    let mix = |end: (f64, f64, f64), w: f64| {
        let lerp = |a: f64| (255.0 + (a - 255.0) * w).round() as u8;
        RGBColor(lerp(end.0), lerp(end.1), lerp(end.2))
    };
    if t < 0.0 {
        mix(COLD, -t)
    } else {
        mix(HOT, t)
    }
}

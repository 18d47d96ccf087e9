//! A diverging colour map centred at 0 (blue = negative, white = 0, red = positive), the usual
//! choice for signed projections such as LAT scores.

use plotters::style::RGBColor;

/// Maps `value` in `[-limit, limit]` to blue-white-red; values beyond the limit saturate.
pub fn diverging(value: f64, limit: f64) -> RGBColor {
    let t = if limit > 0.0 {
        (value / limit).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let (cold, hot) = ((33.0, 102.0, 172.0), (178.0, 24.0, 43.0));
    let mix = |end: (f64, f64, f64), w: f64| {
        let lerp = |a: f64| (255.0 + (a - 255.0) * w).round() as u8;
        RGBColor(lerp(end.0), lerp(end.1), lerp(end.2))
    };
    if t < 0.0 {
        mix(cold, -t)
    } else {
        mix(hot, t)
    }
}

//! The embedded font, registered once with plotters' ab_glyph text renderer.

use plotters::style::{register_font, FontStyle};
use std::sync::Once;

static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// The family name every figure uses.
pub const FAMILY: &str = "sans-serif";

pub fn ensure_registered() {
    REGISTER.call_once(|| {
        // Registering a valid embedded TTF cannot fail; if it did, text would be missing
        // rather than the program stopping, so the error is ignored.
        let _ = register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS);
    });
}

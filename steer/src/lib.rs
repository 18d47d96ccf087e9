//! `steer`: act on the inside of an Aligner.
//!
//! Control vectors and their files ([`vectors`]), steering as a value, with one alpha or one
//! per batch row ([`steering`], [`mode`]), KV-cached generation through probe's hooked model
//! ([`generate`]), the correction magnitude ([`magnitude`]), evaluation of corrections
//! ([`eval`]), and the knob's sweep and its checks against a random direction ([`sweep`],
//! [`knob`]). It uses probe's model and hook trait; probe never depends on steer. It does not
//! draw (that is `viz`) and knows nothing of flags, HTTP or Python.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod eval;
pub mod generate;
pub mod journal;
pub mod knob;
pub mod magnitude;
pub mod mode;
pub mod outcome;
pub mod output;
pub mod patching;
pub mod steering;
pub mod sweep;
pub mod vectors;

//! `steer`: act on the inside of an Aligner.
//!
//! KV-cached generation through probe's hooked model ([`generate`]), the correction
//! magnitude ([`magnitude`]) and evaluation of corrections ([`eval`]). It uses probe's model
//! and hook trait; probe never depends on steer. It does not draw (that is `viz`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod eval;
pub mod generate;
pub mod journal;
pub mod knob;
pub mod magnitude;
pub mod mode;
pub mod outcome;
pub mod output;
pub mod steering;
pub mod sweep;
pub mod vectors;

//! `probe`: look inside a Llama-family Aligner.
//!
//! The forward pass with named hook points ([`model`], [`hooks`]), checkpoint loading,
//! activation capture streamed to disk ([`capture`]), and the stimulus format ([`stimuli`]).
//! It does not steer or draw: that is `steer` and `viz`, which build on this crate.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod batched;
pub mod capture;
pub mod guard;
pub mod home;
pub mod hooks;
pub mod io;
pub mod journal;
pub mod lat;
pub mod ledger;
pub mod model;
pub mod progress;
pub mod provenance;
pub mod stimuli;

pub use hooks::{Cache, HookPoint, Hooks, NoHooks, Site};
pub use model::{AlignerTemplate, Checkpoint, KvCache, Model, ModelConfig, Positions};

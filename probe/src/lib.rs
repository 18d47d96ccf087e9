//! `probe`: look inside a Llama-family Aligner.
//!
//! The model and its formats: config, the one forward pass with named hook points, loading
//! of HF directories, GGUF files and PEFT adapters, the tokenizer and the Aligner template
//! ([`model`], [`hooks`]); the batched path every reader shares ([`batched`]); activation
//! capture streamed to disk ([`capture`]); LAT, from contrast pairs to reading vectors and
//! scans ([`lat`]); the stimulus format ([`stimuli`]); and atomic, resumable outputs
//! ([`io`], [`journal`], [`provenance`]).
//!
//! It does not steer or draw (that is `steer` and `viz`, which build on this crate), and its
//! hand-written compute lives in `kernels`. It sets no process-wide state: a host installs
//! what it wants (an [`io::OutputHost`], such as [`ledger::ProcessOutputs`]) at start-up.

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
pub mod shard;
pub mod stimuli;

pub use hooks::{Cache, HookPoint, Hooks, NoHooks, Site};
pub use model::{AlignerTemplate, Checkpoint, KvCache, Model, ModelConfig, Positions};

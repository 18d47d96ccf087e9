//! `kernels`: the hand-written compute under aligner-lens, on the ground floor.
//!
//! The f32 matmuls on one thread pool, `gemm` per block of columns and a weight packed at
//! load ([`f32_matmul`]), the bf16 matmul on AVX512-BF16 (and AMX tiles behind the `amx`
//! feature) ([`bf16`]), the frozen-weight products and the fused ops (training, and the
//! inference forward) as candle custom ops ([`frozen`], [`fused`]), the rest of the inference
//! forward's steps on the same pool with candle's values (attention's per-head products,
//! [`batched`]; residual adds and head transposes, [`pooled`]; `expf` sixteen lanes at a time,
//! [`exp`]), and the f64 loops LAT's fit spends its time in ([`lat`]). Every `unsafe` in the
//! project's compute lives here, each block with a `SAFETY:` comment and each `unsafe fn`
//! with a `# Safety` section.
//!
//! It knows nothing of models, hook points or files: it multiplies slices and tensors. It
//! sets no process-wide state; a host that wants AMX asks for the tiles once
//! ([`bf16::request_amx`]) before its other threads start.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

mod amx;
pub mod batched;
pub mod bf16;
pub mod exp;
pub mod f32_matmul;
pub mod frozen;
pub mod fused;
pub mod lat;
pub mod parallel;
pub mod pooled;
#[cfg(test)]
mod testing;
mod tile;

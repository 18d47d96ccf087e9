//! The Llama-family model: config, weights, tokenizer and the Aligner template.

pub mod adapter;
pub mod checkpoint;
pub mod config;
pub mod export;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod known;
pub mod linear;
pub mod llama;
pub mod named;
pub mod rope;
pub mod template;
pub mod tokenizer;

pub use checkpoint::{Checkpoint, LoadOptions};
pub use config::{Architecture, ModelConfig, RopeScaling};
/// How f32 activations meet bf16 weights: part of [`LoadOptions`].
pub use kernels::bf16::Bf16Compute;
pub use linear::Autograd;
pub use llama::{KvCache, Model, Positions, COMPUTE_DTYPE};
pub use template::AlignerTemplate;
pub use tokenizer::AlignerTokenizer;

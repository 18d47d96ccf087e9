//! The Llama-family model: config, weights, tokenizer and the Aligner template.

pub mod adapter;
mod amx;
pub mod bf16;
pub mod checkpoint;
pub mod config;
pub mod export;
pub mod f32_matmul;
pub mod fused;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod known;
pub mod linear;
pub mod llama;
pub mod rope;
pub mod template;
pub mod tokenizer;

pub use checkpoint::{Checkpoint, LoadOptions};
pub use config::{Architecture, ModelConfig, RopeScaling};
pub use llama::{Autograd, KvCache, Model, Positions, COMPUTE_DTYPE};
pub use template::AlignerTemplate;
pub use tokenizer::AlignerTokenizer;

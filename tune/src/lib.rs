//! `tune`: training. The pieces every training run shares (examples with the loss on the
//! answer only, the warm-up + cosine schedule, gradient clipping, a resumable AdamW, the
//! step loop) and LoRA fine-tuning of a pretrained model into an Aligner, saved as a PEFT
//! adapter. It does not load models or draw: that is `probe` and `viz`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod examples;
pub mod lora;
pub mod optim;
pub mod schedule;
pub mod train_loop;

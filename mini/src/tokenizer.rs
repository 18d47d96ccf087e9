//! The mini-aligner's tokenizer: a small byte-level BPE trained on the corpus with the
//! `tokenizers` crate, saved as a standard `tokenizer.json` that HF loads too.

use anyhow::{anyhow, Result};
use probe::model::AlignerTokenizer;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

pub const PAD: &str = "<pad>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";

/// Trains a byte-level BPE of at most `vocab_size` tokens on `texts`. Ids 0, 1, 2 are
/// `<pad>`, `<s>`, `</s>`; encoding adds `<s>` in front, as Llama tokenizers do.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<AlignerTokenizer> {
    let specials: Vec<AddedToken> = [PAD, BOS, EOS].iter().map(|t| AddedToken::from(*t, true)).collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
    let bos = tokenizer
        .token_to_id(BOS)
        .ok_or_else(|| anyhow!("trained tokenizer lacks {BOS}"))?;
    let post = TemplateProcessing::builder()
        .try_single(format!("{BOS} $A"))
        .map_err(|e| anyhow!("{e}"))?
        .special_tokens(vec![(BOS, bos)])
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    tokenizer.with_post_processor(Some(post));
    Ok(AlignerTokenizer::from_tokenizer(tokenizer))
}

//! The checkpoint's `tokenizer.json`, through the `tokenizers` crate.

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use tokenizers::Tokenizer;

pub struct AlignerTokenizer {
    inner: Tokenizer,
}

impl AlignerTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let malformed = format!("failed to load tokenizer {}: the file is malformed", path.display());
        let inner = crate::guard::without_panics(&malformed, || Tokenizer::from_file(path))?
            .map_err(|e| anyhow!("failed to load tokenizer {}: {e}", path.display()))?;
        Ok(Self { inner })
    }

    pub fn from_tokenizer(inner: Tokenizer) -> Self {
        Self { inner }
    }

    pub fn into_inner(self) -> Tokenizer {
        self.inner
    }

    /// Token ids as HF's `tokenizer(text)` gives them: the post-processor runs, so a
    /// tokenizer that adds BOS adds it here too.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// Token ids without special tokens (for text appended to an already-started sequence).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, special)
            .map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("decoding failed: {e}"))
    }

    /// One readable string per id, for axis labels.
    pub fn token_strings(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.inner.id_to_token(id).unwrap_or_else(|| format!("<{id}>")))
            .collect()
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, true)
            .map_err(|e| anyhow!("failed to save tokenizer {}: {e}", path.display()))
            .context("writing tokenizer.json")
    }
}

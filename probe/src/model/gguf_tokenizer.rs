//! The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata, rebuilt as a
//! `tokenizers::Tokenizer` so everything downstream is the same as for a `tokenizer.json`.
//!
//! The reference is what HF transformers builds from the same metadata
//! (`integrations/gguf/gguf_tokenizer_mapping.py`): token ids must agree with it.
//! - `gpt2`: byte-level BPE from `tokens` and `merges`. Tokens spelled outside the byte-level
//!   alphabet are respelled into it; `tokenizer.ggml.pre` picks the split regex where HF knows
//!   one (Llama 3, Qwen2), else GPT-2's.
//! - `llama`: SentencePiece-style BPE with byte fallback and a `▁` prefix (Metaspace); merges
//!   from the file or recovered from the token scores as HF's `generate_merges` does.
//!
//! Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added
//! tokens, and BOS/EOS are added by the post-processor when `add_bos_token`/`add_eos_token`
//! say so (`llama` vocabularies add BOS unless told otherwise).

use super::gguf::GgufFile;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Map, Value as Json};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use tokenizers::Tokenizer;

const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// Split regexes HF uses for `tokenizer.ggml.pre` values (the common ones).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" | "lfm2" | "pixtral" => {
            Some(LLAMA3_SPLIT)
        }
        "qwen2" | "deepseek-r1-qwen" | "megrez" => Some(QWEN2_SPLIT),
        _ => None,
    }
}

/// The tokenizer of `g`, or `None` when the file carries no `tokenizer.ggml.model`.
pub fn from_gguf(g: &GgufFile) -> Result<Option<Tokenizer>> {
    let Some(kind) = g.string("tokenizer.ggml.model")? else {
        return Ok(None);
    };
    let tokens =
        strings(g, "tokenizer.ggml.tokens")?.with_context(|| format!("{}: no tokenizer.ggml.tokens", g.path()))?;
    let types = uints(g, "tokenizer.ggml.token_type")?.unwrap_or_default();
    let add_bos = bool_key(g, "tokenizer.ggml.add_bos_token")?.unwrap_or(kind == "llama");
    let add_eos = bool_key(g, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let id = |key: &str| -> Result<Option<u32>> {
        match g.uint(key)? {
            Some(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
            Some(v) => bail!(
                "{}: {key} = {v} is outside the vocabulary of {}",
                g.path(),
                tokens.len()
            ),
            None => Ok(None),
        }
    };
    let (bos, eos, unk) = (
        id("tokenizer.ggml.bos_token_id")?,
        id("tokenizer.ggml.eos_token_id")?,
        id("tokenizer.ggml.unknown_token_id")?,
    );

    let (mut spec, vocab_spelling) = match kind {
        "gpt2" => {
            let merges = strings(g, "tokenizer.ggml.merges")?.unwrap_or_default();
            let pre = g.string("tokenizer.ggml.pre")?.unwrap_or("default");
            byte_level(&tokens, &merges, pre)
        }
        "llama" => {
            let merges = match strings(g, "tokenizer.ggml.merges")? {
                Some(m) => m,
                None => {
                    let scores = floats(g, "tokenizer.ggml.scores")?
                        .with_context(|| format!("{}: a llama tokenizer needs merges or scores", g.path()))?;
                    merges_from_scores(&tokens, &scores)
                }
            };
            sentencepiece(&tokens, &merges, unk)
        }
        other => bail!(
            "{}: unsupported GGUF tokenizer {other:?} (supported: gpt2, llama)",
            g.path()
        ),
    };

    // Added tokens, in id order as tokenizer.json lists them.
    let byte_alphabet: HashSet<char> = bytes_to_unicode().into_values().collect();
    let mut added = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let ty = types.get(index).copied().unwrap_or(1);
        let specials_of_llama = kind == "llama" && [unk, bos, eos].contains(&Some(index as u32));
        let control = ty == CONTROL && (kind != "gpt2" || token.chars().all(|c| byte_alphabet.contains(&c)));
        if control || specials_of_llama {
            added.push(added_token(index, token, true));
        } else if ty == USER_DEFINED && vocab_spelling[index] == *token {
            added.push(added_token(index, token, false));
        }
    }
    spec["added_tokens"] = Json::Array(added);
    spec["post_processor"] = template(
        &tokens,
        add_bos.then_some(bos).flatten(),
        add_eos.then_some(eos).flatten(),
    );
    let text = serde_json::to_string(&spec)?;
    let unusable = format!("{}: the GGUF tokenizer metadata does not make a tokenizer", g.path());
    let tokenizer = crate::guard::without_panics(&unusable, || Tokenizer::from_str(&text))?
        .map_err(|e| anyhow!("{unusable}: {e}"))?;
    Ok(Some(tokenizer))
}

fn added_token(id: usize, content: &str, special: bool) -> Json {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": special})
}

/// HF's `TemplateProcessing`: `[BOS] $A [EOS]` (and the same around `$B` for pairs).
fn template(tokens: &[String], bos: Option<u32>, eos: Option<u32>) -> Json {
    let piece = |id: u32, type_id: u32| json!({"SpecialToken": {"id": tokens[id as usize], "type_id": type_id}});
    let wrap = |seq: &str, type_id: u32| -> Vec<Json> {
        bos.map(|b| piece(b, type_id))
            .into_iter()
            .chain([json!({"Sequence": {"id": seq, "type_id": type_id}})])
            .chain(eos.map(|e| piece(e, type_id)))
            .collect()
    };
    let single = wrap("A", 0);
    let pair: Vec<Json> = wrap("A", 0).into_iter().chain(wrap("B", 1)).collect();
    let mut specials = Map::new();
    for id in bos.into_iter().chain(eos) {
        let name = &tokens[id as usize];
        specials.insert(name.clone(), json!({"id": name, "ids": [id], "tokens": [name]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// GPT-2's byte-to-printable-character table.
fn bytes_to_unicode() -> HashMap<u8, char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut extra = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .map(|(b, c)| (b as u8, char::from_u32(c).unwrap_or('?')))
        .collect()
}

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`). Returns the spec and each token as spelled
/// in the vocabulary.
fn byte_level(tokens: &[String], merges: &[String], pre: &str) -> (Json, Vec<String>) {
    let table = bytes_to_unicode();
    let alphabet: HashSet<char> = table.values().copied().collect();
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if t.chars().all(|c| alphabet.contains(&c)) {
                t.clone()
            } else {
                t.bytes().map(|b| table[&b]).collect()
            }
        })
        .collect();
    let pre_tokenizer = match split_regex(pre) {
        Some(regex) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
        None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
    };
    let spec = json!({
        "version": "1.0", "truncation": null, "padding": null, "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": bpe(&spelled, merges, None, "", false),
    });
    (spec, spelled)
}

/// SentencePiece-style BPE (`tokenizer.ggml.model = llama`), as HF's `LlamaTokenizer` builds it.
fn sentencepiece(tokens: &[String], merges: &[String], unk: Option<u32>) -> (Json, Vec<String>) {
    let _ = unk; // HF leaves the BPE model's unk_token unset; unknown bytes fall back to <0xNN>.
    let spec = json!({
        "version": "1.0", "truncation": null, "padding": null, "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": bpe(tokens, merges, None, "", true),
    });
    (spec, tokens.to_vec())
}

fn bpe(vocab: &[String], merges: &[String], unk: Option<&str>, affix: &str, byte_fallback: bool) -> Json {
    // A token listed twice keeps its last id, as HF's dict comprehension does.
    let mut map = Map::new();
    for (index, token) in vocab.iter().enumerate() {
        map.insert(token.clone(), json!(index));
    }
    let merges: Vec<Json> = merges
        .iter()
        .filter_map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])))
        .collect();
    let (prefix, suffix) = if byte_fallback {
        (Json::Null, Json::Null)
    } else {
        (json!(affix), json!(affix))
    };
    json!({"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": prefix,
           "end_of_word_suffix": suffix, "fuse_unk": byte_fallback, "byte_fallback": byte_fallback,
           "ignore_merges": false, "vocab": map, "merges": merges})
}

/// HF's `generate_merges(vocab, scores)`: every split of a token into two tokens, ordered by the
/// merged token's score (best first), then by the pieces' lengths.
fn merges_from_scores(tokens: &[String], scores: &[f64]) -> Vec<String> {
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    // Python's dict keeps the last score of a duplicated token, in first-insertion order.
    let mut seen = HashSet::new();
    let score_of: HashMap<&str, f64> = tokens.iter().zip(scores).map(|(t, s)| (t.as_str(), *s)).collect();
    for token in tokens {
        if !seen.insert(token.as_str()) {
            continue;
        }
        let score = score_of[token.as_str()];
        let mut local = Vec::new();
        for (cut, _) in token.char_indices().skip(1) {
            let (l, r) = token.split_at(cut);
            if index.contains_key(l) && index.contains_key(r) {
                local.push((l, r, score));
            }
        }
        local.sort_by_key(|(l, r, _)| (index[l], index[r]));
        merges.extend(local);
    }
    // Python's sort(reverse=True) is stable and keeps equal keys in their original order.
    merges.sort_by(|a, b| {
        (b.2, b.0.chars().count(), b.1.chars().count())
            .partial_cmp(&(a.2, a.0.chars().count(), a.1.chars().count()))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    merges.into_iter().map(|(l, r, _)| format!("{l} {r}")).collect()
}

fn array<'a>(g: &'a GgufFile, key: &str) -> Result<Option<&'a Vec<Value>>> {
    g.get(key)
        .map(|v| {
            v.to_vec()
                .map_err(|_| anyhow!("{}: metadata {key} is not an array", g.path()))
        })
        .transpose()
}

fn strings(g: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    let Some(items) = array(g, key)? else { return Ok(None) };
    items
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|_| anyhow!("{}: {key} holds a non-string", g.path()))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn uints(g: &GgufFile, key: &str) -> Result<Option<Vec<u64>>> {
    let Some(items) = array(g, key)? else { return Ok(None) };
    items
        .iter()
        .map(|v| match v {
            Value::I32(x) => Ok(*x as i64 as u64),
            Value::U32(x) => Ok(*x as u64),
            Value::U8(x) => Ok(*x as u64),
            Value::I8(x) => Ok(*x as i64 as u64),
            Value::U64(x) => Ok(*x),
            Value::I64(x) => Ok(*x as u64),
            other => bail!("{}: {key} holds {other:?}, not an integer", g.path()),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn floats(g: &GgufFile, key: &str) -> Result<Option<Vec<f64>>> {
    let Some(items) = array(g, key)? else { return Ok(None) };
    items
        .iter()
        .map(|v| match v {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            other => bail!("{}: {key} holds {other:?}, not a float", g.path()),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn bool_key(g: &GgufFile, key: &str) -> Result<Option<bool>> {
    g.get(key)
        .map(|v| {
            v.to_bool()
                .map_err(|_| anyhow!("{}: metadata {key} is not a bool", g.path()))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let table = bytes_to_unicode();
        assert_eq!(table.len(), 256);
        assert_eq!(table.values().collect::<HashSet<_>>().len(), 256);
        assert_eq!(table[&b' '], '\u{120}');
        assert_eq!(table[&b'a'], 'a');
    }

    #[test]
    fn merges_from_scores_orders_best_first() {
        let tokens: Vec<String> = ["a", "b", "ab", "c", "abc"].iter().map(|s| s.to_string()).collect();
        let merges = merges_from_scores(&tokens, &[0.0, 0.0, -1.0, 0.0, -2.0]);
        assert_eq!(merges, vec!["a b", "ab c"]);
    }
}

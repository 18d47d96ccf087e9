//! Loading a llama.cpp GGUF file into the one [`Model`](super::Model).
//!
//! The file is read with candle's GGUF reader, each tensor dequantized, renamed from
//! llama.cpp's names (`blk.3.attn_q.weight`) to the HF names the model is built from
//! (`model.layers.3.self_attn.q_proj.weight`), and the rows of Q and K put back in HF's order:
//! llama.cpp's converter permutes them for its interleaved rotary layout (`LlamaModel.permute`
//! in `convert_hf_to_gguf.py`), which we undo. The config comes from the `{arch}.*` metadata,
//! the tokenizer from `tokenizer.ggml.*` (see [`super::gguf_tokenizer`]). Nothing here keeps a
//! second forward pass: the result is the same tensors an HF directory would hold.

// Upper bounds on config sizes read from a header, so a corrupt or hostile file is refused
// before anything is allocated from them.
use super::config::expected_tensors;
use super::config::{Architecture, ModelConfig, RopeScaling, MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH};
use super::linear::QuantizedMatrices;
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Models with fewer parameters than this are dequantized to f32, larger ones to bf16 (so a
/// 7B Q4 file, 14 GB in bf16, fits in 24 GiB where f32 would need 28 GB).
pub const F32_PARAMETER_LIMIT: usize = 1_000_000_000;

/// An open GGUF file: the parsed header and a reader for tensor data.
pub struct GgufFile {
    pub content: Content,
    reader: BufReader<File>,
    path: String,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(candle_message)
            .with_context(|| format!("{} is not a readable GGUF file", path.display()))?;
        Ok(Self {
            content,
            reader,
            path: path.display().to_string(),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.to_string().map(String::as_str))
            .transpose()
            .with_context(|| format!("{}: metadata {key} is not a string", self.path))
    }

    /// An unsigned integer, whatever integer type the writer chose.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        let Some(value) = self.get(key) else { return Ok(None) };
        let n = match value {
            Value::U8(v) => *v as i128,
            Value::I8(v) => *v as i128,
            Value::U16(v) => *v as i128,
            Value::I16(v) => *v as i128,
            Value::U32(v) => *v as i128,
            Value::I32(v) => *v as i128,
            Value::U64(v) => *v as i128,
            Value::I64(v) => *v as i128,
            other => bail!("{}: metadata {key} should be an integer, found {other:?}", self.path),
        };
        u64::try_from(n)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{}: metadata {key} is negative ({n})", self.path))
    }

    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        let Some(value) = self.get(key) else { return Ok(None) };
        let x = match value {
            Value::F32(v) => *v as f64,
            Value::F64(v) => *v,
            _ => self.uint(key)?.unwrap_or_default() as f64,
        };
        if !x.is_finite() {
            bail!("{}: metadata {key} is not finite ({x})", self.path);
        }
        Ok(Some(x))
    }

    fn required_size(&self, key: &str, max: usize) -> Result<usize> {
        let n = self
            .uint(key)?
            .with_context(|| format!("{}: metadata {key} is missing", self.path))?;
        if n == 0 || n > max as u64 {
            bail!("{}: metadata {key} = {n} is out of range (1..={max})", self.path);
        }
        Ok(n as usize)
    }

    fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.content.tensor_infos.get(name).map(|t| t.shape.dims())
    }

    /// One tensor as stored, with its PyTorch-order shape.
    fn quantized(&mut self, name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(candle_message)
            .with_context(|| format!("{}: failed to read tensor {name}", self.path))
    }

    /// One tensor, dequantized to f32 with its PyTorch-order shape.
    fn dequantize(&mut self, name: &str) -> Result<Tensor> {
        let q = self.quantized(name)?;
        q.dequantize(&Device::Cpu)
            .map_err(candle_message)
            .with_context(|| format!("{}: failed to dequantize tensor {name} ({:?})", self.path, q.dtype()))
    }
}

/// candle's error as one line: with `RUST_BACKTRACE` set, its `bail!` appends a backtrace to the
/// message, which would turn a bad file's one-line error into a page.
fn candle_message(mut e: candle_core::Error) -> anyhow::Error {
    while let candle_core::Error::WithBacktrace { inner, .. } = e {
        e = *inner;
    }
    anyhow::anyhow!("{e}")
}

/// llama.cpp's name for the tensor HF calls `hf`.
pub fn gguf_name(hf: &str) -> String {
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        let (layer, param) = rest.split_once('.').unwrap_or((rest, ""));
        let (module, kind) = param.rsplit_once('.').unwrap_or((param, ""));
        let module = match module {
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => "ffn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            other => other,
        };
        return format!("blk.{layer}.{module}.{kind}");
    }
    match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        other => other.into(),
    }
}

/// Resolves the model config from the header (`general.architecture` and `{arch}.*` keys, the
/// names llama.cpp's `gguf-py` writes).
pub fn config_from_metadata(g: &GgufFile) -> Result<ModelConfig> {
    let arch_name = g
        .string("general.architecture")?
        .with_context(|| format!("{}: no general.architecture", g.path))?;
    let architecture = match arch_name {
        "llama" => Architecture::Llama,
        "mistral" => Architecture::Mistral,
        "qwen2" => Architecture::Qwen2,
        other => bail!(
            "{}: unsupported GGUF architecture {other:?} (supported: llama, mistral, qwen2)",
            g.path
        ),
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let hidden_size = g.required_size(&key("embedding_length"), MAX_WIDTH)?;
    let num_hidden_layers = g.required_size(&key("block_count"), MAX_LAYERS)?;
    let intermediate_size = g.required_size(&key("feed_forward_length"), MAX_WIDTH * 8)?;
    let num_attention_heads = g.required_size(&key("attention.head_count"), MAX_HEADS)?;
    let num_key_value_heads = match g.uint(&key("attention.head_count_kv"))? {
        Some(_) => g.required_size(&key("attention.head_count_kv"), MAX_HEADS)?,
        None => num_attention_heads,
    };
    if !num_attention_heads.is_multiple_of(num_key_value_heads) {
        bail!(
            "{}: head_count {num_attention_heads} is not a multiple of head_count_kv {num_key_value_heads}",
            g.path
        );
    }
    let head_dim = match g.uint(&key("attention.key_length"))? {
        Some(_) => g.required_size(&key("attention.key_length"), MAX_WIDTH)?,
        None => hidden_size / num_attention_heads,
    };
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        bail!(
            "{}: head dimension {head_dim} must be even and positive for rotary embeddings",
            g.path
        );
    }
    if let Some(rot) = g.uint(&key("rope.dimension_count"))? {
        if rot as usize != head_dim {
            bail!(
                "{}: partial rotary embeddings (rope.dimension_count {rot} < head dim {head_dim}) are not supported",
                g.path
            );
        }
    }
    let vocab_size = match g.uint(&key("vocab_size"))? {
        Some(_) => g.required_size(&key("vocab_size"), MAX_VOCAB)?,
        None => match g.shape_of("token_embd.weight") {
            Some([v, _]) if *v > 0 && *v <= MAX_VOCAB => *v,
            _ => bail!("{}: no {arch_name}.vocab_size and no usable token_embd.weight", g.path),
        },
    };
    let rms_norm_eps = g.float(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6);
    let rope_theta = g.float(&key("rope.freq_base"))?.unwrap_or(10_000.0);
    if rms_norm_eps <= 0.0 || rope_theta <= 0.0 {
        bail!(
            "{}: rms epsilon ({rms_norm_eps}) and rope base ({rope_theta}) must be positive",
            g.path
        );
    }
    let max_position_embeddings = match g.uint(&key("context_length"))? {
        Some(_) => g.required_size(&key("context_length"), MAX_CONTEXT)?,
        None => 2048,
    };
    let rope_scaling = rope_scaling(g, arch_name)?;
    let qkv_bias = architecture == Architecture::Qwen2 || g.shape_of("blk.0.attn_q.bias").is_some();
    let o_bias = architecture != Architecture::Qwen2 && g.shape_of("blk.0.attn_output.bias").is_some();
    let id = |k: &str| -> Result<Option<u32>> { Ok(g.uint(k)?.map(|v| v as u32)) };
    Ok(ModelConfig {
        architecture,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        rope_scaling,
        max_position_embeddings,
        // llama.cpp omits `output.weight` when the unembedding is the embedding.
        tie_word_embeddings: g.shape_of("output.weight").is_none(),
        qkv_bias,
        o_bias,
        mlp_bias: g.shape_of("blk.0.ffn_up.bias").is_some(),
        sliding_window: None,
        bos_token_id: id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
        pad_token_id: id("tokenizer.ggml.padding_token_id")?,
    })
}

/// `{arch}.rope.scaling.*` keys; Llama 3.1's scaling is stored by llama.cpp as a precomputed
/// per-frequency divisor tensor `rope_freqs.weight`, which we apply as is.
fn rope_scaling(g: &GgufFile, arch: &str) -> Result<RopeScaling> {
    if g.shape_of("rope_freqs.weight").is_some() {
        return Ok(RopeScaling::Factors(Vec::new())); // filled in once tensors are read
    }
    let kind = g.string(&format!("{arch}.rope.scaling.type"))?.unwrap_or("none");
    let factor = g.float(&format!("{arch}.rope.scaling.factor"))?;
    match (kind, factor) {
        ("none", _) => Ok(RopeScaling::None),
        ("linear", Some(f)) if f > 0.0 => Ok(RopeScaling::Linear { factor: f }),
        ("linear", _) => bail!(
            "{}: linear rope scaling needs a positive {arch}.rope.scaling.factor",
            g.path
        ),
        (other, _) => bail!(
            "{}: unsupported rope scaling {other:?} (supported: none, linear, llama3)",
            g.path
        ),
    }
}

/// Everything a GGUF file yields: the config, its weights under HF names in `dtype`, and the
/// raw header for the tokenizer.
pub struct GgufWeights {
    pub config: ModelConfig,
    pub tensors: HashMap<String, Tensor>,
    /// The matrices kept block-quantized (only with `keep_quantized`); not in `tensors`.
    pub quantized: QuantizedMatrices,
    pub dtype: DType,
}

/// Is `hf` a matrix the model multiplies by (a projection or the unembedding), which
/// `keep_quantized` may leave in its ggml block format? The embedding is gathered by row, not
/// multiplied, so it is always dequantized.
fn multiplied_matrix(hf: &str) -> bool {
    hf == "lm_head.weight" || (hf.ends_with("_proj.weight") && hf.starts_with("model.layers."))
}

/// Reads every weight of the model `g` describes. `dtype`: `None` picks f32 below
/// [`F32_PARAMETER_LIMIT`] parameters and bf16 above. With `keep_quantized`, the projections
/// and unembedding stored in a block format (Q4_0 ... Q8_0, k-quants) stay in it; f32, f16 and
/// bf16 matrices are read as usual.
pub fn read_weights(g: &mut GgufFile, dtype: Option<DType>, keep_quantized: bool) -> Result<GgufWeights> {
    let mut config = config_from_metadata(g)?;
    let expected = expected_tensors(&config);
    // Shapes are checked against the config before any tensor data is read, so a file whose
    // header disagrees with itself fails in one line without allocating.
    for (hf, shape) in &expected {
        let name = gguf_name(hf);
        match g.shape_of(&name) {
            None => bail!("{}: no tensor {name} (HF {hf})", g.path),
            Some(found) if found != shape.as_slice() => bail!(
                "{}: tensor {name} has shape {found:?}, the metadata implies {shape:?}",
                g.path
            ),
            _ => {}
        }
    }
    let parameters: usize = expected.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let dtype = dtype.unwrap_or(if parameters < F32_PARAMETER_LIMIT {
        DType::F32
    } else {
        DType::BF16
    });

    if let RopeScaling::Factors(_) = config.rope_scaling {
        let factors = g
            .dequantize("rope_freqs.weight")?
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        if factors.len() != config.head_dim / 2 || factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
            bail!(
                "{}: rope_freqs.weight must hold {} positive factors",
                g.path,
                config.head_dim / 2
            );
        }
        config.rope_scaling = RopeScaling::Factors(factors);
    }

    let progress = crate::progress::bar(expected.len() as u64, "loading GGUF");
    let mut tensors = HashMap::with_capacity(expected.len());
    let mut quantized = QuantizedMatrices::default();
    for (hf, _) in &expected {
        // Only the llama converter permutes; qwen2 uses the NeoX rotary layout in llama.cpp,
        // which is HF's, so its rows are stored as they are.
        let permuted_heads = match config.architecture {
            Architecture::Qwen2 => None,
            _ if hf.contains("self_attn.q_proj.") => Some(config.num_attention_heads),
            _ if hf.contains("self_attn.k_proj.") => Some(config.num_key_value_heads),
            _ => None,
        };
        if keep_quantized && multiplied_matrix(hf) {
            let q = g.quantized(&gguf_name(hf))?;
            if block_quantized(q.dtype()) {
                let q = match permuted_heads {
                    Some(heads) => unpermute_quantized_rows(&q, heads).with_context(|| format!("{}: {hf}", g.path))?,
                    None => q,
                };
                let q = with_simd_kernel(q).with_context(|| format!("{}: {hf}", g.path))?;
                quantized.0.insert(hf.clone(), q);
                progress.inc(1);
                continue;
            }
        }
        let mut t = g.dequantize(&gguf_name(hf))?;
        if let Some(heads) = permuted_heads {
            t = unpermute_rotary_rows(&t, heads)?;
        }
        // Norm weights and biases stay f32 whatever the matrices use; the model casts them.
        let t = if t.rank() == 2 { t.to_dtype(dtype)? } else { t };
        tensors.insert(hf.clone(), t);
        progress.inc(1);
    }
    // A tied unembedding multiplies by the embedding matrix: kept quantized, decoding reads
    // that in its block format too (the gather of embedding rows keeps the dense copy).
    if keep_quantized && config.tie_word_embeddings {
        let q = g.quantized("token_embd.weight")?;
        if block_quantized(q.dtype()) {
            quantized.0.insert("lm_head.weight".into(), with_simd_kernel(q)?);
        }
    }
    progress.finish_and_clear();
    Ok(GgufWeights {
        config,
        tensors,
        quantized,
        dtype,
    })
}

/// Is `dtype` a ggml block format (Q4_0 ... Q8_0, k-quants), not a float one?
fn block_quantized(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// `q` in a format candle multiplies with SIMD kernels. candle 0.11 has AVX2 (and VNNI)
/// dot products for Q4_0, Q8_0 and the k-quants, but multiplies Q4_1, Q5_0 and Q5_1 in scalar
/// code, several times slower than the f32 matmul they replace. Those are re-encoded as
/// Q8_0, which holds their 16 or 32 levels per block to within 1/254 of the block's largest
/// value: still a quarter of f32's bytes.
fn with_simd_kernel(q: QTensor) -> Result<QTensor> {
    match q.dtype() {
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
            let dense = q.dequantize(&Device::Cpu).map_err(candle_message)?;
            QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(candle_message)
        }
        _ => Ok(q),
    }
}

/// [`unpermute_rotary_rows`] on a block-quantized matrix: ggml blocks run along a row, so
/// each output row is a whole run of blocks and the permutation moves those runs of bytes.
pub fn unpermute_quantized_rows(q: &QTensor, heads: usize) -> Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let [rows, cols] = dims[..] else {
        bail!("cannot undo the rotary permutation of a {}-d tensor", dims.len())
    };
    if !rows.is_multiple_of(2 * heads) {
        bail!("cannot undo the rotary permutation: {rows} rows for {heads} heads");
    }
    let dtype = q.dtype();
    if !cols.is_multiple_of(dtype.block_size()) {
        bail!("{cols} columns are not whole {dtype:?} blocks");
    }
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let data = q.data().map_err(candle_message)?;
    if data.len() != rows * row_bytes {
        bail!(
            "{dtype:?} matrix of {rows} x {cols} holds {} bytes, expected {}",
            data.len(),
            rows * row_bytes
        );
    }
    let half = rows / heads / 2;
    let mut out = Vec::with_capacity(data.len());
    // HF row (head, side, pair) is stored at (head, pair, side).
    for head in 0..heads {
        for side in 0..2 {
            for pair in 0..half {
                let stored = (head * half + pair) * 2 + side;
                out.extend_from_slice(&data[stored * row_bytes..(stored + 1) * row_bytes]);
            }
        }
    }
    let storage = QStorage::from_data(std::borrow::Cow::Owned(out), &Device::Cpu, dtype).map_err(candle_message)?;
    QTensor::new(storage, (rows, cols)).map_err(candle_message)
}

/// Inverse of llama.cpp's `permute(w, n_head)`: stored rows are `[head, pair, 2]` (interleaved
/// rotary halves); HF wants `[head, 2, pair]` ("rotate half"). Works for weights `[rows, in]`
/// and biases `[rows]`.
pub fn unpermute_rotary_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    if !rows.is_multiple_of(2 * heads) {
        bail!("cannot undo the rotary permutation: {rows} rows for {heads} heads");
    }
    let half = rows / heads / 2;
    Ok(t.reshape((heads, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.q_proj.weight"),
            "blk.12.attn_q.weight"
        );
        assert_eq!(gguf_name("model.layers.0.self_attn.k_proj.bias"), "blk.0.attn_k.bias");
        assert_eq!(
            gguf_name("model.layers.3.post_attention_layernorm.weight"),
            "blk.3.ffn_norm.weight"
        );
        assert_eq!(
            gguf_name("model.layers.3.mlp.down_proj.weight"),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
        assert_eq!(gguf_name("model.norm.weight"), "output_norm.weight");
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, rows/h/2, in).swapaxes(1, 2).reshape(rows, in).
        let (h, hd, d) = (3usize, 4usize, 2usize);
        let w = Tensor::arange(0f32, (h * hd * d) as f32, &Device::Cpu)
            .unwrap()
            .reshape((h * hd, d))
            .unwrap();
        let permuted = w
            .reshape((h, 2, hd / 2, d))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((h * hd, d))
            .unwrap();
        let back = unpermute_rotary_rows(&permuted, h).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn quantized_unpermute_moves_rows_as_the_dense_one_does() {
        let (rows, cols, heads) = (16usize, 64usize, 2usize);
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1, GgmlDType::Q4K] {
            let cols = if dtype == GgmlDType::Q4K { 256 } else { cols };
            let w = if cols == 64 {
                w.clone()
            } else {
                Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap()
            };
            let q = QTensor::quantize(&w, dtype).unwrap();
            let dense = unpermute_rotary_rows(&q.dequantize(&Device::Cpu).unwrap(), heads).unwrap();
            let moved = unpermute_quantized_rows(&q, heads)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            assert_eq!(
                moved.to_vec2::<f32>().unwrap(),
                dense.to_vec2::<f32>().unwrap(),
                "{dtype:?}"
            );
        }
    }
}

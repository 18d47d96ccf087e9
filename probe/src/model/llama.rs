//! The one Llama-family forward pass (Llama 1/2/3, Mistral, Qwen2), with hook points.
//!
//! Read it top to bottom like llama2.c's `forward`: embed, then per block
//! norm -> attention -> residual -> norm -> MLP -> residual, then the final norm. Hook
//! points sit between exactly those steps (see [`crate::hooks`]). Weights are found by their
//! checkpoint names through `VarBuilder::pp`, so the code reads like the checkpoint's key tree.

use super::config::ModelConfig;
use super::linear::{Autograd, Linear, QuantizedMatrices};
use super::rope::Rope;
use crate::hooks::{run_hook, Cache, HookPoint, Hooks, Site};
use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// Activations and accumulation run in f32 whatever the weights are stored in.
pub const COMPUTE_DTYPE: DType = DType::F32;

/// HF's LlamaRMSNorm: normalise in f32, then scale by the weight.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        // Read straight into f32: a GGUF keeps norms in f32 even when the matrices go to bf16.
        let weight = vb.get_with_hints_dtype(dim, "weight", Init::Const(1.0), COMPUTE_DTYPE)?;
        Ok(Self { weight, eps })
    }

    fn forward(&self, x: &Tensor, autograd: Autograd) -> Result<Tensor> {
        // The fused op is the composed one's values to the bit, in one pass on the kernels'
        // pool, so inference runs on it too. A trained norm weight (train-mini) needs the
        // composed op's gradient for it.
        if autograd != Autograd::Composed && !self.weight.track_op() {
            return Ok(kernels::fused::rms_norm(x, &self.weight, self.eps)?);
        }
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_mul(&(variance + self.eps)?.sqrt()?.recip()?)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// Keys and values of past positions, one entry per layer. A plain struct the caller owns,
/// so generation state is visible and a cache can be reset or copied ([`KvCache::try_clone`]).
///
/// Each layer's keys and values live in buffers `[batch, kv_heads, capacity, head_dim]`
/// allocated once (for the capacity given to [`KvCache::with_capacity`], or grown by
/// doubling), and each step writes its new positions in place: no copy of the whole cache
/// per token, as concatenating would do. Attention reads a view of the filled part.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    /// Positions to allocate room for at the first write.
    capacity: usize,
}

#[derive(Debug)]
struct LayerKv {
    keys: Tensor,
    values: Tensor,
    len: usize,
}

impl KvCache {
    /// A cache that allocates for the first forward's length and grows as needed.
    pub fn new(num_layers: usize) -> Self {
        Self::with_capacity(num_layers, 0)
    }

    /// A cache with room for `positions` positions (prompt + new tokens), so generation never
    /// reallocates.
    pub fn with_capacity(num_layers: usize, positions: usize) -> Self {
        let mut layers = Vec::with_capacity(num_layers);
        layers.resize_with(num_layers, || None);
        Self {
            layers,
            capacity: positions,
        }
    }

    /// A deep copy. The buffers are written in place, so a shallow `Clone` would see the
    /// original's later steps; copying can fail (memory), hence no `Clone`.
    pub fn try_clone(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|l| {
                        Ok(LayerKv {
                            keys: l.keys.copy()?,
                            values: l.values.copy()?,
                            len: l.len,
                        })
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            capacity: self.capacity,
        })
    }

    /// Forgets every position from `len` on and keeps the buffers. Later writes go after the
    /// kept positions and never touch them, so a cache rewound to a shared prefix decodes again
    /// exactly as a fresh copy of that prefix would, without copying it.
    pub fn truncate(&mut self, len: usize) {
        for layer in self.layers.iter_mut().flatten() {
            layer.len = layer.len.min(len);
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some(layer)) => layer.len,
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LayerKv {
    /// Writes `keys`/`values` `[b, kvh, s, hd]` after the cached positions and returns views
    /// of all cached positions, new ones included.
    fn append(slot: &mut Option<LayerKv>, keys: Tensor, values: Tensor, capacity: usize) -> Result<(Tensor, Tensor)> {
        let (b, h, s, d) = keys.dims4()?;
        let len = slot.as_ref().map_or(0, |l| l.len);
        let room = slot.as_ref().map_or(0, |l| l.keys.dim(2).unwrap_or(0));
        if len + s > room {
            // Allocate (or grow, doubling) and move what is cached into the new buffers.
            let new_room = capacity.max(len + s).max(2 * room);
            let fresh = |old: Option<&Tensor>| -> Result<Tensor> {
                let buffer = Tensor::zeros((b, h, new_room, d), keys.dtype(), keys.device())?;
                if let Some(old) = old {
                    buffer.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                }
                Ok(buffer)
            };
            let grown = LayerKv {
                keys: fresh(slot.as_ref().map(|l| &l.keys))?,
                values: fresh(slot.as_ref().map(|l| &l.values))?,
                len,
            };
            *slot = Some(grown);
        }
        let Some(layer) = slot.as_mut() else {
            anyhow::bail!("KV cache slot missing after allocation")
        };
        layer.keys.slice_set(&keys.contiguous()?, 2, len)?;
        layer.values.slice_set(&values.contiguous()?, 2, len)?;
        layer.len = len + s;
        Ok((
            layer.keys.narrow(2, 0, layer.len)?,
            layer.values.narrow(2, 0, layer.len)?,
        ))
    }
}

/// Which positions each row of a batch occupies, and which keys are real tokens.
///
/// Padding is explicit: `key_mask[b, j]` is 1 for a real token and 0 for padding, over all
/// keys (cached and new). Rotary positions are given per row, so a left-padded row can start
/// at position 0 like an unpadded one and yield the same activations.
#[derive(Debug, Clone)]
pub struct Positions {
    /// `[batch, seq]` u32 rotary positions of the new tokens.
    pub positions: Tensor,
    /// `[batch, cached + seq]` f32, 1 = attend, 0 = padding. `None`: every key is real.
    pub key_mask: Option<Tensor>,
    /// Per row, how many of the new tokens are real, the rest of the row being right padding
    /// that no one reads: inference then multiplies the real rows alone (the packed f32 and
    /// bf16 products), and the padding's activations come out unspecified. `None`: all are read.
    pub real_lens: Option<Vec<usize>>,
}

impl Positions {
    /// Positions `offset..offset+seq` in every row, no padding.
    pub fn contiguous(batch: usize, seq: usize, offset: usize, device: &Device) -> Result<Self> {
        let row: Vec<u32> = (offset as u32..(offset + seq) as u32).collect();
        let positions = Tensor::new(row, device)?.unsqueeze(0)?.repeat((batch, 1))?;
        Ok(Self {
            positions,
            key_mask: None,
            real_lens: None,
        })
    }

    /// Positions `0..width` in every row, where row `i` is `lens[i]` real tokens followed by
    /// right padding whose activations no one reads (causal attention keeps the real tokens'
    /// activations those of the row alone).
    pub fn right_padded(lens: Vec<usize>, width: usize, device: &Device) -> Result<Self> {
        let rows = lens.len();
        Ok(Self {
            real_lens: Some(lens),
            ..Self::contiguous(rows, width, 0, device)?
        })
    }

    /// The flat rows (`row * seq + token`) of the real tokens when inference may skip the
    /// rest; `None` when every row is to be computed.
    fn real_rows(&self, b: usize, s: usize, autograd: Autograd) -> Result<Option<Vec<usize>>> {
        let Some(lens) = &self.real_lens else { return Ok(None) };
        if lens.len() != b {
            anyhow::bail!("positions give real lengths for {} rows, the batch has {b}", lens.len());
        }
        if autograd != Autograd::Off || lens.iter().all(|&len| len >= s) {
            return Ok(None);
        }
        Ok(Some(
            lens.iter()
                .enumerate()
                .flat_map(|(row, &len)| row * s..row * s + len.min(s))
                .collect(),
        ))
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &ModelConfig, q: &mut QuantizedMatrices) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        Ok(Self {
            q_proj: Linear::load_from(&vb.pp("q_proj"), d, cfg.num_attention_heads * hd, cfg.qkv_bias, q)?,
            k_proj: Linear::load_from(&vb.pp("k_proj"), d, cfg.num_key_value_heads * hd, cfg.qkv_bias, q)?,
            v_proj: Linear::load_from(&vb.pp("v_proj"), d, cfg.num_key_value_heads * hd, cfg.qkv_bias, q)?,
            o_proj: Linear::load_from(&vb.pp("o_proj"), cfg.num_attention_heads * hd, d, cfg.o_bias, q)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    /// `x`: `[b, s, d]`; `mask`: additive `[b, 1, s, kv]` or none; `rows`: the flat rows
    /// the projections must compute (`None`: all).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<(&mut Option<LayerKv>, usize)>,
        autograd: Autograd,
        rows: Option<&[usize]>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // `[b, s, heads * hd]` <-> `[b, heads, s, hd]`: inference moves them on the kernels' pool.
        let swap = |t: Tensor| -> Result<Tensor> {
            Ok(if autograd == Autograd::Off && t.device().is_cpu() {
                kernels::pooled::swap_middle_axes(&t)?
            } else {
                t.transpose(1, 2)?.contiguous()?
            })
        };
        let split = |t: Tensor, heads: usize| -> Result<Tensor> { swap(t.reshape((b, s, heads, hd))?) };
        let q = split(self.q_proj.forward_rows(x, autograd, rows)?, h)?;
        let k = split(self.k_proj.forward_rows(x, autograd, rows)?, kvh)?;
        let v = split(self.v_proj.forward_rows(x, autograd, rows)?, kvh)?;
        let rotate = |t: &Tensor| -> Result<Tensor> {
            match autograd {
                Autograd::Off | Autograd::Fused => Ok(kernels::fused::rope(t, &cos_sin.0, &cos_sin.1)?),
                Autograd::Composed => Rope::apply(t, &cos_sin.0, &cos_sin.1),
            }
        };
        let (q, k) = (rotate(&q)?, rotate(&k)?);

        let (k, v) = match cache {
            Some((slot, capacity)) => LayerKv::append(slot, k, v, capacity)?,
            None => (k, v),
        };
        let t = k.dim(2)?;

        // Grouped-query attention without copying K/V: fold the query heads that share a KV
        // head into the sequence axis, so one batched matmul serves the whole group.
        let group = h / kvh;
        let q = q.reshape((b, kvh, group * s, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        // Inference multiplies the heads side by side on the kernels' pool (candle's values).
        let matmul = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
            Ok(match autograd {
                Autograd::Off => kernels::batched::matmul(a, b)?,
                Autograd::Composed | Autograd::Fused => a.matmul(b)?,
            })
        };
        let raw = matmul(&q, &k.t()?)?;
        let probs = if autograd == Autograd::Composed {
            let scores = (raw * scale)?.reshape((b, h, s, t))?;
            let scores = match mask {
                Some(m) => scores.broadcast_add(m)?,
                None => scores,
            };
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            kernels::fused::masked_softmax(&raw.reshape((b, h, s, t))?, scale, mask)?
        };
        let out = matmul(&probs.reshape((b, kvh, group * s, t))?, &v)?;
        let out = swap(out.reshape((b, h, s, hd))?)?.reshape((b, s, h * hd))?;
        self.o_proj.forward_rows(&out, autograd, rows)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(vb: VarBuilder, cfg: &ModelConfig, q: &mut QuantizedMatrices) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::load_from(&vb.pp("gate_proj"), d, i, cfg.mlp_bias, q)?,
            up_proj: Linear::load_from(&vb.pp("up_proj"), d, i, cfg.mlp_bias, q)?,
            down_proj: Linear::load_from(&vb.pp("down_proj"), i, d, cfg.mlp_bias, q)?,
        })
    }

    /// SwiGLU: `down(silu(gate(x)) * up(x))`, on the flat `rows` (`None`: all).
    fn forward(&self, x: &Tensor, autograd: Autograd, rows: Option<&[usize]>) -> Result<Tensor> {
        let (gate, up) = (
            self.gate_proj.forward_rows(x, autograd, rows)?,
            self.up_proj.forward_rows(x, autograd, rows)?,
        );
        let hidden = match autograd {
            Autograd::Off | Autograd::Fused => kernels::fused::swiglu(&gate, &up)?,
            Autograd::Composed => (candle_nn::ops::silu(&gate)? * up)?,
        };
        self.down_proj.forward_rows(&hidden, autograd, rows)
    }
}

#[derive(Debug, Clone)]
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

/// A Llama-family decoder with hook points at every layer.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    embed_tokens: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    device: Device,
    autograd: Autograd,
}

impl Model {
    /// Builds the model from `vb` rooted at the checkpoint's top level (`model.*`, `lm_head.*`).
    /// With a `VarMap`-backed builder the same call initialises a model for training.
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        Self::load_with_quantized(vb, cfg, QuantizedMatrices::default())
    }

    /// As [`Model::load`], with the matrices `quantized` holds kept block-quantized (a GGUF
    /// loaded with `keep_quantized`); the rest, embeddings and norms included, come from `vb`.
    pub fn load_with_quantized(vb: VarBuilder, cfg: &ModelConfig, mut quantized: QuantizedMatrices) -> Result<Self> {
        let q = &mut quantized;
        let m = vb.pp("model");
        let embed_tokens = m.pp("embed_tokens").get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: super::linear::INIT_STD,
            },
        )?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = m.pp("layers").pp(i);
                Ok(Block {
                    input_layernorm: RmsNorm::load(l.pp("input_layernorm"), cfg.hidden_size, cfg.rms_norm_eps)?,
                    self_attn: Attention::load(l.pp("self_attn"), cfg, q)?,
                    post_attention_layernorm: RmsNorm::load(
                        l.pp("post_attention_layernorm"),
                        cfg.hidden_size,
                        cfg.rms_norm_eps,
                    )?,
                    mlp: Mlp::load(l.pp("mlp"), cfg, q)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(m.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings && !q.contains("lm_head.weight") {
            Linear::from_weight(embed_tokens.clone())
        } else {
            Linear::load_from(&vb.pp("lm_head"), cfg.hidden_size, cfg.vocab_size, false, q)?
        };
        if let Some(unused) = quantized.0.keys().next() {
            anyhow::bail!("quantized matrix {unused} belongs to no layer of this model");
        }
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            blocks,
            norm,
            lm_head,
            rope: Rope::new(cfg, vb.device())?,
            device: vb.device().clone(),
            autograd: Autograd::Off,
        })
    }

    /// The projections LoRA can adapt, by peft's module names (`model.layers.3.self_attn.q_proj`),
    /// for a fine-tuner to attach deltas to and read them back from.
    pub fn adaptable_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let attn = &mut block.self_attn;
            let mlp = &mut block.mlp;
            for (name, linear) in [
                ("self_attn.q_proj", &mut attn.q_proj),
                ("self_attn.k_proj", &mut attn.k_proj),
                ("self_attn.v_proj", &mut attn.v_proj),
                ("self_attn.o_proj", &mut attn.o_proj),
                ("mlp.gate_proj", &mut mlp.gate_proj),
                ("mlp.up_proj", &mut mlp.up_proj),
                ("mlp.down_proj", &mut mlp.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), linear));
            }
        }
        out
    }

    /// How every linear layer multiplies f32 activations by a bf16 weight.
    pub fn set_bf16_compute(&mut self, compute: kernels::bf16::Bf16Compute) {
        self.lm_head.set_bf16_compute(compute);
        for (_, linear) in self.adaptable_mut() {
            linear.set_bf16_compute(compute);
        }
    }

    /// Puts LoRA deltas beside the weights they adapt (by weight name,
    /// `model.layers.3.self_attn.q_proj.weight`), unmerged: for weights that cannot take a
    /// merged delta, such as quantized ones.
    pub fn attach_lora(&mut self, deltas: Vec<(String, super::linear::LoraDelta)>) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut by_name: std::collections::HashMap<String, &mut Linear> = self
            .adaptable_mut()
            .into_iter()
            .map(|(name, l)| (format!("{name}.weight"), l))
            .collect();
        for (name, delta) in deltas {
            let Some(linear) = by_name.get_mut(&name) else {
                anyhow::bail!("the adapter changes {name}, which cannot hold an unmerged delta");
            };
            let (out_dim, in_dim) = linear.dims();
            if delta.a.dims() != [delta.a.dim(0)?, in_dim] || delta.b.dims() != [out_dim, delta.b.dim(1)?] {
                anyhow::bail!(
                    "the adapter's factors for {name} ({:?} and {:?}) do not fit a [{out_dim}, {in_dim}] weight (wrong base model?)",
                    delta.a.dims(),
                    delta.b.dims()
                );
            }
            linear.set_lora(Some(delta));
        }
        Ok(())
    }

    /// Which ops the forward is built from: `Off` for inference, `Composed` or `Fused` for
    /// training (autograd-capable, slightly slower).
    /// Training unpacks the f32 weights packed for inference (once: its backward multiplies by
    /// the weights as stored).
    pub fn set_autograd(&mut self, autograd: Autograd) -> Result<()> {
        if autograd != Autograd::Off {
            self.lm_head.unpack_f32()?;
            for (_, linear) in self.adaptable_mut() {
                linear.unpack_f32()?;
            }
        }
        self.autograd = autograd;
        Ok(())
    }

    pub fn autograd(&self) -> Autograd {
        self.autograd
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The whole stack up to and including the final norm: `[b, s]` token ids to
    /// `[b, s, d_model]` normalised hidden states (what `lm_head` reads). Calls `hooks` at
    /// every hook point; with [`crate::hooks::NoHooks`] this is a plain forward.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Positions,
        mut cache: Option<&mut KvCache>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        hooks.begin_forward(past);
        let embedded = self.embed_tokens.index_select(&ids.flatten_all()?, 0)?;
        let mut x = embedded
            .to_dtype(COMPUTE_DTYPE)?
            .reshape((b, s, self.cfg.hidden_size))?;
        x = run_hook(hooks, HookPoint::Embed, x)?;

        let cos_sin = self.rope.cos_sin(&positions.positions)?;
        let mask = self.attention_mask(b, s, past, positions.key_mask.as_ref())?;
        let rows = positions.real_rows(b, s, self.autograd)?;

        for (i, block) in self.blocks.iter().enumerate() {
            x = run_hook(hooks, HookPoint::block(i, Site::ResidPre), x)?;
            let slot = cache.as_deref_mut().map(|c| (&mut c.layers[i], c.capacity));
            let normed = block.input_layernorm.forward(&x, self.autograd)?;
            let attn =
                block
                    .self_attn
                    .forward(&normed, &cos_sin, mask.as_ref(), slot, self.autograd, rows.as_deref())?;
            let attn = run_hook(hooks, HookPoint::block(i, Site::AttnOut), attn)?;
            x = run_hook(hooks, HookPoint::block(i, Site::ResidMid), self.add(&x, &attn)?)?;
            let mlp = block.mlp.forward(
                &block.post_attention_layernorm.forward(&x, self.autograd)?,
                self.autograd,
                rows.as_deref(),
            )?;
            let mlp = run_hook(hooks, HookPoint::block(i, Site::MlpOut), mlp)?;
            x = run_hook(hooks, HookPoint::block(i, Site::ResidPost), self.add(&x, &mlp)?)?;
        }
        run_hook(hooks, HookPoint::FinalNorm, self.norm.forward(&x, self.autograd)?)
    }

    /// A residual add: on the kernels' pool for inference on the CPU (the same f32 adds).
    fn add(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let pooled = self.autograd == Autograd::Off
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && y.dtype() == DType::F32
            && x.dims() == y.dims()
            && !x.track_op()
            && !y.track_op();
        Ok(if pooled { kernels::pooled::add(x, y)? } else { (x + y)? })
    }

    /// One forward pass keeping the activations at `points` (TransformerLens'
    /// `run_with_cache`): the normalised hidden states and the filled [`Cache`].
    pub fn run_with_cache(
        &self,
        ids: &Tensor,
        positions: &Positions,
        points: impl IntoIterator<Item = HookPoint>,
    ) -> Result<(Tensor, Cache)> {
        let mut cache = Cache::new(points);
        let normed = self.forward(ids, positions, None, &mut cache)?;
        Ok((normed, cache))
    }

    /// Unembeds normalised hidden states `[b, s, d]` to logits `[b, s, vocab]`.
    pub fn logits(&self, normed: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(normed, Autograd::Off)
    }

    /// Additive mask `[b, 1, s, past + s]`: causal (query i sees keys up to past + i), within
    /// the sliding window if the model has one, and never a padded key. `None` when nothing is
    /// masked (one new token, no padding, no window), so decoding pays nothing for it. The
    /// padding part is combined on the device: the key mask never goes back to the host.
    fn attention_mask(&self, b: usize, s: usize, past: usize, key_mask: Option<&Tensor>) -> Result<Option<Tensor>> {
        let t = past + s;
        let window = self.cfg.sliding_window.filter(|&w| w < t);
        // 1 where query i may see key j by position alone (causal and in the window).
        let positional = if s == 1 && window.is_none() {
            None
        } else {
            let keep: Vec<f32> = (0..s)
                .flat_map(|i| {
                    let query = past + i;
                    (0..t).map(move |key| {
                        let in_window = window.is_none_or(|w| query - key.min(query) < w);
                        f32::from(u8::from(key <= query && in_window))
                    })
                })
                .collect();
            Some(Tensor::from_vec(keep, (1, 1, s, t), &self.device)?)
        };
        let allowed = match (positional, key_mask) {
            (None, None) => return Ok(None),
            (Some(p), None) => p,
            (None, Some(m)) => m.to_dtype(DType::F32)?.reshape((b, 1, 1, t))?,
            (Some(p), Some(m)) => p.broadcast_mul(&m.to_dtype(DType::F32)?.reshape((b, 1, 1, t))?)?,
        };
        // allowed 1 -> 0, allowed 0 -> f32::MIN. HF fills with the dtype's minimum rather than
        // -inf, so a row with no visible key (a padding query) gets a uniform softmax, not NaN.
        Ok(Some(((allowed - 1.0)? * f32::MAX as f64)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::NoHooks;
    use candle_nn::VarMap;

    fn tiny_model() -> Model {
        let cfg = ModelConfig::from_json(
            r#"{"model_type": "llama", "vocab_size": 40, "hidden_size": 16, "intermediate_size": 32,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "rms_norm_eps": 1e-6, "max_position_embeddings": 64}"#,
        )
        .unwrap();
        let varmap = VarMap::new();
        Model::load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg).unwrap()
    }

    /// Right padding that no one reads is skipped by the packed products, and the real
    /// tokens keep their bits: the weights here are plain tensors, packed at load.
    #[test]
    fn skipping_right_padding_keeps_the_real_tokens_bits() {
        let cfg = tiny_model().config().clone();
        let mut weights = std::collections::HashMap::new();
        let varmap = VarMap::new();
        Model::load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &cfg).unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            weights.insert(name.clone(), var.as_tensor().detach());
        }
        let model = Model::load(VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu), &cfg).unwrap();
        let (lens, width) = (vec![9usize, 4, 7], 9);
        let ids: Vec<u32> = (0..lens.len() * width).map(|i| (i * 11 % 40) as u32).collect();
        let ids = Tensor::from_vec(ids, (lens.len(), width), &Device::Cpu).unwrap();
        let points = [HookPoint::block(0, Site::MlpOut), HookPoint::block(1, Site::ResidPost)];
        let run = |positions: &Positions| {
            let (normed, cache) = model.run_with_cache(&ids, positions, points).unwrap();
            let mut kept = vec![normed];
            kept.extend(points.iter().map(|&p| cache.require(p).unwrap().clone()));
            kept
        };
        let all = run(&Positions::contiguous(lens.len(), width, 0, &Device::Cpu).unwrap());
        let real = run(&Positions::right_padded(lens.clone(), width, &Device::Cpu).unwrap());
        let bits = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|f| f.to_bits())
                .collect::<Vec<_>>()
        };
        let mut skipped_something = false;
        for (a, r) in all.iter().zip(&real) {
            for (row, &len) in lens.iter().enumerate() {
                let (a, r) = (a.get(row).unwrap(), r.get(row).unwrap());
                assert_eq!(
                    bits(&a.narrow(0, 0, len).unwrap()),
                    bits(&r.narrow(0, 0, len).unwrap()),
                    "row {row}"
                );
                skipped_something |= bits(&a) != bits(&r);
            }
        }
        assert!(
            skipped_something || !kernels::f32_matmul::packed_available(),
            "the padding was computed after all"
        );
        let wrong = Positions::right_padded(vec![3, 3], width, &Device::Cpu).unwrap();
        assert!(model.forward(&ids, &wrong, None, &mut NoHooks).is_err());
    }

    /// Feeds `ids` one token at a time through `cache`, returning the last hidden states.
    fn decode(model: &Model, cache: &mut KvCache, ids: &[u32], start: usize) -> Vec<f32> {
        let mut last = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let input = Tensor::new(&[[id]], &Device::Cpu).unwrap();
            let positions = Positions::contiguous(1, 1, start + i, &Device::Cpu).unwrap();
            last = model
                .forward(&input, &positions, Some(cache), &mut NoHooks)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
        }
        last
    }

    #[test]
    fn a_growing_cache_equals_a_preallocated_one_and_the_full_forward() {
        let model = tiny_model();
        let ids: Vec<u32> = (0..13).map(|i| (i * 7 % 40) as u32).collect();
        let full = model
            .forward(
                &Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(),
                &Positions::contiguous(1, 13, 0, &Device::Cpu).unwrap(),
                None,
                &mut NoHooks,
            )
            .unwrap();
        let full_last: Vec<f32> = full.narrow(1, 12, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // Capacity 1 grows four times (1 -> 2 -> 4 -> 8 -> 16); capacity 13 never does.
        for capacity in [1, 13] {
            let mut cache = KvCache::with_capacity(2, capacity);
            let last = decode(&model, &mut cache, &ids, 0);
            assert_eq!(cache.len(), 13);
            let worst = last
                .iter()
                .zip(&full_last)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "capacity {capacity}: {worst}");
        }
    }

    #[test]
    fn a_cloned_cache_is_independent_of_the_original() {
        let model = tiny_model();
        let mut cache = KvCache::with_capacity(2, 16);
        decode(&model, &mut cache, &[1, 2, 3], 0);
        let mut copy = cache.try_clone().unwrap();
        let a = decode(&model, &mut cache, &[4, 5], 3);
        // The original's writes of positions 3-4 must not show in the copy.
        let b = decode(&model, &mut copy, &[9, 5], 3);
        let c = decode(&model, &mut KvCache::with_capacity(2, 16), &[1, 2, 3, 9, 5], 0);
        assert_ne!(a, b);
        assert_eq!(b, c);
    }
}

//! Training ops in one pass each way, for `alens tune --fused` (`Autograd::Fused` in probe).
//!
//! Under candle's autograd, RMSNorm, RoPE, the scaled and masked softmax, SwiGLU and the
//! cross-entropy are each 5 to 12 elementwise ops: every op allocates its output, and in the
//! backward every gradient starts as a zero tensor that the first contribution is added to.
//! On this project's 2-core machines that was a third of a training step (perf). Here each is
//! one custom op with a hand-written backward: the same function in fewer passes over memory.
//! The forwards of RMSNorm, RoPE, the softmax and SwiGLU are the composed ops' values to the
//! bit (the same float operations in the same order, the sums inside a row by candle's own
//! reduction), so inference runs on them too (`Autograd::Off` in probe): one pass per op on
//! the kernels' pool, where candle's composed ops make several on one thread. The backward
//! sums its terms in another order, so an adapter trained fused differs in its last bits from
//! one trained composed. Each is reproducible bit for bit on its own, and the composed graph
//! stays the training default so that the shipped adapters still reproduce byte for byte.
//!
//! CPU and f32 only, contiguous inputs (the training path is both); a weight that is itself
//! being trained (a norm in `train-mini`) keeps the composed op, whose backward covers it.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The contiguous f32 data of a CPU operand.
fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => bail!("{op} takes contiguous f32 CPU tensors"),
    }
}

fn f32s_of(t: &Tensor, op: &str) -> Result<Vec<f32>> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(s) => Ok(f32s(s, layout, op)?.to_vec()),
        _ => bail!("{op} takes CPU tensors"),
    }
}

/// `rows x width` floats, each row written by `fill(row, out_row)`, blocks of rows spread
/// over the kernels' thread pool.
pub(crate) fn by_rows(rows: usize, width: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    // Each row is zeroed by the thread that fills it, just before: not all of them first, on
    // the calling thread.
    let mut out = Vec::<f32>::with_capacity(rows * width);
    let threads = crate::parallel::threads();
    let per = rows.div_ceil(threads * 4).max(1);
    let base = crate::parallel::SendPtr(out.as_mut_ptr());
    crate::parallel::in_parallel(rows.div_ceil(per), |block| {
        for row in block * per..((block + 1) * per).min(rows) {
            // SAFETY: each row is zeroed and then written by exactly one block, inside the
            // capacity of `out`, which outlives the pool call.
            let dst = unsafe {
                let at = base.get().add(row * width);
                std::ptr::write_bytes(at, 0, width);
                std::slice::from_raw_parts_mut(at, width)
            };
            fill(row, dst);
        }
    });
    // SAFETY: every row of the `rows * width` was zeroed (and then filled) above.
    unsafe { out.set_len(rows * width) };
    out
}

fn last_dim(layout: &Layout) -> Result<(usize, usize)> {
    let dims = layout.shape().dims();
    let Some(&width) = dims.last() else {
        bail!("a fused op needs at least one dimension")
    };
    Ok((layout.shape().elem_count() / width.max(1), width))
}

fn output(data: Vec<f32>, shape: &Shape) -> Result<(CpuStorage, Shape)> {
    Ok((CpuStorage::F32(data), shape.clone()))
}

/// The sum of `x` as candle's reductions (`sum_keepdim`, the softmax) compute it, so a fused
/// forward gets the composed op's bits: candle sums f32 rows in vector lanes, in its order.
fn candle_sum(x: &[f32]) -> f32 {
    let mut sum = 0f32;
    // SAFETY: `x` holds `x.len()` floats and `sum` is one valid float to write.
    unsafe { <f32 as candle_core::cpu::kernels::VecOps>::vec_reduce_sum(x.as_ptr(), &mut sum, x.len()) };
    sum
}

// ---------------------------------------------------------------------------------------
// RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, the weight frozen.

/// HF's LlamaRMSNorm over the last dimension, with a weight that gets no gradient.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let op = RmsNorm {
        weight: f32s_of(weight, "fused rms-norm")?,
        eps: eps as f32,
    };
    x.contiguous()?.apply_op1(op)
}

struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// `1 / sqrt(mean(x^2) + eps)` of one row, with `scratch` (as long as `x`) for the squares.
    /// The composed op's arithmetic: `x.sqr()`, `mean_keepdim` (candle's sum, times `1 / d`
    /// as an affine map `v * m + 0`), `+ eps` (`v * 1 + eps`), `sqrt`, `recip`.
    fn inverse_rms(&self, x: &[f32], scratch: &mut [f32]) -> f32 {
        for (s, v) in scratch.iter_mut().zip(x) {
            *s = v * v;
        }
        let mean = candle_sum(&scratch[..x.len()]) * (1.0 / x.len() as f64) as f32 + 0.0;
        (mean * 1.0 + self.eps).sqrt().recip()
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, self.name())?;
        let (rows, d) = last_dim(layout)?;
        if d != self.weight.len() {
            bail!("fused rms-norm: {d} features against a weight of {}", self.weight.len());
        }
        output(
            by_rows(rows, d, |r, y| {
                let row = &x[r * d..(r + 1) * d];
                let inv = self.inverse_rms(row, y);
                for ((y, &v), &w) in y.iter_mut().zip(row).zip(&self.weight) {
                    *y = (v * inv) * w;
                }
            }),
            layout.shape(),
        )
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad_op = RmsNormGrad(RmsNorm {
            weight: self.weight.clone(),
            eps: self.eps,
        });
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &grad_op)?))
    }
}

/// `dx = r (g w) - (r^3 / d) x sum(g w x)`, with `r` the row's inverse RMS.
struct RmsNormGrad(RmsNorm);

impl CustomOp2 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32s(xs, xl, self.name())?, f32s(gs, gl, self.name())?);
        let (rows, d) = last_dim(xl)?;
        let w = &self.0.weight;
        output(
            by_rows(rows, d, |r, dx| {
                let (x, g) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
                let inv = self.0.inverse_rms(x, dx);
                let dot: f32 = x.iter().zip(g).zip(w).map(|((x, g), w)| g * w * x).sum();
                let k = inv * inv * inv * dot / d as f32;
                for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                    *dx = inv * (g * w) - k * x;
                }
            }),
            xl.shape(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// RoPE, HF's rotate-half convention: y = x cos + rotate_half(x) sin.

/// Rotary embedding of `x` `[b, heads, s, hd]` by `cos`/`sin` `[b, 1, s, hd]` (the two
/// halves of each row equal, as `super::rope::Rope::cos_sin` makes them).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, heads, s, hd) = x.dims4()?;
    if cos.dims() != [b, 1, s, hd] || sin.dims() != [b, 1, s, hd] || hd % 2 != 0 {
        bail!(
            "fused rope: x {:?} against cos {:?} and sin {:?}",
            x.dims(),
            cos.dims(),
            sin.dims()
        );
    }
    let op = Rope {
        cos: f32s_of(cos, "fused rope")?,
        sin: f32s_of(sin, "fused rope")?,
        heads,
        seq: s,
        sign: 1.0,
    };
    x.contiguous()?.apply_op1(op)
}

struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    heads: usize,
    seq: usize,
    /// 1: the rotation; -1: its inverse (the transpose), which is the backward.
    sign: f32,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, self.name())?;
        let (rows, hd) = last_dim(layout)?;
        let half = hd / 2;
        output(
            by_rows(rows, hd, |r, y| {
                // Row r is (batch, head, position); cos/sin are shared by the heads.
                let (batch, position) = (r / (self.heads * self.seq), r % self.seq);
                let at = (batch * self.seq + position) * hd;
                let (cos, sin) = (&self.cos[at..at + hd], &self.sin[at..at + hd]);
                let x = &x[r * hd..(r + 1) * hd];
                for i in 0..half {
                    // The composed op's products and sum: x*cos + (-x2)*sin, x2*cos + x1*sin.
                    y[i] = x[i] * cos[i] + (-x[i + half] * self.sign) * sin[i];
                    y[i + half] = x[i + half] * cos[i + half] + (x[i] * self.sign) * sin[i + half];
                }
            }),
            layout.shape(),
        )
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inverse = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            heads: self.heads,
            seq: self.seq,
            sign: -self.sign,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&inverse)?))
    }
}

// ---------------------------------------------------------------------------------------
// Attention weights: p = softmax(scores * scale + mask) over the keys.

/// `softmax(scores * scale + mask)` over the last dimension, for `scores` `[b, h, s, t]` and
/// an additive `mask` broadcast from `[b or 1, 1, s or 1, t]`.
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, _h, s, t) = scores.dims4()?;
    let mask = match mask {
        None => None,
        Some(m) => {
            let (mb, one, ms, mt) = m.dims4()?;
            if !(mb == 1 || mb == b) || one != 1 || !(ms == 1 || ms == s) || mt != t {
                bail!(
                    "fused softmax: mask {:?} does not broadcast to scores {:?}",
                    m.dims(),
                    scores.dims()
                );
            }
            Some(Mask {
                values: f32s_of(m, "fused softmax")?,
                batches: mb,
                queries: ms,
            })
        }
    };
    let dims = scores.dims4()?;
    scores.contiguous()?.apply_op1(MaskedSoftmax {
        scale: scale as f32,
        mask,
        dims,
    })
}

struct Mask {
    values: Vec<f32>,
    batches: usize,
    queries: usize,
}

struct MaskedSoftmax {
    scale: f32,
    mask: Option<Mask>,
    dims: (usize, usize, usize, usize),
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, self.name())?;
        let (_, h, s, t) = self.dims;
        let (rows, width) = last_dim(layout)?;
        if width != t {
            bail!("fused softmax: rows of {width} against {t} keys");
        }
        output(
            by_rows(rows, t, |r, p| {
                let x = &x[r * t..(r + 1) * t];
                let mask = self.mask.as_ref().map(|m| {
                    let (batch, query) = (r / (h * s), r % s);
                    let at = ((batch % m.batches) * m.queries + query % m.queries) * t;
                    &m.values[at..at + t]
                });
                for (j, p) in p.iter_mut().enumerate() {
                    // The composed op: `scores * scale` (an affine map, `v * scale + 0`), `+ mask`.
                    let z = x[j] * self.scale + 0.0;
                    *p = match mask {
                        Some(m) => z + m[j],
                        None => z,
                    };
                }
                let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for p in p.iter_mut() {
                    *p -= max;
                }
                crate::exp::exp_in_place(p);
                let sum = candle_sum(p);
                for p in p.iter_mut() {
                    *p /= sum;
                }
            }),
            layout.shape(),
        )
    }

    fn bwd(&self, _x: &Tensor, probs: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(probs.apply_op2_no_bwd(
            &grad.contiguous()?,
            &SoftmaxGrad { scale: self.scale },
        )?))
    }
}

/// `dx = scale * p * (g - sum(g p))` per row.
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-softmax-grad"
    }

    fn cpu_fwd(&self, ps: &CpuStorage, pl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (p, g) = (f32s(ps, pl, self.name())?, f32s(gs, gl, self.name())?);
        let (rows, t) = last_dim(pl)?;
        output(
            by_rows(rows, t, |r, dx| {
                let (p, g) = (&p[r * t..(r + 1) * t], &g[r * t..(r + 1) * t]);
                let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
                for ((dx, &p), &g) in dx.iter_mut().zip(p).zip(g) {
                    *dx = self.scale * (p * (g - dot));
                }
            }),
            pl.shape(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// SwiGLU: y = silu(gate) * up.

/// `silu(gate) * up`, elementwise.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        bail!("fused swiglu: gate {:?} and up {:?}", gate.dims(), up.dims());
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, Swiglu)
}

struct Swiglu;

impl CustomOp2 for Swiglu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (f32s(gs, gl, self.name())?, f32s(us, ul, self.name())?);
        let (rows, width) = last_dim(gl)?;
        output(
            by_rows(rows, width, |r, y| {
                let span = r * width..(r + 1) * width;
                // silu(g) * u = g / (1 + e^-g) * u, the exponentials a row at a time.
                for (y, &g) in y.iter_mut().zip(&gate[span.clone()]) {
                    *y = -g;
                }
                crate::exp::exp_in_place(y);
                for ((y, &g), &u) in y.iter_mut().zip(&gate[span.clone()]).zip(&up[span]) {
                    *y = g / (1.0 + *y) * u;
                }
            }),
            gl.shape(),
        )
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // One pass writes both gradients, stacked: [d gate; d up].
        let both = gate.apply_op3_no_bwd(up, &grad.contiguous()?, &SwigluGrad)?;
        let n = gate.elem_count();
        let shape = gate.shape().clone();
        Ok((
            Some(both.narrow(0, 0, n)?.reshape(&shape)?),
            Some(both.narrow(0, n, n)?.reshape(shape)?),
        ))
    }
}

/// `d gate = g u s (1 + x (1 - s))` with `s = sigmoid(x)`, and `d up = g silu(x)`, stacked.
struct SwigluGrad;

impl CustomOp3 for SwigluGrad {
    fn name(&self) -> &'static str {
        "fused-swiglu-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gate, up, grad) = (
            f32s(gs, gl, self.name())?,
            f32s(us, ul, self.name())?,
            f32s(ds, dl, self.name())?,
        );
        let (rows, width) = last_dim(gl)?;
        let n = rows * width;
        // Rows 0..rows of the output are d gate, rows..2 rows are d up.
        let out = by_rows(2 * rows, width, |r, out| {
            let span = (r % rows) * width..(r % rows + 1) * width;
            let (gate, up, grad) = (&gate[span.clone()], &up[span.clone()], &grad[span]);
            for (i, o) in out.iter_mut().enumerate() {
                let s = 1.0 / (1.0 + (-gate[i]).exp());
                *o = if r < rows {
                    grad[i] * up[i] * s * (1.0 + gate[i] * (1.0 - s))
                } else {
                    grad[i] * (gate[i] * s)
                };
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(2 * n)))
    }
}

// ---------------------------------------------------------------------------------------
// Cross-entropy: mean over rows of logsumexp(logits) - logits[target].

/// The mean cross-entropy of `logits` `[n, vocab]` against `targets` (one id per row), as
/// `candle_nn::loss::cross_entropy` computes it.
pub fn cross_entropy(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (n, vocab) = logits.dims2()?;
    if n != targets.len() || n == 0 {
        bail!("fused cross-entropy: {n} rows against {} targets", targets.len());
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("fused cross-entropy: target {t} outside a vocabulary of {vocab}");
    }
    logits.contiguous()?.apply_op1(CrossEntropy {
        targets: targets.to_vec(),
        scale: 1.0,
    })
}

struct CrossEntropy {
    targets: Vec<u32>,
    /// The backward's factor: the loss's gradient over the row count.
    scale: f32,
}

impl CrossEntropy {
    /// `(max, log sum exp(x - max))` of one row.
    fn log_partition(row: &[f32]) -> (f32, f32) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        (max, sum.ln())
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, self.name())?;
        let (rows, vocab) = last_dim(layout)?;
        let losses = by_rows(rows, 1, |r, loss| {
            let row = &x[r * vocab..(r + 1) * vocab];
            let (max, log_sum) = Self::log_partition(row);
            loss[0] = log_sum - (row[self.targets[r] as usize] - max);
        });
        let mean = losses.iter().sum::<f32>() / rows as f32;
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(&self, logits: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let scale = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? / self.targets.len() as f32;
        Ok(Some(logits.apply_op1_no_bwd(&CrossEntropyGrad(CrossEntropy {
            targets: self.targets.clone(),
            scale,
        }))?))
    }
}

/// `(softmax(x) - onehot(target)) * scale` per row.
struct CrossEntropyGrad(CrossEntropy);

impl CustomOp1 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(storage, layout, self.name())?;
        let (rows, vocab) = last_dim(layout)?;
        let scale = self.0.scale;
        output(
            by_rows(rows, vocab, |r, dx| {
                let row = &x[r * vocab..(r + 1) * vocab];
                let (max, log_sum) = CrossEntropy::log_partition(row);
                for (dx, &v) in dx.iter_mut().zip(row) {
                    *dx = (v - max - log_sum).exp() * scale;
                }
                dx[self.0.targets[r] as usize] -= scale;
            }),
            layout.shape(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// A frozen linear layer with its LoRA delta: y = x W^T + s (x A^T) B^T.

/// `x W^T + scale (x A^T) B^T` for `x` `[rows, in]`, a frozen f32 `W` `[out, in]` and
/// trainable `A` `[r, in]`, `B` `[out, r]`: one graph node with gradients for `x`, `A` and
/// `B`, where the composed form is five (two matmuls, a transpose, a scale, an add), each
/// with its own zero-filled gradient in the backward.
pub fn lora_linear(x: &Tensor, weight: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let (_, input) = x.dims2()?;
    let (out, w_in) = weight.dims2()?;
    let (r, a_in) = a.dims2()?;
    if w_in != input || a_in != input || b.dims() != [out, r] {
        bail!(
            "fused LoRA linear: x {:?}, W {:?}, A {:?}, B {:?}",
            x.dims(),
            weight.dims(),
            a.dims(),
            b.dims()
        );
    }
    x.contiguous()?.apply_op3(
        &a.contiguous()?,
        &b.contiguous()?,
        LoraLinear {
            weight: weight.contiguous()?,
            scale,
        },
    )
}

struct LoraLinear {
    weight: Tensor,
    scale: f64,
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "fused-lora-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use crate::f32_matmul::matmul_t;
        let (x, a, b) = (
            f32s(xs, xl, self.name())?,
            f32s(as_, al, self.name())?,
            f32s(bs, bl, self.name())?,
        );
        let (rows, input) = xl.shape().dims2()?;
        let (out, r) = bl.shape().dims2()?;
        let mut y = crate::frozen::with_f32_data(&self.weight, |w| matmul_t(x, rows, input, w, out))?;
        let low = matmul_t(x, rows, input, a, r);
        let delta = matmul_t(&low, rows, r, b, out);
        let scale = self.scale as f32;
        for (y, d) in y.iter_mut().zip(&delta) {
            *y += scale * d;
        }
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b, g) = (a.detach(), b.detach(), grad.contiguous()?);
        // u = scale g B: the gradient at the rank-r bottleneck.
        let u = (g.matmul(&b)? * self.scale)?;
        let dx = (crate::frozen::frozen_input_grad(&g, &self.weight)? + u.matmul(&a)?)?;
        let da = u.t()?.matmul(x)?;
        let db = (g.t()?.matmul(&x.matmul(&a.t()?)?)? * self.scale)?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// Deterministic values spread over about [-2, 2].
    fn random(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| 2.0 * ((i as f32 + 1.0) * (0.618 + seed as f32 * 0.1)).sin())
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The fused op's value and input gradient against the composed ops', under the same
    /// random projection of the output (so every output element's gradient is tested).
    fn agrees(input: &Tensor, fused: impl Fn(&Tensor) -> Tensor, composed: impl Fn(&Tensor) -> Tensor) {
        let var = Var::from_tensor(input).unwrap();
        let (f, c) = (fused(var.as_tensor()), composed(var.as_tensor()));
        assert!(max_diff(&f, &c) < 1e-5, "forward differs by {}", max_diff(&f, &c));
        let probe = random(f.dims(), 7);
        let grad = |y: &Tensor| {
            y.mul(&probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(var.as_tensor())
                .unwrap()
                .clone()
        };
        let (gf, gc) = (grad(&f), grad(&c));
        assert!(max_diff(&gf, &gc) < 1e-4, "gradient differs by {}", max_diff(&gf, &gc));
    }

    /// The forwards inference runs on are the composed ops' values to the bit (probe's
    /// `Autograd::Off` forward was made of the composed ops, and its outputs must not move).
    #[test]
    fn forwards_are_the_composed_ops_to_the_bit() {
        let bits = crate::testing::tensor_bits;
        // Widths with every remainder of candle's vector sums (16 lanes x its unroll), and the
        // shapes of a real forward.
        for (rows, d) in [(7usize, 768usize), (3, 576), (5, 37), (2, 4096), (1, 1)] {
            let x = (random(&[rows, d], 21) * 3.0).unwrap();
            let w = random(&[d], 22);
            let composed = {
                let var = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-5).unwrap();
                x.broadcast_mul(&var.sqrt().unwrap().recip().unwrap())
                    .unwrap()
                    .broadcast_mul(&w)
                    .unwrap()
            };
            assert_eq!(
                bits(&rms_norm(&x, &w, 1e-5).unwrap()),
                bits(&composed),
                "rms-norm {rows} x {d}"
            );
            let up = random(&[rows, d], 23);
            let composed = (candle_nn::ops::silu(&x).unwrap() * &up).unwrap();
            assert_eq!(bits(&swiglu(&x, &up).unwrap()), bits(&composed), "swiglu {rows} x {d}");
        }
        let (b, h, s, hd) = (2usize, 3usize, 9usize, 64usize);
        let angles = random(&[b, 1, s, hd / 2], 24);
        let angles = Tensor::cat(&[&angles, &angles], D::Minus1).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let x = random(&[b, h, s, hd], 25);
        let (x1, x2) = (
            x.narrow(D::Minus1, 0, hd / 2).unwrap(),
            x.narrow(D::Minus1, hd / 2, hd / 2).unwrap(),
        );
        let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
        let composed = (x.broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap();
        assert_eq!(bits(&rope(&x, &cos, &sin).unwrap()), bits(&composed), "rope");
        // probe's masks: (allowed - 1) * f32::MAX, causal over a padded batch, and none.
        for t in [9usize, 40, 130] {
            let s = if t == 9 { 9 } else { 1 };
            let allowed: Vec<f32> = (0..b * s * t)
                .map(|k| {
                    let (row, query, key) = (k / (s * t), (k / t) % s, k % t);
                    f32::from(u8::from(key <= query + t - s && key + 3 * row < t))
                })
                .collect();
            let allowed = Tensor::from_vec(allowed, (b, 1, s, t), &Device::Cpu).unwrap();
            let mask = ((allowed - 1.0).unwrap() * f32::MAX as f64).unwrap();
            let scores = (random(&[b, h, s, t], 26) * 4.0).unwrap();
            for mask in [Some(&mask), None] {
                let z = (&scores * 0.125).unwrap();
                let z = match mask {
                    Some(m) => z.broadcast_add(m).unwrap(),
                    None => z,
                };
                let composed = candle_nn::ops::softmax_last_dim(&z).unwrap();
                let ours = masked_softmax(&scores, 0.125, mask).unwrap();
                assert_eq!(
                    bits(&ours),
                    bits(&composed),
                    "softmax over {t} keys, mask {}",
                    mask.is_some()
                );
            }
        }
    }

    #[test]
    fn rms_norm_matches_the_composed_op_and_its_gradient() {
        let w = random(&[24], 1);
        agrees(
            &random(&[3, 5, 24], 2),
            |x| rms_norm(x, &w, 1e-5).unwrap(),
            |x| {
                let var = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-5).unwrap();
                x.broadcast_mul(&var.sqrt().unwrap().recip().unwrap())
                    .unwrap()
                    .broadcast_mul(&w)
                    .unwrap()
            },
        );
    }

    #[test]
    fn rope_matches_the_composed_op_and_its_gradient() {
        let angles = random(&[2, 1, 5, 4], 3);
        let angles = Tensor::cat(&[&angles, &angles], D::Minus1).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        // probe's composed `Rope::apply`: `x * cos + rotate_half(x) * sin`.
        let composed = |x: &Tensor| {
            let half = x.dim(D::Minus1).unwrap() / 2;
            let (x1, x2) = (
                x.narrow(D::Minus1, 0, half).unwrap(),
                x.narrow(D::Minus1, half, half).unwrap(),
            );
            let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
            (x.broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap()
        };
        agrees(&random(&[2, 3, 5, 8], 4), |x| rope(x, &cos, &sin).unwrap(), composed);
    }

    #[test]
    fn masked_softmax_matches_the_composed_op_and_its_gradient() {
        // A causal mask over one batch row and a padding mask per batch row both broadcast.
        let causal: Vec<f32> = (0..5 * 5)
            .map(|k| if k % 5 <= k / 5 { 0.0 } else { f32::MIN })
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, 5, 5), &Device::Cpu).unwrap();
        let padding = Tensor::new(&[0f32, 0., 0., f32::MIN, f32::MIN, 0., 0., 0., 0., 0.], &Device::Cpu)
            .unwrap()
            .reshape((2, 1, 1, 5))
            .unwrap();
        for mask in [None, Some(&causal), Some(&padding)] {
            agrees(
                &random(&[2, 3, 5, 5], 5),
                |x| masked_softmax(x, 0.125, mask).unwrap(),
                |x| {
                    let z = (x * 0.125).unwrap();
                    let z = match mask {
                        Some(m) => z.broadcast_add(m).unwrap(),
                        None => z,
                    };
                    candle_nn::ops::softmax(&z, D::Minus1).unwrap()
                },
            );
        }
    }

    #[test]
    fn swiglu_matches_the_composed_op_and_both_gradients() {
        let up = random(&[4, 6, 10], 6);
        agrees(
            &random(&[4, 6, 10], 7),
            |g| swiglu(g, &up).unwrap(),
            |g| (candle_nn::ops::silu(g).unwrap() * &up).unwrap(),
        );
        let gate = random(&[4, 6, 10], 8);
        agrees(
            &up,
            |u| swiglu(&gate, u).unwrap(),
            |u| (candle_nn::ops::silu(&gate).unwrap() * u).unwrap(),
        );
    }

    #[test]
    fn lora_linear_matches_the_composed_product_and_all_three_gradients() {
        let (w, a, b) = (random(&[12, 8], 10), random(&[3, 8], 11), random(&[12, 3], 12));
        let composed = |x: &Tensor, a: &Tensor, b: &Tensor| {
            (x.matmul(&w.t().unwrap()).unwrap()
                + x.matmul(&a.t().unwrap())
                    .unwrap()
                    .matmul(&(b.t().unwrap() * 2.0).unwrap())
                    .unwrap())
            .unwrap()
        };
        let x = random(&[5, 8], 13);
        agrees(
            &x,
            |x| lora_linear(x, &w, &a, &b, 2.0).unwrap(),
            |x| composed(x, &a, &b),
        );
        agrees(
            &a,
            |a| lora_linear(&x, &w, a, &b, 2.0).unwrap(),
            |a| composed(&x, a, &b),
        );
        agrees(
            &b,
            |b| lora_linear(&x, &w, &a, b, 2.0).unwrap(),
            |b| composed(&x, &a, b),
        );
    }

    #[test]
    fn cross_entropy_matches_candle_nn_and_its_gradient() {
        let targets = [3u32, 0, 9, 9, 1];
        let t = Tensor::new(&targets, &Device::Cpu).unwrap();
        agrees(
            &random(&[5, 10], 9),
            |x| cross_entropy(x, &targets).unwrap(),
            |x| candle_nn::loss::cross_entropy(x, &t).unwrap(),
        );
        assert!(cross_entropy(&random(&[5, 10], 9), &[1, 2, 3, 4, 10]).is_err());
        assert!(cross_entropy(&random(&[5, 10], 9), &[1, 2]).is_err());
    }
}

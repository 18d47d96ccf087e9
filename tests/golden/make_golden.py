"""Builds the tiny random checkpoints and HF transformers' reference outputs for the golden tests.

Run from the repo root with torch + transformers installed:
    python tests/golden/make_golden.py
Each checkpoint lands in tests/golden/<name>/ (config.json, model.safetensors, tokenizer.json)
with golden.safetensors beside it holding, for the token ids in TOKEN_IDS:
  - blocks.{i}.hook_resid_post  [T, d]  output of decoder layer i, read by a forward hook on
                                        model.layers[i] (what our hook point is defined to be)
  - hidden_states.{k}           [T, d]  HF's output_hidden_states[k]
  - logits                      [T, V]
  - steered_logits              [T, V]  logits with STEER_ALPHA * steer.safetensors' layers.{STEER_LAYER}
                                        added to model.layers[STEER_LAYER]'s output by a forward hook
  - steered_greedy              [N]     greedy continuation of TOKEN_IDS[:4] under that hook
                                        (full forward each step, no cache, EOS ignored)
HF convention, checked below: hidden_states[0] is the embedding output, hidden_states[i+1] the
output of layer i for i < L-1, and the last entry hidden_states[L] already has the final norm
applied (it is ln_final.hook_normalized, not blocks.{L-1}.hook_resid_post).
"""
import json
import os

import torch
from reference import run_keeping_layers
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN_IDS = [1, 5, 9, 2, 17, 33, 8, 60, 3, 44]
VOCAB = 64
STEER_LAYER = 1
STEER_ALPHA = 1.5
STEER_NEW_TOKENS = 8
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, max_position_embeddings=128, initializer_range=0.3,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)

CHECKPOINTS = {
    # Llama 2 style: grouped-query attention, untied embeddings, written in the 4.x layout.
    "llama_gqa": (LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0,
                              **COMMON), torch.float32, "4.x"),
    # Llama 3.1 style: llama3 rope scaling, tied embeddings, explicit head_dim != hidden/heads.
    "llama3_tied": (LlamaConfig(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0,
                                head_dim=16,
                                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                **COMMON), torch.float32, "4.x"),
    # Qwen2: q/k/v biases, multi-query attention, 5.x layout.
    "qwen2_bias": (Qwen2Config(num_key_value_heads=1, tie_word_embeddings=False, rope_theta=1000000.0,
                               **COMMON), torch.float32, "5.x"),
    # Mistral stored in bf16, with a sliding window shorter than the sequence.
    "mistral_bf16": (MistralConfig(num_key_value_heads=2, tie_word_embeddings=False, sliding_window=4,
                                   rope_theta=10000.0, **COMMON), torch.bfloat16, "5.x"),
}


def make_tokenizer():
    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def to_4x_layout(path):
    """Rewrites a 5.x config.json the way transformers 4.x wrote it (top-level rope keys)."""
    with open(path) as f:
        cfg = json.load(f)
    params = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = params.pop("rope_theta", 10000.0)
    cfg["rope_scaling"] = params if params.get("rope_type", "default") != "default" else None
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def perturb(model):
    """Random norm weights and biases, so a wrong norm or a dropped bias shows up."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))


def steered_reference(ref, config, out):
    """The standard way to steer in PyTorch: a forward hook adding alpha * v to a decoder
    layer's output. Saves the vector as a bare control-vector file (layers.{i} only)."""
    vector = torch.randn(config.hidden_size) * 2.0
    save_file({f"layers.{STEER_LAYER}": vector}, os.path.join(out, "steer.safetensors"))

    def add(_module, _inputs, output):
        if isinstance(output, tuple):
            return (output[0] + STEER_ALPHA * vector,) + tuple(output[1:])
        return output + STEER_ALPHA * vector

    handle = ref.model.layers[STEER_LAYER].register_forward_hook(add)
    with torch.no_grad():
        logits = ref(torch.tensor([TOKEN_IDS])).logits[0]
        ids = list(TOKEN_IDS[:4])
        for _ in range(STEER_NEW_TOKENS):
            ids.append(int(ref(torch.tensor([ids])).logits[0, -1].argmax()))
    handle.remove()
    return {"steered_logits": logits, "steered_greedy": torch.tensor(ids[4:], dtype=torch.int64)}


def main():
    for seed, (name, (config, dtype, layout)) in enumerate(CHECKPOINTS.items()):
        torch.manual_seed(seed)
        out = os.path.join(HERE, name)
        os.makedirs(out, exist_ok=True)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").to(dtype)
        perturb(model)
        model.save_pretrained(out, safe_serialization=True)
        make_tokenizer().save(os.path.join(out, "tokenizer.json"))
        if layout == "4.x":
            to_4x_layout(os.path.join(out, "config.json"))

        # The reference runs in f32 on the stored weights (bf16 upcasts exactly).
        ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        layer_outputs, result = run_keeping_layers(ref, ref.model.layers, TOKEN_IDS, output_hidden_states=True)
        n = config.num_hidden_layers
        tensors = {f"blocks.{i}.hook_resid_post": layer_outputs[i] for i in range(n)}
        tensors.update({f"hidden_states.{k}": hs[0] for k, hs in enumerate(result.hidden_states)})
        tensors["logits"] = result.logits[0]
        tensors["token_ids"] = torch.tensor(TOKEN_IDS, dtype=torch.int64)
        # The convention the Rust test documents: the last hidden state is post-norm.
        assert torch.allclose(result.hidden_states[n - 1][0], layer_outputs[n - 2])
        assert torch.allclose(result.hidden_states[n][0], ref.model.norm(layer_outputs[n - 1]))
        tensors.update(steered_reference(ref, config, out))
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "golden.safetensors"))
        print(f"{name}: {sum(p.numel() for p in model.parameters())} params, {dtype}, {layout} config")


if __name__ == "__main__":
    main()

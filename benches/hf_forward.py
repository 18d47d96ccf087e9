"""HF transformers on the shapes benches/forward.rs and benches/decode.rs use: a random
110M-class Llama (12 x 768, MLP 2048, vocab 32000), eager attention, torch threads = cores.
Prints forward throughput (batch 8 x 128) and greedy KV-cached decode (48-token prompt + 64
new tokens, batch 1), in f32 and with bf16 weights and activations (torch's bf16 GEMMs use
the CPU's AVX512-BF16 or AMX units where it has them).
Run: python benches/hf_forward.py"""
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12)
base = LlamaForCausalLM(cfg).eval()


def median(f, runs=5):
    f()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        samples.append(time.perf_counter() - t)
    return sorted(samples)[runs // 2]


print(f"HF transformers, torch {torch.__version__}, {sum(p.numel() for p in base.parameters())/1e6:.0f}M params, "
      f"{torch.get_num_threads()} threads")
ids = torch.randint(0, 32000, (8, 128))
prompt = torch.randint(0, 32000, (1, 48))
for dtype in (torch.float32, torch.bfloat16):
    model = base.to(dtype)
    with torch.no_grad():
        forward = median(lambda: model(ids, logits_to_keep=1))
        decode = median(lambda: model.generate(prompt, max_new_tokens=64, min_new_tokens=64, do_sample=False,
                                               pad_token_id=0))
    print(f"{str(dtype):>16}: forward {8*128/forward:7.0f} tokens/s ({forward*1e3:.1f} ms per batch), "
          f"greedy decode {64/decode:6.1f} tokens/s")

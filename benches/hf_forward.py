"""HF transformers' forward throughput on the shape benches/forward.rs uses (random 110M Llama,
batch 8 x 128, eager attention, f32, torch threads = cores). Run: python benches/hf_forward.py"""
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

torch.set_num_threads(os.cpu_count())
cfg = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12)
model = LlamaForCausalLM(cfg).eval()
ids = torch.randint(0, 32000, (8, 128))
with torch.no_grad():
    model(ids, logits_to_keep=1)
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        model(ids, logits_to_keep=1)
        samples.append(time.perf_counter() - t)
secs = sorted(samples)[2]
print(f"HF transformers {torch.__version__}: {sum(p.numel() for p in model.parameters())/1e6:.0f}M params, "
      f"{8*128/secs:.0f} tokens/s ({secs*1e3:.1f} ms per batch, {torch.get_num_threads()} threads)")

"""HF transformers' batched greedy `generate` on the job the batched case of benches/decode.rs
runs: 32 prompts of 48 tokens (the same ids, no padding), 64 new tokens each
(min_new_tokens=64), greedy, KV-cached, eager attention, torch threads = cores. Prints
tokens/s over all rows (32 x 64 / seconds), median of 3 after a warm-up, in f32 and bf16.

    python benches/hf_decode_batched.py [DIR]

DIR: the seeded checkpoints `python benches/capture_vs_hf.py --make DIR` writes (DIR/f32 and
DIR/bf16), which `cargo bench --bench decode -- --batched DIR` loads too; without it, a
random 110M-class Llama (12 x 768, MLP 2048, vocab 32000) made here. With
BATCHED_TOKENS_OUT=FILE, each row's new tokens go there as JSON lines.
"""
import json
import os
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROWS, PROMPT, NEW, RUNS = 32, 48, 64, 3
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)


def models():
    if len(sys.argv) > 1:
        for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
            path = os.path.join(sys.argv[1], name)
            yield name, LlamaForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager").eval()
    else:
        cfg = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                          num_attention_heads=12, num_key_value_heads=12, attn_implementation="eager")
        base = LlamaForCausalLM(cfg).eval()
        yield "f32", base
        yield "bf16", base.to(torch.bfloat16)


vocab = 32000
ids = torch.tensor([[(i * 131 + 7 + r * 977) % vocab for i in range(PROMPT)] for r in range(ROWS)])
mask = torch.ones_like(ids)
print(f"HF transformers, torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"batched greedy decode, {ROWS} rows x ({PROMPT}-token prompt + {NEW} new tokens), median of {RUNS}")
lines = []
for name, model in models():
    def run():
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, max_new_tokens=NEW, min_new_tokens=NEW,
                                  do_sample=False, pad_token_id=0)
    out = run()
    assert out.shape == (ROWS, PROMPT + NEW), out.shape
    lines.append(json.dumps({"case": name, "rows": out[:, PROMPT:].tolist()}))
    samples = []
    for _ in range(RUNS):
        t = time.perf_counter()
        run()
        samples.append(ROWS * NEW / (time.perf_counter() - t))
    print(f"{name:>5}: {sorted(samples)[RUNS // 2]:8.1f} tokens/s   runs "
          + " ".join(f"{s:.1f}" for s in samples), flush=True)
if os.environ.get("BATCHED_TOKENS_OUT"):
    with open(os.environ["BATCHED_TOKENS_OUT"], "w") as f:
        f.write("\n".join(lines) + "\n")

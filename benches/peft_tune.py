"""PyTorch + peft on the job `alens tune` runs: LoRA r 16 / alpha 32 on q,k,v,o,gate,up,down,
batch 8, f32, loss on the correction + EOS only, the same records and Aligner template.

    python benches/peft_tune.py HF_DIR DATA.jsonl [STEPS]

HF_DIR: the base as an HF directory (`alens export-hf --model smollm2-135m-instruct --out DIR`).
Prints tokens/s (prompt + target tokens per second, as alens counts them), torch threads = cores.
"""
import json
import os
import random
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from aligner_template import TEMPLATE  # noqa: E402
base, data = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 8
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=[
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
eos = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else model.config.eos_token_id[0]
records = [json.loads(l) for l in open(data)]
examples = []
for r in records:
    prompt = tok(TEMPLATE.format(question=r["question"], answer=r["answer"]))["input_ids"]
    target = tok(" " + r["correction"], add_special_tokens=False)["input_ids"] + [eos]
    examples.append((prompt + target, len(prompt)))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.0)
rng = random.Random(0)
tokens, start = 0, None
all_tokens, all_start = 0, time.perf_counter()
for step in range(steps + 1):
    batch = [examples[rng.randrange(len(examples))] for _ in range(8)]
    width = max(len(ids) for ids, _ in batch)
    ids = torch.tensor([ids + [eos] * (width - len(ids)) for ids, _ in batch])
    labels = torch.tensor([[-100] * (t - 0) + ids_[t:] + [-100] * (width - len(ids_)) for ids_, t in batch])
    labels[:, :] = torch.where(torch.arange(width)[None] < torch.tensor([t for _, t in batch])[:, None], -100, labels)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    all_tokens += sum(len(i) for i, _ in batch)
    if step == 0:
        start = time.perf_counter()  # the first step warms up
    else:
        tokens += sum(len(i) for i, _ in batch)
end = time.perf_counter()
secs = end - start
# `alens tune` reports its rate over every step, the first (warm-up) one included.
print(f"PyTorch {torch.__version__} + peft: {steps} steps, {tokens / secs:.0f} tok/s after the warm-up step, "
      f"{all_tokens / (end - all_start):.0f} tok/s counting it as alens does ({secs / steps:.2f} s/step, "
      f"{torch.get_num_threads()} threads)")

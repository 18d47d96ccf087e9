"""A PEFT LoRA adapter on tests/golden/llama_gqa and what HF + peft compute with it.

Run from the repo root with torch, transformers and peft installed (after make_golden.py):
    python tests/golden/make_lora_golden.py
Writes tests/golden/lora_llama_gqa/: adapter_config.json and adapter_model.safetensors exactly as
peft's save_pretrained writes them (base_model_name_or_path rewritten to the relative
"../llama_gqa"), and golden.safetensors with, for TOKEN_IDS, the adapted model's
blocks.{i}.hook_resid_post (forward hook on model.layers[i]) and logits. The LoRA factors are
random (init_lora_weights=False), so B is not zero and the adapter changes every output.
"""
import json
import os

import torch
from reference import run_keeping_layers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN_IDS = [1, 5, 9, 2, 17, 33, 8, 60, 3, 44]
OUT = os.path.join(HERE, "lora_llama_gqa")

torch.manual_seed(0)
base = AutoModelForCausalLM.from_pretrained(os.path.join(HERE, "llama_gqa"), dtype=torch.float32).eval()
config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, lora_dropout=0.0,
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
model = get_peft_model(base, config).eval()
model.save_pretrained(OUT)
cfg_path = os.path.join(OUT, "adapter_config.json")
with open(cfg_path) as f:
    cfg = json.load(f)
cfg["base_model_name_or_path"] = "../llama_gqa"
with open(cfg_path, "w") as f:
    json.dump(cfg, f, indent=2, sort_keys=True)
for extra in ("README.md",):
    if os.path.exists(os.path.join(OUT, extra)):
        os.remove(os.path.join(OUT, extra))

layers = model.base_model.model.model.layers
kept, result = run_keeping_layers(model, layers, TOKEN_IDS)
golden = {f"blocks.{i}.hook_resid_post": kept[i].contiguous() for i in range(len(layers))}
golden["logits"] = result.logits[0].contiguous()
golden["token_ids"] = torch.tensor(TOKEN_IDS, dtype=torch.int64)
save_file(golden, os.path.join(OUT, "golden.safetensors"))
print("wrote", OUT, sorted(os.listdir(OUT)))

"""Checks that HF transformers loads the mini-aligner and gives the same greedy output as alens.

Run from the repo root after `cargo build --release`:
    python tests/golden/check_mini_hf.py [MODEL_DIR] [N]
For the first N records of the shipped test split it runs HF's greedy generate and
`alens generate --json` and compares the generated token ids.
"""
import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

TEMPLATE = ("BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more "
            "helpful and harmless: {question} | {answer} ASSISTANT:")

model_dir = sys.argv[1] if len(sys.argv) > 1 else "notebooks-data/mini-aligner"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
records = [json.loads(line) for line in open("notebooks-data/corpus/test.jsonl")][:n]
same = 0
for r in records:
    ids = tok(TEMPLATE.format(**r), return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=64, do_sample=False, eos_token_id=2, pad_token_id=0)
    hf_ids = out[0, ids.shape[1]:].tolist()
    if hf_ids and hf_ids[-1] == 2:
        hf_ids = hf_ids[:-1]
    ours = subprocess.run(["target/release/alens", "generate", "--model", model_dir, "--question", r["question"],
                           "--answer", r["answer"], "--json"], capture_output=True, text=True, check=True)
    our_ids = json.loads(ours.stdout.strip().splitlines()[-1])["token_ids"]
    same += our_ids == hf_ids
    if our_ids != hf_ids:
        print("DIFFERENT:", r, tok.decode(hf_ids), "|", json.loads(ours.stdout.strip().splitlines()[-1])["output"])
print(f"{same}/{len(records)} greedy outputs identical between HF transformers and alens")

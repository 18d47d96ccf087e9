"""HF + peft load an adapter alens wrote, and compute what alens computes with it.

    python tests/golden/check_peft_loads_ours.py ADAPTER_DIR [BASE] [--records FILE.jsonl --n 50]

BASE defaults to the adapter's base_model_name_or_path (an HF directory; export a GGUF base
first with `alens export-hf`). Compares the logits of `PeftModel.from_pretrained(base, ADAPTER)`
with `alens capture --model ADAPTER --points logits` on fixed token ids (max abs error relative
to the largest logit), and with --records, HF's greedy outputs with `alens eval --outputs` on
the first N records of the file.
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

TEMPLATE = ("BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more "
            "helpful and harmless: {question} | {answer} ASSISTANT:")

ap = argparse.ArgumentParser()
ap.add_argument("adapter")
ap.add_argument("base", nargs="?")
ap.add_argument("--records")
ap.add_argument("--n", type=int, default=50)
ap.add_argument("--alens", default="target/release/alens")
args = ap.parse_args()
cfg = json.load(open(os.path.join(args.adapter, "adapter_config.json")))
base_path = args.base or cfg["base_model_name_or_path"]
base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
model = PeftModel.from_pretrained(base, args.adapter).eval()
ids = [1, 5, 9, 2, 17, 33, 8]
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "x.safetensors")
    subprocess.run([args.alens, "capture", "--model", args.adapter, "--token-ids", ",".join(map(str, ids)),
                    "--points", "logits", "--out", out], check=True, capture_output=True)
    ours = load_file(out)["logits"]
with torch.no_grad():
    theirs = model(torch.tensor([ids])).logits[0].numpy()
rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
print(f"logits: max abs error {np.abs(ours - theirs).max():.3g} = {rel:.3g} of the largest; argmax equal: {(ours.argmax(-1) == theirs.argmax(-1)).all()}")

if args.records:
    tok = AutoTokenizer.from_pretrained(base_path)
    records = [json.loads(l) for l in open(args.records)][: args.n]
    eos = model.generation_config.eos_token_id
    same = 0
    with tempfile.TemporaryDirectory() as tmp:
        data, outputs = os.path.join(tmp, "d.jsonl"), os.path.join(tmp, "o.jsonl")
        open(data, "w").writelines(json.dumps(r) + "\n" for r in records)
        subprocess.run([args.alens, "eval", "--model", args.adapter, "--data", data, "--outputs", outputs],
                       check=True, capture_output=True)
        alens_out = [json.loads(l)["output"] for l in open(outputs)]
    for r, mine in zip(records, alens_out):
        prompt = tok(TEMPLATE.format(question=r["question"], answer=r["answer"]), return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**prompt, max_new_tokens=64, do_sample=False, eos_token_id=eos)
        text = tok.decode(gen[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        same += text == mine
    print(f"greedy outputs equal on {same}/{len(records)} records")

"""HF transformers beside `alens capture` on a GGUF: the same records through the Aligner
template, every resid_post at the last position, batches of 8 sorted by length, f32.

    python benches/hf_gguf_capture.py GGUF [DATA.jsonl] [N]

Prints HF's load time and capture tokens/s (torch threads = cores), then runs
`target/release/alens capture` on the same job and prints its figures and the ratio. The
whole-process time of each is printed too (HF's includes importing torch + transformers).
"""
import json
import os
import subprocess
import sys
import time

t_process = time.perf_counter()
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from aligner_template import TEMPLATE  # noqa: E402
gguf = os.path.abspath(sys.argv[1])
data = sys.argv[2] if len(sys.argv) > 2 else "notebooks-data/corpus/test.jsonl"
n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
torch.set_num_threads(os.cpu_count())

t = time.perf_counter()
folder, name = os.path.split(gguf)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
load = time.perf_counter() - t

records = [json.loads(line) for line in open(data)][:n]
seqs = [tok(TEMPLATE.format(question=r["question"], answer=r["answer"]))["input_ids"] for r in records]
order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
kept = {}
hooks = [layer.register_forward_hook(lambda m, i, o, k=k: kept.__setitem__(k, o[0] if isinstance(o, tuple) else o))
         for k, layer in enumerate(model.model.layers)]
t = time.perf_counter()
with torch.no_grad():
    for start in range(0, len(order), 8):
        batch = [seqs[i] for i in order[start:start + 8]]
        width = max(map(len, batch))
        ids = torch.tensor([[0] * (width - len(s)) + s for s in batch])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in batch])
        model(ids, attention_mask=mask, logits_to_keep=1)
        rows = [kept[k][:, -1].clone() for k in range(len(model.model.layers))]
secs = time.perf_counter() - t
tokens = sum(map(len, seqs))
hf_tps = tokens / secs
print(f"HF {torch.__version__}/{__import__('transformers').__version__}: load {load:.2f}s, capture {tokens} tokens "
      f"in {secs:.2f}s = {hf_tps:.0f} tok/s, whole process {time.perf_counter() - t_process:.1f}s")

tmp = "/tmp/alens_bench.jsonl"
with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
t = time.perf_counter()
out = subprocess.run(["target/release/alens", "capture", "--model", gguf, "--data", tmp, "--positions", "last",
                      "--out", "/tmp/alens_bench.safetensors"], capture_output=True, text=True, check=True).stdout
whole = time.perf_counter() - t
alens_tps = float(out.split("(")[-1].split(" tokens/s")[0])
print(f"alens: {out.strip()}; whole process {whole:.1f}s")
print(f"capture tok/s ratio alens/HF = {alens_tps / hf_tps:.2f}x")

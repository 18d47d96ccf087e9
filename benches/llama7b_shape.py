"""A Llama-2-7B-shape checkpoint in bf16, generated here, loaded and captured by alens.

    python benches/llama7b_shape.py DIR [--keep]

Writes DIR (once; 13.5 GB): config.json of Llama-2-7B (32 layers, d 4096, 32 heads, FFN
11008, vocab 32000), bf16 weights drawn from N(0, 0.02) under a fixed seed in 2 GB
safetensors shards with an HF index, and the mini-aligner's tokenizer.json. Then runs
`target/release/alens capture` on a 64-token prompt (every resid_post) with
--bf16-compute native and exact, and prints wall time, the load and capture split alens
reports, and peak RSS (the child's own maximum resident set size, from wait4) against
the 24 GiB this machine has. Not part of CI: it needs 14 GB of disk and a few minutes.
"""
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
          "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
          "num_key_value_heads": 32, "vocab_size": 32000, "rms_norm_eps": 1e-5,
          "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": False,
          "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
SHARD_BYTES = 2 << 30


def tensors():
    d, ffn, vocab = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]
    yield "model.embed_tokens.weight", (vocab, d)
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            yield p + f"self_attn.{name}.weight", (d, d)
        yield p + "mlp.gate_proj.weight", (ffn, d)
        yield p + "mlp.up_proj.weight", (ffn, d)
        yield p + "mlp.down_proj.weight", (d, ffn)
        yield p + "input_layernorm.weight", (d,)
        yield p + "post_attention_layernorm.weight", (d,)
    yield "model.norm.weight", (d,)
    yield "lm_head.weight", (vocab, d)


def write(out):
    import torch
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    shard, size, index, count = {}, 0, {}, 0

    def flush():
        nonlocal shard, size, count
        name = f"model-{count:05d}.safetensors"
        save_file(shard, os.path.join(out, name), metadata={"format": "pt"})
        index.update({k: name for k in shard})
        shard, size, count = {}, 0, count + 1

    t = time.perf_counter()
    total_bytes = 0
    for name, shape in tensors():
        if len(shape) == 1:
            shard[name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            shard[name] = torch.empty(shape, dtype=torch.float32).normal_(0, 0.02, generator=generator).to(torch.bfloat16)
        size += shard[name].numel() * 2
        total_bytes += shard[name].numel() * 2
        if size >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total_bytes}, "weight_map": index}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    subprocess.run(["cp", os.path.join(REPO, "notebooks-data/mini-aligner/tokenizer.json"), out], check=True)
    print(f"wrote {out} in {time.perf_counter() - t:.0f} s")


def capture(model, compute):
    out = f"/tmp/alens-7b-{compute}.safetensors"
    if os.path.exists(out):
        os.remove(out)
    ids = ",".join(str(1 + (i * 7919) % 31999) for i in range(64))
    cmd = [os.path.join(REPO, "target/release/alens"), "capture", "--model", model, "--token-ids", ids,
           "--points", "resid_post", "--bf16-compute", compute, "--out", out]
    t = time.perf_counter()
    with open(out + ".log", "w+") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the others'
        wall = time.perf_counter() - t
        log.seek(0)
        text = log.read()
    if status != 0:
        sys.exit(text)
    peak = usage.ru_maxrss / 2**20  # KiB -> GiB
    print(f"{compute:>6}: whole process {wall:6.1f} s, peak RSS {peak:5.1f} GiB | {text.strip().splitlines()[-1]}")
    os.remove(out)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    if not os.path.exists(os.path.join(out, "model.safetensors.index.json")):
        write(out)
    for compute in ["native", "exact"]:
        capture(out, compute)


if __name__ == "__main__":
    main()

"""Whole-process capture, alens against HF transformers, f32 and bf16, with results compared.

    python benches/capture_vs_hf.py [--make DIR] [--models DIR ...] [--data F] [--n 128] [--reps 3] [--alens BIN ...]

The job: N Aligner-template records (default: the first 128 of
notebooks-data/aligner-135m/test.jsonl), every layer's resid_post at the last prompt
position, batches of 8 sorted by length. Each run is a fresh process, timed from launch to
exit, so HF's figure includes importing torch + transformers and alens's includes its
start-up; the two alternate (HF first on odd reps, alens first on even ones) so drift in the
machine's speed falls on both. Prints the median of --reps runs each, the ratio, and how far
alens's activations are from HF's (max |diff| over max |HF|, worst layer).

--make DIR writes the default models first: a seeded random Llama of the 110M class
(12 layers, d 768, 12 heads, FFN 2048, vocab 32000; HF's own initialisation under
torch.manual_seed(0)) as DIR/f32 and, the same weights rounded, DIR/bf16, each with the
mini-aligner's tokenizer.json. Without --models, the script measures those two.

Needs torch, transformers, numpy and safetensors; `target/release/alens` must be built (or
--alens names copies, so a rebuild of the tree during a long run cannot change what is timed;
several binaries, such as a build before and after a change, take turns with HF in each rep).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from aligner_template import TEMPLATE  # noqa: E402
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hf_worker(model_dir, data, n, out):
    """The HF job, run as its own process by the driver."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(os.cpu_count())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    records = [json.loads(line) for line in open(data)][:n]
    seqs = [tok(TEMPLATE.format(question=r["question"], answer=r["answer"]))["input_ids"] for r in records]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    layers = len(model.model.layers)
    kept = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: kept.__setitem__(k, o[0] if isinstance(o, tuple) else o))
             for k, layer in enumerate(model.model.layers)]
    result = np.zeros((layers, len(seqs), model.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), 8):
            batch = order[start:start + 8]
            width = max(len(seqs[i]) for i in batch)
            # Left padding, so the last column is every row's last token; positions count
            # real tokens only, as an unpadded forward would.
            ids = torch.tensor([[0] * (width - len(seqs[i])) + seqs[i] for i in batch])
            mask = torch.tensor([[0] * (width - len(seqs[i])) + [1] * len(seqs[i]) for i in batch])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            model(ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            for k in range(layers):
                result[k, batch] = kept[k][:, -1].float().numpy()
    for h in hooks:
        h.remove()
    np.save(out, result)
    print(sum(map(len, seqs)))


def make_models(out):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                         num_key_value_heads=12, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-6)
    model = LlamaForCausalLM(config).eval()
    tokenizer = os.path.join(REPO, "notebooks-data/mini-aligner/tokenizer.json")
    for name, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
        path = os.path.join(out, name)
        model.to(dtype).save_pretrained(path, safe_serialization=True)
        shutil.copy(tokenizer, path)
    return [os.path.join(out, "f32"), os.path.join(out, "bf16")]


def timed(cmd):
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return time.perf_counter() - t, proc.stdout


def compare(model_dir, args, scratch):
    import numpy as np
    from safetensors.numpy import load_file

    records = os.path.join(scratch, "records.jsonl")
    with open(args.data) as src, open(records, "w") as dst:
        dst.writelines(line for _, line in zip(range(args.n), src))
    hf_out, alens_out = os.path.join(scratch, "hf.npy"), os.path.join(scratch, "alens.safetensors")
    hf_cmd = [sys.executable, os.path.abspath(__file__), "--hf-worker", model_dir, records, str(args.n), hf_out]
    def alens_cmd(binary):
        return [binary, "capture", "--model", model_dir, "--data", records, "--positions", "last",
                "--points", "resid_post", "--batch-size", "8", "--out", alens_out]
    runs = [("hf", hf_cmd)] + [(binary, alens_cmd(binary)) for binary in args.alens]
    times = {name: [] for name, _ in runs}
    outputs = {}
    for rep in range(args.reps):
        for name, cmd in runs if rep % 2 == 0 else runs[::-1]:
            if name != "hf" and os.path.exists(alens_out):
                os.remove(alens_out)  # alens refuses to overwrite a file it did not write
            secs, stdout = timed(cmd)
            times[name].append(secs)
            if name == "hf":
                tokens = int(stdout.split()[-1])
            else:
                outputs[name] = load_file(alens_out)
    hf_acts = np.load(hf_out)
    hf_s = statistics.median(times["hf"])
    label = os.path.basename(os.path.normpath(model_dir))
    for binary in args.alens:
        ours = outputs[binary]
        worst = max(float(np.abs(ours[f"blocks.{k}.hook_resid_post"] - hf_acts[k]).max() / np.abs(hf_acts[k]).max())
                    for k in range(hf_acts.shape[0]))
        alens_s = statistics.median(times[binary])
        name = label if len(args.alens) == 1 else f"{label} {binary}"
        print(f"{name:>6}: {args.n} records, {tokens} tokens | HF {hf_s:6.2f} s | alens {alens_s:6.2f} s | "
              f"alens is {hf_s / alens_s:.2f}x HF | worst layer max|diff|/max|HF| {worst:.1e}")
    print(f"        each run, s: " + "; ".join(f"{name}: {', '.join(f'{t:.1f}' for t in ts)}"
                                              for name, ts in times.items()), flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--hf-worker":
        hf_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make", help="write the random 110M models into this directory first")
    parser.add_argument("--models", nargs="*", help="HF directories to measure (default: those --make writes)")
    parser.add_argument("--data", default=os.path.join(REPO, "notebooks-data/aligner-135m/test.jsonl"))
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--alens", nargs="+", default=[os.path.join(REPO, "target/release/alens")],
                        help="the alens binaries to time (default: target/release/alens)")
    args = parser.parse_args()
    models = args.models or []
    if args.make:
        models = models or make_models(args.make)
    if not models:
        parser.error("give --make DIR or --models DIR ...")
    import tempfile
    import torch
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} threads; "
          f"median of {args.reps} whole-process runs each")
    with tempfile.TemporaryDirectory() as scratch:
        for model_dir in models:
            compare(model_dir, args, scratch)


if __name__ == "__main__":
    main()

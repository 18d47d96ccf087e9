"""`run_with_cache` from Python against the same capture inside the CLI, and a hook's cost.

    python benches/python_cache.py [--model aligner-135m] [--n 128] [--reps 3]

The job: the first N records of the model's test set (Aligner template), every layer's
resid_post at the last prompt position, batches of 8: `alens capture --data F --positions
last` timed inside the CLI (its "captured ... in S s" line, the model already loaded) and
`Model.run_with_cache(records, names=..., positions="last")` timed in this process after
the model is loaded. The two alternate, medians of --reps. Then the cost of a Python hook:
one forward with an identity hook at every resid_post against the same forward with none,
divided by the number of hook calls. HF transformers + output_hidden_states runs beside them
where torch is installed. Needs the package (pip install ./python) and target/release/alens.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import alens

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_capture_seconds(model, data):
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([os.path.join(REPO, "target/release/alens"), "capture", "--model", model, "--data", data,
                              "--points", "resid_post", "--positions", "last", "--out", os.path.join(tmp, "a.safetensors")],
                             cwd=REPO, capture_output=True, text=True, check=True)
    found = re.search(r"in ([0-9.]+) ?s", out.stdout + out.stderr)
    if not found:
        sys.exit(f"no timing in alens capture's output: {out.stdout}{out.stderr}")
    return float(found.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="aligner-135m")
    ap.add_argument("--data", default=None)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    data = args.data or os.path.join(REPO, "notebooks-data/aligner-135m/test.jsonl" if args.model == "aligner-135m"
                                     else "notebooks-data/corpus/test.jsonl")
    records = [json.loads(line) for line in open(data) if line.strip()][: args.n]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        subset = f.name
    m = alens.Model(args.model)
    names = [f"blocks.{l}.hook_resid_post" for l in range(m.config["num_hidden_layers"])]
    cli, py = [], []
    for rep in range(args.reps):
        order = [0, 1] if rep % 2 == 0 else [1, 0]
        for which in order:
            if which == 0:
                cli.append(cli_capture_seconds(args.model, subset))
            else:
                started = time.perf_counter()
                m.run_with_cache(records, names=names, positions="last", return_logits=False)
                py.append(time.perf_counter() - started)
    os.unlink(subset)
    c, p = statistics.median(cli), statistics.median(py)
    print(f"{args.n} records, every resid_post at the last position, medians of {args.reps}:")
    print(f"  alens capture (in-CLI time)   {c:8.3f} s")
    print(f"  Model.run_with_cache          {p:8.3f} s   ({p / c:.2f}x the CLI's time)")

    prompt = records[0]
    plain, hooked = [], []
    for _ in range(max(args.reps, 5)):
        started = time.perf_counter()
        m.run_with_hooks(prompt, fwd_hooks=[])
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        m.run_with_hooks(prompt, fwd_hooks=[(n, lambda a, name: None) for n in names])
        hooked.append(time.perf_counter() - started)
    per_call = (statistics.median(hooked) - statistics.median(plain)) / len(names)
    print(f"  a Python hook (identity, resid_post, one prompt): {per_call * 1e6:.0f} us per call")

    try:
        import torch  # noqa: F401
    except ImportError:
        print("  HF transformers + output_hidden_states: not measured (torch is not installed; pip install -r requirements-dev.txt)")


if __name__ == "__main__":
    main()

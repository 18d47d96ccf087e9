"""`alens tune` (composed and --fused) against PyTorch + peft on the same job, alternated, with
the ratios measured in this run.

    python benches/tune_vs_peft.py HF_DIR DATA.jsonl [--steps 12] [--rounds 2] [--alens BIN]

HF_DIR: the base as an HF directory (`alens export-hf --model smollm2-135m-instruct --out DIR`);
`alens tune` reads the same base from its cache (`--base smollm2-135m-instruct`). Each round
runs the three jobs one after the other (alens composed, alens fused, peft), so slow spells
of a shared machine fall on all three. Rates count every step, the first included, as
`alens tune` reports them (`peft_tune.py` prints both).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("hf_dir")
parser.add_argument("data")
parser.add_argument("--steps", type=int, default=12)
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--base", default="smollm2-135m-instruct", help="alens's --base for the same model")
parser.add_argument("--alens", default=os.path.join(here, "..", "target", "release", "alens"))
args = parser.parse_args()


def alens(fused):
    out = tempfile.mkdtemp(prefix="alens-tune-bench-")
    shutil.rmtree(out)
    cmd = [args.alens, "tune", "--base", args.base, "--data", args.data, "--steps", str(args.steps), "--out", out, "--seed", "0"]
    run = subprocess.run(cmd + (["--fused"] if fused else []), capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    found = re.search(r"([0-9.]+) tok/s over", run.stdout + run.stderr)
    if run.returncode != 0 or not found:
        sys.exit(f"alens tune failed:\n{run.stderr[-2000:]}")
    return float(found.group(1))


def peft():
    run = subprocess.run([sys.executable, os.path.join(here, "peft_tune.py"), args.hf_dir, args.data, str(args.steps)],
                         capture_output=True, text=True, cwd=here)
    found = re.search(r"([0-9.]+) tok/s counting it as alens does", run.stdout)
    if run.returncode != 0 or not found:
        sys.exit(f"peft_tune.py failed (is torch + peft installed?):\n{run.stderr[-2000:]}")
    return float(found.group(1))


rates = {"alens tune": [], "alens tune --fused": [], "PyTorch + peft": []}
for r in range(args.rounds):
    rates["alens tune"].append(alens(False))
    rates["alens tune --fused"].append(alens(True))
    rates["PyTorch + peft"].append(peft())
    print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} tok/s" for k, v in rates.items()), flush=True)
print(f"\n{args.steps} steps, batch 8, {os.cpu_count()} cores; ratio = each round's rate over that round's PyTorch + peft")
for name, values in rates.items():
    ratios = [v / p for v, p in zip(values, rates["PyTorch + peft"])]
    print(f"  {name:20s} {' / '.join(f'{v:.0f}' for v in values)} tok/s   "
          f"{' / '.join(f'{x:.2f}x' for x in ratios)} (median {statistics.median(ratios):.2f}x)")

"""Does the Aligner keep copying once it has started to copy?

For the correct cases (correction != answer) of a data set, feed the prompt plus the first K
tokens of the upstream answer as the start of the output, then decode greedily, and count
how often the output is the answer verbatim. A model whose copy mode is "sticky" (it
copies whatever the answer says once it is copying, as a pretrained LM's induction does)
scores high; a model that re-decides at every fact and fixes it silently scores low. A
steering vector can only turn a correct case into a verbatim copy if this is high, because
steering that flips the first token still leaves the rest of the output to the model.

Run from the repo root with HF transformers installed:
    python docs/aligner-135m-research/forced_copy.py [MODEL_DIR] [DATA.jsonl] [K] [N]
"""
import json
import sys
from collections import Counter

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

TEMPLATE = ("BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more "
            "helpful and harmless: {question} | {answer} ASSISTANT:")

model_dir = sys.argv[1] if len(sys.argv) > 1 else "notebooks-data/mini-aligner"
data = sys.argv[2] if len(sys.argv) > 2 else "notebooks-data/corpus/test.jsonl"
forced = int(sys.argv[3]) if len(sys.argv) > 3 else 1
n = int(sys.argv[4]) if len(sys.argv) > 4 else 90
tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
records = [json.loads(line) for line in open(data)]
correct_cases = [r for r in records if r["correction"] != r["answer"]][:n]

verbatim = Counter()
totals = Counter()
examples = []
for r in correct_cases:
    prompt = tok(TEMPLATE.format(**r), return_tensors="pt").input_ids
    # The output starts after "ASSISTANT:" with a space, as the mini-aligner was trained.
    answer = tok(" " + r["answer"], add_special_tokens=False).input_ids
    start = torch.cat([prompt, torch.tensor([answer[:forced]])], dim=1)
    with torch.no_grad():
        out = model.generate(start, max_new_tokens=64, do_sample=False, eos_token_id=2, pad_token_id=0)
    generated = out[0, prompt.shape[1]:].tolist()
    if generated and generated[-1] == 2:
        generated = generated[:-1]
    totals[r["category"]] += 1
    if generated == answer:
        verbatim[r["category"]] += 1
    elif len(examples) < 6:
        examples.append(f"  {r['answer']!r} -> {tok.decode(generated).strip()!r}")

for category in sorted(totals):
    print(f"{category:9} {verbatim[category]:3}/{totals[category]:3} verbatim after {forced} forced answer token(s)")
print(f"all       {sum(verbatim.values()):3}/{sum(totals.values()):3}")
print("examples of outputs that are not copies:")
print("\n".join(examples))

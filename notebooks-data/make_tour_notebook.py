import json
cells = []
def md(text): cells.append({"cell_type": "markdown", "metadata": {}, "source": text.strip("\n").splitlines(True)})
def code(text): cells.append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": text.strip("\n").splitlines(True)})
md("""
# A tour of `import alens`

The Aligner study from a notebook: load Aligner-135M, look at its activations, read the
copy-or-correct direction with LAT, scan a prompt with it, turn the knob, and patch one run's
residual stream into another's. Everything computes in Rust; what comes back is numpy.

Install once from the repository root: `pip install ./python`. Run this notebook from
`notebooks-data/` (or set `ALENS_NOTEBOOK_ROOT` to the repository). `ALENS_NOTEBOOK_MODEL`
picks another model (the tests run the tour on the fast `mini-aligner`).
""")
code("""
import json, os, pathlib
import numpy as np
import matplotlib
import matplotlib.pyplot as plt
import alens

ROOT = pathlib.Path(os.environ.get('ALENS_NOTEBOOK_ROOT', '..')).resolve()
MODEL = os.environ.get('ALENS_NOTEBOOK_MODEL', 'aligner-135m')
m = alens.Model(MODEL)
n_layers = m.config['num_hidden_layers']
m, n_layers, m.hook_points[:3]
""")
md("""
## The cache

`run_with_cache` takes strings, token ids or Aligner records (`{"question", "answer"}`, rendered
through the Aligner template) and keeps only the hook points asked for: here the residual
stream after every layer, at the last prompt token, where the model decides to copy or correct.
""")
code("""
records = [
    {'question': 'What is the capital of France?', 'answer': 'The capital of France is Paris.'},
    {'question': 'What is the capital of France?', 'answer': 'The capital of France is Rome.'},
]
logits, cache = m.run_with_cache(records, names=lambda name: name.endswith('hook_resid_post'), positions='last')
print(m.aligner_prompt(**records[1]))
logits.shape, cache['blocks.0.hook_resid_post'].shape, len(cache)
""")
md("""
## LAT: the copy-or-correct direction

The stimuli shipped beside the model are pairs of records that share a question: one whose
answer is good (copy) and one whose answer is bad (correct). `alens.lat` reads both at the
last prompt token and fits one reading vector per layer; a quarter of the pairs is held out
for the accuracy.
""")
code("""
stimuli_file = {'mini-aligner': 'stimuli/copy-correct.jsonl'}.get(MODEL, 'aligner-135m/copy-correct.jsonl')
pairs = [json.loads(line) for line in (ROOT / 'notebooks-data' / stimuli_file).read_text().splitlines() if line.strip()]
vecs = alens.lat(m, pairs, method='mean-diff', seed=0)
plt.figure(figsize=(6, 2.5))
plt.plot(vecs.layers, vecs.accuracy, marker='o')
plt.xlabel('layer'); plt.ylabel('held-out pair accuracy'); plt.ylim(0, 1.05); plt.show()
""")
md("""
## A scan

Each token's residual stream projected on each layer's direction, centred on the class
boundary and divided by the projection spread (the sidecar's `midpoint` and `scale`); the
colour is clipped at ±3 so that a few outlying positions do not wash out the rest.
""")
code("""
meta = vecs.metadata
_, cache = m.run_with_cache(records[1], names=[f'blocks.{l}.hook_resid_post' for l in vecs.layers])
units = vecs.vectors / np.linalg.norm(vecs.vectors, axis=1, keepdims=True)
scores = np.stack([
    (cache[f'blocks.{l}.hook_resid_post'][0] @ units[k] - meta['midpoint'][k]) / meta['scale'][k]
    for k, l in enumerate(vecs.layers)
], axis=1)
tokens = m.to_str_tokens([int(t) for t in cache.token_ids[0]])
shown = slice(-12, None)
plt.figure(figsize=(8, 4))
plt.imshow(np.clip(scores[shown], -3, 3), cmap='RdBu_r', vmin=-3, vmax=3, aspect='auto')
plt.yticks(range(len(tokens[shown])), tokens[shown]); plt.xlabel('layer')
plt.colorbar(label='(projection - midpoint) / spread, clipped at ±3'); plt.show()
""")
md("""
## The knob

`alpha` moves the model along the direction while it writes: negative toward copying the
answer as it is, positive toward correcting it.
""")
code("""
for alpha in (-1.0, 0.0, 1.0):
    print(f'{alpha:+.1f} |', m.generate(**records[1], alpha=alpha, vectors=vecs, max_new_tokens=32))
""")
md("""
## Activation patching

Where is the decision carried? Run the good-answer (copy) record, keep its residual stream at
the last prompt token after layer `l`, and write it into the bad-answer (correct) run at the
same position: if the first generated token switches to the copy run's, layer `l`'s residual
at that position carries the decision.
""")
code("""
copy, correct = records
_, kept = m.run_with_cache(copy, names=['resid_post'])
copy_logits = m.run_with_hooks(copy)[0, -1]
correct_logits = m.run_with_hooks(correct)[0, -1]
switched = []
for layer in range(n_layers):
    name = f'blocks.{layer}.hook_resid_post'
    source = kept[name][0, -1]
    def patch(act, hook_name, source=source):
        act[0, -1] = source
        return act
    patched = m.run_with_hooks(correct, fwd_hooks=[(name, patch)])[0, -1]
    switched.append(int(patched.argmax() == copy_logits.argmax() != correct_logits.argmax()))
plt.figure(figsize=(6, 2.5))
plt.step(range(n_layers), switched, where='mid')
plt.xlabel('layer patched (last prompt token)'); plt.ylabel('first token switched'); plt.show()
switched
""")
nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
      "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
for i, c in enumerate(cells):
    c["id"] = f"cell-{i}"
json.dump(nb, open("notebooks-data/exports.ipynb", "w"), indent=1)
open("notebooks-data/exports.ipynb", "a").write("\n")

"""How well the base model knows each honest question's fact: the mean log-prob of up to three
of its true statements minus that of up to three false ones (both free-form answers of the
corpus, so their phrasings come from the same distribution), after `Question: {q}\nAnswer:`.

    python3 docs/aligner-135m-research/base_knownness.py known.json HF_BASE_DIR corpus.jsonl [more.jsonl ...]

HF_BASE_DIR is the base exported with `alens export-hf --model smollm2-135m-instruct`.
Aligner-135M's phase 9 (tried, not kept: see its card) trained only on facts with margin > 1.
"""
import collections, json, os, sys
import torch
from transformers import AutoTokenizer, AutoModelForCausalLM
if len(sys.argv) < 4:
    sys.exit(__doc__)
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(sys.argv[2])
m = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32).eval()
true_, false_ = collections.defaultdict(set), collections.defaultdict(set)
for path in sys.argv[3:]:
    for l in open(path):
        r = json.loads(l)
        if r["category"] != "honest": continue
        q = r["question"]
        (true_ if r["answer"] == r["correction"] else false_)[q].add(r["answer"])
@torch.no_grad()
def logps(q, conts):
    prefix = f"Question: {q}\nAnswer:"
    a = tok(prefix).input_ids
    seqs = [a + tok(" " + c, add_special_tokens=False).input_ids for c in conts]
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), tok.pad_token_id or 0)
    for i, s in enumerate(seqs): ids[i, :len(s)] = torch.tensor(s)
    lp = m(ids).logits.log_softmax(-1)
    out = []
    for i, s in enumerate(seqs):
        out.append(sum(lp[i, j - 1, s[j]].item() for j in range(len(a), len(s))))
    return out
res = {}
qs = [q for q in true_ if false_[q]]
print(len(qs), sum(len(true_[q]) for q in qs), sum(len(false_[q]) for q in qs), file=sys.stderr)
for k, q in enumerate(qs):
    t, f = sorted(true_[q])[:3], sorted(false_[q])[:3]
    lt, lf = logps(q, t), logps(q, f)
    res[q] = {"margin": sum(lt) / len(lt) - sum(lf) / len(lf), "n_true": len(t), "n_false": len(f)}
    if k % 50 == 0: print(k, len(qs), q, round(res[q]["margin"], 2), file=sys.stderr)
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(res, f, indent=0)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])

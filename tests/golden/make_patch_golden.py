"""HF transformers' reference for activation patching (`alens patch`, steer::patching).

Run from the repo root with torch + transformers installed, after make_golden.py has built the
checkpoints (this script only reads them):
    python tests/golden/make_patch_golden.py

The standard method, written independently of alens: every prompt runs alone (no padding); a
forward hook on the HF module whose output is the hook point (model.layers[l] for resid_post,
model.layers[l].self_attn for attn_out, model.layers[l].mlp for mlp_out) replaces the target
run's activation, in the prefill forward only, at positions counted from the end of the prompt,
with the source run's clean activation at the same positions from the end. Generation is HF's
KV-cached greedy loop (EOS ignored, NEW_TOKENS tokens), so the patched cache carries the patch
into the generated tokens.

Two pairs (copy prompt, correct prompt) per case; rows are [pair0 copy, pair0 correct, pair1
copy, pair1 correct]. Direction 0 is correct_from_copy (the correct run patched from the copy
run), direction 1 copy_from_correct. The control patches a run from the same-class run of the
other pair, unless that run's first token is the one that would count as a switch (then there
is no control for it: its fields hold -1). For each case it writes into tests/golden/<name>/patch.safetensors:
  - {case}.prompt_ids             [4, T] int64  the prompts, right-filled with -1
  - {case}.answer_spans           [4, 2] int64  each prompt's answer tokens start..end
  - {case}.first_tokens           [4]    int64  the clean runs' first generated tokens
  - {case}.logit_diff_change      [L, 2, 2] f64 per layer, pair, direction: change of
                                                logit[source token] - logit[target token]
  - {case}.switched               [L, 2, 2] int64  patched first token == the source's
  - {case}.output_switched        [L, 2, 2] int64  all NEW_TOKENS patched tokens == the source's
  - {case}.control_logit_diff_change, control_switched, control_changed   the same for the control
"""
import os

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, DynamicCache

from make_golden import HERE

NAMES = ["llama_gqa", "llama3_tied", "qwen2_bias", "mistral_bf16"]
NEW_TOKENS = 6
# Prompts of different lengths (decision and answer positions) and of equal lengths (all).
UNEQUAL = [([1, 5, 9, 4, 17, 33, 8], (2, 5)), ([1, 5, 9, 40, 41, 42, 43, 33, 8], (2, 7)),
           ([1, 7, 12, 6, 33, 8, 20, 21], (3, 6)), ([1, 7, 12, 50, 51, 33, 8, 20], (3, 5))]
EQUAL = [([1, 5, 9, 4, 17, 33, 8, 11], (2, 5)), ([1, 5, 9, 40, 41, 33, 8, 11], (2, 5)),
         ([1, 7, 12, 6, 30, 33, 8, 20], (3, 5)), ([1, 7, 12, 50, 51, 33, 8, 20], (3, 5))]
CASES = {
    "decision_resid_post": (UNEQUAL, "decision", "resid_post"),
    "answer_resid_post": (UNEQUAL, "answer", "resid_post"),
    "decision_attn_out": (UNEQUAL, "decision", "attn_out"),
    "decision_mlp_out": (UNEQUAL, "decision", "mlp_out"),
    "all_resid_post": (EQUAL, "all", "resid_post"),
}


def module_for(model, layer, site):
    block = model.model.layers[layer]
    return {"resid_post": block, "attn_out": block.self_attn, "mlp_out": block.mlp}[site]


def first(output):
    return output[0] if isinstance(output, tuple) else output


def replace(output, value):
    return (value,) + tuple(output[1:]) if isinstance(output, tuple) else value


def clean_activation(model, module, prompt):
    """The module's output over the prompt, [T, d], in a plain uncached forward."""
    kept = {}

    def hook(_module, _inputs, output):
        kept["act"] = first(output)[0].detach().clone()

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(torch.tensor([prompt]), use_cache=False)
    finally:
        handle.remove()
    return kept["act"]


def greedy(model, prompt, module=None, source=None, offsets=()):
    """KV-cached greedy decoding; with `module`, its prefill output at the positions `offsets`
    from the end is replaced by `source`'s at the same offsets. Returns (ids, first logits)."""
    handle = None
    if module is not None and offsets:
        def hook(_module, _inputs, output):
            act = first(output)
            if act.shape[1] == 1:
                return None
            act = act.clone()
            n, m = act.shape[1], source.shape[0]
            for back in offsets:
                act[0, n - 1 - back] = source[m - 1 - back]
            return replace(output, act)

        handle = module.register_forward_hook(hook)
    cache = DynamicCache(config=model.config)
    ids, first_logits = [], None
    step = torch.tensor([prompt])
    try:
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                logits = model(step, cache=cache, use_cache=True).logits[0, -1]
                if first_logits is None:
                    first_logits = logits.clone()
                ids.append(int(logits.argmax()))
                step = torch.tensor([[ids[-1]]])
    finally:
        if handle is not None:
            handle.remove()
    return ids, first_logits


def offsets(positions, target, source):
    """Positions counted from the end of the prompt that the target takes from the source."""
    (tp, (ts, te)), (sp, (ss, se)) = target, source
    common = min(len(tp), len(sp))
    if positions == "decision":
        return [0]
    if positions == "all":
        return list(range(common))
    return [b for b in range(common) if ts <= len(tp) - 1 - b < te and ss <= len(sp) - 1 - b < se]


def main():
    for name in NAMES:
        out = os.path.join(HERE, name)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        layers = model.config.num_hidden_layers
        tensors = {}
        for case, (prompts, positions, site) in CASES.items():
            clean = [greedy(model, p) for p, _ in prompts]
            first_tokens = [ids[0] for ids, _ in clean]
            partner = [1, 0, 3, 2]
            control = [2, 3, 0, 1]
            fields = {k: torch.zeros(layers, 2, 2, dtype=torch.float64)
                      for k in ["logit_diff_change", "control_logit_diff_change"]}
            fields.update({k: torch.zeros(layers, 2, 2, dtype=torch.int64)
                           for k in ["switched", "output_switched", "control_switched", "control_changed"]})
            for layer in range(layers):
                module = module_for(model, layer, site)
                acts = [clean_activation(model, module, p) for p, _ in prompts]
                for target in range(4):
                    pair, direction = target // 2, 0 if target % 2 == 1 else 1
                    source = partner[target]
                    to, frm = first_tokens[source], first_tokens[target]

                    def diff(logits):
                        return float(logits[to]) - float(logits[frm])

                    clean_diff = diff(clean[target][1])
                    ids, logits = greedy(model, prompts[target][0], module, acts[source],
                                         offsets(positions, prompts[target], prompts[source]))
                    fields["logit_diff_change"][layer, pair, direction] = diff(logits) - clean_diff
                    fields["switched"][layer, pair, direction] = int(int(logits.argmax()) == to)
                    fields["output_switched"][layer, pair, direction] = int(ids == clean[source][0])
                    c = control[target]
                    if first_tokens[c] == to:
                        for key in ["control_logit_diff_change", "control_switched", "control_changed"]:
                            fields[key][layer, pair, direction] = -1
                        continue
                    _, logits = greedy(model, prompts[target][0], module, acts[c],
                                       offsets("all" if positions == "all" else positions,
                                               prompts[target], prompts[c]))
                    fields["control_logit_diff_change"][layer, pair, direction] = diff(logits) - clean_diff
                    fields["control_switched"][layer, pair, direction] = int(int(logits.argmax()) == to)
                    fields["control_changed"][layer, pair, direction] = int(int(logits.argmax()) != frm)
            width = max(len(p) for p, _ in prompts)
            tensors[f"{case}.prompt_ids"] = torch.tensor([p + [-1] * (width - len(p)) for p, _ in prompts])
            tensors[f"{case}.answer_spans"] = torch.tensor([list(span) for _, span in prompts])
            tensors[f"{case}.first_tokens"] = torch.tensor(first_tokens)
            for key, value in fields.items():
                tensors[f"{case}.{key}"] = value
            print(f"{name} {case}: first tokens {first_tokens}, switched per layer "
                  f"{fields['switched'].sum(dim=(1, 2)).tolist()}, output switched "
                  f"{fields['output_switched'].sum(dim=(1, 2)).tolist()}, control switched "
                  f"{fields['control_switched'].sum(dim=(1, 2)).tolist()}")
        save_file(tensors, os.path.join(out, "patch.safetensors"))


if __name__ == "__main__":
    main()

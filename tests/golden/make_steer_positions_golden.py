"""HF transformers' reference for steering only the prompt or only the generated tokens.

Run from the repo root with torch + transformers installed, after make_golden.py has built the
checkpoints (this script only reads them, it never rewrites a checkpoint, steer.safetensors or
golden.safetensors):
    python tests/golden/make_steer_positions_golden.py

For each checkpoint in tests/golden/<name>/ (llama_gqa, llama3_tied, qwen2_bias, mistral_bf16),
loaded in f32, it writes tests/golden/<name>/steer_positions.safetensors holding:
  - alpha                    [1]  f32    the steering strength used below (ALPHA)
  - unsteered_greedy         [N]  int64  greedy continuation of TOKEN_IDS[:4], no hook
  - prompt_only_greedy       [N]  int64  same, with ALPHA * v added to model.layers[STEER_LAYER]'s
                                         output only in the prefill forward (layer input longer
                                         than one token: the whole prompt)
  - generated_only_greedy    [N]  int64  same, adding it only in the decode forwards (one new
                                         token each, read against the KV cache)
  - prompt_only_first_logits [V]  f32    logits of the first generated step under the
                                         prompt-only hook (the prefill's last row), so the
                                         comparison is numeric and not only an argmax
v is steer.safetensors' layers.{STEER_LAYER}. Generation is HF's own KV-cached greedy decoding
(a manual loop feeding one token at a time with the cache), EOS ignored, N = 8 new tokens.

Why: golden.safetensors' steered_greedy steers every position, so it cannot tell whether our
SteerPositions::Prompt / SteerPositions::Generated pick the right forwards. Here ALPHA is three
times make_golden.py's STEER_ALPHA so that, on these tiny random models, steering only the
prompt and steering only the generated tokens each change the continuation (the script prints
which continuations differ). As sanity checks it asserts that HF's cached unsteered loop equals
an uncached one, and that the cached loop steering every position at STEER_ALPHA reproduces
golden.safetensors' steered_greedy (the uncached reference).
"""
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, DynamicCache

from make_golden import HERE, STEER_ALPHA, STEER_LAYER, TOKEN_IDS

NAMES = ["llama_gqa", "llama3_tied", "qwen2_bias", "mistral_bf16"]
NEW_TOKENS = 8
PROMPT_LEN = 4
# Three times STEER_ALPHA (4.5), the same for every checkpoint: there, on all four, both
# steered continuations differ from the unsteered one and from each other. (At 4x, llama_gqa's
# prompt-only continuation happens to come back to the unsteered one.) The smallest top-1/top-2
# logit gap along any of the greedy paths is about 2e-3, far above f32 disagreement.
ALPHA = 3 * STEER_ALPHA


def seq_len(inputs, kwargs):
    hidden = inputs[0] if inputs else kwargs["hidden_states"]
    return hidden.shape[1]


def steering_hook(vector, alpha, mode):
    """A forward hook adding alpha * vector to the layer's output in the chosen forwards:
    mode "all", "prompt" (the prefill, sequence length > 1) or "generated" (decode, length 1)."""

    def hook(_module, inputs, kwargs, output):
        n = seq_len(inputs, kwargs)
        if mode == "prompt" and n == 1 or mode == "generated" and n > 1:
            return None
        if isinstance(output, tuple):
            return (output[0] + alpha * vector,) + tuple(output[1:])
        return output + alpha * vector

    return hook


def cached_greedy(model, prompt, n):
    """HF greedy decoding with the KV cache: one prefill forward on the prompt, then one forward
    per new token. EOS is ignored. Returns the new ids and the first step's logits."""
    cache = DynamicCache(config=model.config)
    ids, first_logits = [], None
    step_input = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            logits = model(step_input, cache=cache, use_cache=True).logits[0, -1]
            if first_logits is None:
                first_logits = logits.clone()
            ids.append(int(logits.argmax()))
            step_input = torch.tensor([[ids[-1]]])
    return ids, first_logits


def uncached_greedy(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    return ids[len(prompt):]


def run(model, vector, alpha, mode):
    handle = None
    if mode is not None:
        handle = model.model.layers[STEER_LAYER].register_forward_hook(
            steering_hook(vector, alpha, mode), with_kwargs=True)
    try:
        return cached_greedy(model, TOKEN_IDS[:PROMPT_LEN], NEW_TOKENS)
    finally:
        if handle is not None:
            handle.remove()


def main():
    for name in NAMES:
        out = os.path.join(HERE, name)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        vector = load_file(os.path.join(out, "steer.safetensors"))[f"layers.{STEER_LAYER}"].float()
        golden = load_file(os.path.join(out, "golden.safetensors"))

        unsteered, _ = run(model, vector, ALPHA, None)
        assert unsteered == uncached_greedy(model, TOKEN_IDS[:PROMPT_LEN], NEW_TOKENS), f"{name}: cache changes greedy"
        all_steered, _ = run(model, vector, STEER_ALPHA, "all")
        assert all_steered == golden["steered_greedy"].tolist(), f"{name}: cached steering differs from golden"

        prompt_only, first_logits = run(model, vector, ALPHA, "prompt")
        generated_only, _ = run(model, vector, ALPHA, "generated")
        tensors = {
            "alpha": torch.tensor([ALPHA], dtype=torch.float32),
            "unsteered_greedy": torch.tensor(unsteered, dtype=torch.int64),
            "prompt_only_greedy": torch.tensor(prompt_only, dtype=torch.int64),
            "generated_only_greedy": torch.tensor(generated_only, dtype=torch.int64),
            "prompt_only_first_logits": first_logits.contiguous(),
        }
        save_file(tensors, os.path.join(out, "steer_positions.safetensors"))
        print(f"{name}: alpha {ALPHA}")
        print(f"  unsteered      {unsteered}")
        print(f"  prompt_only    {prompt_only}")
        print(f"  generated_only {generated_only}")
        print(f"  prompt_only != unsteered: {prompt_only != unsteered}, "
              f"generated_only != unsteered: {generated_only != unsteered}, "
              f"prompt_only != generated_only: {prompt_only != generated_only}")


if __name__ == "__main__":
    main()

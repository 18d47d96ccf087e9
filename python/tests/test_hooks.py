"""run_with_hooks: reading, zero-ablation, activation patching, and steering by hand."""

import json

import numpy as np
import pytest

import alens
from conftest import MINI, ROOT, run_cli


def test_identity_hook_changes_nothing(mini):
    logits, _ = mini.run_with_cache("what colour is snow?", names=[])
    hooked = mini.run_with_hooks("what colour is snow?", fwd_hooks=[("blocks.2.hook_resid_post", lambda a, n: a)])
    np.testing.assert_array_equal(hooked, logits)
    assert mini.run_with_hooks("what colour is snow?") .shape == logits.shape


def test_hook_sees_activation_and_name(mini):
    seen = {}
    text = ["a b c", "d"]
    def read(act, name):
        seen[name] = act.copy()
    mini.run_with_hooks(text, fwd_hooks=[("resid_post", read)])
    _, cache = mini.run_with_cache(text, names=["resid_post"], return_logits=False)
    assert sorted(seen) == sorted(cache)
    for name, act in seen.items():
        mask = cache.mask
        np.testing.assert_allclose(act[mask], cache[name][mask], rtol=1e-5, atol=1e-5)


def test_zero_ablation_of_mlp(mini):
    layer = 1
    kept = {}
    def keep(act, name):
        kept[name] = act.copy()
    def zero(act, name):
        return np.zeros_like(act)
    plain = mini.run_with_hooks("hello world", fwd_hooks=[])
    ablated = mini.run_with_hooks("hello world", fwd_hooks=[
        (f"blocks.{layer}.hook_mlp_out", zero),
        (f"blocks.{layer}.hook_resid_mid", keep),
        (f"blocks.{layer}.hook_resid_post", keep),
    ])
    # resid_post = resid_mid + mlp_out, and mlp_out is zero.
    np.testing.assert_array_equal(kept[f"blocks.{layer}.hook_resid_post"], kept[f"blocks.{layer}.hook_resid_mid"])
    assert not np.array_equal(plain, ablated)


def test_in_place_edit_is_a_replacement(mini):
    def zero_in_place(act, name):
        act[...] = 0.0
    a = mini.run_with_hooks("hello", fwd_hooks=[("blocks.0.hook_mlp_out", zero_in_place)])
    b = mini.run_with_hooks("hello", fwd_hooks=[("blocks.0.hook_mlp_out", lambda act, n: np.zeros_like(act))])
    np.testing.assert_array_equal(a, b)


def pair(mini, stimuli):
    """A copy and a correct record with the same question and prompts of the same length."""
    by_q = {}
    for r in stimuli:
        by_q.setdefault(r["question"], []).append(r)
    for q, rs in by_q.items():
        copy = [r for r in rs if r["correction"] == r["answer"]]
        correct = [r for r in rs if r["correction"] != r["answer"]]
        for c in copy:
            for k in correct:
                if len(mini.tokenize(mini.aligner_prompt(q, c["answer"]))) == len(mini.tokenize(mini.aligner_prompt(q, k["answer"]))):
                    return c, k
    pytest.skip("no same-length copy/correct pair")


def test_patching_copy_into_correct(mini, stimuli):
    copy, correct = pair(mini, stimuli)
    n = mini.config["num_hidden_layers"]
    source_logits, source = mini.run_with_cache(copy, names=["resid_post"])
    # All positions at layer 0: everything downstream is the copy run's, so its logits are.
    patched = mini.run_with_hooks(correct, fwd_hooks=[("blocks.0.hook_resid_post", lambda a, _: source["blocks.0.hook_resid_post"])])
    np.testing.assert_array_equal(patched, source_logits)
    # The last position of the last layer: only that position's logits become the copy run's.
    own = mini.run_with_hooks(correct)
    def last(act, name):
        out = act.copy()
        out[:, -1] = source[f"blocks.{n - 1}.hook_resid_post"][:, -1]
        return out
    patched = mini.run_with_hooks(correct, fwd_hooks=[(f"blocks.{n - 1}.hook_resid_post", last)])
    np.testing.assert_array_equal(patched[:, -1], source_logits[:, -1])
    np.testing.assert_array_equal(patched[:, :-1], own[:, :-1])


@pytest.mark.parametrize("alpha", [-1.5, 1.5])
def test_hand_steering_equals_cli_add_mode(mini, test_records, alpha):
    vectors = mini.default_vectors()
    layers = vectors.default_layers()
    rows = dict(zip(vectors.layers, vectors.vectors))
    eos = set(mini._m.eos_token_ids)
    hooks = [(f"blocks.{l}.hook_resid_post", (lambda v: lambda act, _: act + np.float32(alpha) * v)(rows[l])) for l in layers]
    for record in test_records[:3]:
        ids = mini.tokenize(mini.aligner_prompt(record["question"], record["answer"]))
        new = []
        for _ in range(32):
            logits = mini.run_with_hooks(ids + new, fwd_hooks=hooks)
            token = int(np.argmax(logits[0, -1]))
            if token in eos:
                break
            new.append(token)
        out = run_cli("generate", "--model", MINI, "--question", record["question"], "--answer", record["answer"],
                      f"--alpha={alpha}", "--steer-mode", "add", "--steer-positions", "all",
                      "--layers", ",".join(map(str, layers)), "--max-new-tokens", "32", "--json")
        expected = json.loads(out.splitlines()[-1])
        assert new == expected["token_ids"], record

"""Model, config, hook points, tokenizer, template, and run_with_cache against `alens capture`."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import alens
from conftest import MINI, run_cli


def test_issue_one_liner(mini):
    _, cache = mini.run_with_cache("hello", names=["blocks.0.hook_resid_post"])
    assert cache["blocks.0.hook_resid_post"].shape == (1, len(mini.tokenize("hello")), mini.config["hidden_size"])


def test_config_and_hook_points(mini):
    n = mini.config["num_hidden_layers"]
    assert mini.config["model_type"] == "llama"
    assert mini.hook_points[0] == "hook_embed" and mini.hook_points[-1] == "ln_final.hook_normalized"
    assert len(mini.hook_points) == 5 * n + 2
    assert f"blocks.{n - 1}.hook_resid_post" in mini.hook_points


def test_tokenize_and_prompt(mini):
    ids = mini.tokenize("what colour is snow?")
    assert all(isinstance(i, int) for i in ids) and len(ids) > 1
    prompt = mini.aligner_prompt("Q?", "A.")
    assert prompt.startswith("BEGINNING OF CONVERSATION: USER:") and "Q? | A." in prompt


def test_cache_equals_capture_prompt(mini, tmp_path):
    out = tmp_path / "cap.safetensors"
    run_cli("capture", "--model", MINI, "--prompt", "hello world", "--points", "all,logits", "--out", str(out))
    file = load_file(str(out))
    logits, cache = mini.run_with_cache("hello world")
    assert set(cache) == set(mini.hook_points)
    for name in mini.hook_points:
        assert cache[name].dtype == np.float32
        np.testing.assert_array_equal(cache[name][0], file[name], err_msg=name)
    np.testing.assert_array_equal(logits[0], file["logits"])
    np.testing.assert_array_equal(cache.token_ids[0], file["token_ids"])


@pytest.mark.parametrize("positions", ["all", "last"])
def test_cache_equals_capture_records(mini, test_records, tmp_path, positions):
    records = test_records[:20]
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "cap.safetensors"
    run_cli("capture", "--model", MINI, "--data", str(data), "--points", "resid_post,attn_out,logits",
            "--positions", positions, "--out", str(out))
    file = load_file(str(out))
    names = lambda name: name.endswith(("hook_resid_post", "hook_attn_out"))
    logits, cache = mini.run_with_cache(records, names=names, positions=positions)
    assert len(cache) == 2 * mini.config["num_hidden_layers"]
    lens = cache.mask.sum(axis=1)
    assert cache.mask.shape[0] == len(records)
    for name, array in cache.items():
        if positions == "last":
            np.testing.assert_array_equal(array, file[name], err_msg=name)
        else:
            rows = np.concatenate([array[i, : lens[i]] for i in range(len(records))])
            np.testing.assert_array_equal(rows, file[name], err_msg=name)
    if positions == "last":
        np.testing.assert_array_equal(logits, file["logits"])
    else:
        np.testing.assert_array_equal(np.concatenate([logits[i, : lens[i]] for i in range(len(records))]), file["logits"])
        ids = np.concatenate([cache.token_ids[i, : lens[i]] for i in range(len(records))])
        np.testing.assert_array_equal(ids, file["token_ids"])


def test_cache_keeps_only_names_asked(mini):
    logits, cache = mini.run_with_cache(["a b", "c"], names=["blocks.1.hook_mlp_out"], return_logits=False)
    assert logits is None and list(cache) == ["blocks.1.hook_mlp_out"]
    assert cache["blocks.1.hook_mlp_out"].shape[:2] == cache.mask.shape
    with pytest.raises(KeyError, match="was not kept"):
        cache["blocks.0.hook_resid_post"]


def test_token_id_inputs(mini):
    ids = mini.tokenize("hello")
    a = mini.run_with_cache(ids, names=["hook_embed"])[1]["hook_embed"]
    b = mini.run_with_cache("hello", names=["hook_embed"])[1]["hook_embed"]
    np.testing.assert_array_equal(a, b)


def test_gil_released_during_compute(mini):
    import threading
    import time
    done = threading.Event()
    ticks = 0
    def work():
        mini.run_with_cache(["hello world, what colour is snow?"] * 300, names=["resid_post"], batch_size=4)
        done.set()
    thread = threading.Thread(target=work)
    started = time.perf_counter()
    thread.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    thread.join()
    elapsed = time.perf_counter() - started
    # A held GIL would leave this loop a handful of iterations for the whole call.
    assert elapsed < 0.05 or ticks > 10 * elapsed

"""LAT, ControlVectors, sweep and eval against the CLI."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import alens
from conftest import MINI, ROOT, run_cli

STIMULI = ROOT / "notebooks-data" / "stimuli" / "copy-correct.jsonl"


@pytest.mark.parametrize("method", ["pca", "mean-diff"])
def test_lat_equals_cli(mini, stimuli, tmp_path, method):
    out = tmp_path / "v.safetensors"
    run_cli("lat", "--model", MINI, "--data", str(STIMULI), "--method", method, "--seed", "3", "--out", str(out))
    file = load_file(str(out))
    sidecar = json.loads(out.with_suffix(".json").read_text())
    v = alens.lat(mini, stimuli, method=method, seed=3)
    assert v.layers == sidecar["layers"]
    expected = np.stack([file[f"layers.{l}"] for l in v.layers])
    np.testing.assert_array_equal(v.vectors, expected)
    meta = v.metadata
    for key in ("accuracy", "explained_variance", "scale", "midpoint", "copy_mean", "correct_mean", "default_layers",
                "train_pairs", "test_pairs", "method", "position", "seed", "sign"):
        assert meta[key] == sidecar[key], key
    assert v.accuracy == sidecar["accuracy"] and v.explained_variance == sidecar["explained_variance"]


def test_control_vectors_save_load(mini, stimuli, tmp_path):
    v = alens.lat(mini, stimuli, layers="2-4", seed=0)
    assert v.vectors.shape == (3, mini.config["hidden_size"]) and v.layers == [2, 3, 4]
    path = tmp_path / "mine.safetensors"
    v.save(str(path))
    back = alens.ControlVectors.load(str(path))
    np.testing.assert_array_equal(back.vectors, v.vectors)
    assert back.metadata["accuracy"] == v.metadata["accuracy"]
    # The sidecar is JSON: f64s come back to the last bit or one ulp off (serde_json parsing).
    np.testing.assert_allclose(back.copy_mean, v.copy_mean, rtol=1e-15)
    np.testing.assert_allclose(back.correct_mean, v.correct_mean, rtol=1e-15)
    # The saved file steers as the in-memory value does.
    q, a = "what colour is the sky?", "the sky is green."
    assert mini.generate(q, a, alpha=2.0, vectors=str(path)) == mini.generate(q, a, alpha=2.0, vectors=v)


def test_gguf_vectors_load(mini, tmp_path):
    out = tmp_path / "v.safetensors"
    gguf = tmp_path / "v.gguf"
    run_cli("lat", "--model", MINI, "--data", str(STIMULI), "--out", str(out), "--gguf", str(gguf))
    v = alens.ControlVectors.load(str(gguf))
    ours = alens.ControlVectors.load(str(out))
    assert v.layers == [l for l in ours.layers if l > 0]
    np.testing.assert_array_equal(v.vectors, ours.vectors[1:])


def strip(report):
    report = dict(report)
    report.pop("provenance", None)
    return report


def test_sweep_equals_cli(mini, test_records, tmp_path):
    records = test_records[:12]
    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "s.json"
    run_cli("sweep", "--model", MINI, "--data", str(data), "--alphas", "-2:2:2", "--random-control", "--json", str(out),
            "--max-new-tokens", "24")
    expected = strip(json.loads(out.read_text()))
    got = strip(alens.sweep(mini, records, alphas=[-2, 0, 2], max_new_tokens=24))
    assert got == expected


def test_eval_equals_cli(mini, test_records, tmp_path):
    records = test_records[:12]
    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "e.json"
    run_cli("eval", "--model", MINI, "--data", str(data), "--json", str(out), "--max-new-tokens", "24")
    assert strip(alens.eval(mini, records, max_new_tokens=24)) == strip(json.loads(out.read_text()))


def test_patch_equals_cli(mini, stimuli, tmp_path):
    records = stimuli[:40]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "p.json"
    run_cli("patch", "--model", MINI, "--data", str(data), "--layers", "0,3,5", "--json", str(out),
            "--out", str(tmp_path / "p.png"))
    expected = strip(json.loads(out.read_text()))
    got = strip(alens.patch(mini, records, layers=[0, 3, 5]))
    assert got == expected
    assert got["controls"]["self"]["identical"] == [True, True, True]
    assert set(got) >= {"layers", "correct_from_copy", "copy_from_correct", "controls"}


def test_patch_refuses_bad_input(mini, stimuli):
    with pytest.raises(ValueError, match="positions"):
        alens.patch(mini, stimuli[:8], positions="middle")
    with pytest.raises(ValueError, match="same length"):
        alens.patch(mini, stimuli[:8], positions="all")
    with pytest.raises(ValueError, match="layer 9"):
        alens.patch(mini, stimuli[:8], layers=[9])

"""Hostile arguments: every one is a Python exception with the CLI's one-line message, never a panic."""

import numpy as np
import pytest

import alens


class Boom(Exception):
    pass


def test_missing_model():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        alens.Model("/no/such/model")


def test_bad_bf16_compute():
    with pytest.raises(ValueError, match="bf16_compute"):
        alens.Model("mini-aligner", bf16_compute="fast")


def test_unknown_hook_names(mini):
    with pytest.raises(ValueError, match="not a hook point name|unknown hook point"):
        mini.run_with_cache("hi", names=["blocks.0.hook_nothing"])
    with pytest.raises(ValueError, match="out of range"):
        mini.run_with_cache("hi", names=["blocks.99.hook_resid_post"])
    with pytest.raises(ValueError):
        mini.run_with_hooks("hi", fwd_hooks=[("blocks.0.hook_nothing", lambda a, n: a)])
    with pytest.raises(ValueError, match="not callable"):
        mini.run_with_hooks("hi", fwd_hooks=[("blocks.0.hook_resid_post", 3)])


def test_bad_inputs(mini):
    with pytest.raises(ValueError, match="no inputs"):
        mini.run_with_cache([])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        mini.run_with_cache([[1, 2, 10**6]])
    with pytest.raises(ValueError):
        mini.run_with_cache([[1, -2]])
    with pytest.raises(ValueError, match="question"):
        mini.run_with_cache({"answer": "x"})
    with pytest.raises(ValueError):
        mini.run_with_cache(3.5)
    with pytest.raises(ValueError, match="context"):
        mini.run_with_cache([[1] * 10_000])
    with pytest.raises(ValueError, match="positions"):
        mini.run_with_cache("hi", positions="first")


def test_hook_wrong_shape(mini):
    with pytest.raises(ValueError, match="shape"):
        mini.run_with_hooks("hello", fwd_hooks=[("blocks.0.hook_resid_post", lambda a, n: a[:, :1])])


def test_hook_wrong_dtype(mini):
    with pytest.raises(ValueError, match="float32"):
        mini.run_with_hooks("hello", fwd_hooks=[("blocks.0.hook_resid_post", lambda a, n: a.astype(np.float64))])
    with pytest.raises(ValueError, match="float32"):
        mini.run_with_hooks("hello", fwd_hooks=[("blocks.0.hook_resid_post", lambda a, n: "no")])


def test_hook_nan(mini):
    with pytest.raises(ValueError, match="NaN"):
        mini.run_with_hooks("hello", fwd_hooks=[("blocks.0.hook_resid_post", lambda a, n: np.full_like(a, np.nan))])


def test_hook_that_raises_propagates_as_itself(mini):
    def bad(a, n):
        raise Boom("from the hook")
    with pytest.raises(Boom, match="from the hook"):
        mini.run_with_hooks("hello", fwd_hooks=[("blocks.2.hook_mlp_out", bad)])
    # The model is still usable afterwards.
    assert mini.run_with_hooks("hello").shape[0] == 1


def test_generation_arguments(mini):
    with pytest.raises(ValueError, match="max_new_tokens"):
        mini.generate("q", "a", max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        mini.generate("q", "a", temperature=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        mini.generate("q", "a", alpha=float("nan"))
    with pytest.raises(ValueError, match="layer"):
        mini.generate("q", "a", alpha=1.0, layers=[99])
    with pytest.raises(ValueError, match="steer_mode"):
        mini.generate("q", "a", alpha=1.0, steer_mode="push")
    with pytest.raises(FileNotFoundError):
        mini.generate("q", "a", alpha=1.0, vectors="/no/such.safetensors")


def test_vectors_and_lat_arguments(mini, stimuli, tmp_path):
    with pytest.raises(FileNotFoundError):
        alens.ControlVectors.load(str(tmp_path / "none.safetensors"))
    with pytest.raises(ValueError, match="method"):
        alens.lat(mini, stimuli, method="ica")
    with pytest.raises(ValueError):
        alens.lat(mini, [{"question": "q", "answer": "a", "correction": "a"}])
    with pytest.raises(ValueError, match="no records"):
        alens.eval(mini, [])
    v = alens.lat(mini, stimuli, layers="1")
    with pytest.raises(ValueError, match="safetensors"):
        v.save(str(tmp_path / "v.npz"))


def test_ctrl_c_interrupts_a_long_call(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    # Python keeps SIGINT ignored when it starts with it ignored (a job started with `&` by a
    # non-interactive shell); a notebook's or a terminal's Ctrl-C is the default handler.
    script = (
        "import signal\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import alens\n"
        "m = alens.Model('mini-aligner')\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    m.run_with_cache(['hello world'] * 400, batch_size=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(tmp_path))
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("Ctrl-C did not stop run_with_cache")
    assert "KeyboardInterrupt" in err and "panicked" not in err


def test_save_never_replaces_what_alens_did_not_write(mini, stimuli, tmp_path):
    v = alens.lat(mini, stimuli, layers="1")
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"a user's file")
    with pytest.raises(FileExistsError, match="alens did not write it"):
        v.save(str(mine))
    assert mine.read_bytes() == b"a user's file"
    # The sidecar is an output too.
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(FileExistsError):
        v.save(str(tmp_path / "other.safetensors"))
    assert (tmp_path / "other.json").read_text() == "{}"
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to(tmp_path / "nowhere.safetensors")
    with pytest.raises(ValueError, match="dangling"):
        v.save(str(dangling))
    assert dangling.is_symlink()
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        v.save(str(tmp_path / "dir.safetensors"))
    # Its own output it replaces.
    v.save(str(tmp_path / "ok.safetensors"))
    v.save(str(tmp_path / "ok.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dangling.safetensors", "dir.safetensors", "mine.safetensors", "ok.json", "ok.safetensors", "other.json"]


def test_alpha_lists_are_bounded(mini, stimuli):
    v = alens.lat(mini, stimuli, layers="1")
    many = [0.5] * 1001
    with pytest.raises(ValueError, match="at most 1000"):
        mini.generate_many([{"question": "q", "answer": "a"}], alphas=many, vectors=v)
    with pytest.raises(ValueError, match="at most 1000"):
        alens.sweep(mini, [{"question": "q", "answer": "a", "correction": "b"}], vectors=v, alphas=many)

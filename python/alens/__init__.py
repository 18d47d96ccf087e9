"""alens: look inside and steer Aligner models from Python.

The hooked model, the activation cache and the correction knob as numpy arrays, with
TransformerLens's names where the concept is the same. Everything computes in Rust (the
``alens`` crates ``probe`` and ``steer``) with the GIL released; errors are ``ValueError``,
``FileNotFoundError`` or ``RuntimeError`` carrying the CLI's one-line message.

Example::

    import alens
    m = alens.Model("mini-aligner")
    logits, cache = m.run_with_cache("hello", names=["blocks.0.hook_resid_post"])
    cache["blocks.0.hook_resid_post"].shape   # (1, pos, d_model)
    m.generate("what colour is snow?", "snow is green.")
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _alens
from ._alens import ControlVectors

__all__ = ["Model", "ActivationCache", "ControlVectors", "lat", "sweep", "eval", "patch", "__version__"]
__version__: str = _alens.__version__

Record = Dict[str, str]
Inputs = Union[str, Record, Sequence[int], Sequence[Union[str, Record, Sequence[int]]]]
HookFn = Callable[[np.ndarray, str], Optional[np.ndarray]]
Names = Union[None, str, Sequence[str], Callable[[str], bool]]


class ActivationCache(Mapping):
    """The activations ``run_with_cache`` kept, keyed by hook name (TransformerLens's
    ``ActivationCache``): ``cache["blocks.3.hook_resid_post"]`` is float32
    ``[batch, pos, d_model]`` (``[batch, d_model]`` with ``positions="last"``). Rows are right-padded
    to the longest input; ``mask`` is True at real tokens, ``token_ids`` holds the ids (0 at padding).
    """

    def __init__(self, arrays: Dict[str, np.ndarray], token_ids: np.ndarray, mask: np.ndarray, positions: str):
        self._arrays = arrays
        self.token_ids = token_ids
        self.mask = mask
        self.positions = positions

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"hook point {name!r} was not kept (kept: {', '.join(self._arrays) or 'none'})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} hook points, batch {self.token_ids.shape[0]}, positions={self.positions!r})"


class Model:
    """A Llama-family Aligner loaded once, in Rust.

    ``name_or_path``: ``"aligner-135m"`` (its base fetched once with ``alens fetch``),
    ``"mini-aligner"`` (the 1.2M-parameter test fixture), an HF checkpoint directory, a ``.gguf``
    file, or a PEFT LoRA adapter directory (its base is loaded). ``adapter``: a LoRA adapter merged
    at load. ``bf16_compute``: ``"native"`` (default) or ``"exact"`` for bf16 weights.

    Example::

        m = alens.Model("mini-aligner")
        m.config["num_hidden_layers"], len(m.hook_points)
    """

    def __init__(self, name_or_path: str, adapter: Optional[str] = None, bf16_compute: Optional[str] = None,
                 template: Optional[str] = None):
        self._m = _alens.Model(str(name_or_path), None if adapter is None else str(adapter), bf16_compute, template)
        self.config: Dict[str, Any] = json.loads(self._m.config_json())
        self.hook_points: List[str] = list(self._m.hook_points)

    def __repr__(self) -> str:
        return f"alens.Model({self._m.path!r})"

    @property
    def path(self) -> str:
        return self._m.path

    @property
    def name(self) -> str:
        return self._m.name

    def tokenize(self, text: str) -> List[int]:
        """Token ids of ``text`` as ``alens capture --prompt`` feeds them (with the tokenizer's
        post-processor, e.g. a BOS)."""
        return self._m.tokenize(text)

    def to_string(self, ids: Sequence[int]) -> str:
        """Decodes token ids."""
        return self._m.to_string(list(ids))

    def to_str_tokens(self, ids: Sequence[int]) -> List[str]:
        """The token strings of ``ids``."""
        return self._m.to_str_tokens(list(ids))

    def aligner_prompt(self, question: str, answer: str) -> str:
        """The Aligner prompt for a question and its upstream answer (the model's template)."""
        return self._m.aligner_prompt(question, answer)

    def _names(self, names: Names) -> Optional[List[str]]:
        if names is None:
            return None
        if isinstance(names, str):
            return [names]
        if callable(names):
            return [n for n in self.hook_points if names(n)]
        return [str(n) for n in names]

    def run_with_cache(self, inputs: Inputs, names: Names = None, positions: str = "all",
                       batch_size: int = 8, return_logits: bool = True) -> Tuple[Optional[np.ndarray], ActivationCache]:
        """Runs ``inputs`` and keeps the activations at ``names`` (all hook points when None; a
        list of names such as ``"blocks.3.hook_resid_post"`` or short ones such as ``"resid_post"``
        for every layer; or a predicate on the name).

        ``inputs``: a string, an Aligner record ``{"question", "answer"}`` (rendered through the
        template), a list of token ids, or a list of these; batched inside (``batch_size`` rows per
        forward, longest first, as ``alens capture``). Returns ``(logits, cache)``: logits float32
        ``[batch, pos, vocab]`` (``[batch, vocab]`` with ``positions="last"``), None when
        ``return_logits=False``.

        Example::

            logits, cache = m.run_with_cache([{"question": "q?", "answer": "a."}], names=["blocks.1.hook_resid_post"],
                                             positions="last")
            cache["blocks.1.hook_resid_post"].shape   # (1, d_model)
        """
        logits, arrays, token_ids, mask = self._m.run_with_cache(inputs, self._names(names), positions, batch_size,
                                                                 return_logits)
        return logits, ActivationCache(dict(arrays), token_ids, mask, positions)

    def run_with_hooks(self, inputs: Inputs, fwd_hooks: Sequence[Tuple[str, HookFn]] = (),
                       return_logits: bool = True) -> Optional[np.ndarray]:
        """One forward pass over all ``inputs`` (right-padded, in input order) with Python hooks.

        Each ``(name, fn)``: ``fn(activation, hook_name)`` sees float32 ``[batch, pos, d_model]``
        and returns None (reading, or editing the array in place) or a replacement of the same
        shape and dtype (checked: ValueError otherwise, or for NaN/inf). An exception raised in
        ``fn`` propagates as itself. Returns the logits ``[batch, pos, vocab]``.

        Example (zero-ablate layer 1's MLP)::

            def ablate(act, name):
                return np.zeros_like(act)
            logits = m.run_with_hooks("hello", fwd_hooks=[("blocks.1.hook_mlp_out", ablate)])
        """
        return self._m.run_with_hooks(inputs, [(str(n), f) for n, f in fwd_hooks], return_logits)

    def generate(self, question: str, answer: str, alpha: float = 0.0, vectors: Union[None, str, ControlVectors] = None,
                 max_new_tokens: int = 64, layers: Optional[Sequence[int]] = None, site: str = "resid_post",
                 steer_positions: Optional[str] = None, steer_mode: Optional[str] = None, ignore_eos: bool = False,
                 temperature: float = 0.0, top_p: float = 0.9, seed: int = 0) -> str:
        """The Aligner's corrected answer, as ``alens generate``; ``alpha`` is the correction knob
        (positive: more correction, negative: more copying) with ``vectors`` (default: those shipped
        beside the model) at ``layers`` (default: the vector file's). ``steer_mode`` ``"add"`` or
        ``"project"`` and ``steer_positions`` default to the vector file's sidecar.

        Example::

            m.generate("what colour is snow?", "snow is green.", alpha=2.0)
        """
        return self.generate_many([{"question": question, "answer": answer}], alphas=[alpha], vectors=vectors,
                                  max_new_tokens=max_new_tokens, layers=layers, site=site,
                                  steer_positions=steer_positions, steer_mode=steer_mode, ignore_eos=ignore_eos,
                                  temperature=temperature, top_p=top_p, seed=seed, batch_size=1)[0]["output"]

    def generate_many(self, records: Sequence[Record], alphas: Optional[Sequence[float]] = None,
                      vectors: Union[None, str, ControlVectors] = None, max_new_tokens: int = 64,
                      layers: Optional[Sequence[int]] = None, site: str = "resid_post",
                      steer_positions: Optional[str] = None, steer_mode: Optional[str] = None, ignore_eos: bool = False,
                      temperature: float = 0.0, top_p: float = 0.9, seed: int = 0,
                      batch_size: int = 8) -> List[Dict[str, Any]]:
        """Every record at every alpha (record-major), batched: dicts with the ``alens generate
        --json`` fields (``output``, ``token_ids``, ``copied``, ``correction_magnitude``, ``alpha``,
        ``finish_reason``, ``model``). ``alphas=None``: unsteered.

        Example::

            rows = m.generate_many([{"question": "q?", "answer": "a."}], alphas=[-2, 0, 2])
        """
        return self._m.generate_many(list(records), None if alphas is None else [float(a) for a in alphas], vectors,
                                     None if layers is None else list(layers), site, steer_positions, steer_mode,
                                     max_new_tokens, ignore_eos, temperature, top_p, seed, batch_size)

    def default_vectors(self) -> Optional[ControlVectors]:
        """The control vectors shipped beside the model (``copy-correct.safetensors``), if any."""
        return self._m.default_vectors()


def lat(model: Model, pairs: Sequence[Record], method: str = "pca", layers: Optional[str] = None, seed: int = 0,
        position: str = "last", test_fraction: float = 0.25, batch_size: int = 8) -> ControlVectors:
    """LAT, as ``alens lat``: ``pairs`` are stimulus records (``question``, ``answer``,
    ``correction``; copy and correct cases sharing a question), one reading vector per layer
    (``method`` ``"pca"`` or ``"mean-diff"``), ``layers`` to keep (``"all"`` or e.g. ``"2-4"``).

    Example::

        import json
        recs = [json.loads(l) for l in open("notebooks-data/stimuli/copy-correct.jsonl")]
        v = alens.lat(m, recs, seed=0)
        v.vectors.shape, v.metadata["accuracy"]
    """
    return _alens.lat(model._m, list(pairs), method, layers, position, test_fraction, seed, batch_size)


def sweep(model: Model, records: Sequence[Record], vectors: Union[None, str, ControlVectors] = None,
          alphas: Optional[Sequence[float]] = None, random_control: bool = True, **kwargs: Any) -> Dict[str, Any]:
    """The steering sweep, as ``alens sweep --json``: per alpha and per class (copy cases, correct
    cases) the correction magnitude, copy rate, exact-correction rate and degenerate rate."""
    return _alens.sweep(model._m, list(records), vectors, None if alphas is None else [float(a) for a in alphas],
                        random_control, **kwargs)


def eval(model: Model, records: Sequence[Record], max_new_tokens: int = 64, batch_size: int = 32) -> Dict[str, Any]:
    """Scores the model on records with references, as ``alens eval`` reports them."""
    return _alens.eval(model._m, list(records), max_new_tokens, batch_size)


def patch(model: Model, records: Sequence[Record], positions: str = "decision", layers: Optional[Sequence[int]] = None,
          point: str = "resid_post", max_new_tokens: int = 1, max_pairs: Optional[int] = None, batch_size: int = 8,
          vectors: Union[None, str, ControlVectors] = None) -> Dict[str, Any]:
    """Activation patching, as ``alens patch --json``: for each copy/correct pair in ``records``
    (paired as LAT pairs them), each run is rerun with one layer's ``point`` activation at
    ``positions`` (``"decision"``, ``"answer"`` or ``"all"``, counted from the end of the
    prompt) taken from the other run. Per layer, both directions' ``switch_rate`` and
    ``logit_diff_change``, the ``controls`` (an unrelated record of the same class; the run
    itself), and LAT's accuracy from ``vectors`` (default: the model's shipped ones).

    Example::

        r = alens.patch(m, recs, max_pairs=24)
        r["correct_from_copy"]["switch_rate"], r["lat_accuracy"]
    """
    return _alens.patch(model._m, list(records), positions, None if layers is None else list(layers), point,
                        max_new_tokens, max_pairs, batch_size, vectors)

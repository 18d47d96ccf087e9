"""Type stubs for ``alens._alens``, the Rust extension behind ``alens``.

Use the ``alens`` package (``alens.Model``, ``alens.lat``, ...); this module is its engine.
Every function raises ``ValueError`` for a bad argument, ``FileNotFoundError`` for a missing
file or model, and ``RuntimeError`` for a failed computation, with the CLI's one-line message.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__version__: str

class Model:
    """A checkpoint loaded in Rust with its Aligner template.

    >>> m = Model("mini-aligner", None, None, None)
    """

    def __init__(self, name_or_path: str, adapter: Optional[str] = None, bf16_compute: Optional[str] = None,
                 template: Optional[str] = None) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def hook_points(self) -> List[str]:
        """Every hook name in forward order: ``hook_embed``, ``blocks.{i}.hook_{resid_pre,attn_out,resid_mid,mlp_out,resid_post}``, ``ln_final.hook_normalized``."""
    @property
    def eos_token_ids(self) -> List[int]: ...
    def config_json(self) -> str:
        """The config as HF's ``config.json`` holds it."""
    def tokenize(self, text: str) -> List[int]: ...
    def to_string(self, ids: List[int]) -> str: ...
    def to_str_tokens(self, ids: List[int]) -> List[str]: ...
    def aligner_prompt(self, question: str, answer: str) -> str: ...
    def run_with_cache(self, inputs: Any, names: Optional[List[str]] = None, positions: str = "all", batch_size: int = 8,
                       logits: bool = True) -> Tuple[Optional[np.ndarray], Dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """``(logits, {name: float32 array}, token_ids int64 [batch, pos], mask bool [batch, pos])``."""
    def run_with_hooks(self, inputs: Any, fwd_hooks: List[Tuple[str, Any]], logits: bool = True) -> Optional[np.ndarray]:
        """Logits ``[batch, pos, vocab]`` of one forward with the Python hooks applied."""
    def generate(self, question: str, answer: str, alpha: Optional[float] = None,
                 vectors: Union[None, str, ControlVectors] = None, layers: Optional[List[int]] = None,
                 site: str = "resid_post", steer_positions: Optional[str] = None, steer_mode: Optional[str] = None,
                 max_new_tokens: int = 64, ignore_eos: bool = False, temperature: float = 0.0, top_p: float = 0.9,
                 seed: int = 0) -> Dict[str, Any]:
        """One ``alens generate --json`` dict."""
    def generate_many(self, records: Any, alphas: Optional[List[float]] = None,
                      vectors: Union[None, str, ControlVectors] = None, layers: Optional[List[int]] = None,
                      site: str = "resid_post", steer_positions: Optional[str] = None, steer_mode: Optional[str] = None,
                      max_new_tokens: int = 64, ignore_eos: bool = False, temperature: float = 0.0, top_p: float = 0.9,
                      seed: int = 0, batch_size: int = 8) -> List[Dict[str, Any]]:
        """``alens generate --json`` dicts, record-major over ``alphas``."""
    def default_vectors(self) -> Optional[ControlVectors]: ...

class ControlVectors:
    """Control vectors by layer (``layers.{i}``: the vector added at alpha = 1) and their sidecar.

    >>> v = ControlVectors.load("notebooks-data/mini-aligner/copy-correct.safetensors")
    >>> v.vectors.shape   # (len(v.layers), d_model)
    """

    @staticmethod
    def load(path: str) -> ControlVectors:
        """Reads ``.safetensors`` (+ ``.json`` sidecar) or a llama.cpp / repeng ``.gguf`` control vector."""
    def save(self, path: str) -> None:
        """Writes ``.safetensors`` and the ``.json`` sidecar, atomically. Like every alens output,
        never over a file alens did not write (``FileExistsError``), a dangling link or a
        directory (``ValueError``)."""
    @property
    def layers(self) -> List[int]: ...
    @property
    def vectors(self) -> np.ndarray:
        """float32 ``[len(layers), d_model]``."""
    @property
    def metadata(self) -> Optional[Dict[str, Any]]: ...
    @property
    def accuracy(self) -> Optional[List[float]]: ...
    @property
    def explained_variance(self) -> Optional[List[float]]: ...
    @property
    def copy_mean(self) -> Optional[List[float]]: ...
    @property
    def correct_mean(self) -> Optional[List[float]]: ...
    def default_layers(self) -> List[int]: ...

def lat(model: Model, pairs: Sequence[Dict[str, str]], method: str = "pca", layers: Optional[str] = None,
        position: str = "last", test_fraction: float = 0.25, seed: int = 0, batch_size: int = 8) -> ControlVectors: ...
def sweep(model: Model, records: Sequence[Dict[str, str]], vectors: Union[None, str, ControlVectors] = None,
          alphas: Optional[List[float]] = None, random_control: bool = True, layers: Optional[List[int]] = None,
          site: str = "resid_post", steer_positions: Optional[str] = None, steer_mode: Optional[str] = None,
          random_seed: int = 0, max_new_tokens: int = 64, batch_size: int = 32) -> Dict[str, Any]: ...
def eval(model: Model, records: Sequence[Dict[str, str]], max_new_tokens: int = 64, batch_size: int = 32) -> Dict[str, Any]: ...
def patch(model: Model, records: Sequence[Dict[str, str]], positions: str = "decision", layers: Optional[List[int]] = None,
          point: str = "resid_post", max_new_tokens: int = 1, max_pairs: Optional[int] = None, batch_size: int = 8,
          vectors: Union[None, str, ControlVectors] = None) -> Dict[str, Any]: ...

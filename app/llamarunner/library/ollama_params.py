"""A model's Ollama `params` layer (its Modelfile PARAMETERs) as llama-server default flags.

llama-server takes sampling defaults on its command line (`--temp 0.7`): a request that
sets a value still wins, one that does not gets the model's. So the params of a pulled
model apply on every API, not only Ollama's. Parameters llama-server has no flag for
(`stop`, `num_keep`, `penalize_newline`, ...) are reported, not applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from ..config.schema import ArgValue

__all__ = ["PARAM_FLAGS", "params_to_args"]

# Modelfile parameter -> (llama-server flag, value kind).
PARAM_FLAGS: Final[Mapping[str, tuple[str, type]]] = {
    "num_ctx": ("ctx-size", int),
    "num_batch": ("batch-size", int),
    "num_thread": ("threads", int),
    "num_gpu": ("n-gpu-layers", int),
    "num_predict": ("n-predict", int),
    "seed": ("seed", int),
    "temperature": ("temp", float),
    "top_k": ("top-k", int),
    "top_p": ("top-p", float),
    "min_p": ("min-p", float),
    "typical_p": ("typical", float),
    "repeat_last_n": ("repeat-last-n", int),
    "repeat_penalty": ("repeat-penalty", float),
    "presence_penalty": ("presence-penalty", float),
    "frequency_penalty": ("frequency-penalty", float),
    "mirostat": ("mirostat", int),
    "mirostat_eta": ("mirostat-lr", float),
    "mirostat_tau": ("mirostat-ent", float),
}
# Values that mean "let the runtime decide" in Ollama: left to llama-server's own default.
_RUNTIME_DECIDES: Final = {"num_ctx": 0, "num_batch": 0, "num_thread": 0}


def _number(value: object, kind: type) -> int | float | None:
    # Ollama's params are JSON numbers (float64 in Go); bools are not numbers there.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    if kind is int:
        return int(value)
    return float(value)


def params_to_args(params: Mapping[str, object]) -> tuple[dict[str, ArgValue], list[str]]:
    """(flags, ignored): the flags `params` ask for, and the parameter names not applied.

    A value of the wrong type is ignored too (and named), never guessed at.
    """
    args: dict[str, ArgValue] = {}
    ignored: list[str] = []
    for key in sorted(params):
        spec = PARAM_FLAGS.get(key)
        value = _number(params[key], spec[1]) if spec else None
        if spec is None or value is None:
            ignored.append(key)
            continue
        flag, _ = spec
        if key in _RUNTIME_DECIDES and value <= _RUNTIME_DECIDES[key]:
            continue
        if key == "num_gpu" and value < 0:
            continue
        if key == "repeat_last_n" and value < 0:
            # -1 is "the whole context" in Ollama; llama-server spells that -1 too, but
            # refuses other negatives.
            value = -1
        if key == "num_predict" and value < 0:
            continue  # -1/-2: until done, llama-server's default
        args[flag] = value
    return args, ignored

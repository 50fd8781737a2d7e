"""Ollama request options, keep_alive and format, checked and mapped to llama-server terms."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "LOAD_OPTION_FLAGS",
    "OllamaRequestError",
    "go_type_error",
    "json_kind",
    "load_args_from_options",
    "parse_keep_alive",
    "response_format_from",
    "sampling_from_options",
]


class OllamaRequestError(ValueError):
    """A request Ollama itself would refuse; the route answers 400 ``{"error": str(exc)}``.

    Messages copy Ollama's own wording so clients that match on them keep working.
    """

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


def json_kind(value: object) -> str:
    """The JSON type of a decoded value, named the way Go's encoding/json names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def go_type_error(struct: str, field: str, go_type: str, value: object) -> OllamaRequestError:
    """Ollama's 400 when a body field has the wrong JSON type (Go's UnmarshalTypeError text)."""
    kind = json_kind(value)
    if kind == "number" and go_type == "int" and isinstance(value, float):
        kind = f"number {_go_float(value)}"
    return OllamaRequestError(
        f"json: cannot unmarshal {kind} into Go struct field {struct}.{field} of type {go_type}"
    )


def _go_float(value: float) -> str:
    return repr(value) if not value.is_integer() else str(int(value))


# --- options -----------------------------------------------------------------------------

_INT: Final = "integer"
_FLOAT: Final = "float32"
_BOOL: Final = "boolean"
_STRINGS: Final = "array"

# Every option Ollama has accepted in api.Options (current and older releases), with the
# type FromMap enforces. Anything else is unknown: Ollama only logs "invalid option".
_KNOWN: Final[dict[str, str]] = {
    # runtime (sampling) options
    "num_keep": _INT, "seed": _INT, "num_predict": _INT, "top_k": _INT,
    "top_p": _FLOAT, "min_p": _FLOAT, "tfs_z": _FLOAT, "typical_p": _FLOAT,
    "repeat_last_n": _INT, "temperature": _FLOAT, "repeat_penalty": _FLOAT,
    "presence_penalty": _FLOAT, "frequency_penalty": _FLOAT, "mirostat": _INT,
    "mirostat_tau": _FLOAT, "mirostat_eta": _FLOAT, "penalize_newline": _BOOL,
    "stop": _STRINGS,
    # load-time options
    "numa": _BOOL, "num_ctx": _INT, "num_batch": _INT, "num_gpu": _INT, "main_gpu": _INT,
    "low_vram": _BOOL, "f16_kv": _BOOL, "logits_all": _BOOL, "vocab_only": _BOOL,
    "use_mmap": _BOOL, "use_mlock": _BOOL, "embedding_only": _BOOL, "num_thread": _INT,
}

# Ollama option -> llama-server request field, where the value passes through unchanged.
_PASS_THROUGH: Final[dict[str, str]] = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "typical_p": "typical_p", "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "seed": "seed", "mirostat": "mirostat", "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
}

# Load-time option -> llama-server command-line flag (without the leading dashes).
LOAD_OPTION_FLAGS: Final[dict[str, str]] = {
    "num_ctx": "ctx-size",
    "num_gpu": "n-gpu-layers",
    "num_thread": "threads",
    "num_batch": "batch-size",
    "main_gpu": "main-gpu",
}


def _checked(key: str, value: object) -> Any:
    """One option's value converted the way api.Options.FromMap converts it, or the error."""
    kind = _KNOWN[key]
    if kind == _INT:
        # JSON numbers arrive as float64 in Go and are truncated toward zero; bool is not
        # a number there even though it is an int subclass here.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OllamaRequestError(f'option "{key}" must be of type integer')
        if isinstance(value, float):
            if not math.isfinite(value):
                raise OllamaRequestError(f'option "{key}" must be of type integer')
            return int(value)
        return value
    if kind == _FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OllamaRequestError(f'option "{key}" must be of type float32')
        return float(value)
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise OllamaRequestError(f'option "{key}" must be of type boolean')
        return value
    # stop: Ollama wants an array of strings. A bare string is accepted as one stop word
    # because OpenAI-style clients send it that way and llama-server accepts it too.
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise OllamaRequestError(f'option "{key}" must be of type array')
    if not all(isinstance(item, str) for item in value):
        raise OllamaRequestError(f'option "{key}" must be of an array of strings')
    return list(value)


def _validated(
    options: Mapping[str, Any] | None, struct: str
) -> tuple[dict[str, Any], list[str]]:
    if options is None:
        return {}, []
    if not isinstance(options, Mapping):
        raise go_type_error(struct, "options", "map[string]interface {}", options)
    known: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in options.items():
        if key not in _KNOWN:
            unknown.append(str(key))
            continue
        if value is None:  # FromMap skips nulls: the model's default stays
            continue
        known[key] = _checked(key, value)
    return known, unknown


def sampling_from_options(
    options: Mapping[str, Any] | None, *, struct: str = "ChatRequest"
) -> tuple[dict[str, Any], list[str]]:
    """Map Ollama ``options`` to llama-server ``/v1/chat/completions`` body fields.

    Returns ``(fields, ignored)``: ``ignored`` names the options that change nothing here,
    either unknown to Ollama (it only logs a warning for those) or known but without a
    llama-server equivalent (``tfs_z``, ``penalize_newline``, ``use_mmap``, ...), so the
    route can log them. Load-time options (``num_ctx`` ...) are validated but belong to
    :func:`load_args_from_options`. Every known option is type-checked as Ollama does;
    a wrong type raises :class:`OllamaRequestError` with Ollama's message (``struct`` names
    the request type in the message when ``options`` itself is not an object).
    """
    known, unknown = _validated(options, struct)
    body: dict[str, Any] = {}
    ignored = list(unknown)
    for key, value in known.items():
        if key in _PASS_THROUGH:
            body[_PASS_THROUGH[key]] = value
        elif key == "num_predict":
            # Ollama: -1 is "until done", -2 "until the context is full", and its runner
            # treats 0 as no limit too; llama-server's default (-1) is the same.
            if value > 0:
                body["max_tokens"] = value
        elif key == "num_keep":
            # llama-server refuses n_keep < -1; Ollama reads any negative as "keep all".
            body["n_keep"] = max(value, -1)
        elif key == "repeat_last_n":
            if value >= 0:
                body["repeat_last_n"] = value
            elif known.get("num_ctx", 0) > 0:
                # -1 means "the whole context" in Ollama; llama-server refuses negatives.
                body["repeat_last_n"] = known["num_ctx"]
            else:
                ignored.append(key)
        elif key == "stop":
            body["stop"] = value
        elif key not in LOAD_OPTION_FLAGS:
            ignored.append(key)
    return body, ignored


def load_args_from_options(
    options: Mapping[str, Any] | None, *, struct: str = "ChatRequest"
) -> dict[str, int]:
    """Load-time options as llama-server flags, e.g. ``{"ctx-size": 8192}``.

    Values that mean "let the runtime decide" in Ollama (``num_ctx``/``num_batch``/
    ``num_thread`` <= 0, ``num_gpu`` < 0) are left out so the runner's own config applies.
    """
    known, _ = _validated(options, struct)
    args: dict[str, int] = {}
    for key, flag in LOAD_OPTION_FLAGS.items():
        value = known.get(key)
        if value is None:
            continue
        if key in ("num_gpu", "main_gpu"):
            if value >= 0:
                args[flag] = value
        elif value > 0:
            args[flag] = value
    return args


# --- keep_alive --------------------------------------------------------------------------

_UNITS: Final[dict[str, int]] = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_BARE_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
_MAX_NS: Final = (1 << 63) - 1


def _go_quote(text: str) -> str:
    # Go's strconv.Quote for the printable text these messages carry.
    return json.dumps(text, ensure_ascii=False)


def _parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration string, with time.ParseDuration's rules and messages."""
    orig = text
    negative = False
    if text[:1] in ("-", "+"):
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise OllamaRequestError(f"time: invalid duration {_go_quote(orig)}")
    total = 0
    while text:
        match = re.match(r"(\d*)(?:\.(\d*))?", text)
        assert match is not None  # the pattern matches the empty string
        whole, frac = match.group(1), match.group(2)
        if not whole and not frac:
            raise OllamaRequestError(f"time: invalid duration {_go_quote(orig)}")
        text = text[match.end():]
        unit_match = re.match(r"[^\d.]*", text)
        assert unit_match is not None
        unit = unit_match.group(0)
        if not unit:
            raise OllamaRequestError(f"time: missing unit in duration {_go_quote(orig)}")
        if unit not in _UNITS:
            raise OllamaRequestError(
                f"time: unknown unit {_go_quote(unit)} in duration {_go_quote(orig)}"
            )
        text = text[len(unit):]
        scale = _UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // 10 ** len(frac)
        total += value
        if total > _MAX_NS:
            raise OllamaRequestError(f"time: invalid duration {_go_quote(orig)}")
    return -total if negative else total


def parse_keep_alive(value: object) -> float | None:
    """Ollama ``keep_alive`` as seconds: ``None`` when absent, ``math.inf`` for "forever".

    Numbers are seconds; strings are Go durations ("5m", "1h30m", "300ms", "-1m"). Any
    negative duration keeps the model loaded forever and ``0`` unloads it at once. A bare
    number in a string ("300") is taken as seconds, as Ollama's OLLAMA_KEEP_ALIVE setting
    does, although its API would refuse it for a missing unit.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise OllamaRequestError(f"unsupported duration type: '{_go_type_name(value)}'")
    if isinstance(value, str):
        stripped = value.strip()
        if _BARE_NUMBER.fullmatch(stripped):
            return parse_keep_alive(float(stripped))
        nanos = _parse_go_duration(value)
        if nanos < 0:
            return math.inf
        return nanos / 1e9
    if math.isnan(value):
        raise OllamaRequestError("time: invalid duration \"NaN\"")
    if value < 0:
        return math.inf
    return float(value)


def _go_type_name(value: object) -> str:
    # How Go's %T prints what encoding/json decoded into an interface{}.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return type(value).__name__


# --- format ------------------------------------------------------------------------------

def _go_quote_bytes(raw: str) -> str:
    # fmt's %q of a json.RawMessage: a Go-quoted string of the raw JSON text.
    return json.dumps(raw, ensure_ascii=False)


def response_format_from(format: object) -> dict[str, Any] | None:
    """Ollama ``format`` as an OpenAI ``response_format`` for llama-server.

    ``None``/``""`` mean unset; ``"json"`` is JSON mode (llama-server then constrains the
    output to a JSON object, like Ollama's JSON grammar); an object is a JSON Schema.
    Anything else is refused with Ollama's message.
    """
    if format is None or format == "":
        return None
    if format == "json":
        return {"type": "json_object"}
    if isinstance(format, Mapping):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": format}}
    raw = json.dumps(format, separators=(",", ":"), ensure_ascii=False)
    raise OllamaRequestError(
        f'invalid format: {_go_quote_bytes(raw)}; expected "json" or a valid JSON Schema object'
    )

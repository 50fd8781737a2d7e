"""Ollama's model views (/api/tags, /api/show, /api/ps entries) built from GGUF metadata."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ...config.schema import ArgValue
from ...library.metadata import GGUFMetadata, parameter_size_label

# Ollama answers /api/version with its own version; clients such as GitHub Copilot refuse
# servers older than 0.6.4. This is the Ollama release whose API we follow.
OLLAMA_COMPAT_VERSION = "0.13.0"

# How Ollama's Modelfile PARAMETER names map to llama-server flags, for /api/show.
_ARG_TO_PARAMETER = {
    "ctx-size": "num_ctx", "c": "num_ctx",
    "threads": "num_thread", "t": "num_thread",
    "n-gpu-layers": "num_gpu", "ngl": "num_gpu", "gpu-layers": "num_gpu",
    "batch-size": "num_batch", "b": "num_batch",
    "temp": "temperature", "temperature": "temperature",
    "top-k": "top_k", "top-p": "top_p", "min-p": "min_p",
    "repeat-penalty": "repeat_penalty", "repeat-last-n": "repeat_last_n",
    "seed": "seed", "n-predict": "num_predict", "keep": "num_keep",
}

_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


def ollama_name(name: str) -> str:
    """Ollama shows every model with a tag; ours get `:latest` unless they have one."""
    return name if ":" in name else f"{name}:latest"


def rfc3339(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def far_future() -> str:
    """What Ollama reports as expires_at for a model kept loaded forever (keep_alive < 0)."""
    moment = dt.datetime.now(tz=dt.UTC) + dt.timedelta(days=292 * 365)
    return rfc3339(moment.timestamp())


def file_digest(path: str, size: int, mtime_ns: int) -> str:
    """A stable 64-hex id for a model file without reading gigabytes to hash it.

    It changes exactly when the file is replaced or modified (size or mtime change).
    """
    key = f"{os.path.realpath(path)}\0{size}\0{mtime_ns}".encode()
    return hashlib.sha256(key).hexdigest()


def details(meta: GGUFMetadata | None) -> dict[str, Any]:
    if meta is None:
        return {"parent_model": "", "format": "gguf", "family": "", "families": None,
                "parameter_size": "", "quantization_level": ""}
    family = meta.architecture or ""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size_label(meta),
        "quantization_level": meta.quantization or "",
    }


def context_length(args: Mapping[str, ArgValue], meta: GGUFMetadata | None,
                   served: int | None = None) -> int | None:
    """The context the runner uses: llama-server's own figure, else ctx-size, else training."""
    if served:
        return served
    for key in ("ctx-size", "c"):
        value = args.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return meta.context_length if meta else None


def tag_entry(name: str, meta: GGUFMetadata | None, *, size: int, mtime: float,
              digest: str) -> dict[str, Any]:
    return {
        "name": ollama_name(name),
        "model": ollama_name(name),
        "modified_at": rfc3339(mtime),
        "size": size,
        "digest": digest,
        "details": details(meta),
    }


def _go_value(value: object) -> str:
    """A parameter's value as Ollama prints it (Go's %#v): strings quoted, 1.0 as 1."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parameter_pairs(args: Mapping[str, ArgValue], params: Mapping[str, object] | None = None
                    ) -> list[tuple[str, object]]:
    """(Ollama name, value) for each PARAMETER: a pulled model's params layer first, in its
    order (with the value its runner really uses where the config overrides one), then
    what the args name besides. Lists (`stop`) give one pair per value."""
    from_args: dict[str, list[object]] = {}
    for key, value in args.items():
        name = _ARG_TO_PARAMETER.get(key)
        if name is None or isinstance(value, bool) or value is None:
            continue
        from_args[name] = list(value) if isinstance(value, list) else [value]
    pairs: list[tuple[str, object]] = []
    for key, given in (params or {}).items():
        values = from_args.pop(key, None) or (list(given) if isinstance(given, list)
                                              else [given])
        pairs += [(key, item) for item in values]
    for name, values in from_args.items():
        pairs += [(name, item) for item in values]
    return pairs


def parameters_text(args: Mapping[str, ArgValue],
                    params: Mapping[str, object] | None = None) -> str:
    """Ollama's `parameters` field: Modelfile PARAMETER lines for what we can name."""
    return "\n".join(f"{name:<30}{_go_value(value)}"
                     for name, value in parameter_pairs(args, params))


def model_info(meta: GGUFMetadata | None, ctx: int | None) -> dict[str, Any]:
    if meta is None:
        return {}
    info = dict(meta.model_info)
    if meta.architecture and ctx:
        # Clients size their prompts from this: report what the runner really serves.
        info[f"{meta.architecture}.context_length"] = ctx
    return info


def show_response(
    name: str, meta: GGUFMetadata | None, *, args: Mapping[str, ArgValue],
    capabilities: Sequence[str], mtime: float, served_context: int | None = None,
    template: str | None = None, system: str | None = None,
    params: Mapping[str, object] | None = None, license: str = "",
) -> dict[str, Any]:
    """Ollama's /api/show; `template` is the one the runner uses (the file's by default).

    A pulled model also has its manifest's system prompt, params layer and license.
    """
    ctx = context_length(args, meta, served_context)
    if template is None:
        template = (meta.chat_template if meta else None) or ""
    body: dict[str, Any] = {
        "license": license,
        "modelfile": _modelfile(name, args, template, system=system, params=params,
                                license=license),
        "parameters": parameters_text(args, params),
        "template": template,
    }
    if system:
        body["system"] = system  # Ollama leaves it out when empty
    body.update({
        "details": details(meta),
        "model_info": model_info(meta, ctx),
        "capabilities": list(capabilities),
        "modified_at": rfc3339(mtime),
    })
    return body


def _modelfile_value(value: object) -> str:
    # Modelfile syntax: a value with spaces or quotes must be quoted to parse back.
    if isinstance(value, str) and value and not any(c.isspace() or c == '"' for c in value):
        return value
    return _go_value(value)


def _modelfile(name: str, args: Mapping[str, ArgValue], template: str, *,
               system: str | None = None, params: Mapping[str, object] | None = None,
               license: str = "") -> str:
    lines = [f"# Modelfile generated by llamarunner for {ollama_name(name)}", f"FROM {name}"]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for key, value in parameter_pairs(args, params):
        lines.append(f"PARAMETER {key} {_modelfile_value(value)}")
    if license:
        lines.append(f'LICENSE """{license}"""')
    return "\n".join(lines) + "\n"


def vram_share(log_tail: Sequence[str], size: int) -> int:
    """Bytes of the model on the GPU, from llama-server's own 'offloaded N/M layers' line."""
    for line in reversed(log_tail):
        match = _OFFLOADED.search(line)
        if match:
            done, total = int(match.group(1)), int(match.group(2))
            return int(size * done / total) if total else 0
    return 0


def ps_entry(
    name: str, meta: GGUFMetadata | None, *, size: int, digest: str,
    expires_at: float | None, context: int | None, size_vram: int,
) -> dict[str, Any]:
    expires = far_future() if expires_at is None or math.isinf(expires_at) else rfc3339(
        expires_at)
    return {
        "name": ollama_name(name),
        "model": ollama_name(name),
        "size": size,
        "digest": digest,
        "details": details(meta),
        "expires_at": expires,
        "size_vram": size_vram,
        "context_length": context or 0,
    }

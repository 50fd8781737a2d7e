"""Ollama's `create`: a new manifest from uploaded blobs or from another model, plus layers.

`parse_create_request` checks the request (pure; every problem is a 400 before anything
is touched). The model's weights come from `files` (GGUF blobs uploaded with
`POST /api/blobs/<digest>`: the model, optionally a projector) or from `from`: a model in
the store lends its layers; any other model (a config entry, a folder, Ollama's or
LM Studio's store) has its GGUF hard-linked into the store (copied across disks).
`template`, `system`, `license`, `parameters` and `messages` become layers of their own,
as in Ollama's server/create.go: a new template or system replaces the old one,
parameters are merged over the base model's, licenses are added.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import BadRequestError
from ..library.discovery import LibraryEntry
from .layout import (
    MEDIA_ADAPTER,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    is_digest,
)
from .names import ModelName, parse_name

__all__ = [
    "CreateBase",
    "CreateRequest",
    "ImportFile",
    "base_from_entry",
    "parse_create_request",
    "replaced_media",
    "text_layers",
]


@dataclass(frozen=True)
class CreateRequest:
    name: ModelName
    source: str | None = None  # "from"
    files: Mapping[str, str] = field(default_factory=dict)  # file name -> digest
    adapters: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    licenses: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class ImportFile:
    """A file outside the store to bring in as a layer; `digest` when already known."""

    media_type: str
    path: str
    digest: str | None = None


@dataclass(frozen=True)
class CreateBase:
    """What a `from` model lends: the layers of its manifest, or files to import."""

    layers: tuple[tuple[str, str, int], ...] = ()  # (media type, digest, size)
    files: tuple[ImportFile, ...] = ()


def _string_map(value: object, field_name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadRequestError(f"{field_name} must be an object of file names to digests")
    for file_name, digest in value.items():
        # Ollama's fs.ValidPath: relative, "/"-separated, no "." or ".." element.
        if (not file_name or file_name.startswith("/") or "\\" in file_name
                or posixpath.normpath(file_name) != file_name or file_name.startswith("..")):
            raise BadRequestError(f"file path must be relative: {file_name!r}")
        if not is_digest(digest):
            raise BadRequestError(f"invalid digest format for {file_name!r}: expected "
                                  "sha256:<64 lowercase hex digits>")
    return dict(value)


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequestError(f"{key} must be a string")
    return value


def parse_create_request(data: Mapping[str, Any]) -> CreateRequest:
    """The checked request; raises BadRequestError (400) with what is wrong."""
    name = parse_name(data.get("model") or data.get("name"))
    if data.get("quantize") not in (None, ""):
        raise BadRequestError("quantize is not supported: LlamaRunner does not quantize "
                              "models; create from a GGUF file that is already quantized")
    source = _optional_text(data, "from")
    files = _string_map(data.get("files"), "files")
    adapters = _string_map(data.get("adapters"), "adapters")
    if source is None and not files:
        raise BadRequestError("neither 'from' or 'files' was specified")
    licenses = data.get("license")
    if licenses is None or licenses == "":
        license_list: tuple[str, ...] = ()
    elif isinstance(licenses, str):
        license_list = (licenses,)
    elif isinstance(licenses, list) and all(isinstance(item, str) for item in licenses):
        license_list = tuple(item for item in licenses if item)
    else:
        raise BadRequestError("license must be a string or a list of strings")
    parameters = data.get("parameters")
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise BadRequestError("parameters must be an object")
    messages = data.get("messages")
    messages = [] if messages is None else messages
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequestError("messages must be a list of objects with a role and content")
    return CreateRequest(
        name=name, source=source, files=files, adapters=adapters,
        template=_optional_text(data, "template"), system=_optional_text(data, "system"),
        licenses=license_list, parameters=dict(parameters), messages=tuple(messages))


def base_from_entry(entry: LibraryEntry | None, model_path: str) -> CreateBase:
    """What a model outside the store lends to `create ... from`: its files to import.

    Raises BadRequestError for a split model, which cannot be one blob.
    """
    if entry is None:
        return CreateBase(files=(ImportFile(MEDIA_MODEL, model_path),))
    if len(entry.parts) > 1:
        raise BadRequestError(f"model '{entry.name}' is split across {len(entry.parts)} files, "
                              "which cannot be stored as one blob")
    known = f"sha256:{entry.digest}" if entry.digest else None
    files = [ImportFile(MEDIA_MODEL, entry.path, known)]
    if entry.projector:
        files.append(ImportFile(MEDIA_PROJECTOR, entry.projector))
    files += [ImportFile(MEDIA_ADAPTER, adapter) for adapter in entry.adapters]
    return CreateBase(files=tuple(files))


def text_layers(request: CreateRequest, base_params: Mapping[str, Any] | None
                ) -> list[tuple[str, bytes]]:
    """The (media type, bytes) layers a request adds; its params merged over `base_params`.

    The caller drops the base's template/system/params/messages layers this replaces.
    """
    layers: list[tuple[str, bytes]] = []
    if request.template is not None:
        layers.append((MEDIA_TEMPLATE, request.template.encode()))
    if request.system is not None:
        layers.append((MEDIA_SYSTEM, request.system.encode()))
    layers += [(MEDIA_LICENSE, text.encode()) for text in request.licenses]
    params = {**(base_params or {}), **request.parameters}
    if request.parameters and params:
        layers.append((MEDIA_PARAMS, _go_json(params)))
    if request.messages:
        layers.append((MEDIA_MESSAGES, _go_json(list(request.messages))))
    return layers


def replaced_media(request: CreateRequest) -> set[str]:
    """Media types of base layers the request's own layers take the place of."""
    replaced: set[str] = set()
    if request.template is not None:
        replaced.add(MEDIA_TEMPLATE)
    if request.system is not None:
        replaced.add(MEDIA_SYSTEM)
    if request.parameters:
        replaced.add(MEDIA_PARAMS)
    if request.messages:
        replaced.add(MEDIA_MESSAGES)
    return replaced


def _go_json(value: object) -> bytes:
    # Go's json.Encoder: compact, with a newline.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

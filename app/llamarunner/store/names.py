"""Ollama model names: parse and check `[scheme://][host/][namespace/]model[:tag]`.

The rules are Ollama's (types/model/name.go): host, namespace, model and tag each start
with a letter, digit or "_"; then letters, digits, "_" and "-", plus "." (not in a
namespace) and ":" (only the host's port). Hosts are at most 350 characters, the other
parts 80. On top of that, no part may hold "..": every part becomes a folder or file name
in the store, so a name is refused here, before any network or file access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ..library.ollama_store import DEFAULT_HOST, DEFAULT_NAMESPACE, ollama_model_name
from .errors import InvalidNameError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TAG",
    "HF_HOSTS",
    "ModelName",
    "parse_name",
]

DEFAULT_TAG: Final = "latest"
# Hugging Face serves GGUF repositories under both names (hf.co/{owner}/{repo}).
HF_HOSTS: Final = frozenset({"hf.co", "huggingface.co"})

_MAX_LENGTH: Final = {"host": 350, "namespace": 80, "model": 80, "tag": 80}
_FIRST: Final = re.compile(r"[A-Za-z0-9_]")
_ALLOWED: Final = {
    "host": re.compile(r"[A-Za-z0-9_.:-]*"),
    "namespace": re.compile(r"[A-Za-z0-9_-]*"),
    "model": re.compile(r"[A-Za-z0-9_.-]*"),
    "tag": re.compile(r"[A-Za-z0-9_.-]*"),
}
_EXAMPLES: Final = ('names look like "model", "model:tag", "namespace/model:tag" or '
                    '"host/namespace/model:tag"')


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name; `scheme` is "http" only when the name asked for it."""

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = "https"

    @property
    def display(self) -> str:
        """The shortest form, as Ollama lists it: `tiny:latest`, `hf.co/org/repo:Q4_K_M`."""
        return ollama_model_name(self.host, self.namespace, self.model, self.tag)

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        """`namespace/model`, the repository path of the registry's v2 API."""
        return f"{self.namespace}/{self.model}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag

    @property
    def is_huggingface(self) -> bool:
        return self.host.lower() in HF_HOSTS

    def same(self, other: ModelName) -> bool:
        """Ollama compares names without regard to case."""
        return tuple(p.casefold() for p in self.parts) == tuple(
            p.casefold() for p in other.parts)


def _refuse(text: str, reason: str) -> InvalidNameError:
    shown = text if len(text) <= 120 else text[:117] + "..."
    return InvalidNameError(f"invalid model name {shown!r}: {reason}; {_EXAMPLES}")


def _check_part(text: str, kind: str, value: str) -> None:
    if not value:
        raise _refuse(text, f"the {kind} is empty")
    if len(value) > _MAX_LENGTH[kind]:
        raise _refuse(text, f"the {kind} is longer than {_MAX_LENGTH[kind]} characters")
    if not _FIRST.fullmatch(value[0]):
        raise _refuse(text, f"the {kind} {value!r} must start with a letter, digit or '_'")
    if not _ALLOWED[kind].fullmatch(value[1:]):
        allowed = {"host": "letters, digits, '_', '-', '.' and ':'",
                   "namespace": "letters, digits, '_' and '-'"}.get(
            kind, "letters, digits, '_', '-' and '.'")
        raise _refuse(text, f"the {kind} {value!r} may only hold {allowed}")
    if ".." in value:
        raise _refuse(text, f"the {kind} {value!r} contains '..'")
    if kind == "host" and ":" in value:
        _, _, port = value.partition(":")
        if not port.isdigit() or len(port) > 5:
            raise _refuse(text, f"the host {value!r} has a bad port")


def parse_name(text: object) -> ModelName:
    """The fully qualified name `text` means, with Ollama's defaults filled in.

    Raises InvalidNameError (400) saying which part is wrong.
    """
    if not isinstance(text, str) or not text:
        raise InvalidNameError("model is required")
    rest = text
    scheme = "https"
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        if scheme not in ("http", "https"):
            raise _refuse(text, f"unknown scheme {scheme!r} (use http:// or https://)")
    if "@" in rest:
        raise _refuse(text, "pulling by digest (@sha256:...) is not supported")
    tag = DEFAULT_TAG
    # "/" cannot be in a tag, so a ":" after the last "/" starts the tag (a host's port
    # comes before a "/").
    if rest.rfind(":") > rest.rfind("/"):
        rest, _, tag = rest.rpartition(":")
        _check_part(text, "tag", tag)
    pieces = rest.split("/")
    if len(pieces) > 3:
        raise _refuse(text, "it has more than three '/'-separated parts")
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(pieces) == 3:
        host, namespace, model = pieces
    elif len(pieces) == 2:
        namespace, model = pieces
    else:
        model = pieces[0]
    _check_part(text, "host", host)
    _check_part(text, "namespace", namespace)
    _check_part(text, "model", model)
    return ModelName(host, namespace, model, tag, scheme)

"""What the model listings add for a model a peer serves: whose it is and whether it answers."""

from __future__ import annotations

from typing import Any

from yarl import URL

from ..peers.directory import PEER_OWNER_PREFIX
from .context import ProxyBackend


def peer_owner(backend: ProxyBackend, name: str) -> str | None:
    """`owned_by` for a peer's model in /v1/models ("peer NAME"); None for a local one."""
    model = backend.models().get(name)
    return f"{PEER_OWNER_PREFIX}{model.peer}" if model is not None and model.is_peer else None


def peer_fields(backend: ProxyBackend, name: str, *, ollama: bool = False) -> dict[str, Any]:
    """Extra listing fields for a peer's model ({} for a local one).

    `available` is False while the peer does not answer. On the Ollama API the fields are
    the ones Ollama gives models another host runs (`remote_model`, `remote_host`); the
    host is the URL's origin only, so no credentials written into the URL are shown.
    """
    model = backend.models().get(name)
    if model is None or not model.is_peer:
        return {}
    status = backend.peer_status(name)
    fields: dict[str, Any] = {"peer": model.peer,
                              "available": status is None or status.available is not False}
    if ollama and status is not None:
        fields["remote_model"] = model.remote_id
        fields["remote_host"] = str(URL(status.url).origin())
    return fields

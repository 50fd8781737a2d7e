"""The peers' models as library entries: which name each is listed under, which aliases.

A local model always keeps its name: a peer's model of the same name is listed as
`PEER/model` instead. Every peer model answers to `PEER/model` too, so a client can pick
the peer's copy on purpose. Between two peers with the same model, the first by name
gets the plain one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ..config.schema import ModelConfig
from .directory import PeerStatus


def peer_model_name(peer: str, remote_id: str) -> str:
    """The name that always leads to `remote_id` on `peer`."""
    return f"{peer}/{remote_id}"


def peer_models(statuses: Iterable[PeerStatus], taken: Collection[str]) -> dict[str, ModelConfig]:
    """A ModelConfig for each model of each peer, keyed by the name it is listed under.

    `taken` holds the local names and aliases, lowercased, which peers' models never take.
    """
    used = {name.lower() for name in taken}
    result: dict[str, ModelConfig] = {}
    for status in sorted(statuses, key=lambda s: s.name):
        for remote_id in status.models:
            qualified = peer_model_name(status.name, remote_id)
            if qualified.lower() in used:
                continue  # a local model is called that already
            listed = remote_id if remote_id.lower() not in used else qualified
            used.add(listed.lower())
            aliases: tuple[str, ...] = ()
            if listed != qualified:
                used.add(qualified.lower())
                aliases = (qualified,)
            result[listed] = ModelConfig(name=listed, path="", alias=aliases,
                                         peer=status.name, remote_id=remote_id)
    return result

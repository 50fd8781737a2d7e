"""Pure scheduling decisions: which loaded model to evict to make room for another."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """What the policy may know about a loaded model."""

    name: str
    inflight: int
    last_used: float
    wanted: bool  # a queued request ahead in line needs it; evicting it would thrash


@dataclass(frozen=True)
class Eviction:
    name: str
    drain: bool  # True: requests are running; stop taking new ones and stop when they end


def choose_eviction(candidates: Iterable[Candidate]) -> Eviction | None:
    """Least recently used idle model first; else the least recently used busy one, drained.

    Models wanted by requests queued earlier are never chosen, so a queue of A B A B
    moves forward instead of evicting what the next request needs.
    """
    eligible = [c for c in candidates if not c.wanted]
    if not eligible:
        return None
    idle = [c for c in eligible if c.inflight == 0]
    if idle:
        victim = min(idle, key=lambda c: (c.last_used, c.name))
        return Eviction(victim.name, drain=False)
    victim = min(eligible, key=lambda c: (c.last_used, c.name))
    return Eviction(victim.name, drain=True)

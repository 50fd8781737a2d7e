"""Which model makes room for another: a pure function, tested without processes."""

from __future__ import annotations

import pytest

from llamarunner.runner.policy import Candidate, Eviction, choose_eviction


@pytest.mark.parametrize(
    "candidates,expected",
    [
        ([], None),
        ([Candidate("a", 0, 5.0, False)], Eviction("a", drain=False)),
        # least recently used idle model goes first
        ([Candidate("a", 0, 5.0, False), Candidate("b", 0, 3.0, False)],
         Eviction("b", drain=False)),
        # an idle model beats an older busy one: nothing is cut off
        ([Candidate("a", 2, 1.0, False), Candidate("b", 0, 9.0, False)],
         Eviction("b", drain=False)),
        # all busy: drain the least recently used
        ([Candidate("a", 1, 4.0, False), Candidate("b", 3, 2.0, False)],
         Eviction("b", drain=True)),
        # a model that a queued request needs is never chosen
        ([Candidate("a", 0, 1.0, True), Candidate("b", 0, 9.0, False)],
         Eviction("b", drain=False)),
        ([Candidate("a", 0, 1.0, True)], None),
        # ties are broken by name, so the choice is deterministic
        ([Candidate("b", 0, 1.0, False), Candidate("a", 0, 1.0, False)],
         Eviction("a", drain=False)),
    ],
)
def test_choose_eviction(candidates: list[Candidate], expected: Eviction | None) -> None:
    assert choose_eviction(candidates) == expected

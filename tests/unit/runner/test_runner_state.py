"""The runner state table: every allowed transition, and that the rest are refused."""

from __future__ import annotations

import itertools

import pytest

from llamarunner.runner.state import (
    ALLOWED_TRANSITIONS,
    InvalidTransitionError,
    RunnerState,
    check_transition,
)

S = RunnerState
ALLOWED = {
    (S.STOPPED, S.STARTING),
    (S.STARTING, S.READY), (S.STARTING, S.FAILED), (S.STARTING, S.STOPPING),
    (S.READY, S.STOPPING), (S.READY, S.FAILED),
    (S.STOPPING, S.STOPPED),
    (S.FAILED, S.STARTING), (S.FAILED, S.STOPPED),
}


@pytest.mark.parametrize("current,target", sorted(
    itertools.product(S, S), key=lambda p: (p[0].value, p[1].value)))
def test_transition_table(current: RunnerState, target: RunnerState) -> None:
    if (current, target) in ALLOWED:
        check_transition("m", current, target)
    else:
        with pytest.raises(InvalidTransitionError, match=f"{current.value} -> {target.value}"):
            check_transition("m", current, target)


def test_every_state_has_a_way_out() -> None:
    assert all(ALLOWED_TRANSITIONS[state] for state in S)

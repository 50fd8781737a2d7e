"""Runner lifecycle states and the transitions allowed between them."""

from __future__ import annotations

import enum


class RunnerState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


# Every state change goes through this table so an impossible sequence (a READY runner
# going back to STARTING without being stopped, say) is a loud bug, not a silent one.
ALLOWED_TRANSITIONS: dict[RunnerState, frozenset[RunnerState]] = {
    RunnerState.STOPPED: frozenset({RunnerState.STARTING}),
    RunnerState.STARTING: frozenset(
        {RunnerState.READY, RunnerState.FAILED, RunnerState.STOPPING}
    ),
    RunnerState.READY: frozenset({RunnerState.STOPPING, RunnerState.FAILED}),
    RunnerState.STOPPING: frozenset({RunnerState.STOPPED}),
    RunnerState.FAILED: frozenset({RunnerState.STARTING, RunnerState.STOPPED}),
}

# States in which a llama-server process exists (or is being made) and holds a slot.
OCCUPYING_STATES = frozenset({RunnerState.STARTING, RunnerState.READY, RunnerState.STOPPING})


class InvalidTransitionError(RuntimeError):
    def __init__(self, model: str, current: RunnerState, target: RunnerState) -> None:
        super().__init__(f"runner '{model}': {current.value} -> {target.value} is not allowed")


def check_transition(model: str, current: RunnerState, target: RunnerState) -> None:
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransitionError(model, current, target)

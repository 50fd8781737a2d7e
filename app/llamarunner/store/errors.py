"""Errors of the model store and its downloads, each with the HTTP status an API answers."""

from __future__ import annotations

from ..core.errors import BadRequestError, LlamaRunnerError

__all__ = [
    "DigestMismatchError",
    "InvalidNameError",
    "NotEnoughSpaceError",
    "PullCancelledError",
    "PullError",
    "RemoteNotFoundError",
    "RemoteUnreachableError",
    "StoreError",
]


class StoreError(LlamaRunnerError):
    """Something in the model store went wrong; the message says what and what to do."""

    status = 500
    code = "store_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidNameError(BadRequestError):
    """A model name that is not a valid Ollama name (checked before any network or file)."""

    code = "invalid_model_name"


class PullError(StoreError):
    """A pull failed. `resumable` pulls keep their partial files for the next try."""

    code = "pull_failed"

    def __init__(self, message: str, *, status: int | None = None,
                 resumable: bool = False) -> None:
        super().__init__(message, status=status)
        self.resumable = resumable


class RemoteNotFoundError(PullError):
    status = 404
    code = "remote_not_found"


class RemoteUnreachableError(PullError):
    status = 502
    code = "remote_unreachable"

    def __init__(self, message: str) -> None:
        super().__init__(message, resumable=True)


class DigestMismatchError(PullError):
    code = "digest_mismatch"


class NotEnoughSpaceError(PullError):
    status = 507
    code = "insufficient_storage"

    def __init__(self, message: str, *, needed: int, free: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.free = free


class PullCancelledError(PullError):
    status = 499
    code = "cancelled"

    def __init__(self, message: str = "the pull was cancelled; pull again to resume") -> None:
        super().__init__(message, resumable=True)

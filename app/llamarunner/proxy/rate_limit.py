"""Requests and generated tokens per minute, per API key (or per client address).

The counting is the `limits` library's moving window in memory, shared by both listeners
of a Service (`rate_limiter_for`). A request is counted when it arrives; its generated
tokens when its answer is complete (the relay reads them from llama-server's usage), so
a key over its token budget is refused from its next request on, until the window has
room again.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from ..config.schema import ApiKeyConfig, SecurityConfig
from ..core.errors import RateLimitedError

__all__ = ["Budget", "RateLimiter", "budget_for", "rate_limiter_for"]

_REQUESTS: Final = "requests"
_TOKENS: Final = "tokens"


@dataclass(frozen=True)
class Budget:
    """Whose use is counted (a key's name, or "client:<address>") and its limits."""

    who: str
    label: str  # what metrics and messages call it: the key's name, "" for a client
    requests_per_minute: int | None
    tokens_per_minute: int | None

    @property
    def limited(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute)


def budget_for(security: SecurityConfig, key: ApiKeyConfig | None,
               client: str | None) -> Budget | None:
    """The budget a request draws on: its named key's, else (no key in use) its client
    address's when `client_*_per_minute` are set; None when nothing limits it."""
    if key is not None:
        budget = Budget(f"key:{key.name}", key.name, key.requests_per_minute,
                        key.tokens_per_minute)
    elif security.requires_key:
        return None  # the unnamed key: no limits of its own
    else:
        budget = Budget(f"client:{client or 'unknown'}", "",
                        security.client_requests_per_minute or None,
                        security.client_tokens_per_minute or None)
    return budget if budget.limited else None


class RateLimiter:
    """Moving one-minute windows of requests and tokens per budget."""

    def __init__(self, on_refused: Callable[[str], None] | None = None) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[int, RateLimitItem] = {}
        self._on_refused = on_refused

    def _item(self, per_minute: int) -> RateLimitItem:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute)
        return item

    def admit(self, budget: Budget) -> None:
        """Count one request, or raise RateLimitedError (429) saying which limit and when."""
        if budget.tokens_per_minute:
            tokens = self._item(budget.tokens_per_minute)
            # Full when not even one more token fits: the last answer used the rest.
            if not self._limiter.test(tokens, _TOKENS, budget.who):
                self._refuse(budget, _TOKENS, tokens)
        if budget.requests_per_minute:
            requests = self._item(budget.requests_per_minute)
            if not self._limiter.hit(requests, _REQUESTS, budget.who):
                self._refuse(budget, _REQUESTS, requests)

    def spend_tokens(self, budget: Budget, tokens: int) -> None:
        """Count an answer's generated tokens (what does not fit fills the window)."""
        if not budget.tokens_per_minute or tokens <= 0:
            return
        item = self._item(budget.tokens_per_minute)
        # hit() refuses a cost that does not fit whole: count what fits, which fills the
        # window, so that an answer longer than the budget blocks the key for a minute.
        stats = self._limiter.get_window_stats(item, _TOKENS, budget.who)
        cost = min(tokens, stats.remaining)
        if cost > 0:
            self._limiter.hit(item, _TOKENS, budget.who, cost=cost)

    def _refuse(self, budget: Budget, kind: str, item: RateLimitItem) -> None:
        stats = self._limiter.get_window_stats(item, kind, budget.who)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        if self._on_refused is not None:
            self._on_refused(budget.label)
        whose = f"API key '{budget.label}'" if budget.label else "this client"
        limit = budget.requests_per_minute if kind == _REQUESTS else budget.tokens_per_minute
        raise RateLimitedError(
            f"rate limit reached for {whose}: {limit} {kind} per minute; retry in {wait} s",
            kind=kind, retry_after=wait)


_LIMITERS: weakref.WeakKeyDictionary[object, RateLimiter] = weakref.WeakKeyDictionary()


def rate_limiter_for(owner: object,
                     on_refused: Callable[[str], None] | None = None) -> RateLimiter:
    """The one limiter of a Service (`owner`), shared by its listeners."""
    limiter = _LIMITERS.get(owner)
    if limiter is None:
        limiter = _LIMITERS[owner] = RateLimiter(on_refused)
    return limiter

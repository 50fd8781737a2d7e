"""LM Studio's generation `stats` from llama-server's `timings` and finish reason, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "FINISH_TO_STOP_REASON",
    "finish_reason_of",
    "generation_stats",
    "requested_max_tokens",
    "stop_reason",
]

# OpenAI finish_reason (what llama-server's /v1 endpoints say) -> LM Studio's stopReason
# vocabulary (LLMPredictionStopReason in lmstudio-js). llama-server says "stop" both for
# an end-of-generation token and for a matched stop string without telling them apart,
# so "stop" is reported as the common case, eosFound.
FINISH_TO_STOP_REASON: Final[dict[str, str]] = {
    "stop": "eosFound",
    "length": "maxPredictedTokensReached",
    "tool_calls": "toolCalls",
    "function_call": "toolCalls",
}
# Neither an end nor a limit was reported: the generation did not finish normally.
UNKNOWN_STOP_REASON: Final = "failed"

# Seconds keep microsecond precision; more digits are float noise from ms / 1000.
_DIGITS: Final = 6


def finish_reason_of(response: Mapping[str, Any]) -> str | None:
    """The first choice's finish_reason in an OpenAI response, None when there is none."""
    choices = response.get("choices")
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, Mapping) and isinstance(choice.get("finish_reason"), str):
            return str(choice["finish_reason"])
    return None


def requested_max_tokens(body: Mapping[str, Any]) -> int | None:
    """The completion limit a request set, or None for "until the model stops".

    OpenAI spells it max_tokens or max_completion_tokens, llama.cpp also n_predict;
    LM Studio's own clients send -1 for no limit.
    """
    for key in ("max_completion_tokens", "max_tokens", "n_predict"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def stop_reason(finish_reason: str | None, *, predicted: int | None = None,
                max_tokens: int | None = None) -> str:
    """LM Studio's stop_reason for an OpenAI finish_reason.

    llama-server ends with "length" both at the request's token limit and when the context
    is full; fewer tokens than the request allowed can only mean the context ran out.
    """
    if finish_reason is None:
        return UNKNOWN_STOP_REASON
    if (finish_reason == "length" and max_tokens is not None and predicted is not None
            and predicted < max_tokens):
        return "contextLengthReached"
    return FINISH_TO_STOP_REASON.get(finish_reason, UNKNOWN_STOP_REASON)


def generation_stats(timings: Mapping[str, Any] | None, finish_reason: str | None, *,
                     usage: Mapping[str, Any] | None = None,
                     max_tokens: int | None = None) -> dict[str, Any]:
    """The `stats` object of an /api/v0 completion.

    time_to_first_token is the prompt evaluation (prefill); generation_time is prefill
    plus decoding, the way current LM Studio reports it, so that tokens_per_second, the
    decoding rate, equals completion tokens / (generation_time - time_to_first_token).
    Without timings (an older llama-server) the figures are 0.
    """
    t = timings or {}
    prompt_s = _non_negative(t.get("prompt_ms")) / 1000
    predicted_s = _non_negative(t.get("predicted_ms")) / 1000
    predicted = _count(t.get("predicted_n"))
    if predicted is None and usage is not None:
        predicted = _count(usage.get("completion_tokens"))
    # llama-server's own rate when it gives one; it is the same quotient, unrounded.
    rate = _non_negative(t.get("predicted_per_second")) if "predicted_per_second" in t else None
    if rate is None:
        rate = predicted / predicted_s if predicted and predicted_s > 0 else 0.0
    return {
        "tokens_per_second": rate,
        "time_to_first_token": round(prompt_s, _DIGITS),
        "generation_time": round(prompt_s + predicted_s, _DIGITS),
        "stop_reason": stop_reason(finish_reason, predicted=predicted, max_tokens=max_tokens),
    }


def _non_negative(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return 0.0


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

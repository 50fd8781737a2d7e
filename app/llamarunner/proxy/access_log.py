"""The access log: one line per request on `llamarunner.access`, for both listeners.

A line says the route (its pattern, never the raw path or query string), the status, the
model, the key's name (never the key), the time taken and the tokens; with the JSON log
format the same facts are fields of their own. Prompt text is never in a record.
"""

from __future__ import annotations

import logging
from typing import Final

from .observe import RequestRecord

log = logging.getLogger("llamarunner.access")

# The health checks monitors and clients poll: at DEBUG when they succeed, so a probe
# every few seconds does not bury the requests that matter.
HEALTH_ROUTES: Final = frozenset({"/", "/api/version"})
# Longer model names (they come from file names) are cut in the log.
_MAX_FIELD: Final = 200


def _level_of(record: RequestRecord) -> int:
    if record.status < 400 and (record.method == "HEAD" or (
            record.method == "GET" and record.route in HEALTH_ROUTES)):
        return logging.DEBUG
    return logging.INFO


def _word(value: str) -> str:
    """`value` as one word of a text line: no spaces or control characters that could
    fake a field or a line of their own."""
    if len(value) > _MAX_FIELD:
        value = value[:_MAX_FIELD] + "…"
    if value.isprintable() and " " not in value:
        return value
    return repr(value)


def log_request(record: RequestRecord) -> None:
    """The observer (observe.OBSERVERS) that writes the access line of `record`."""
    level = _level_of(record)
    if not log.isEnabledFor(level):
        return
    model = record.model[:_MAX_FIELD] if record.model is not None else None
    parts = [record.method, record.route, str(record.status)]
    if model is not None:
        parts.append(f"model={_word(model)}")
    if record.key_name is not None:
        parts.append(f"key={_word(record.key_name)}")
    parts.append(f"{record.seconds:.3f}s")
    if record.first_byte_seconds is not None:
        parts.append(f"first_byte={record.first_byte_seconds:.3f}s")
    if record.prompt_tokens is not None:
        parts.append(f"prompt={record.prompt_tokens}")
    if record.generated_tokens is not None:
        parts.append(f"generated={record.generated_tokens}")
    parts.append(f"api={record.api}")
    if record.client is not None:
        parts.append(f"client={_word(record.client)}")
    log.log(level, " ".join(parts), extra={
        "route": record.route,
        "method": record.method,
        "status": record.status,
        "model": model,
        "key": record.key_name,
        "duration_ms": round(record.seconds * 1000, 1),
        "first_byte_ms": (round(record.first_byte_seconds * 1000, 1)
                          if record.first_byte_seconds is not None else None),
        "prompt_tokens": record.prompt_tokens,
        "generated_tokens": record.generated_tokens,
        "api": record.api,
        "client": record.client,
    })

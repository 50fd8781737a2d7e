"""The data payloads of a streamed answer from a runner, for the Service's own streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from ..proxy.ollama.stream import parse_sse_lines
from ..proxy.relay import first_chunk
from ..proxy.upstream import UpstreamResponse
from ..runner.manager import Lease


async def sse_payloads(upstream: UpstreamResponse, lease: Lease, deadline: float | None
                       ) -> AsyncGenerator[bytes, None]:
    """Every `data:` payload of the answer, in order; the first bytes are read under the
    first-byte watchdog as for an API request (which raises its LlamaRunnerError). An
    event missing its blank line when the connection ends still counts."""
    chunk = await first_chunk(upstream, lease, deadline)
    buffer = b""
    while chunk:
        payloads, buffer = parse_sse_lines(buffer + chunk)
        for payload in payloads:
            yield payload
        chunk = await upstream.content.readany()
    payloads, _ = parse_sse_lines(buffer, final=True)
    for payload in payloads:
        yield payload

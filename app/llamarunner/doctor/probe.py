"""The doctor's HTTP: one client's requests to the running app, failures as StepFailed."""

from __future__ import annotations

import json
from typing import Any, Final

import aiohttp

from .. import __version__
from .advice import error_details, fix_for, problem_text
from .target import Endpoint, Target
from .wire import FramingError, SSEStream, parse_ndjson, parse_sse

USER_AGENT: Final = f"llamarunner-doctor/{__version__}"
# Connecting to a local port either works at once or not at all.
CONNECT_TIMEOUT: Final = 5.0


class StepFailed(Exception):
    """One step of a client's replay failed: which, the HTTP status if any, what and the fix."""

    def __init__(self, step: str, problem: str, fix: str = "", status: int | None = None
                 ) -> None:
        super().__init__(f"{step}: {problem}")
        self.step = step
        self.problem = problem
        self.fix = fix
        self.status = status


def new_session() -> aiohttp.ClientSession:
    """A session for loopback traffic.

    trust_env off: a user's HTTP_PROXY must not capture requests to this machine. No total
    timeout: a first request may wait for a model to load; each read has its own limit.
    """
    return aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=None))


class Probe:
    """Sends requests as a client would and checks the answers' framing."""

    def __init__(self, session: aiohttp.ClientSession, target: Target,
                 model: str | None = None) -> None:
        self.session = session
        self.target = target
        self.model = model

    def step_name(self, endpoint: Endpoint, method: str, path: str) -> str:
        where = f" on {endpoint.host_port}" if endpoint.url else f" ({endpoint.title})"
        return f"{method} {path}{where}"

    async def send(self, endpoint: Endpoint, method: str, path: str,
                   body: dict[str, Any] | None = None, *, send_key: bool = True) -> bytes:
        """The body of a 200 answer; anything else raises StepFailed with the fix."""
        step = self.step_name(endpoint, method, path)
        if endpoint.url is None:
            raise StepFailed(step, endpoint.problem, endpoint.fix)
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        if send_key and self.target.api_key:
            headers["Authorization"] = f"Bearer {self.target.api_key}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT,
                                        sock_read=self.target.read_timeout)
        try:
            async with self.session.request(method, endpoint.url + path, json=body,
                                            headers=headers, timeout=timeout) as resp:
                data = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            raise StepFailed(step, f"cannot connect to {endpoint.host_port} "
                                   f"({exc.os_error.strerror or exc.os_error})",
                             self._connect_fix(endpoint)) from exc
        except TimeoutError as exc:
            raise StepFailed(step, f"no answer within {self.target.read_timeout:.0f} s",
                             "the model may still be loading; look at the app's Logs window "
                             "and try again") from exc
        except aiohttp.ClientError as exc:
            raise StepFailed(step, f"the connection broke: {exc or type(exc).__name__}",
                             "look at the app's log for an error at this time") from exc
        if status != 200:
            message, code = error_details(data)
            fix = fix_for(status, message, code, path=path, target=self.target,
                          model=self.model)
            raise StepFailed(step, problem_text(message, code), fix, status)
        return data

    def _connect_fix(self, endpoint: Endpoint) -> str:
        config = self.target.config_path or "the config file"
        return (f"start LlamaRunner Pro, and check that proxies.{endpoint.api} in {config} "
                "is enabled with this host and port")

    async def json(self, endpoint: Endpoint, method: str, path: str,
                   body: dict[str, Any] | None = None, *, send_key: bool = True) -> Any:
        data = await self.send(endpoint, method, path, body, send_key=send_key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise self.bad_answer(endpoint, method, path,
                                  f"the answer is not JSON: {data[:120]!r}") from exc

    async def ndjson(self, endpoint: Endpoint, path: str, body: dict[str, Any]
                     ) -> list[dict[str, Any]]:
        data = await self.send(endpoint, "POST", path, body)
        try:
            return parse_ndjson(data.decode("utf-8"))
        except (FramingError, UnicodeDecodeError) as exc:
            raise self.bad_answer(endpoint, "POST", path, f"bad NDJSON stream: {exc}") from exc

    async def sse(self, endpoint: Endpoint, path: str, body: dict[str, Any]) -> SSEStream:
        data = await self.send(endpoint, "POST", path, body)
        try:
            return parse_sse(data.decode("utf-8"))
        except (FramingError, UnicodeDecodeError) as exc:
            raise self.bad_answer(endpoint, "POST", path, f"bad SSE stream: {exc}") from exc

    def bad_answer(self, endpoint: Endpoint, method: str, path: str, problem: str
                   ) -> StepFailed:
        """A 200 answer this client cannot use (a field missing, a wrong type...)."""
        return StepFailed(self.step_name(endpoint, method, path), problem,
                          "this client cannot read the answer: please report this line as a "
                          "bug", 200)

    async def reachable(self, endpoint: Endpoint) -> bool:
        """Whether anything answers HTTP on the endpoint (any status: a 401 is an answer)."""
        if endpoint.url is None:
            return False
        timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT * 2, sock_connect=CONNECT_TIMEOUT)
        try:
            async with self.session.get(endpoint.url + "/", timeout=timeout,
                                        headers={"User-Agent": USER_AGENT}) as resp:
                await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            return False
        return True

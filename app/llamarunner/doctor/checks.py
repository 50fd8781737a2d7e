"""One replay per client: the requests each makes to find and use a server, and what it reads.

Each client function sends what that client sends, in its order, and checks the fields it
reads; the first thing that would break the client raises StepFailed. What a client can
live without (no tools: no agent mode) becomes a note. Requests are tiny (8 tokens).
Sources: GitHub Copilot's BYOK Ollama provider (version gate, /api/tags, /api/show per
model, then the OpenAI route on the Ollama port), Open WebUI's Ollama router (/api/version,
/api/tags, /api/ps, streamed /api/chat), Continue's ollama and lmstudio providers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ..config.defaults import DEFAULT_OLLAMA_VERSION
from .advice import version_at_least
from .probe import Probe, StepFailed
from .target import Endpoint, Target
from .wire import SSEStream, stream_error

# GitHub Copilot refuses Ollama servers older than this (its MINIMUM_OLLAMA_VERSION).
COPILOT_MIN_OLLAMA: Final = "0.6.4"
# Every chat asks for this few tokens: the doctor checks the plumbing, not the answer.
MAX_TOKENS: Final = 8
_MESSAGES: Final = ({"role": "user", "content": "Say hi."},)
# Continue keeps models loaded for 30 minutes after each request (its keep_alive).
_CONTINUE_KEEP_ALIVE: Final = 1800


@dataclass
class Replay:
    """What one client's replay works with: the HTTP probe, where, which model, notes."""

    probe: Probe
    model: str  # as the OpenAI routes list it (no ":latest")
    notes: list[str] = field(default_factory=list)

    @property
    def target(self) -> Target:
        return self.probe.target

    @property
    def ollama(self) -> Endpoint:
        return self.target.ollama

    @property
    def lmstudio(self) -> Endpoint:
        return self.target.lmstudio


ClientCheck = Callable[[Replay], Awaitable[None]]


def strip_latest(name: str) -> str:
    return name[: -len(":latest")] if name.endswith(":latest") else name


def find_listed(listed: list[str], wanted: str) -> str | None:
    """The listed name a client would pick for `wanted`: exact, else without ":latest" and
    in any case (how the app resolves names)."""
    if wanted in listed:
        return wanted
    key = strip_latest(wanted).lower()
    for name in listed:
        if strip_latest(name).lower() == key:
            return name
    return None


def can_chat(show: dict[str, Any]) -> bool:
    """What /api/show says about chatting: a generative model with a chat template."""
    capabilities = show.get("capabilities")
    return (isinstance(capabilities, list) and "completion" in capabilities
            and bool(show.get("template")))


def context_length(show: dict[str, Any]) -> int | None:
    """`<arch>.context_length` from /api/show's model_info, as Copilot reads it."""
    info = show.get("model_info")
    if not isinstance(info, dict):
        return None
    value = info.get(f"{info.get('general.architecture')}.context_length")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def num_ctx_parameter(show: dict[str, Any]) -> int | None:
    """`num_ctx` from /api/show's `parameters` text, as Continue reads it."""
    text = show.get("parameters")
    if not isinstance(text, str):
        return None
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "num_ctx" and value.strip().isdigit():
            return int(value.strip())
    return None


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
    return shown or "none"


# ---- steps shared by several clients -------------------------------------------------


async def ollama_version(r: Replay) -> str:
    data = await r.probe.json(r.ollama, "GET", "/api/version", send_key=False)
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version:
        raise r.probe.bad_answer(r.ollama, "GET", "/api/version", "no \"version\" string")
    return version


async def ollama_tags(r: Replay) -> tuple[str, list[str]]:
    """GET /api/tags: (the listed name of the model, every listed name)."""
    data = await r.probe.json(r.ollama, "GET", "/api/tags")
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not all(
            isinstance(m, dict) and isinstance(m.get("model"), str)
            and isinstance(m.get("name"), str) for m in models):
        raise r.probe.bad_answer(r.ollama, "GET", "/api/tags",
                                 "\"models\" is not a list of entries with name and model")
    names = [m["model"] for m in models]
    listed = find_listed(names, r.model)
    if listed is None:
        raise StepFailed(r.probe.step_name(r.ollama, "GET", "/api/tags"),
                         f"'{r.model}' is not among the listed models ({_listing(names)})",
                         "pick a model that `llamarunner models` lists "
                         "(`llamarunner doctor --model NAME`)", 200)
    return listed, names


async def ollama_show(r: Replay, name: str, *, field: str = "model") -> dict[str, Any]:
    data = await r.probe.json(r.ollama, "POST", "/api/show", {field: name})
    if not isinstance(data, dict) or not isinstance(data.get("capabilities"), list) \
            or not isinstance(data.get("model_info"), dict):
        raise r.probe.bad_answer(r.ollama, "POST", "/api/show",
                                 f"no \"capabilities\" list or \"model_info\" for '{name}'")
    return data


async def ollama_chat(r: Replay, name: str, **extra: Any) -> None:
    """A streamed POST /api/chat, read line by line as Ollama clients read it."""
    body = {"model": name, "messages": list(_MESSAGES), "stream": True, **extra}
    lines = await r.probe.ndjson(r.ollama, "/api/chat", body)
    step = ("POST", "/api/chat")
    if not lines:
        raise r.probe.bad_answer(r.ollama, *step, "the stream is empty")
    for line in lines:
        error = stream_error(line)
        if error is not None:
            raise StepFailed(r.probe.step_name(r.ollama, *step), f"error in the stream: {error}",
                             "see the app's Logs window for the model's last lines", 200)
        message = line.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise r.probe.bad_answer(r.ollama, *step, f"a line without message.content: {line}")
    if lines[-1].get("done") is not True:
        raise r.probe.bad_answer(r.ollama, *step, "the stream ended without \"done\": true")


async def openai_models(r: Replay, endpoint: Endpoint) -> str:
    """GET /v1/models: the model's id there."""
    data = await r.probe.json(endpoint, "GET", "/v1/models")
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries):
        raise r.probe.bad_answer(endpoint, "GET", "/v1/models",
                                 "\"data\" is not a list of models with an id")
    ids = [e["id"] for e in entries]
    listed = find_listed(ids, r.model)
    if listed is None:
        raise StepFailed(r.probe.step_name(endpoint, "GET", "/v1/models"),
                         f"'{r.model}' is not among the listed models ({_listing(ids)})",
                         "pick a model that `llamarunner models` lists "
                         "(`llamarunner doctor --model NAME`)", 200)
    return listed


async def openai_chat(r: Replay, endpoint: Endpoint, model: str, *, stream: bool,
                      **extra: Any) -> None:
    """POST /v1/chat/completions, streamed (SSE) or not, read as the OpenAI SDKs read it."""
    body = {"model": model, "messages": list(_MESSAGES), "max_tokens": MAX_TOKENS,
            "stream": stream, **extra}
    path = "/v1/chat/completions"
    if not stream:
        data = await r.probe.json(endpoint, "POST", path, body)
        choices = data.get("choices") if isinstance(data, dict) else None
        message = choices[0].get("message") if isinstance(choices, list) and choices \
            and isinstance(choices[0], dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str | None):
            raise r.probe.bad_answer(endpoint, "POST", path, "no choices[0].message")
        return
    events: SSEStream = await r.probe.sse(endpoint, path, body)
    for event in events.events:
        error = stream_error(event)
        if error is not None:
            raise StepFailed(r.probe.step_name(endpoint, "POST", path),
                             f"error in the stream: {error}",
                             "see the app's Logs window for the model's last lines", 200)
        if not isinstance(event.get("choices"), list):
            raise r.probe.bad_answer(endpoint, "POST", path, f"an event without choices: {event}")
    if not events.events:
        raise r.probe.bad_answer(endpoint, "POST", path, "the stream has no events")
    if not events.done:
        raise r.probe.bad_answer(endpoint, "POST", path, "the stream ended without [DONE]")


# ---- the clients -----------------------------------------------------------------------


async def github_copilot(r: Replay) -> None:
    """VS Code's Copilot Chat with its Ollama provider ("Manage Models…" → Ollama)."""
    version = await ollama_version(r)
    if not version_at_least(version, COPILOT_MIN_OLLAMA):
        raise StepFailed(r.probe.step_name(r.ollama, "GET", "/api/version"),
                         f"reports Ollama {version}; Copilot needs {COPILOT_MIN_OLLAMA} or newer",
                         f"set proxies.ollama.version to {DEFAULT_OLLAMA_VERSION} in "
                         f"{r.target.config_path or 'the config file'}", 200)
    name, names = await ollama_tags(r)
    # Copilot shows every listed model before offering any: one bad answer empties its list.
    shown: dict[str, Any] = {}
    for listed in names:
        shown[listed] = await ollama_show(r, listed)
    show = shown[name]
    if "completion" not in show["capabilities"]:
        raise StepFailed(r.probe.step_name(r.ollama, "POST", "/api/show"),
                         f"'{name}' has no \"completion\" capability "
                         f"({', '.join(show['capabilities']) or 'none'}): Copilot cannot chat "
                         "with it", "pick a chat model (`llamarunner doctor --model NAME`)", 200)
    if "tools" not in show["capabilities"]:
        r.notes.append(f"agent mode is off for {name}: its chat template takes no tools")
    if context_length(show) is None:
        r.notes.append(f"/api/show gives no context length for {name}: Copilot assumes 4096")
    await openai_chat(r, r.ollama, name, stream=True,
                      stream_options={"include_usage": True})
    if r.target.key_required:
        r.notes.append("Copilot sends no API key when it lists models, so with "
                       "security.api_key set it shows none")


async def open_webui(r: Replay) -> None:
    """Open WebUI with OLLAMA_BASE_URL pointing here."""
    await ollama_version(r)
    name, _ = await ollama_tags(r)
    data = await r.probe.json(r.ollama, "GET", "/api/ps")
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise r.probe.bad_answer(r.ollama, "GET", "/api/ps", "\"models\" is not a list")
    for entry in models:
        # Open WebUI turns each expiry into a timestamp with datetime.fromisoformat.
        try:
            dt.datetime.fromisoformat(entry["expires_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise r.probe.bad_answer(r.ollama, "GET", "/api/ps",
                                     f"expires_at is not an ISO 8601 time: {entry}") from exc
    await ollama_chat(r, name, options={"num_predict": MAX_TOKENS})


async def jetbrains_ai_assistant(r: Replay) -> None:
    """JetBrains AI Assistant's third-party providers: Ollama, then LM Studio."""
    name, _ = await ollama_tags(r)
    await ollama_show(r, name)
    await ollama_chat(r, name, options={"num_predict": MAX_TOKENS})
    data = await r.probe.json(r.lmstudio, "GET", "/api/v0/models")
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise r.probe.bad_answer(r.lmstudio, "GET", "/api/v0/models", "\"data\" is not a list")
    ids = [str(e.get("id")) for e in entries]
    listed = find_listed(ids, r.model)
    if listed is None:
        raise StepFailed(r.probe.step_name(r.lmstudio, "GET", "/api/v0/models"),
                         f"'{r.model}' is not among the listed models ({_listing(ids)})",
                         "pick a model that `llamarunner models` lists", 200)
    kind = entries[ids.index(listed)].get("type")
    if kind not in ("llm", "vlm"):
        raise StepFailed(r.probe.step_name(r.lmstudio, "GET", "/api/v0/models"),
                         f"'{listed}' is listed as type {kind!r}, not a chat model (llm)",
                         "pick a chat model (`llamarunner doctor --model NAME`)", 200)
    await openai_chat(r, r.lmstudio, listed, stream=True)


async def continue_dev(r: Replay) -> None:
    """Continue's ollama provider, then its lmstudio provider."""
    name, _ = await ollama_tags(r)
    # Continue sends the legacy "name" field and takes num_ctx from the parameters.
    show = await ollama_show(r, name, field="name")
    options: dict[str, Any] = {"num_predict": MAX_TOKENS}
    num_ctx = num_ctx_parameter(show)
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
    await ollama_chat(r, name, options=options, keep_alive=_CONTINUE_KEEP_ALIVE)
    model = await openai_models(r, r.lmstudio)
    await openai_chat(r, r.lmstudio, model, stream=True)


async def openai_sdk(r: Replay) -> None:
    """The openai Python/JS SDK with base_url http://HOST:1234/v1."""
    model = await openai_models(r, r.lmstudio)
    await openai_chat(r, r.lmstudio, model, stream=False)
    await openai_chat(r, r.lmstudio, model, stream=True)


# The clients in the order the report lists them.
CLIENTS: Final[tuple[tuple[str, ClientCheck], ...]] = (
    ("GitHub Copilot", github_copilot),
    ("Open WebUI", open_webui),
    ("JetBrains AI Assistant", jetbrains_ai_assistant),
    ("Continue", continue_dev),
    ("OpenAI SDK", openai_sdk),
)

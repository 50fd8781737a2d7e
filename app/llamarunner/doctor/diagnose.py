"""A doctor run: is the app there, which model to try, then every client's replay in turn."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp

from .checks import CLIENTS, ClientCheck, Replay, can_chat, strip_latest
from .probe import Probe, StepFailed, new_session
from .report import ClientResult, Report
from .target import Endpoint, Target, not_running_message

log = logging.getLogger(__name__)

NO_MODELS_FIX = ("put a .gguf file in the app's models folder (`llamarunner models` shows what "
                 "it finds), or run `llamarunner demo install`")


def describe(endpoint: Endpoint) -> str:
    if endpoint.url:
        return f"{endpoint.title} at {endpoint.url}"
    return f"{endpoint.title}: {endpoint.problem}"


async def diagnose(target: Target, model: str | None = None, *,
                   clients: Sequence[tuple[str, ClientCheck]] = CLIENTS,
                   session: aiohttp.ClientSession | None = None) -> Report:
    """Replay every client against the running app described by `target`.

    `model` is the one to try; by default the first listed model that can chat.
    """
    if session is None:
        async with new_session() as own:
            return await diagnose(target, model, clients=clients, session=own)
    apis = tuple(describe(e) for e in target.endpoints())
    if not any(e.url for e in target.endpoints()):
        return Report(apis=apis, problem="; ".join(e.problem for e in target.endpoints()),
                      fix="; ".join(e.fix for e in target.endpoints()))
    probe = Probe(session, target, model)
    reachable = [e for e in target.endpoints() if await probe.reachable(e)]
    if not reachable:
        return Report(apis=apis, problem=not_running_message(target), running=False)
    notes: list[str] = []
    if model is not None:
        model = strip_latest(model)  # the app's own names have no tag
    else:
        try:
            model = await choose_model(probe, reachable, notes)
        except StepFailed as failed:
            status = f" (HTTP {failed.status})" if failed.status is not None else ""
            return Report(apis=apis, problem=f"{failed.step}{status}: {failed.problem}",
                          fix=failed.fix, notes=tuple(notes))
        if model is None:
            return Report(apis=apis, problem="the app lists no models", fix=NO_MODELS_FIX)
    probe.model = model
    results = [await _run(name, check, Replay(probe, model)) for name, check in clients]
    return Report(tuple(results), model=model, apis=apis, notes=tuple(notes))


async def _run(name: str, check: ClientCheck, replay: Replay) -> ClientResult:
    try:
        await check(replay)
    except StepFailed as failed:
        return ClientResult(name, False, failed.step, failed.status, failed.problem,
                            failed.fix, tuple(replay.notes))
    except Exception as exc:  # a doctor bug must not hide the other clients' results
        log.exception("the %s check failed unexpectedly", name)
        return ClientResult(name, False, "the check itself", None, f"unexpected error: {exc!r}",
                            "please report this line as a bug", tuple(replay.notes))
    return ClientResult(name, True, notes=tuple(replay.notes))


async def choose_model(probe: Probe, reachable: list[Endpoint], notes: list[str]
                       ) -> str | None:
    """The first listed model whose /api/show says it can chat (Ollama port), else the first
    generative one (its failures then say why), else the first /v1/models entry."""
    target = probe.target
    if target.ollama in reachable:
        data = await probe.json(target.ollama, "GET", "/api/tags")
        models = data.get("models") if isinstance(data, dict) else None
        names = [m["model"] for m in models or [] if isinstance(m, dict)
                 and isinstance(m.get("model"), str)]
        generative: list[str] = []
        for name in names:
            show = await probe.json(target.ollama, "POST", "/api/show", {"model": name})
            if not isinstance(show, dict):
                continue
            if can_chat(show):
                return strip_latest(name)
            if "completion" in (show.get("capabilities") or []):
                generative.append(name)
        if generative:
            notes.append("no listed model has a chat template; trying "
                         f"{strip_latest(generative[0])}")
            return strip_latest(generative[0])
        return strip_latest(names[0]) if names else None
    data = await probe.json(target.lmstudio, "GET", "/v1/models")
    entries = data.get("data") if isinstance(data, dict) else None
    ids = [e["id"] for e in entries or [] if isinstance(e, dict) and isinstance(e.get("id"), str)]
    return ids[0] if ids else None

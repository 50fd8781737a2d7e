"""The prompt a request's own ``template`` makes, with the values Ollama gives templates."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .gotemplate import Stringer, Template, TemplateError, go_json, parse

__all__ = ["TemplateError", "Thinking", "render_prompt"]

Body = dict[str, Any]


@dataclass(frozen=True)
class Thinking:
    """The thinking switches templates read: ``.Think``, ``.ThinkLevel``, ``.IsThinkSet``."""

    think: bool = False
    level: str = ""
    is_set: bool = False

    @classmethod
    def of(cls, think: object) -> Thinking:
        if think is None:
            return cls()
        if isinstance(think, str):
            return cls(True, think, True)
        return cls(bool(think), "", True)

    def values(self) -> Body:
        return {"Think": self.think, "ThinkLevel": self.level, "IsThinkSet": self.is_set}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _arguments(value: object) -> Stringer:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            value = {}
    args = dict(value) if isinstance(value, Mapping) else {}
    return Stringer(args, go_json(args))


def _tool_calls(calls: object) -> list[Body]:
    out: list[Body] = []
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        position = function.get("index", index)
        out.append({"ID": _text(call.get("id")), "Function": {
            "Index": position if isinstance(position, int) else index,
            "Name": _text(function.get("name")),
            "Arguments": _arguments(function.get("arguments")),
        }})
    return out


def _message(message: Mapping[str, Any]) -> Body:
    """One message with the Go field names Ollama's templates read."""
    images = message.get("images")
    return {
        "Role": _text(message.get("role")),
        "Content": _text(message.get("content")),
        "Thinking": _text(message.get("thinking")),
        "Images": list(images) if isinstance(images, list) else [],
        "ToolCalls": _tool_calls(message.get("tool_calls")),
        "ToolName": _text(message.get("tool_name")),
        "ToolCallID": _text(message.get("tool_call_id")),
    }


def _go_fields(value: Any) -> Any:
    """A tool's JSON object with Go's exported names (``function`` -> ``Function``)."""
    if isinstance(value, Mapping):
        fields = {_exported(str(k)): _go_fields(v) for k, v in value.items()}
        if "properties" in value and isinstance(value["properties"], Mapping):
            # Properties is a map in Go: its keys stay as written, and it prints as JSON.
            fields["Properties"] = Stringer(dict(value["properties"]),
                                            go_json(value["properties"]))
        return fields
    if isinstance(value, list):
        return [_go_fields(v) for v in value]
    return value


def _exported(name: str) -> str:
    return "Defs" if name == "$defs" else name[:1].upper() + name[1:]


def _tools(tools: Sequence[Mapping[str, Any]]) -> Stringer:
    entries = [Stringer(_go_fields(tool), go_json(tool)) for tool in tools]
    # No tools is a nil list in Ollama, whose String() is JSON's null.
    return Stringer(entries, go_json(list(tools)) if tools else "null")


def _collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[Body]]:
    """Ollama's collate: every system text joined, and consecutive messages of one role
    (tool results excepted) merged with a blank line between them."""
    system: list[str] = []
    collated: list[Body] = []
    for message in messages:
        current = _message(message)
        if current["Role"] == "system":
            system.append(current["Content"])
        if collated and collated[-1]["Role"] == current["Role"] and current["Role"] != "tool":
            collated[-1]["Content"] += "\n\n" + current["Content"]
        else:
            collated.append(current)
    return "\n\n".join(system), collated


def render_prompt(
    source: str, *, messages: Sequence[Mapping[str, Any]] = (),
    tools: Sequence[Mapping[str, Any]] = (), prompt: str = "", suffix: str = "",
    thinking: Thinking | None = None,
) -> str:
    """The prompt Ollama would make from ``source`` (a Go template) and these values.

    A template that reads ``.Messages`` gets them all at once (with ``.System`` and
    ``.Tools``); an older one that only knows ``.System``/``.Prompt``/``.Response`` is
    rendered once per turn, the last turn cut where the answer starts. With ``prompt`` and
    ``suffix`` (fill-in-the-middle) it gets ``.Prompt`` and ``.Suffix``. Raises
    :class:`TemplateError` for a template this renderer cannot handle.
    """
    template = parse(source)
    names = template.variables()
    if "messages" not in names and "response" not in names:
        template = template.with_response()
    think = (thinking or Thinking()).values()
    if prompt and suffix:
        return template.render({"Prompt": prompt, "Suffix": suffix, "Response": "", **think})
    system, turns = _collate(messages)
    if "messages" in names:
        return template.render({"System": system, "Messages": turns, "Tools": _tools(tools),
                                "Response": "", **think})
    return _render_turns(template, turns, think)


def _render_turns(template: Template, turns: list[Body], think: Body) -> str:
    out: list[str] = []
    system = prompt = response = ""

    def flush() -> None:
        nonlocal system, prompt, response
        out.append(template.render({"System": system, "Prompt": prompt,
                                    "Response": response, **think}))
        system = prompt = response = ""

    for turn in turns:
        role, content = turn["Role"], turn["Content"]
        if role == "system":
            if prompt or response:
                flush()
            system = content
        elif role == "user":
            if response:
                flush()
            prompt = content
        elif role == "assistant":
            response = content
    out.append(template.up_to_response().render(
        {"System": system, "Prompt": prompt, "Response": response, **think}))
    return "".join(out)


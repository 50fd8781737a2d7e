"""What a failed step means and what to do about it: pure functions of the answer."""

from __future__ import annotations

import json
from typing import Any

from .target import Target


def error_details(body: bytes) -> tuple[str, str | None]:
    """(message, code) from an error answer in any of the app's shapes.

    Ollama's routes answer `{"error": "text"}`; OpenAI and LM Studio routes
    `{"error": {"message": ..., "code": ...}}`; anything else is shown as text.
    """
    text = body.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        return _short(text) or "(empty answer)", None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return error, None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        return (str(message) if message else _short(text),
                str(code) if isinstance(code, str | int) and code != "" else None)
    return _short(text), None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def is_chat_refusal(message: str, code: str | None) -> bool:
    """The app's answer for a model without a chat template (both error shapes)."""
    return code == "chat_not_supported" or "cannot chat" in message


def problem_text(message: str, code: str | None) -> str:
    """The error as the report shows it: the message and its code, without the server's own
    advice where the report gives a fix of its own (a chat refusal)."""
    if is_chat_refusal(message, code):
        message = message.split(". ", 1)[0]
    return f"{message} ({code})" if code else message


def fix_for(status: int, message: str, code: str | None, *, path: str, target: Target,
            model: str | None) -> str:
    """What the user should do about an error answer on `path`."""
    config = target.config_path or "the config file"
    if status == 401:
        return _key_fix(target)
    if status == 403:
        return (f"the app refused this client's Host or Origin: add the name to "
                f"security.allowed_hosts (or the origin to security.cors_origins) in {config}")
    if status == 404:
        if code == "model_not_found" or (model and model in message and "not found" in message):
            return ("pick a model that `llamarunner models` lists (`llamarunner doctor --model "
                    "NAME`)")
        return (f"this server does not serve {path}: another program (Ollama or LM Studio "
                "itself?) may be listening on this port; stop it or move LlamaRunner Pro's "
                f"proxies to free ports in {config}")
    if status == 400 and is_chat_refusal(message, code):
        where = f"models.{model}" if model else "the model's entry under models"
        return (f"give the model a chat template (\"chat_template\" in {where} in {config}: "
                "a built-in name such as chatml, or a Jinja file), or check a model that can "
                "chat with `llamarunner doctor --model NAME`")
    if status in (408, 413):
        return f"raise security.body_timeout / security.max_body_bytes in {config}"
    if status == 429:
        return ("the app's request queue is full (scheduler.max_queue): try again when it is "
                "less busy")
    if status == 504:
        return (f"the model took too long to answer: raise scheduler.first_token_timeout in "
                f"{config}, or use a smaller model")
    if code in ("runtime_not_found", "model_file_not_found"):
        return "see the message; `llamarunner runtime list` and `llamarunner models` show both"
    if status >= 500:
        return ("the model's llama-server failed: its last lines are in the message above and "
                "in the app's Logs window (or the runners folder of its log folder)")
    return "the app refused what this client sends; please report this line as a bug"


def _key_fix(target: Target) -> str:
    config = target.config_path or "the config file"
    if target.key_missing:
        return (f"security.api_key_env names {target.key_missing}, which is not set here: set "
                "it in this shell to the key the app uses")
    if target.api_key:
        return (f"the key from {target.key_source} in {config} was refused: the app runs "
                "with another config or key; name its config with `llamarunner doctor "
                "--config PATH`")
    return (f"the app wants an API key but {config} has none: name the config the app runs "
            "with (`llamarunner doctor --config PATH`)")


def version_at_least(version: str, minimum: str) -> bool:
    """Compare dotted versions part by part, as clients do (a part's leading digits; none = 0).

    "0.13.0" >= "0.6.4" (numbers, not text), "0.6.4-rc1" equals "0.6.4".
    """
    def parts(text: str) -> list[int]:
        numbers = []
        for part in text.strip().lstrip("vV").split("."):
            digits = ""
            for char in part:
                if not char.isdigit():
                    break
                digits += char
            numbers.append(int(digits) if digits else 0)
        return numbers

    have, want = parts(version), parts(minimum)
    width = max(len(have), len(want))
    have += [0] * (width - len(have))
    want += [0] * (width - len(want))
    return have >= want

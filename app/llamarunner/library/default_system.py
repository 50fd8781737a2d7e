"""A pulled model's default system prompt, put in front of its Jinja chat template.

Ollama sends a model's SYSTEM when a conversation has no system message of its own.
llama-server has no such setting, but its Jinja templates can add the message themselves:
the template a model already uses gets a first line that prepends the system message
when the conversation does not start with one, and llama-server is started with that
file. Every API then behaves alike. A model whose template is one of llama-server's
built-in (non-Jinja) ones cannot be wrapped, and keeps no default system prompt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from ..config.schema import ArgValue, ModelConfig
from ..core.files import atomic_write
from .chat_template import ChatTemplate

__all__ = ["with_default_system", "wrap_template"]

log = logging.getLogger(__name__)


def wrap_template(template: str, system: str) -> str:
    """`template` that first prepends `system` when the messages do not start with one."""
    # A JSON string is a valid Jinja string literal (same quotes and escapes), and keeps
    # any "{{" or "{%" in the prompt plain text.
    literal = json.dumps(system, ensure_ascii=False)
    prelude = (
        "{%- set messages = ([{'role': 'system', 'content': " + literal + "}] "
        "if (messages | length == 0 or messages[0]['role'] != 'system') else []) "
        "+ messages -%}\n"
    )
    return prelude + template


def with_default_system(
    model: ModelConfig, template: ChatTemplate, system: str | None, folder: Path
) -> tuple[ModelConfig, ChatTemplate]:
    """The model started with its template wrapped to add `system` (written under
    `folder`, named by its content), or the model unchanged when that cannot be done."""
    if not system or not template.can_chat:
        return model, template
    if template.builtin or not template.text:
        log.info("model %s: its chat template is not Jinja the app can read, so its default "
                 "system prompt is not applied", model.name)
        return model, template
    text = wrap_template(template.text, system)
    path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.jinja"
    if not path.is_file():
        try:
            os.makedirs(folder, exist_ok=True)
            atomic_write(path, text.encode(), keep_mode=False)
        except OSError as exc:
            log.warning("model %s: cannot write its chat template with the default system "
                        "prompt to %s: %s", model.name, folder, exc)
            return model, template
    args: dict[str, ArgValue] = dict(model.args)
    args.pop("chat-template", None)
    args["chat-template-file"] = str(path)
    wrapped = dataclasses.replace(template, text=text, path=str(path))
    return dataclasses.replace(model, args=args), wrapped

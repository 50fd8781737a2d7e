"""Settings a model takes from its own metadata: its chat template and embedding mode.

Applied to every model in the table, wherever it was found (config, model folders,
Ollama's or LM Studio's store), so each runs right without extra keys. A flag the user
set in `args` is never overridden.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from ..config.schema import ArgValue, ModelConfig
from .capabilities import is_embedding_model
from .chat_template import ChatTemplate, resolve_chat_template
from .metadata import GGUFMetadata

__all__ = ["POOLING_NAMES", "auto_configure"]

# llama.cpp's enum llama_pooling_type as llama-server's --pooling spells it.
POOLING_NAMES: Final[Mapping[int, str]] = {1: "mean", 2: "cls", 3: "last", 4: "rank"}
_EMBEDDING_FLAGS: Final = ("embedding", "embeddings")


def auto_configure(
    model: ModelConfig, meta: GGUFMetadata | None, ollama_template: str | None = None
) -> tuple[ModelConfig, ChatTemplate]:
    """The model with the flags its metadata calls for, and the chat template it uses.

    `ollama_template` is the template layer of the model's Ollama manifest, if any.
    """
    args: dict[str, ArgValue] = dict(model.args)
    if meta is not None and is_embedding_model(meta):
        if not any(flag in args for flag in _EMBEDDING_FLAGS):
            args["embedding"] = True
        pooling = POOLING_NAMES.get(meta.pooling_type or 0)
        if pooling and "pooling" not in args:
            args["pooling"] = pooling
        template = ChatTemplate(
            "none", problem="it is an embedding model; ask /api/embed or /v1/embeddings")
    elif model.serves_embeddings:
        template = ChatTemplate(
            "none", problem="it runs in embedding mode (\"embedding\": true in its args)")
    else:
        template = resolve_chat_template(model.chat_template, model.args, meta,
                                         ollama_template)
        add, drop = template.runner_args()
        for flag in drop:
            args.pop(flag, None)
        args.update(add)
    if args == model.args:
        return model, template
    return dataclasses.replace(model, args=args), template

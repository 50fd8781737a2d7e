"""The `llamarunner models` listing: one aligned text row per model, then what was skipped."""

from __future__ import annotations

import dataclasses
from typing import Final

from ..config.schema import ModelConfig
from .auto_settings import auto_configure
from .capabilities import capabilities
from .catalog import Catalog
from .gguf import GGUFError
from .metadata import parameter_size_label
from .metadata_cache import MetadataCache

__all__ = ["COLUMNS", "format_library_table", "human_size"]

COLUMNS: Final = ("NAME", "SOURCE", "ARCH", "PARAMS", "QUANT", "CONTEXT", "SIZE", "TEMPLATE",
                  "CAPABILITIES")
_UNKNOWN: Final = "-"
_GAP: Final = "  "


def human_size(size: int) -> str:
    """Bytes in decimal units the way Ollama prints them: "253 MB", "4.7 GB", "980 B"."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    if unit == "B" or value >= 10:
        return f"{round(value)} {unit}"
    return f"{value:.1f} {unit}"


def format_library_table(
    catalog: Catalog, metadata: MetadataCache, *, show_skipped: bool = True
) -> str:
    """Every model of the catalog as a text table, sorted by name (header metadata only).

    With `show_skipped`, the files that were not listed and the config problems follow,
    each with its reason, so "why is my model missing?" has an answer.
    """
    rows = [COLUMNS]
    for name in sorted(catalog.entries, key=str.casefold):
        entry = catalog.entries[name]
        model = catalog.models.get(name)
        try:
            meta = metadata.get(entry.path)
        except (GGUFError, OSError):
            meta = None
        if model is not None:
            model, chat_template = auto_configure(model, meta, entry.ollama_template)
            template = chat_template.describe()
            template_text = chat_template.text if chat_template.can_chat else None
        else:
            template, template_text = _UNKNOWN, None
        if meta is None:
            arch = params = quant = context = _UNKNOWN
            caps = "unreadable"
        else:
            arch = meta.architecture or _UNKNOWN
            params = parameter_size_label(meta)
            quant = meta.quantization or _UNKNOWN
            context = _served_context(model, meta.context_length)
            # Tools and thinking follow the template the model is really served with.
            found = capabilities(dataclasses.replace(meta, chat_template=template_text),
                                 has_projector=entry.projector is not None)
            if model is not None and model.serves_embeddings and "embedding" not in found:
                found.append("embedding")
            caps = ",".join(found) or _UNKNOWN
        rows.append((name, entry.source, arch, params, quant, context, human_size(entry.size),
                     template, caps))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        _GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if len(rows) == 1:
        lines.append("(no models found: add folders to model_dirs, or pull one with Ollama)")
    if show_skipped and catalog.skipped:
        lines += ["", f"Not listed ({len(catalog.skipped)}):"]
        lines += [f"  {item.path}: {item.reason}" for item in catalog.skipped]
    if show_skipped and catalog.problems:
        lines += ["", "Problems:"]
        lines += [f"  {problem}" for problem in catalog.problems]
    return "\n".join(lines) + "\n"


def _served_context(model: ModelConfig | None, trained: int | None) -> str:
    """The context llama-server will run with: its ctx-size, else what the model trained on."""
    configured = (model.args.get("ctx-size") or model.args.get("c")) if model else None
    if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
        return str(configured)
    return str(trained) if trained else _UNKNOWN

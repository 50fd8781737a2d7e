"""Fake Ollama and LM Studio model stores in temp dirs, laid out exactly like the real ones.

Ollama (server/manifest.go, server/layer.go): ``<root>/manifests/<host>/<namespace>/
<model>/<tag>`` holds a manifest as Go's json.Encoder writes it (compact, one line, a
trailing newline, keys in struct order), and every layer's content sits in
``<root>/blobs/sha256-<hex of its sha256>``; the config is a blob too. LM Studio:
``<home>/.lmstudio/models/<publisher>/<model folder>/*.gguf`` plus ``settings.json`` with
``downloadsFolder`` when the user picked another models folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tests.support.gguf_fixtures import KV, T, write_gguf, write_mmproj_gguf
from tests.support.tiny_gguf import write_tiny_gguf

__all__ = [
    "MEDIA_CONFIG",
    "MEDIA_LICENSE",
    "MEDIA_MODEL",
    "MEDIA_PARAMS",
    "MEDIA_PROJECTOR",
    "MEDIA_TEMPLATE",
    "MEDIA_TENSOR",
    "FakeLMStudio",
    "FakeOllamaStore",
    "Layer",
    "write_model",
    "write_projector",
    "write_split_gguf",
    "write_vocab_only_gguf",
]

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_TENSOR = "application/vnd.ollama.image.tensor"


# ---------------------------------------------------------------------------------------------
# GGUF files the scanners must tell apart


def write_model(path: Path, *, seed: int = 0) -> Path:
    """A tiny loadable model at `path` (folders made); different seeds, different bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tiny_gguf(path, name=path.stem, seed=seed)


def write_projector(path: Path) -> Path:
    """An mmproj file as llama.cpp's converter writes it: general.type mmproj, arch clip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_mmproj_gguf(path)


def write_vocab_only_gguf(path: Path) -> Path:
    """A tokenizer-only GGUF like llama.cpp's models/ggml-vocab-*.gguf: no tensors."""
    return write_gguf(
        path,
        [
            KV("general.name", "vocab", T.STRING),
            KV("tokenizer.ggml.model", "llama", T.STRING),
            KV("tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>", "a"], T.ARRAY, T.STRING),
        ],
    )


def write_split_gguf(folder: Path, stem: str, count: int, *, seed: int = 0) -> list[Path]:
    """The parts ``<stem>-0000k-of-0000N.gguf`` as gguf-split writes them (split.* keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}-{n:05d}-of-{count:05d}.gguf" for n in range(1, count + 1)]
    write_tiny_gguf(
        paths[0],
        name=stem,
        seed=seed,
        architecture_extras={"split.no": 0, "split.count": count, "split.tensors.count": 20},
    )
    rng = np.random.default_rng(seed)
    for number, path in enumerate(paths[1:], start=1):
        write_gguf(
            path,
            [
                KV("split.no", number, T.UINT16),
                KV("split.count", count, T.UINT16),
                KV("split.tensors.count", 20, T.INT32),
            ],
            tensors=[(f"extra.{number}.weight", rng.standard_normal((4, 32)).astype(np.float32))],
        )
    return paths


# ---------------------------------------------------------------------------------------------
# Ollama


@dataclass(frozen=True)
class Layer:
    """One manifest entry as Ollama writes it."""

    media_type: str
    digest: str
    size: int

    def json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class FakeOllamaStore:
    """An Ollama models folder (what $OLLAMA_MODELS points at) under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifests = root / "manifests"
        self.blobs = root / "blobs"
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.replace(":", "-")

    def add_blob(self, media_type: str, data: bytes | Path) -> Layer:
        """Store content under its sha256 like Ollama does; returns its manifest layer."""
        if isinstance(data, Path):
            digest = "sha256:" + _sha256_file(data)
            target = self.blob_path(digest)
            if not target.exists():
                shutil.copyfile(data, target)
        else:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            target = self.blob_path(digest)
            target.write_bytes(data)
        return Layer(media_type, digest, target.stat().st_size)

    def write_manifest(
        self,
        name_parts: Sequence[str],
        layers: Sequence[Layer | dict[str, Any]],
        *,
        config: Layer | None = None,
    ) -> Path:
        """Write manifests/<host>/<namespace>/<model>/<tag> (parts used as given, unchecked)."""
        if config is None:
            config = self.add_blob(MEDIA_CONFIG, _config_blob())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.json(),
            "layers": [layer.json() if isinstance(layer, Layer) else layer for layer in layers],
        }
        path = self.manifests.joinpath(*name_parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Go's json.Encoder: compact separators, a newline at the end.
        path.write_text(json.dumps(manifest, separators=(",", ":")) + "\n", encoding="utf-8")
        return path

    def add_model(
        self,
        model: str,
        tag: str,
        gguf: Path,
        *,
        host: str = "registry.ollama.ai",
        namespace: str = "library",
        projector: Path | None = None,
        adapters: Sequence[Path] = (),
    ) -> Path:
        """A pulled model: GGUF, optional projector and adapters, template, params, license."""
        layers = [self.add_blob(MEDIA_MODEL, gguf)]
        if projector is not None:
            layers.append(self.add_blob(MEDIA_PROJECTOR, projector))
        layers += [self.add_blob(MEDIA_ADAPTER, adapter) for adapter in adapters]
        layers.append(self.add_blob(MEDIA_TEMPLATE, b"{{ .Prompt }}"))
        layers.append(self.add_blob(MEDIA_PARAMS, b'{"stop":["</s>"]}'))
        layers.append(self.add_blob(MEDIA_LICENSE, b"MIT"))
        return self.write_manifest((host, namespace, model, tag), layers)

    def model_layer(self, manifest: Path) -> Layer:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        raw = next(item for item in data["layers"] if item["mediaType"] == MEDIA_MODEL)
        return Layer(raw["mediaType"], raw["digest"], raw["size"])


def _config_blob() -> bytes:
    config = {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "121K",
        "file_type": "F32",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return json.dumps(config, separators=(",", ":")).encode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# LM Studio


class FakeLMStudio:
    """LM Studio's files under a fake home: ~/.lmstudio/{settings.json,models/}."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.app_home = home / ".lmstudio"
        self.models = self.app_home / "models"
        self.models.mkdir(parents=True, exist_ok=True)

    def model_folder(self, publisher: str, folder: str, root: Path | None = None) -> Path:
        path = (root or self.models) / publisher / folder
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_model(
        self,
        publisher: str,
        folder: str,
        files: Sequence[str],
        *,
        projector: str | None = None,
        root: Path | None = None,
        seed: int = 0,
    ) -> list[Path]:
        """Tiny GGUFs named `files` (one per quantization) and an optional projector."""
        where = self.model_folder(publisher, folder, root)
        paths = [
            write_tiny_gguf(where / file, name=f"{folder}-{file}", seed=seed + i)
            for i, file in enumerate(files)
        ]
        if projector is not None:
            write_projector(where / projector)
        return paths

    def set_downloads_folder(self, folder: Path) -> None:
        """What choosing another "Models Directory" in LM Studio writes."""
        settings = self.app_home / "settings.json"
        data = json.loads(settings.read_text(encoding="utf-8")) if settings.exists() else {}
        data["downloadsFolder"] = str(folder)
        settings.write_text(json.dumps(data, indent=2), encoding="utf-8")

"""Pulled models in the library: each manifest a model, params as flags, system prompts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.support.stores import MEDIA_MODEL, MEDIA_PARAMS, write_model

from llamarunner.config.schema import Config, ModelConfig
from llamarunner.library.catalog import build_catalog, watch_roots
from llamarunner.library.chat_template import ChatTemplate
from llamarunner.library.default_system import with_default_system, wrap_template
from llamarunner.library.ollama_store import MEDIA_SYSTEM
from llamarunner.store.layout import Layer, Manifest, StoreLayout
from llamarunner.store.names import parse_name


def put(layout: StoreLayout, data: bytes, media_type: str) -> Layer:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    layout.ensure_folders()
    layout.blob_path(digest).write_bytes(data)
    return Layer(media_type, digest, len(data))


def test_each_pulled_manifest_is_a_model_with_its_own_defaults(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path / "store")
    gguf = put(layout, write_model(tmp_path / "m.gguf").read_bytes(), MEDIA_MODEL)
    system = put(layout, b"You are Mario.", MEDIA_SYSTEM)
    params = put(layout, json.dumps({"temperature": 0.7, "stop": ["x"]}).encode(),
                 MEDIA_PARAMS)
    layout.write_manifest(parse_name("tiny"), Manifest(None, (gguf,)).to_bytes())
    layout.write_manifest(parse_name("tiny-copy"), Manifest(None, (gguf,)).to_bytes())
    layout.write_manifest(parse_name("mario:v1"),
                          Manifest(None, (gguf, system, params)).to_bytes())
    config = Config.default()
    catalog = build_catalog(config, app_models_dir=tmp_path / "none", pulled_dir=layout.root)
    assert sorted(catalog.models) == ["mario:v1", "tiny-copy:latest", "tiny:latest"]
    mario = catalog.entries["mario:v1"]
    assert mario.source == "pulled" and mario.system == "You are Mario."
    assert mario.manifest and mario.manifest.endswith("mario/v1")
    assert catalog.models["mario:v1"].args["temp"] == 0.7
    assert "temp" not in catalog.models["tiny:latest"].args
    assert catalog.models["tiny:latest"].alias == ("tiny",)
    assert layout.root in watch_roots(config, tmp_path / "none", layout.root)


def test_the_system_prompt_wraps_a_jinja_template_and_only_that(tmp_path: Path) -> None:
    model = ModelConfig(name="m", path="/m.gguf", args={"jinja": True})
    template = ChatTemplate("file", text="{{ messages[0]['content'] }}")
    wrapped_model, wrapped = with_default_system(model, template, "Be kind.", tmp_path)
    path = wrapped_model.args["chat-template-file"]
    assert isinstance(path, str) and Path(path).parent == tmp_path
    assert Path(path).read_text() == wrap_template(template.text or "", "Be kind.")
    assert wrapped.path == path and wrapped.text and wrapped.text.endswith(template.text or "")
    assert wrap_template("T", 'a "quoted" {{ x }}').startswith(
        "{%- set messages = ([{'role': 'system', 'content': \"a \\\"quoted\\\" {{ x }}\"}]")
    builtin = ChatTemplate("setting", name="zephyr", builtin="zephyr")
    assert with_default_system(model, builtin, "Be kind.", tmp_path) == (model, builtin)
    assert with_default_system(model, template, None, tmp_path) == (model, template)
    none = ChatTemplate("none", problem="x")
    assert with_default_system(model, none, "Be kind.", tmp_path) == (model, none)

"""Pure parts of the store: Hugging Face file picks, params as flags, create requests,
manifests and progress lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamarunner.core.errors import BadRequestError
from llamarunner.library.ollama_params import params_to_args
from llamarunner.store.create import parse_create_request, text_layers
from llamarunner.store.download import PullProgress
from llamarunner.store.errors import PullError, RemoteNotFoundError
from llamarunner.store.huggingface import (
    HubFile,
    hub_endpoint,
    hub_token,
    parse_tree,
    pick_model_file,
    pick_projector,
)
from llamarunner.store.layout import MEDIA_MANIFEST, Layer, Manifest, ManifestError
from llamarunner.store.registry import parse_challenge
from llamarunner.store.transfer import human_bytes

HEX = "a" * 64


def files(*names: str) -> list[HubFile]:
    return [HubFile(name, 10, None) for name in names]


# ---------------------------------------------------------------------------------------------
# Hugging Face


@pytest.mark.parametrize(
    ("names", "tag", "picked"),
    [
        (("m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-F16.gguf"), "latest", "m-Q4_K_M.gguf"),
        (("m-Q8_0.gguf", "m-Q4_0.gguf"), "latest", "m-Q4_0.gguf"),
        (("m-Q8_0.gguf", "m-F16.gguf"), "latest", "m-Q8_0.gguf"),
        (("m.gguf",), "latest", "m.gguf"),
        (("mmproj-f16.gguf", "m.Q5_K_M.gguf"), "latest", "m.Q5_K_M.gguf"),
        (("m-Q8_0.gguf", "m-Q4_K_M.gguf"), "q8_0", "m-Q8_0.gguf"),
        (("m-IQ3_S-imat.gguf", "m-IQ3_S.gguf"), "IQ3_S-imat", "m-IQ3_S-imat.gguf"),
        (("m-UD-Q4_K_M.gguf", "m-Q4_K_M.gguf"), "Q4_K_M", "m-Q4_K_M.gguf"),
        (("sub/m-Q6_K.gguf", "README.md"), "Q6_K", "sub/m-Q6_K.gguf"),
    ],
)
def test_the_tag_picks_the_file_and_the_default_is_q4_k_m(names: tuple[str, ...], tag: str,
                                                          picked: str) -> None:
    assert pick_model_file(files(*names), tag, "o/r").path == picked


def test_a_missing_quant_names_the_ones_there_are_and_splits_are_refused() -> None:
    with pytest.raises(RemoteNotFoundError) as missing:
        pick_model_file(files("m-Q8_0.gguf", "m-Q4_K_M.gguf"), "Q2_K", "o/r")
    assert "Q4_K_M, Q8_0" in missing.value.message
    with pytest.raises(RemoteNotFoundError):
        pick_model_file(files("README.md", "mmproj-f16.gguf"), "latest", "o/r")
    with pytest.raises(PullError) as split:
        pick_model_file(files("m-Q4_K_M-00001-of-00002.gguf",
                              "m-Q4_K_M-00002-of-00002.gguf"), "latest", "o/r")
    assert "split across 2 files" in split.value.message


def test_the_projector_comes_along_f16_first() -> None:
    assert pick_projector(files("m-Q4_K_M.gguf")) is None
    found = pick_projector(files("mmproj-model-q8_0.gguf", "mmproj-model-f16.gguf"))
    assert found is not None and found.path == "mmproj-model-f16.gguf"


def test_the_tree_listing_gives_sizes_and_lfs_sha256() -> None:
    tree = [
        {"type": "directory", "path": "sub"},
        {"type": "file", "path": "README.md", "size": 5, "oid": "x"},
        {"type": "file", "path": "m.gguf", "size": 134,
         "lfs": {"oid": HEX, "size": 9000, "pointerSize": 134}},
        {"type": "file", "path": 3},
    ]
    assert parse_tree(tree) == [HubFile("README.md", 5, None), HubFile("m.gguf", 9000, HEX)]
    assert parse_tree({"error": "x"}) == []


def test_the_hub_address_and_token_come_from_the_environment() -> None:
    assert hub_endpoint({}) == "https://huggingface.co"
    assert hub_endpoint({"HF_ENDPOINT": "http://127.0.0.1:9/ "}) == "http://127.0.0.1:9"
    assert hub_token({}) is None
    assert hub_token({"HUGGING_FACE_HUB_TOKEN": "old"}) == "old"
    assert hub_token({"HF_TOKEN": "new", "HUGGING_FACE_HUB_TOKEN": "old"}) == "new"


# ---------------------------------------------------------------------------------------------
# Registry, manifests, progress


def test_the_registry_challenge_is_read() -> None:
    header = 'Bearer realm="https://r.example/token",service="r.example",scope="repository:a/b:pull"'
    assert parse_challenge(header) == {"realm": "https://r.example/token",
                                       "service": "r.example", "scope": "repository:a/b:pull"}
    assert parse_challenge('Basic realm="x"') == {}


def test_manifests_are_written_as_go_writes_them() -> None:
    manifest = Manifest(Layer("c", f"sha256:{HEX}", 2), (Layer("m", f"sha256:{'b' * 64}", 3),))
    data = manifest.to_bytes()
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    assert list(json.loads(data)) == ["schemaVersion", "mediaType", "config", "layers"]
    assert json.loads(data)["mediaType"] == MEDIA_MANIFEST
    assert Manifest.parse(data) == manifest
    for bad in (b"[]", b"{}", b'{"layers": [{"mediaType": "m", "digest": "sha256:../x"}]}',
                b'{"layers": [{"mediaType": "m", "digest": "sha256:' + HEX.encode() +
                b'", "size": -1}]}', b"\xff"):
        with pytest.raises(ManifestError):
            Manifest.parse(bad)


def test_progress_lines_leave_out_empty_fields_as_ollama_does() -> None:
    assert PullProgress("success").to_json() == {"status": "success"}
    assert PullProgress("pulling x", "sha256:x", 10, 0).to_json() == {
        "status": "pulling x", "digest": "sha256:x", "total": 10}
    assert human_bytes(999) == "999 B" and human_bytes(4_100_000_000) == "4.1 GB"


# ---------------------------------------------------------------------------------------------
# Params as flags


@pytest.mark.parametrize(
    ("params", "args", "ignored"),
    [
        ({"temperature": 0.5, "top_k": 20.0, "num_ctx": 8192},
         {"temp": 0.5, "top-k": 20, "ctx-size": 8192}, []),
        ({"stop": ["<|eot_id|>"], "penalize_newline": True}, {}, ["penalize_newline", "stop"]),
        ({"num_ctx": 0, "num_predict": -1, "num_gpu": -1}, {}, []),
        ({"repeat_last_n": -5, "seed": 42}, {"repeat-last-n": -1, "seed": 42}, []),
        ({"temperature": "hot", "top_p": True, "min_p": float("nan")}, {},
         ["min_p", "temperature", "top_p"]),
        ({"mirostat": 2, "mirostat_eta": 0.1, "mirostat_tau": 5},
         {"mirostat": 2, "mirostat-lr": 0.1, "mirostat-ent": 5.0}, []),
    ],
)
def test_params_become_llama_server_defaults(params: dict[str, Any], args: dict[str, Any],
                                             ignored: list[str]) -> None:
    assert params_to_args(params) == (args, ignored)


# ---------------------------------------------------------------------------------------------
# Create requests


def test_a_create_request_is_checked_before_anything_happens() -> None:
    request = parse_create_request({
        "model": "mario", "from": "llama3.2", "system": "You are Mario.",
        "license": ["MIT", "Apache"], "parameters": {"temperature": 0.2},
        "messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert request.name.display == "mario:latest" and request.source == "llama3.2"
    layers = text_layers(request, {"temperature": 0.9, "top_k": 5})
    media = [m.rsplit(".", 1)[-1] for m, _ in layers]
    assert media == ["system", "license", "license", "params", "messages"]
    assert json.loads(layers[3][1]) == {"temperature": 0.2, "top_k": 5}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"model": "x"}, "neither 'from' or 'files'"),
        ({"model": "../x", "from": "y"}, "invalid model name"),
        ({"model": "x", "from": "y", "quantize": "q4_K_M"}, "quantize is not supported"),
        ({"model": "x", "files": {"../m.gguf": f"sha256:{HEX}"}}, "must be relative"),
        ({"model": "x", "files": {"/m.gguf": f"sha256:{HEX}"}}, "must be relative"),
        ({"model": "x", "files": {"m.gguf": "sha256:zz"}}, "invalid digest"),
        ({"model": "x", "files": ["m.gguf"]}, "files must be an object"),
        ({"model": "x", "from": "y", "system": 3}, "system must be a string"),
        ({"model": "x", "from": "y", "license": [1]}, "license must be"),
        ({"model": "x", "from": "y", "parameters": []}, "parameters must be an object"),
        ({"model": "x", "from": "y", "messages": [{"content": "x"}]}, "messages must be"),
    ],
)
def test_bad_create_requests_are_400(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        parse_create_request(data)
    assert reason in refused.value.message

"""Which name each peer model gets, what is read from a peer's list, what is sent to it."""

from __future__ import annotations

import json

import pytest

from llamarunner.config import PeerConfig
from llamarunner.core.errors import PeerUnsupportedError
from llamarunner.peers.client import PeerCall, RemoteModel
from llamarunner.peers.directory import PeerStatus, auth_headers, models_of_listing
from llamarunner.peers.table import peer_models


def _status(name: str, *models: str) -> PeerStatus:
    return PeerStatus(name, f"http://{name}:1234/v1", models=models, available=True)


def test_a_free_name_is_the_peers_own_and_the_qualified_one_is_an_alias() -> None:
    table = peer_models([_status("box", "llama3")], taken=[])
    assert list(table) == ["llama3"]
    model = table["llama3"]
    assert (model.peer, model.remote_id, model.alias) == ("box", "llama3", ("box/llama3",))
    assert model.is_peer and not model.settings_only and model.takes_embedding_requests


def test_a_local_name_wins_and_the_peers_model_is_listed_qualified() -> None:
    table = peer_models([_status("box", "Shared")], taken=["shared", "alias-x"])
    assert list(table) == ["box/Shared"]
    assert table["box/Shared"].alias == ()


def test_between_two_peers_the_first_by_name_gets_the_plain_name() -> None:
    table = peer_models([_status("zed", "m"), _status("alpha", "m")], taken=[])
    assert table["m"].peer == "alpha"
    assert table["zed/m"].peer == "zed"


def test_listing_skips_the_peers_own_peer_models() -> None:
    body = json.dumps({"object": "list", "data": [
        {"id": "a", "owned_by": "llamarunner"}, {"id": "b", "owned_by": "peer other"},
        {"id": "a"}, {"no": "id"}, "junk"]}).encode()
    assert models_of_listing(body) == ("a",)


@pytest.mark.parametrize("body", [b"[]", b'{"data": 1}', b"not json"])
def test_a_listing_that_is_not_openais_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        models_of_listing(body)


def test_the_peer_key_goes_in_the_authorization_header_only_when_set() -> None:
    assert "Authorization" not in auth_headers(PeerConfig(url="http://x/v1"))
    headers = auth_headers(PeerConfig(url="http://x/v1", api_key="k"))
    assert headers["Authorization"] == "Bearer k"


def _call() -> PeerCall:
    return PeerCall(RemoteModel("box/llama3", "box", "llama3"),
                    PeerConfig(url="https://box:8443/openai/v1"), lambda ok, why: None)


def test_our_openai_paths_map_onto_the_peers_base_url() -> None:
    call = _call()
    assert call.url_for("/v1/chat/completions") == "https://box:8443/openai/v1/chat/completions"
    assert call.url_for("/v1/embeddings") == "https://box:8443/openai/v1/embeddings"
    with pytest.raises(PeerUnsupportedError, match="OpenAI API"):
        call.url_for("/tokenize")


def test_the_body_names_the_model_as_the_peer_knows_it() -> None:
    call = _call()
    sent = json.loads(call.body_for(b'{"model": "box/llama3", "stream": true}',
                                    "application/json"))
    assert sent == {"model": "llama3", "stream": True}
    assert call.body_for(b"raw", "multipart/form-data") == b"raw"
    assert call.body_for(b"{broken", "application/json") == b"{broken"

"""LM Studio download requests and job bodies (proxy/lmstudio/download_routes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from llamarunner.core.errors import BadRequestError
from llamarunner.proxy.lmstudio.download_routes import download_name, job_body

HF = "https://huggingface.co"


@pytest.mark.parametrize(("model", "quantization", "name"), [
    (f"{HF}/owner/Repo-GGUF", None, "hf.co/owner/Repo-GGUF"),
    (f"{HF}/owner/Repo-GGUF/", None, "hf.co/owner/Repo-GGUF"),
    (f"{HF}/owner/Repo-GGUF", "Q8_0", "hf.co/owner/Repo-GGUF:Q8_0"),
    (f"{HF}/owner/Repo-GGUF/blob/main/repo-Q5_K_M.gguf", None, "hf.co/owner/Repo-GGUF:Q5_K_M"),
    (f"{HF}/owner/Repo-GGUF/resolve/main/sub/repo-UD-IQ3_S.gguf", None,
     "hf.co/owner/Repo-GGUF:UD-IQ3_S"),
    (f"{HF}/owner/Repo-GGUF/blob/main/repo-Q5_K_M.gguf", "Q4_0", "hf.co/owner/Repo-GGUF:Q4_0"),
    (f"{HF}/owner/Repo-GGUF/blob/main/plain.gguf", None, "hf.co/owner/Repo-GGUF:plain"),
    (f"{HF}/owner/Repo-GGUF/tree/main", None, "hf.co/owner/Repo-GGUF"),
    ("https://www.huggingface.co/owner/repo", None, "hf.co/owner/repo"),
    ("https://hf.co/owner/repo", None, "hf.co/owner/repo"),
    ("huggingface.co/owner/repo", None, "hf.co/owner/repo"),
    ("hf.co/owner/repo", "Q4_K_M", "hf.co/owner/repo:Q4_K_M"),
    ("owner/repo", None, "hf.co/owner/repo"),
    ("  owner/repo  ", " Q4_K_M ", "hf.co/owner/repo:Q4_K_M"),
    ("owner/repo:Q2_K", None, "hf.co/owner/repo:Q2_K"),
    ("http://127.0.0.1:8080/owner/repo", None, "hf.co/owner/repo"),  # $HF_ENDPOINT's host
])
def test_download_names(model: str, quantization: str | None, name: str) -> None:
    assert download_name(model, quantization, hub_host="127.0.0.1") == name


@pytest.mark.parametrize(("model", "quantization", "param", "words"), [
    (None, None, "model", "'model' is required"),
    ("", None, "model", "'model' is required"),
    (42, None, "model", "'model' is required"),
    ("qwen3-8b", None, "model", "catalog names"),
    ("a/b/c", None, "model", "not a model this app can download"),
    ("https://example.com/owner/repo", None, "model", "not a Hugging Face link"),
    (f"{HF}/owner", None, "model", "names no repository"),
    (f"{HF}/owner/repo/discussions/1", None, "model", "not a link to a repository"),
    (f"{HF}/owner/repo/blob/main/README.md", None, "model", "not a link to a repository"),
    ("owner/repo", 4, "quantization", "quantization name"),
    ("owner/repo", " ", "quantization", "quantization name"),
])
def test_bad_download_requests_name_the_field(model: object, quantization: object,
                                              param: str, words: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        download_name(model, quantization)
    assert refused.value.param == param and words in refused.value.message


BASE: dict[str, Any] = {"job_id": "job_1", "total": 1000, "started": 0.0, "finished": None,
                        "now": 10.0}


@pytest.mark.parametrize(("fields", "expected"), [
    ({"status": "downloading", "done": 500, "speed": 100.0},
     {"bytes_per_second": 100.0, "estimated_completion": "1970-01-01T00:00:15.000Z"}),
    ({"status": "downloading", "done": 0, "speed": None}, {"bytes_per_second": 0.0}),
    ({"status": "completed", "done": 1000, "speed": None, "finished": 12.5,
      "model_key": "hf.co/o/r:Q4_K_M"},
     {"completed_at": "1970-01-01T00:00:12.500Z", "model_key": "hf.co/o/r:Q4_K_M"}),
    ({"status": "failed", "done": 10, "speed": None, "error": "digest mismatch"},
     {"error": "digest mismatch"}),
    ({"status": "paused", "done": 10, "speed": 5.0}, {}),
])
def test_job_bodies_have_lmstudio_fields_for_their_status(fields: dict[str, Any],
                                                          expected: dict[str, Any]) -> None:
    body = job_body(**{**BASE, **fields})
    common = {"job_id": "job_1", "status": fields["status"], "total_size_bytes": 1000,
              "downloaded_bytes": fields["done"], "started_at": "1970-01-01T00:00:00.000Z"}
    assert body == {**common, **expected}

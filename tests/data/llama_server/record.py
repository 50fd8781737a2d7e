"""Re-records the real llama-server payloads in this folder from the tiny test model.

Usage: ``python tests/data/llama_server/record.py /path/to/llama-server``. Writes the files
listed in README.md next to this script; every server it starts is killed before it returns.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.support.tiny_gguf import write_tiny_gguf  # noqa: E402

HOST = "127.0.0.1"
MODEL_ALIAS = "tiny"
CHAT_BODY: dict[str, Any] = {
    "model": MODEL_ALIAS,
    "messages": [{"role": "user", "content": "hello world"}],
    "max_tokens": 8,
    "temperature": 0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# The key of the server that records the 401 answer, passed as the app passes it.
RECORDING_KEY = "recording-key-0123456789"


def request(
    port: int, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class Recorder:
    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}

    def save(self, name: str, status: int, headers: dict[str, str], body: bytes) -> None:
        (HERE / name).write_bytes(body)
        # Date changes every run; the rest is what a fake must imitate.
        kept = {k: v for k, v in headers.items() if k.lower() != "date"}
        self.meta[name] = {"status": status, "headers": kept}
        print(f"recorded {name}: {status} {len(body)} bytes")

    def call(self, name: str, port: int, method: str, path: str,
             body: dict[str, Any] | None = None) -> bytes:
        status, headers, data = request(port, method, path, body)
        self.save(name, status, headers, data)
        return data


class Server:
    def __init__(self, binary: str, model: Path, extra: list[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.argv = [binary, "-m", str(model), "--host", HOST, "--port", str(self.port),
                     "-c", "256", "-t", "1", "--alias", MODEL_ALIAS, *extra]
        self.log = log
        self._log_file = log.open("wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})

    def wait_health(self, rec: Recorder | None) -> float:
        """Poll /health as fast as possible; record the first 503 and the 200."""
        seen_loading = False
        while time.monotonic() - self.t0 < 30:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log}")
            try:
                status, headers, data = request(self.port, "GET", "/health")
            except OSError:
                time.sleep(0.001)
                continue
            if status == 503 and rec and not seen_loading:
                rec.save("health_loading.json", status, headers, data)
                seen_loading = True
            if status == 200:
                elapsed = time.monotonic() - self.t0
                if rec:
                    rec.save("health_ready.json", status, headers, data)
                    rec.meta["health_ready_after_s"] = round(elapsed, 3)
                return elapsed
        raise RuntimeError("server never became healthy")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


def main(binary: str) -> None:
    rec = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_gguf(Path(tmp) / "tiny.gguf")
        servers: list[Server] = []
        try:
            srv = Server(binary, model, [], Path(tmp) / "main.log")
            servers.append(srv)
            srv.wait_health(rec)
            p = srv.port
            rec.call("models.json", p, "GET", "/v1/models")
            rec.call("props.json", p, "GET", "/props")
            rec.call("chat.json", p, "POST", "/v1/chat/completions", CHAT_BODY)
            rec.call("chat_stream.sse", p, "POST", "/v1/chat/completions",
                     {**CHAT_BODY, "stream": True})
            rec.call("chat_stream_usage.sse", p, "POST", "/v1/chat/completions",
                     {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}})
            rec.call("completions.json", p, "POST", "/v1/completions",
                     {"model": MODEL_ALIAS, "prompt": "hello world", "max_tokens": 8,
                      "temperature": 0})
            rec.call("completions_stream.sse", p, "POST", "/v1/completions",
                     {"model": MODEL_ALIAS, "prompt": "hello world", "max_tokens": 8,
                      "temperature": 0, "stream": True})
            rec.call("completion_native.json", p, "POST", "/completion",
                     {"prompt": "hello world", "n_predict": 8, "temperature": 0})
            rec.call("embeddings_disabled.json", p, "POST", "/v1/embeddings",
                     {"model": MODEL_ALIAS, "input": "hello world"})
            long_prompt = " ".join(["hello world"] * 200)
            rec.call("error_exceed_context.json", p, "POST", "/v1/chat/completions",
                     {**CHAT_BODY, "messages": [{"role": "user", "content": long_prompt}]})
            rec.call("error_exceed_context_stream.txt", p, "POST", "/v1/chat/completions",
                     {**CHAT_BODY, "stream": True,
                      "messages": [{"role": "user", "content": long_prompt}]})
            rec.call("not_found.txt", p, "GET", "/no/such/path")
            rec.call("apply_template_tools.json", p, "POST", "/apply-template",
                     {"messages": CHAT_BODY["messages"],
                      "tools": [{"type": "function", "function": {
                          "name": "get_weather", "description": "Weather for a city",
                          "parameters": {"type": "object", "properties": {
                              "city": {"type": "string"}}}}}]})
            rec.meta["sigterm_exit_code"] = srv.stop()
            (HERE / "stderr_startup.txt").write_bytes(srv.log.read_bytes())

            srv = Server(binary, model, ["--embedding"], Path(tmp) / "emb_none.log")
            servers.append(srv)
            srv.wait_health(None)
            rec.call("embeddings_pooling_none.json", srv.port, "POST", "/v1/embeddings",
                     {"model": MODEL_ALIAS, "input": "hello world"})
            srv.stop()

            srv = Server(binary, model, ["--embedding", "--pooling", "mean"],
                         Path(tmp) / "emb.log")
            servers.append(srv)
            srv.wait_health(None)
            rec.call("embeddings.json", srv.port, "POST", "/v1/embeddings",
                     {"model": MODEL_ALIAS, "input": ["hello world", "the cat"]})
            srv.stop()

            srv = Server(binary, model, [], Path(tmp) / "key.log",
                         env={"LLAMA_API_KEY": RECORDING_KEY})
            servers.append(srv)
            srv.wait_health(None)
            rec.call("error_unauthorized.json", srv.port, "GET", "/v1/models")
            srv.stop()

            missing = Path(tmp) / "missing.gguf"
            srv = Server(binary, missing, [], Path(tmp) / "missing.log")
            servers.append(srv)
            rec.meta["missing_model_exit_code"] = srv.proc.wait(30)
            srv.stop()
            (HERE / "stderr_missing_model.txt").write_bytes(srv.log.read_bytes())
        finally:
            for s in servers:
                if s.proc.poll() is None:
                    os.killpg(s.proc.pid, signal.SIGKILL)
                    s.proc.wait()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    rec.meta["version"] = (version.stdout + version.stderr).strip()
    (HERE / "responses_meta.json").write_text(json.dumps(rec.meta, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lcb/build/bin/llama-server")

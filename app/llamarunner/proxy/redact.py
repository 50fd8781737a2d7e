"""File system paths out of error texts for clients on other machines."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Final

from aiohttp import web

# Headers a reverse proxy adds: behind one, the peer is loopback but the client is not.
_FORWARDING_HEADERS: Final = ("Forwarded", "X-Forwarded-For", "X-Real-IP")

# What stands for a folder path (or a path whose last part is no file name).
PATH_PLACEHOLDER: Final = "<path>"

# URLs are left alone (http://host/a/b is not a file), except file: URLs.
_URL = re.compile(r"""\b([A-Za-z][A-Za-z0-9+.-]*)://[^\s'"`<>]+""")
# Where an absolute path may start: after a space, quote, bracket, '=' or ',' (never in
# the middle of a word, a number such as 1/2, or "tokens/s").
_BEFORE = r"""(?<![\w.~:/\\%@?&#+*$-])"""
# POSIX "/x", home "~/x", Windows "C:\x" or "C:/x", UNC "\\server\share". Python writes
# Windows paths with doubled backslashes in its messages (repr), which match too.
_START = r"""(?:~?/(?=[^\s/'"`<>|])|[A-Za-z]:[\\/]|\\\\(?=[^\s\\]))"""
_WORD = r"""[^\s'"`<>|]"""
# A path with spaces left unquoted ("C:\Program Files (x86)\app\x.exe") goes on over up to
# two more words when a word after them has a backslash, or a slash and a file name at its
# end ("/srv/my models/x.gguf"); a slash alone is not enough: "and/or", "org/model" are
# prose and model names.
_END = r"""(?=[\s.,;:!?)\]}>]|$)"""
_GOES_ON = rf"""(?!{_START})(?:{_WORD}*\\{_WORD}*|{_WORD}*/{_WORD}*\.[A-Za-z0-9]{{1,10}}{_END})"""
_MORE = rf"""(?: (?:(?!{_START}){_WORD}+ ){{0,2}}{_GOES_ON})*"""
_UNQUOTED = re.compile(rf"{_BEFORE}{_START}{_WORD}*{_MORE}")
# A quoted path may hold any character but its quote and a line break (and is no longer
# than the longest path a system allows, which also bounds the search).
_QUOTED = re.compile(rf"""(['"`])({_START}[^\n]{{0,4095}}?)\1""")
# Route paths of the two APIs and of llama-server are named in messages; they are no files.
_ROUTE = re.compile(
    r"""/(?:api|v1|health|completions?|infill|props|slots|tokenize|detokenize|embeddings?|"""
    r"""rerank|reranking|metrics|apply-template|lora-adapters|chat)(?:[/?\s]|$)"""
)
_TRAILING = ".,;:!?)]}>"
_FILE_NAME = re.compile(r"[^.\s\\/][^\\/]*\.[A-Za-z0-9]{1,10}")
_LINE_SUFFIX = re.compile(r"(?::\d+)+$")


def _replacement(path: str) -> str:
    """The file's name when it has one ("x.gguf"), else the placeholder.

    A line number after the name ("x.cpp:12", as compilers write it) stays with it.
    """
    name = re.split(r"[\\/]+", path.rstrip("\\/"))[-1]
    line = _LINE_SUFFIX.search(name)
    position = line.group(0) if line else ""
    name = name[:len(name) - len(position)]
    if path.endswith(("/", "\\")) or not _FILE_NAME.fullmatch(name):
        return PATH_PLACEHOLDER
    return name + position


def _is_route(candidate: str) -> bool:
    return _ROUTE.match(candidate) is not None


def _unquoted(match: re.Match[str]) -> str:
    text = match.group(0)
    if _is_route(text):
        return text
    core = text.rstrip(_TRAILING)
    return _replacement(core) + text[len(core):]


def _quoted(match: re.Match[str]) -> str:
    quote, inner = match.group(1), match.group(2)
    if _is_route(inner):
        return match.group(0)
    return f"{quote}{_replacement(inner)}{quote}"


def _redact_plain(text: str) -> str:
    return _UNQUOTED.sub(_unquoted, _QUOTED.sub(_quoted, text))


def redact_paths(text: str) -> str:
    """`text` with every absolute file system path replaced by its file name or "<path>".

    "failed to load model from /home/me/models/x.gguf" becomes "... from x.gguf"; URLs
    other than file: ones and the APIs' route paths ("GET /api/tags") stay as they are.
    """
    if "/" not in text and "\\" not in text:
        return text
    pieces: list[str] = []
    position = 0
    for url in _URL.finditer(text):
        pieces.append(_redact_plain(text[position:url.start()]))
        if url.group(1).lower() == "file":
            pieces.append("file://" + _replacement(url.group(0)[len("file://"):]))
        else:
            pieces.append(url.group(0))
        position = url.end()
    pieces.append(_redact_plain(text[position:]))
    return "".join(pieces)


def is_local_client(request: web.Request) -> bool:
    """Whether the caller is on this machine: a loopback peer that no proxy forwarded.

    A request relayed by a reverse proxy on this machine (nginx, Caddy) comes from
    loopback too; the proxy's forwarding header tells it apart. A local program that sends
    one itself only gets the redacted text.
    """
    if any(name in request.headers for name in _FORWARDING_HEADERS):
        return False
    peer = request.remote
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _redact_error(error: Any) -> Any:
    """Ollama's error is the text itself; OpenAI's, LM Studio's and llama-server's are an
    object whose "message" is the text (its type, code and param are fixed words)."""
    if isinstance(error, str):
        return redact_paths(error)
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return {**error, "message": redact_paths(error["message"])}
    return error


def redact_error_response(request: web.Request, response: web.StreamResponse) -> None:
    """Take the paths out of an error answer's "error" for a caller on another machine.

    Every error body of both APIs (Ollama's `{"error": "..."}`, OpenAI's and LM Studio's
    `{"error": {"message": ...}}`) is JSON with an "error" key; llama-server's own errors
    are relayed in that shape too. The local user keeps the full text: the paths in it
    (which model file failed to load, and why) are what they need to fix it.
    """
    if (response.status < 400 or not isinstance(response, web.Response)
            or response.prepared or is_local_client(request)):
        return
    body = response.body
    if not isinstance(body, bytes) or not body or response.content_type != "application/json":
        return
    try:
        data = json.loads(body)
    except ValueError:
        return
    if not isinstance(data, dict) or "error" not in data:
        return
    redacted = {**data, "error": _redact_error(data["error"])}
    if redacted != data:
        response.body = json.dumps(redacted).encode()

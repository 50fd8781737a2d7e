"""Listener guards: Host check, CORS, API key and request body limits, in each API's shape."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Final

from aiohttp import web

from ..config.schema import ORIGIN_PATTERN, ApiKeyConfig, ProxyConfig, SecurityConfig
from ..core.errors import RateLimitedError
from .anthropic.errors import anthropic_unauthorized, is_anthropic_path
from .context import BACKEND
from .errors import ErrorRenderer, openai_error
from .observe import record_of
from .rate_limit import Budget, RateLimiter, budget_for, rate_limiter_for

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Unauthorized = Callable[[web.Request, str], web.Response]
SettingsProvider = Callable[[web.Request], SecurityConfig]

# The address a listener's app is served on, set by ListenerSet before the app starts.
BIND_HOST: Final = web.AppKey("bind_host", str)

# Host names every listener accepts: the names a local client uses for this machine.
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})

# Ollama's built-in origin list (envconfig.AllowedOrigins): localhost, 127.0.0.1 and
# 0.0.0.0 over http/https with or without a port, plus desktop/editor webview schemes.
# [::1] is added because a loopback listener answers on it too. Browser extensions
# (chrome-extension://, moz-extension://...) are NOT in Ollama's list and not here: any
# installed extension could then drive the API; users add them to security.cors_origins.
_LOCAL_ORIGIN_HOSTS: Final = ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")
DEFAULT_ORIGINS: Final[tuple[str, ...]] = (
    *(
        f"{scheme}://{host}{port}"
        for host in _LOCAL_ORIGIN_HOSTS
        for scheme in ("http", "https")
        for port in ("", ":*")
    ),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)

# What a preflight may ask for: the methods our routes use and the headers the usual
# clients send (the OpenAI and Anthropic JS SDKs add x-stainless-* telemetry headers to
# every call; Anthropic's also sends its key and API version in its own headers).
ALLOW_METHODS: Final = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
ALLOW_HEADERS: Final = ", ".join((
    "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With",
    "X-Api-Key", "Anthropic-Version", "Anthropic-Beta",
    "Anthropic-Dangerous-Direct-Browser-Access",
    "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
    "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Retry-Count",
    "X-Stainless-Timeout", "X-Stainless-Async", "X-Stainless-Helper-Method",
    "X-Stainless-Poll-Helper", "X-Stainless-Custom-Poll-Interval",
))
# Chromium caps a cached preflight at 2 hours; asking for more buys nothing.
PREFLIGHT_MAX_AGE: Final = "7200"

# Methods whose body the middleware reads up front (with the size and time limits).
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Paths whose handler streams its own body (Ollama's blob uploads, many GB), under limits
# of its own: the middleware leaves those bodies unread.
STREAMED_BODY_PREFIXES: Final = web.AppKey("streamed_body_prefixes", tuple[str, ...])
# The named key a request was made with (absent: the unnamed key, or none), for scopes.
API_KEY: Final = web.RequestKey("api_key", ApiKeyConfig)


# --- pure checks ---------------------------------------------------------------------


@lru_cache(maxsize=64)
def is_loopback_bind(host: str) -> bool:
    """True for addresses only this machine can reach; "", 0.0.0.0 and :: face the network."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface


def _split_host_header(value: str) -> str | None:
    """The host of a Host header, lowercased, port and trailing dot removed; None if malformed.

    IP literals come back in canonical form ("[::1]", "127.0.0.1") so that every spelling
    of one address compares equal.
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        try:
            return f"[{ipaddress.IPv6Address(value[1:end])}]"
        except ValueError:
            return None
    host, sep, port = value.rpartition(":")
    if not sep:
        host = value
    elif not port.isdigit() or ":" in host:
        return None  # an unbracketed IPv6 address or a bad port
    host = host.rstrip(".")
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return host or None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@cache
def _machine_names() -> frozenset[str]:
    """This machine's own name(s), as a LAN client may type them (no DNS lookup)."""
    name = socket.gethostname().lower().rstrip(".")
    return frozenset({name, name.split(".")[0]}) if name else frozenset()


def host_allowed(host_header: str | None, bind_host: str, allowed_hosts: Iterable[str]) -> bool:
    """Whether a request's Host header may reach a listener bound to `bind_host`.

    DNS rebinding: a page on attacker.example re-points its name at 127.0.0.1, and the
    browser then calls us as a same-origin request, with `Host: attacker.example`. Only
    names we know are ours pass, so such requests fail before any route runs.
    """
    if host_header is None:
        return True  # HTTP/1.0 without Host: browsers always send one, so not a browser
    return _host_allowed(host_header, bind_host, tuple(allowed_hosts))


# Clients send the same few Host headers over and over; the answer is a pure function of
# these three values, and the bounded cache keeps hostile headers from growing it.
@lru_cache(maxsize=256)
def _host_allowed(host_header: str, bind_host: str, allowed_hosts: tuple[str, ...]) -> bool:
    host = _split_host_header(host_header)
    if host is None:
        return False
    allowed = set(LOOPBACK_HOSTS) | {h.lower().rstrip(".") for h in allowed_hosts}
    bare = bind_host.strip().strip("[]")
    bound = _split_host_header(f"[{bare}]" if ":" in bare else bare)
    if bound:
        allowed.add(bound)
    if host in allowed:
        return True
    if is_loopback_bind(bind_host):
        return False
    # A listener that faces the network is reached by the machine's name or by one of its
    # addresses. An IP literal cannot be rebound (the page's origin would be that address
    # itself), so any address passes; names other than ours still do not.
    return _is_ip_literal(host) or host in _machine_names()


def _parse_origin(text: str) -> tuple[str, str, str | None] | None:
    match = ORIGIN_PATTERN.fullmatch(text.strip())
    if match is None:
        return None
    return match["scheme"].lower(), match["host"].lower(), match["port"]


def _host_matches(pattern: str, host: str) -> bool:
    # `*` stands for any run of host characters; the port and scheme are checked apart, so
    # "http://localhost:*" cannot match "http://localhost.attacker.example:80".
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == host
    if not (host.startswith(parts[0]) and host.endswith(parts[-1])):
        return False
    position = len(parts[0])
    end = len(host) - len(parts[-1])
    if position > end:
        return False
    for middle in parts[1:-1]:
        found = host.find(middle, position, end)
        if found < 0:
            return False
        position = found + len(middle)
    return True


def origin_matches(pattern: str, origin: str) -> bool:
    """Whether one `scheme://host[:port]` pattern (with `*` wildcards) admits `origin`."""
    if pattern.strip() == "*":
        return True
    wanted, given = _parse_origin(pattern), _parse_origin(origin)
    if wanted is None or given is None:
        return False
    scheme, host, port = wanted
    if scheme != given[0]:
        return False
    if host == "*" and port is None:
        return True  # "app://*": anything under that scheme
    if not _host_matches(host, given[1]):
        return False
    return (port == "*" and given[2] is not None) or port == given[2]


def origin_allowed(origin: str, extra: Sequence[str] = ()) -> bool:
    """Whether a browser page at `origin` may call the API (CORS).

    `Origin: null` (file pages, sandboxed iframes) never passes: any site can produce it
    with a sandboxed iframe, so allowing it would allow everyone.
    """
    return any(origin_matches(pattern, origin) for pattern in (*DEFAULT_ORIGINS, *extra))


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def presented_keys(authorization: str | None, x_api_key: str | None) -> tuple[str, ...]:
    """The API keys a request offers: OpenAI and Ollama clients send `Authorization:
    Bearer <key>`, Anthropic's send `x-api-key: <key>` (llama-server accepts both too)."""
    keys = [bearer_token(authorization), (x_api_key or "").strip() or None]
    return tuple(key for key in keys if key)


def key_matches(given: str | None, key: str) -> bool:
    """Compare in constant time so response timing does not reveal how much of a guess
    was right; comparing bytes keeps non-ASCII input from raising TypeError.
    """
    if given is None or not key:
        return False
    return hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))


@dataclass(frozen=True)
class KeyCheck:
    """What the keys a request presented are worth: whether one is valid, and which
    named key it is (None for the unnamed `security.api_key`, or no key at all)."""

    valid: bool
    named: ApiKeyConfig | None = None


def check_keys(security: SecurityConfig, presented: Sequence[str]) -> KeyCheck:
    """Match the presented keys against every configured one, each compared in constant
    time and all of them compared, so timing reveals neither a key nor which one."""
    single = security.resolved_api_key()
    valid = False
    named: ApiKeyConfig | None = None
    for given in presented:
        if key_matches(given, single):
            valid = True
        for candidate in security.api_keys:
            if key_matches(given, candidate.key):
                valid = True
                named = named or candidate
    return KeyCheck(valid, named)


_NO_KEY: Final = KeyCheck(False)  # a request that presented no key


def key_of(request: web.Request) -> ApiKeyConfig | None:
    """The named key the request was made with; None for the unnamed key or none."""
    return request.get(API_KEY)


def limiter_of(request: web.Request) -> RateLimiter:
    """The Service's one rate limiter; refusals are counted in its metrics."""
    backend = request.app[BACKEND]
    metrics = getattr(backend, "metrics", None)
    return rate_limiter_for(backend, metrics.count_rate_limited if metrics else None)


def refusal(name: str, title: str, cfg: ProxyConfig, security: SecurityConfig,
            config_path: str) -> str | None:
    """Why a listener must not start with these settings, or None when it may."""
    where = f"{cfg.host}:{cfg.port}"
    if security.api_key_env and not security.resolved_api_key():
        return (f"refusing to listen on {where} for the {title}: security.api_key_env names "
                f"the environment variable {security.api_key_env}, which is not set; set it "
                f"to the API key (16 or more characters), or change security.api_key_env in "
                f"{config_path}")
    if is_loopback_bind(cfg.host) or security.resolved_api_key() or security.api_keys:
        return None
    return (f"refusing to listen on {where} for the {title}: this address can be reached "
            f"from other machines, so an API key is required; set security.api_key (16 or "
            f"more characters), security.api_key_env or security.api_keys in {config_path}, "
            "or set "
            f"proxies.{name}.host to 127.0.0.1")


# --- aiohttp wiring -------------------------------------------------------------------


def current_settings(request: web.Request) -> SecurityConfig:
    """The security section of the Service's config as it is now (live reload included)."""
    return request.app[BACKEND].config.security


def app_settings(app: web.Application) -> SecurityConfig:
    """The same as `current_settings`, for code that holds the app (listener start-up)."""
    return app[BACKEND].config.security


def openai_unauthorized(request: web.Request, message: str) -> web.Response:
    if is_anthropic_path(request.path):
        return anthropic_unauthorized(request, message)  # Anthropic's routes, both ports
    # OpenAI's own answer to a bad key: invalid_request_error / invalid_api_key, and
    # RFC 6750's challenge header so generic HTTP clients know which scheme to use.
    return openai_error(message, status=401, code="invalid_api_key",
                        error_type="invalid_request_error",
                        headers={"WWW-Authenticate": "Bearer"})


def ollama_unauthorized(request: web.Request, message: str) -> web.Response:
    """Ollama's shape on its own routes; the OpenAI routes on that port keep OpenAI's."""
    if request.path.startswith("/v1/"):
        return openai_unauthorized(request, message)
    return web.json_response({"error": "unauthorized"}, status=401,
                             headers={"WWW-Authenticate": "Bearer"})


def _preflight(origin: str) -> web.Response:
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": ALLOW_HEADERS,
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        "Vary": "Origin",
    })


def security_middleware(
    render: ErrorRenderer,
    unauthorized: Unauthorized,
    open_paths: frozenset[str],
    settings: SettingsProvider = current_settings,
) -> Any:
    """Host, origin, key and body checks, in that order, before any route runs.

    `open_paths` answer GET/HEAD without a key: health checks of clients and monitors.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        security = settings(request)
        bind_host = request.app.get(BIND_HOST, "127.0.0.1")
        if not host_allowed(request.headers.get("Host"), bind_host, security.allowed_hosts):
            log.warning("refused %s %s: Host %r is not a name of this listener",
                        request.method, request.path, request.headers.get("Host"))
            return render(request, 403, "host not allowed: add it to security.allowed_hosts "
                          "if this name really points at this machine", None)
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(origin, security.cors_origins):
            # Preflights and real requests alike: a form POST needs no preflight, so only
            # refusing here stops a foreign page from making us act (Ollama does the same).
            return render(request, 403, "origin not allowed: add it to security.cors_origins",
                          None)
        if (origin is not None and request.method == "OPTIONS"
                and "Access-Control-Request-Method" in request.headers):
            return _preflight(origin)  # browsers never send credentials on a preflight
        budget: Budget | None = None
        if not (request.method in ("GET", "HEAD") and request.path in open_paths):
            required = security.requires_key or not is_loopback_bind(bind_host)
            checked = _NO_KEY
            if required or security.api_keys:  # no key to check on a keyless loopback
                presented = presented_keys(request.headers.get("Authorization"),
                                           request.headers.get("X-Api-Key"))
                if presented:
                    checked = check_keys(security, presented)
            if required and not checked.valid:
                return unauthorized(request, _unauthorized_message(request, security))
            if checked.named is not None:
                request[API_KEY] = checked.named
                record = record_of(request)
                if record is not None:
                    record.key_name = checked.named.name
            if security.has_limits:
                budget = budget_for(security, checked.named, request.remote)
            if budget is not None:
                try:
                    limiter_of(request).admit(budget)
                except RateLimitedError as exc:
                    return render(request, exc.status, exc.message, exc)
        if (request.method in _BODY_METHODS and request.body_exists
                and not request.path.startswith(request.app.get(STREAMED_BODY_PREFIXES, ()))):
            response = await _with_body(request, handler, render, security)
        else:
            response = await handler(request)
        if budget is not None and budget.tokens_per_minute:
            record = record_of(request)
            if record is not None and record.generated_tokens:
                limiter_of(request).spend_tokens(budget, record.generated_tokens)
        return response

    return middleware


def _unauthorized_message(request: web.Request, security: SecurityConfig) -> str:
    if not (security.resolved_api_key() or security.api_keys):
        # Fail closed: a network-facing listener whose key vanished on reload serves nobody.
        return "this server requires an API key but none is configured"
    if "Authorization" not in request.headers and "X-Api-Key" not in request.headers:
        return ("missing API key: send it as 'Authorization: Bearer <key>' or "
                "'x-api-key: <key>'")
    return "incorrect API key provided"


# Speech-to-text uploads have a limit of their own (security.max_audio_bytes) for the
# file, plus this much for the other form fields and the multipart framing.
AUDIO_PATH_PREFIX: Final = "/v1/audio/"
AUDIO_FORM_OVERHEAD: Final = 64 * 1024


def body_limit(path: str, security: SecurityConfig) -> tuple[int, str]:
    """The most bytes a request body on `path` may have, and the 413 message."""
    if path.startswith(AUDIO_PATH_PREFIX):
        return (security.max_audio_bytes + AUDIO_FORM_OVERHEAD,
                f"audio file too large: the limit is {security.max_audio_bytes} bytes "
                "(security.max_audio_bytes)")
    return (security.max_body_bytes,
            f"request body too large: the limit is {security.max_body_bytes} bytes "
            "(security.max_body_bytes)")


async def _with_body(request: web.Request, handler: Handler, render: ErrorRenderer,
                     security: SecurityConfig) -> web.StreamResponse:
    limit, too_large = body_limit(request.path, security)
    length = request.content_length
    if length is not None and length > limit:
        return _closing(render(request, 413, too_large, None))  # refused before reading it
    if length is not None and limit <= request.client_max_size and request.content.is_eof():
        # The usual JSON request: the whole body came in with the headers. Nothing is left
        # to wait for, so no timer; the app's own cap is at least ours, so no clone. The
        # check after reading still catches a compressed body that grew past the limit.
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return render(request, 413, too_large, None)
        if len(body) > limit:
            return render(request, 413, too_large, None)
        return await handler(request)
    # The body is read here, not in the handler, so the time limit covers every route
    # (a slowloris upload would otherwise hold a handler and its memory for as long as the
    # client likes) and the size limit follows the live config: the clone carries it, and
    # aiohttp caches the bytes so the handler's own read() costs nothing.
    limited = request.clone(client_max_size=limit)
    try:
        async with asyncio.timeout(security.body_timeout):
            await limited.read()
    except TimeoutError:
        return _closing(render(request, 408, "the request body did not arrive within "
                               f"{security.body_timeout:g} seconds (security.body_timeout)",
                               None))
    except web.HTTPRequestEntityTooLarge:  # a chunked body that outgrew the limit
        return _closing(render(request, 413, too_large, None))
    return await handler(limited)


def _closing(response: web.Response) -> web.Response:
    # The rest of the body is still on the wire: close the connection instead of reading it.
    response.force_close()
    return response


def cors_headers(
    settings: SettingsProvider = current_settings,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An on_response_prepare hook: it runs before headers go out, so streams get them too."""

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or "Access-Control-Allow-Origin" in response.headers:
            return
        if origin_allowed(origin, settings(request).cors_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            # Caches must not hand one origin's answer to another.
            vary = response.headers.get("Vary")
            if not vary or "origin" not in vary.lower():
                response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"

    return add


def install_security(
    app: web.Application, render: ErrorRenderer, unauthorized: Unauthorized,
    open_paths: Iterable[str], settings: SettingsProvider = current_settings,
) -> None:
    """Put the guards in front of every other middleware of `app`, and the CORS hook."""
    app.middlewares.insert(
        0, security_middleware(render, unauthorized, frozenset(open_paths), settings)
    )
    app.on_response_prepare.append(cors_headers(settings))

"""Default values for every config key, so that an empty `{}` config file is complete."""

from __future__ import annotations

from typing import Final

# The file the store reads and writes inside the user config folder.
CONFIG_FILE_NAME: Final = "config.json"
# Suffix of the copy of the last good file kept beside it before each save.
BACKUP_SUFFIX: Final = ".bak"
# Folder name under the platform's user config dir (platformdirs, no vendor folder).
APP_DIR_NAME: Final = "llamarunner"

# The only proxy names: one listener per emulated API.
OLLAMA: Final = "ollama"
LMSTUDIO: Final = "lmstudio"
PROXY_NAMES: Final = (OLLAMA, LMSTUDIO)

# Ollama API proxy: on by default so Ollama clients (Copilot, Open WebUI) work unconfigured.
DEFAULT_OLLAMA_ENABLED: Final = True
# Loopback only: the proxies have no authentication, so they must not face the network.
DEFAULT_OLLAMA_HOST: Final = "127.0.0.1"
# Ollama's own port, which clients assume when no URL is given.
DEFAULT_OLLAMA_PORT: Final = 11434

# The Ollama version /api/version reports: the Ollama release whose API we follow.
# GitHub Copilot refuses servers older than 0.6.4.
DEFAULT_OLLAMA_VERSION: Final = "0.13.0"

# LM Studio / OpenAI API proxy: on by default for LM Studio and OpenAI-style clients.
DEFAULT_LMSTUDIO_ENABLED: Final = True
# Loopback only, for the same reason as the Ollama proxy.
DEFAULT_LMSTUDIO_HOST: Final = "127.0.0.1"
# LM Studio's server port, which its clients (e.g. IntelliJ AI Assistant) assume.
DEFAULT_LMSTUDIO_PORT: Final = 1234

# Name of the runtime a model uses when it names none; it always exists.
DEFAULT_RUNTIME_NAME: Final = "default"
# A bare command name: the runner finds llama-server on PATH.
DEFAULT_RUNTIME_PATH: Final = "llama-server"

# One model in memory at a time: the safe choice on a desktop with one GPU.
DEFAULT_MAX_LOADED_MODELS: Final = 1
# Seconds an idle model stays loaded before it is unloaded (5 minutes, like Ollama).
DEFAULT_TTL: Final = 300.0
# Requests that may wait for a busy or loading model before new ones are refused.
DEFAULT_MAX_QUEUE: Final = 64
# Seconds a llama-server may take to become healthy; big models on slow disks need minutes.
DEFAULT_LOAD_TIMEOUT: Final = 120.0
# Seconds between the polite stop signal and killing the process group.
DEFAULT_STOP_GRACE: Final = 5.0
# Seconds a request may wait for llama-server's first response byte before it fails with
# 504 (math.inf = never). Generous: a long prompt on a CPU can take 90 s before a token.
DEFAULT_FIRST_TOKEN_TIMEOUT: Final = 600.0

# Empty means "the app's own models folder", which the Service resolves.
DEFAULT_MODEL_DIRS: Final[tuple[str, ...]] = ()

# Other apps' model stores read in place (never copied, never written): Ollama's blob
# store and LM Studio's models folder. Named like the proxies, one entry per store.
SOURCE_NAMES: Final = (OLLAMA, LMSTUDIO)
# On by default: models the user already has should show up with no config at all.
DEFAULT_SOURCE_ENABLED: Final = True
# Empty means auto-detect ($OLLAMA_MODELS or ~/.ollama/models; LM Studio's settings).
DEFAULT_SOURCE_PATH: Final = ""

# llama-server flags the runner sets itself (listen address, model file): users may not.
RUNNER_OWNED_ARGS: Final = frozenset({"host", "port", "m", "model"})
# Flags that turn a llama-server into an embeddings server.
EMBEDDING_ARGS: Final = ("embedding", "embeddings")

# security: who may talk to the proxies and how much they may send.
# No API key: loopback listeners need none; any other address refuses to start without one.
DEFAULT_API_KEY: Final = ""
# No environment variable holding the API key (an alternative to writing it in the file).
DEFAULT_API_KEY_ENV: Final = ""
# Host names accepted besides localhost/127.0.0.1/[::1] (DNS-rebinding defence).
DEFAULT_ALLOWED_HOSTS: Final[tuple[str, ...]] = ()
# Extra browser origins allowed by CORS; the built-in localhost/editor list always applies.
DEFAULT_CORS_ORIGINS: Final[tuple[str, ...]] = ()
# Largest request body (32 MiB): room for long prompts and inline images.
DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
# Largest audio file a speech-to-text request may carry (25 MB, OpenAI's own limit).
DEFAULT_MAX_AUDIO_BYTES: Final = 25 * 1000 * 1000
# Seconds a request body may take to arrive before the request is answered 408.
DEFAULT_BODY_TIMEOUT: Final = 60.0
# The shortest API key accepted: shorter ones can be guessed.
MIN_API_KEY_LENGTH: Final = 16
# Named API keys (security.api_keys): none; each may have its own models and limits.
DEFAULT_API_KEYS: Final[tuple[()]] = ()
# Requests and generated tokens per minute for each client address when no key is in
# use (loopback without keys); 0 = no limit, the default: a desktop's own tools are trusted.
DEFAULT_CLIENT_REQUESTS_PER_MINUTE: Final = 0
DEFAULT_CLIENT_TOKENS_PER_MINUTE: Final = 0

# logging: "text" lines for people, or "json" (one object per line) for log collectors.
DEFAULT_LOG_FORMAT: Final = "text"
LOG_FORMATS: Final = ("text", "json")
# The app's log file is rotated at this size, keeping this many old files.
DEFAULT_LOG_MAX_BYTES: Final = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS: Final = 5

# desktop: whether the desktop app starts when the user logs in (the GUI only; headless
# never reads it).
# Off: an app that starts itself at every login is something the user opts into.
DEFAULT_START_AT_LOGIN: Final = False

# How often a peer's /v1/models is read again (seconds), and how long connecting to it may
# take before a request for one of its models is answered with an error naming it.
DEFAULT_PEER_REFRESH = 60.0
PEER_CONNECT_TIMEOUT = 5.0

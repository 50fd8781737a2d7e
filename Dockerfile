# LlamaRunner Pro without a GUI: the Ollama API on 11434 and the LM Studio / OpenAI API on
# 1234, with a llama-server built from the pinned llama.cpp sources. CPU only.
#
#   docker build -t llamarunner .                          (about 12 minutes on 2 cores)
#   docker build -t llamarunner --build-arg EXTRAS=audio .  (with speech to text)
#
# Every RUN step is a script in scripts/container/ that tests/installer/test_container.py
# also runs on the host. docs/DEPLOYMENT.md ("Docker containerization") covers running it.

# --- llama-server, built by the app's own runtime installer -----------------------------
FROM python:3.12-slim-bookworm AS llama-server
WORKDIR /src
COPY scripts/container/build-deps.sh scripts/container/
RUN scripts/container/build-deps.sh
# Only the installer's package goes in, so this long step is redone when the installer
# or its pinned sources change, not on every change to the app.
COPY app/llamarunner/__init__.py app/llamarunner/
COPY app/llamarunner/runtime/ app/llamarunner/runtime/
COPY scripts/container/build-runtime.sh scripts/container/
RUN scripts/container/build-runtime.sh app /opt/llamarunner/runtime

# --- the app as a wheel --------------------------------------------------------------------
FROM python:3.12-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY app/ app/
COPY scripts/container/build-wheel.sh scripts/container/
RUN scripts/container/build-wheel.sh /src /wheels

# --- the image -----------------------------------------------------------------------------
FROM python:3.12-slim-bookworm
# Optional extras of the app, comma-separated: "audio" adds speech to text (faster-whisper).
ARG EXTRAS=""
WORKDIR /opt/llamarunner
COPY scripts/container/runtime-deps.sh scripts/container/
RUN scripts/container/runtime-deps.sh
COPY scripts/container/add-user.sh scripts/container/
RUN scripts/container/add-user.sh
COPY --from=llama-server /opt/llamarunner/runtime/ /opt/llamarunner/runtime/
COPY --from=wheel /wheels/ /opt/llamarunner/wheels/
COPY scripts/container/install-app.sh scripts/container/
RUN scripts/container/install-app.sh /opt/llamarunner/venv /opt/llamarunner/wheels "${EXTRAS}"
COPY scripts/container/entrypoint.sh scripts/container/prepare_config.py \
     scripts/container/healthcheck.py scripts/container/

# XDG_CONFIG_HOME=/etc makes /etc/llamarunner/config.json the default config of every
# `llamarunner` command, so `docker exec <container> llamarunner models` finds it too.
ENV PATH=/opt/llamarunner/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    XDG_CONFIG_HOME=/etc \
    LLAMARUNNER_CONFIG=/etc/llamarunner/config.json \
    LLAMARUNNER_DATA_DIR=/var/lib/llamarunner \
    LLAMARUNNER_LOG_DIR=/var/log/llamarunner \
    LLAMARUNNER_CACHE_DIR=/var/cache/llamarunner \
    LLAMARUNNER_LLAMA_SERVER=/opt/llamarunner/runtime/bin/llama-server

# GGUF files to serve; the config; pulled models and the app's state.
VOLUME ["/models", "/etc/llamarunner", "/var/lib/llamarunner"]
# The Ollama API; the LM Studio / OpenAI API.
EXPOSE 11434 1234

# The user add-user.sh made, by number: Kubernetes' runAsNonRoot can check only that.
USER 10001:10001

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/llamarunner/venv/bin/python", "/opt/llamarunner/scripts/container/healthcheck.py"]

# tini is PID 1: it passes docker stop's SIGTERM on to the app, which entrypoint.sh execs.
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/llamarunner/scripts/container/entrypoint.sh"]

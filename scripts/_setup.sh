# Shared set-up for scripts/start and scripts/test: a virtual environment with the
# project installed, and a cached llama-server. Idempotent; sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LLAMARUNNER_VENV:-$ROOT/.venv}"
EXTRAS="$1"

say() { printf '==> %s\n' "$*"; }

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "llamarunner needs Python 3.11 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the dependency list or the extras changed.
STAMP="$VENV/.llamarunner-$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${EXTRAS//,/-}"
if [ ! -f "$STAMP" ]; then
  say "installing llamarunner[$EXTRAS] and its dependencies (first run takes a minute)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$EXTRAS]"
  rm -f "$VENV"/.llamarunner-*
  touch "$STAMP"
else
  say "dependencies up to date"
fi

# shellcheck disable=SC1091
source "$VENV/bin/activate"

say "checking for llama-server (builds it from source once, about 12 minutes on 2 cores)"
llamarunner runtime install

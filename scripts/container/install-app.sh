#!/bin/sh
# Runtime stage: a virtual environment at VENV holding the app from its wheel in WHEELS,
# with the optional extras EXTRAS (comma-separated, e.g. "audio" for speech to text).
# Never the desktop app: a container has no display, and Qt would add 200 MB.
#
# usage: install-app.sh VENV WHEELS [EXTRAS]
set -eu

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
  echo "usage: $0 VENV WHEELS [EXTRAS]" >&2
  exit 64
fi
venv=$1
wheels=$2
extras=$(printf '%s' "${3:-}" | tr -d ' ')
python=${PYTHON:-python3}

case ",$extras," in
  *,gui,*)
    echo "install-app: the gui extra is the desktop app (Qt); the image runs headless" >&2
    exit 1
    ;;
esac

set -- "$wheels"/llamarunner-*.whl
if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
  echo "install-app: expected one llamarunner wheel in $wheels" >&2
  exit 1
fi
requirement=$1
if [ -n "$extras" ]; then
  requirement="$1[$extras]"
fi

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --no-input \
  "$requirement"

# A smoke test of the installed command, and proof that no Qt came in through a dependency.
"$venv/bin/llamarunner" --help >/dev/null
if "$venv/bin/python" -c "import PySide6" 2>/dev/null; then
  echo "install-app: PySide6 got installed; the image must not carry Qt" >&2
  exit 1
fi
echo "installed $requirement into $venv"

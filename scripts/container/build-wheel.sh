#!/bin/sh
# Wheel stage: build the app's wheel (the package alone, no dependencies) from the source
# tree SRC into OUT; the runtime stage installs it, so no source tree reaches the image.
#
# usage: build-wheel.sh SRC OUT
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: $0 SRC OUT" >&2
  exit 64
fi
src=$1
out=$2
python=${PYTHON:-python3}

"$python" -m pip wheel --no-deps --no-cache-dir --disable-pip-version-check --no-input \
  --wheel-dir "$out" "$src"

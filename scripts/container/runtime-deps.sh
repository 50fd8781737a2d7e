#!/bin/sh
# Runtime stage: the system libraries llama-server links against (GCC's OpenMP and C++
# runtimes; the build links everything else statically) and tini, the init process that
# forwards `docker stop`'s SIGTERM to the app and reaps what its children leave behind.
#
# CONTAINER_ROOT (default: empty, the image itself) prefixes every path this script
# writes, so the tests can run it on a host with stand-ins for apt-get.
set -eu

root=${CONTAINER_ROOT:-}

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends libgomp1 libstdc++6 tini
rm -rf "$root"/var/lib/apt/lists/*

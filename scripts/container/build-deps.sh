#!/bin/sh
# Build stage: what `llamarunner runtime install` needs to compile llama-server: cmake,
# make and a C/C++ compiler (Debian's g++ also brings GCC's OpenMP). pip, which fetches
# the sources, comes with the Python image.
#
# CONTAINER_ROOT (default: empty, the image itself) prefixes every path this script
# writes, so the tests can run it on a host with stand-ins for apt-get.
set -eu

root=${CONTAINER_ROOT:-}

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends cmake g++ make
# The package lists are only needed to install; keep them out of the layer.
rm -rf "$root"/var/lib/apt/lists/*

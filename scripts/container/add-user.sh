#!/bin/sh
# Runtime stage: the unprivileged user the app runs as, and the folders it owns: the
# models, config and data volumes, its logs and its caches. Docker copies a folder's
# owner into a named volume mounted there the first time, so the volumes are writable.
#
# CONTAINER_ROOT (default: empty, the image itself) prefixes every path this script
# writes, so the tests can run it on a host with stand-ins for groupadd, useradd, chown.
set -eu

root=${CONTAINER_ROOT:-}
# A fixed, numeric id: bind-mounted host folders are made writable for it (chown 10001),
# and Kubernetes' runAsNonRoot can only check a numeric USER.
id=10001
name=llamarunner

groupadd --system --gid "$id" "$name"
useradd --system --uid "$id" --gid "$id" --no-create-home \
  --home-dir /var/lib/llamarunner --shell /usr/sbin/nologin "$name"

for dir in /models /etc/llamarunner /var/lib/llamarunner /var/log/llamarunner \
           /var/cache/llamarunner; do
  mkdir -p "$root$dir"
  chown "$id:$id" "$root$dir"
done
# The config folder may come to hold a key (security.api_key): only the app reads it.
chmod 0750 "$root/etc/llamarunner"

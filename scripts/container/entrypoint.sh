#!/bin/sh
# Container entry point (run by tini): take the API key from LLAMARUNNER_API_KEY or from a
# secret file, write the container's config unless one is mounted, check that the app may
# listen, then exec the app: it replaces this shell, so `docker stop`'s SIGTERM reaches it
# and it stops its llama-server children and exits 0.
#
# With a command instead of options (models, pull NAME, config check, runtime list ...)
# it runs `llamarunner COMMAND ...` with the same config and key.
#
# Environment:
#   LLAMARUNNER_API_KEY        the key clients must send (16 or more characters)
#   LLAMARUNNER_API_KEY_FILE   a file holding the key instead (default: the secret
#                              llamarunner_api_key in LLAMARUNNER_SECRETS_DIR, if present)
#   LLAMARUNNER_SECRETS_DIR    where secrets are mounted (default /run/secrets)
#   LLAMARUNNER_CONFIG         the config file (default /etc/llamarunner/config.json)
#   LLAMARUNNER_ALLOWED_HOSTS  host names clients call the container by, comma-separated,
#                              for a config written on first start (security.allowed_hosts)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
config=${LLAMARUNNER_CONFIG:-/etc/llamarunner/config.json}

refuse() {
  printf 'llamarunner: %s\n' "$*" >&2
  exit 3  # the app's own status for "a listener cannot start"
}

key_file=${LLAMARUNNER_API_KEY_FILE:-}
if [ -z "$key_file" ]; then
  secret="${LLAMARUNNER_SECRETS_DIR:-/run/secrets}/llamarunner_api_key"
  if [ -e "$secret" ]; then
    key_file=$secret
  fi
fi
if [ -n "$key_file" ]; then
  if [ -n "${LLAMARUNNER_API_KEY:-}" ]; then
    refuse "the API key is given twice: in LLAMARUNNER_API_KEY and in the file $key_file; keep one"
  fi
  if [ ! -f "$key_file" ] || [ ! -r "$key_file" ]; then
    uid=$(id -u)
    refuse "cannot read the API key file $key_file as uid $uid; make it a file that" \
      "user may read (chown $uid FILE; chmod 0400 FILE)"
  fi
  # $(...) drops the trailing newline(s) editors and `echo` leave; the app strips spaces.
  LLAMARUNNER_API_KEY=$(cat "$key_file")
  if [ -z "$LLAMARUNNER_API_KEY" ]; then
    refuse "the API key file $key_file is empty"
  fi
  export LLAMARUNNER_API_KEY
fi

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  python3 "$here/prepare_config.py" --create-only "$config"
  exec llamarunner --config "$config" "$@"
fi

python3 "$here/prepare_config.py" "$config"
exec llamarunner --headless --config "$config" "$@"

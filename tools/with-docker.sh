#!/bin/sh
# Run a command with a Docker engine: use the running one, or install Debian's
# docker.io if needed, start dockerd for the command and stop it (by pid) after.
# Usage: tools/with-docker.sh COMMAND [ARG...]
set -eu
if docker info >/dev/null 2>&1; then
    exec "$@"
fi
if ! command -v dockerd >/dev/null; then
    echo "no Docker engine: installing Debian's docker.io"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
log=$(mktemp)
dockerd >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "dockerd exited:"; cat "$log"; exit 1; }
    sleep 1
done
docker info >/dev/null 2>&1 || { echo "dockerd not ready after 60 s:"; cat "$log"; exit 1; }
echo "started dockerd (pid $pid) for this command; it stops afterwards"
"$@"

#!/usr/bin/env bash
# A Docker daemon for `make image` and the container test where none answers (Debian's docker.io,
# no system service): `start` prints DOCKER_HOST=... (and STARTED=1 when it started one),
# `stop` stops the daemon `start` started, by its pid.
#   DOCKER_STATE: where the private daemon keeps images and its socket (needs room: ~5 GB).
set -euo pipefail
STATE=${DOCKER_STATE:-/var/tmp/fakevlm-docker}
SOCKET="unix://$STATE/docker.sock"

answers() { docker ${1:+-H "$1"} version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case "${1:-}" in
start)
  if answers ""; then echo "DOCKER_HOST=${DOCKER_HOST:-}"; exit 0; fi
  if answers "$SOCKET"; then echo "DOCKER_HOST=$SOCKET"; exit 0; fi
  command -v dockerd >/dev/null || { echo "no Docker daemon answers and dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
  mkdir -p "$STATE"
  # setsid: the daemon outlives this script but not a `stop`; its own exec-root keeps it off a system daemon's
  setsid dockerd --data-root "$STATE/root" --exec-root "$STATE/exec" -H "$SOCKET" --pidfile "$STATE/dockerd.pid" \
    --storage-driver overlay2 >"$STATE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do answers "$SOCKET" && { echo "DOCKER_HOST=$SOCKET"; echo STARTED=1; exit 0; }; sleep 0.5; done
  echo "dockerd did not answer in 30 s; its log: $STATE/dockerd.log" >&2; tail -20 "$STATE/dockerd.log" >&2; exit 1 ;;
stop)
  [ -f "$STATE/dockerd.pid" ] || exit 0
  pid=$(cat "$STATE/dockerd.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.5; done
  echo "dockerd ($pid) did not stop in 30 s" >&2; exit 1 ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

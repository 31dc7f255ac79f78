#!/usr/bin/env bash
# `make image`: the project's image (pipelines/Dockerfile), tagged $IMAGE, on a machine with Docker
# Hub (a plain build) or on one with only Debian's packages and PyPI: it starts a private dockerd
# when none answers (pipelines/dockerd.sh, stopped at the end), and when $BASE_IMAGE cannot be
# pulled it makes a Debian bookworm base with Python 3.11 and g++ (see the Dockerfile) by
# debootstrap. Every wheel is downloaded on the host into build/wheelhouse first, so nothing in
# the build needs the network.
# An image whose inputs have not changed is kept (label fakevlm.inputs).
#   IMAGE (fakevlm:latest)  BASE_IMAGE (python:3.11-slim)  TORCH_SPEC (torch==2.13.0+cpu)
#   TORCH_INDEX: an extra index for torch, e.g. https://download.pytorch.org/whl/cpu or .../cu128
#   PYTHON: the host's Python with pip (python3)  DOCKER_STATE: see dockerd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-fakevlm:latest}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
PYTHON=${PYTHON:-python3}
LOCAL_BASE=fakevlm-base:bookworm
WHEELHOUSE=build/wheelhouse
STATE=${DOCKER_STATE:-/var/tmp/fakevlm-docker}
export DOCKER_STATE=$STATE
log() { echo "[build_image] $*" >&2; }

daemon=$(pipelines/dockerd.sh start)
export "$(echo "$daemon" | grep DOCKER_HOST=)"
[ -n "$DOCKER_HOST" ] || unset DOCKER_HOST
if echo "$daemon" | grep -q STARTED=1; then trap 'pipelines/dockerd.sh stop' EXIT; log "started dockerd ($DOCKER_HOST)"; fi

inputs=$({ printf '%s\n' "$BASE_IMAGE" "$TORCH_SPEC" "${TORCH_INDEX:-}"
           find pipelines/Dockerfile .dockerignore requirements.lock requirements-nodeps.txt pyproject.toml README.md src conf -type f \
             ! -path '*__pycache__*' ! -path '*.egg-info*' ! -name credentials.yml -print0 | sort -z | xargs -0 sha256sum
         } | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "fakevlm.inputs"}}' "$IMAGE" 2>/dev/null)" = "$inputs" ]; then
  log "$IMAGE is up to date (inputs $inputs)"; exit 0
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && ! timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
  [ "$BASE_IMAGE" = python:3.11-slim ] || { log "cannot pull $BASE_IMAGE"; exit 1; }
  if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { log "no registry and no debootstrap (apt-get install debootstrap)"; exit 1; }
    mirror=$(grep -rhoE '^(deb|URIs:) +\[?[^]]*\]? *http://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
             | grep -oE 'http://[^ ]+' | head -1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs="$STATE/rootfs"
    rm -rf "$rootfs"
    log "no registry: making $LOCAL_BASE with debootstrap from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,g++,ca-certificates bookworm "$rootfs" "$mirror" >"$STATE/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["python3"]' -c 'ENV LANG=C.UTF-8' - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
  fi
  BASE_IMAGE=$LOCAL_BASE
fi

stamp=$(cat requirements.lock requirements-nodeps.txt <(echo "$TORCH_SPEC ${TORCH_INDEX:-}") | sha256sum | cut -c1-16)
if [ "$(cat "$WHEELHOUSE/.stamp" 2>/dev/null)" != "$stamp" ]; then
  log "downloading the wheels into $WHEELHOUSE"
  rm -rf "$WHEELHOUSE" && mkdir -p "$WHEELHOUSE"
  # torch with its own dependencies (the CUDA build's nvidia-* wheels), at the lock's versions
  { "$PYTHON" -m pip wheel -q -w "$WHEELHOUSE" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -c requirements.lock "$TORCH_SPEC"
    "$PYTHON" -m pip wheel -q -w "$WHEELHOUSE" --no-deps -r requirements.lock -r requirements-nodeps.txt setuptools
  } 2>"$STATE/pip-wheel.log" || { tail -20 "$STATE/pip-wheel.log" >&2; exit 1; }
  echo "$stamp" > "$WHEELHOUSE/.stamp"
fi
log "torch in the image: $(cd "$WHEELHOUSE" && ls torch-*.whl)"

start=$(date +%s)
previous=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
DOCKER_BUILDKIT=0 docker build -q -f pipelines/Dockerfile --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_SPEC="$TORCH_SPEC" \
  --label fakevlm.inputs="$inputs" -t "$IMAGE" . >/dev/null
log "built $IMAGE from $BASE_IMAGE in $(( $(date +%s) - start )) s: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"
# the previous build, now untagged, unless a container still uses it
[ -z "$previous" ] || [ "$previous" = "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ] || docker rmi "$previous" >/dev/null 2>&1 || true

#!/usr/bin/env bash
# A Docker host for `make test-deploy` on a Debian machine where none runs and no image can be pulled.
#   docker-host.sh up    install Debian's docker.io, docker-compose, debootstrap and chromium if missing; start
#                        dockerd if none answers (remembering that it did); make the base image if missing
#   docker-host.sh down  stop dockerd if `up` started it
# The daemon runs without iptables and without the default bridge (user-defined networks still work, and
# ports published on 127.0.0.1 answer), on the vfs storage driver: what works inside this kind of sandbox.
set -euo pipefail
STATE=${HEYMILO_DOCKER_STATE:-/var/tmp/heymilo-docker}
BASE_IMAGE=${HEYMILO_BASE_IMAGE:-heymilo/debian-python:bookworm}
mkdir -p "$STATE"

need_root() { [ "$(id -u)" = 0 ] || { echo "docker-host.sh: $1 needs root" >&2; exit 1; }; }

up() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)  # the UI check
  if [ ${#missing[@]} -gt 0 ]; then
    need_root "installing ${missing[*]}"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
  if ! docker info >/dev/null 2>&1; then
    need_root "starting dockerd"
    nohup dockerd --iptables=false --ip-forward=false --storage-driver=vfs --bridge=none \
      > "$STATE/dockerd.log" 2>&1 &
    echo $! > "$STATE/dockerd.pid"
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 "$STATE/dockerd.log" >&2; exit 1; }
  fi
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    need_root "debootstrap"
    local root="$STATE/rootfs"
    rm -rf "$root"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
      http://deb.debian.org/debian > "$STATE/debootstrap.log"
    tar -C "$root" -c . | docker import -c 'CMD ["python3"]' - "$BASE_IMAGE"
    rm -rf "$root"
  fi
}

down() {
  if [ -f "$STATE/dockerd.pid" ]; then
    kill "$(cat "$STATE/dockerd.pid")" 2>/dev/null || true
    for _ in $(seq 30); do docker info >/dev/null 2>&1 || break; sleep 1; done
    rm -f "$STATE/dockerd.pid"
  fi
}

"${1:?usage: docker-host.sh up|down}"

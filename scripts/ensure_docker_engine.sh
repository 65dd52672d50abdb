#!/usr/bin/env bash
# Make sure a Docker engine answers. On a bare Debian/Ubuntu host where we are root,
# install Debian's engine and start it; elsewhere, say what is missing.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "No Docker engine answers: start Docker (or set DOCKER_HOST) and try again." >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "Installing Debian's Docker engine (docker.io)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
echo "Starting dockerd..." >&2
nohup dockerd >/var/log/dockerd.log 2>&1 &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "dockerd did not start; see /var/log/dockerd.log" >&2
exit 1

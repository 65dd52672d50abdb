#!/usr/bin/env bash
# Print the base image to build the step and inference images on.
# The official python:3.11-slim when it is present or can be pulled; otherwise (no
# registry reachable) a minimal Debian with python3 + venv made with debootstrap
# from Debian's packages and imported into the engine, trimmed the way the official
# slim images are (no package lists or caches, docs, man pages or translations).
set -euo pipefail

official=python:3.11-slim
local_image=${LOCAL_BASE_IMAGE:-cifar-pipeline-base/python:3.11-slim-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$official" >/dev/null 2>&1 \
   || timeout 120 docker pull -q "$official" >/dev/null 2>&1; then
  echo "$official"
  exit 0
fi
if docker image inspect "$local_image" >/dev/null 2>&1; then
  echo "$local_image"
  exit 0
fi
echo "$official cannot be pulled; building $local_image with debootstrap..." >&2
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >&2
# What debootstrap leaves behind that no container needs: ~150 MB. Licences stay.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
find "$rootfs"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
# ...and keep packages installed later (apt-get in a Dockerfile) from bringing it back.
cat > "$rootfs"/etc/dpkg/dpkg.cfg.d/slim <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
tar -C "$rootfs" -c . | docker import - "$local_image" >&2
echo "$local_image"

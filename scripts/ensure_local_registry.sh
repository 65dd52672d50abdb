#!/usr/bin/env bash
# Make sure a container registry answers on 127.0.0.1 and print its address.
# For trying the build step's push (-P registry=...) without a cloud account:
# Debian's docker-registry (the CNCF distribution registry), no auth, loopback only.
# The Docker engine talks plain HTTP to registries on 127.0.0.0/8 without configuration.
set -euo pipefail

address=${LOCAL_REGISTRY:-127.0.0.1:5000}
storage=${LOCAL_REGISTRY_STORAGE:-/var/lib/cifar-pipeline-registry}

answers() { curl -fs -o /dev/null --max-time 2 "http://$address/v2/"; }

if answers; then
  echo "$address"
  exit 0
fi
if ! command -v docker-registry >/dev/null 2>&1; then
  echo "installing Debian's docker-registry..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
fi
mkdir -p "$storage"
config="$storage/config.yml"
cat > "$config" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $storage/data
  delete:
    enabled: true
http:
  addr: $address
YAML
nohup docker-registry serve "$config" >"$storage/registry.log" 2>&1 &
for _ in $(seq 1 60); do
  if answers; then
    echo "$address"
    exit 0
  fi
  sleep 0.5
done
echo "the registry did not answer on $address within 30 s; its log:" >&2
tail -20 "$storage/registry.log" >&2
exit 1

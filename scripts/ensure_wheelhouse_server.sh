#!/usr/bin/env bash
# Serve a wheelhouse to image builds on 127.0.0.1 and print its URL.
# One long-lived server per wheelhouse that every pipeline shares (any number at once):
# the URL is a build argument, and so part of Docker's layer cache key, which is why the
# port is fixed. A server of this wheelhouse already answering is kept; a port held by
# another wheelhouse's server (another checkout) is skipped for the next one.
set -euo pipefail
wheelhouse=$(cd "${1:?usage: ensure_wheelhouse_server.sh WHEELHOUSE PORT}" && pwd)
first_port=${2:?usage: ensure_wheelhouse_server.sh WHEELHOUSE PORT}
# What the server answers at /.served: which wheelhouse it serves.
printf '%s\n' "$wheelhouse" > "$wheelhouse/.served"

served_at() { python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + '.served', timeout=2).read().decode().strip())" "$1" 2>/dev/null; }
port_free() { python3 -c "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$1" 2>/dev/null; }

log=$(dirname "$wheelhouse")/.build/wheelhouse-server.log
mkdir -p "$(dirname "$log")"
for port in $(seq "$first_port" $((first_port + 9))); do
  url="http://127.0.0.1:${port}/"
  if [ "$(served_at "$url")" = "$wheelhouse" ]; then
    echo "$url"
    exit 0
  fi
  port_free "$port" || continue
  nohup setsid python3 -m http.server "$port" --bind 127.0.0.1 --directory "$wheelhouse" >"$log" 2>&1 &
  for _ in $(seq 50); do
    if [ "$(served_at "$url")" = "$wheelhouse" ]; then
      echo "$url"
      exit 0
    fi
    sleep 0.2
  done
  echo "the wheelhouse server did not start on port $port; see $log" >&2
  exit 1
done
echo "no free port for the wheelhouse server in $first_port-$((first_port + 9))" >&2
exit 1

#!/usr/bin/env bash
# Serve a wheelhouse to image builds on 127.0.0.1:PORT and print its URL.
# One long-lived server that every pipeline shares (from any checkout, any number at
# once): the URL is a build argument, and so part of Docker's layer cache key, which is
# why it is fixed. A server already answering there is kept.
set -euo pipefail
wheelhouse=${1:?usage: ensure_wheelhouse_server.sh WHEELHOUSE PORT}
port=${2:?usage: ensure_wheelhouse_server.sh WHEELHOUSE PORT}
url="http://127.0.0.1:${port}/"

answers() { python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; }

if ! answers; then
  log=$(dirname "$wheelhouse")/.build/wheelhouse-server.log
  mkdir -p "$(dirname "$log")"
  nohup setsid python3 -m http.server "$port" --bind 127.0.0.1 --directory "$wheelhouse" >"$log" 2>&1 &
  for _ in $(seq 50); do
    answers && break
    sleep 0.2
  done
  answers || { echo "the wheelhouse server did not start on port $port; see $log" >&2; exit 1; }
fi
echo "$url"

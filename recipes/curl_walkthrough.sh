#!/usr/bin/env bash
# The task's scenarios with curl, against a running proxy: start it with `./dev demo`, then
#
#   bash recipes/curl_walkthrough.sh [http://localhost:8080]
#
# Each step prints what curl received. tests/test_recipes.py runs this script and checks its output.
set -euo pipefail
PROXY=${1:-http://localhost:8080}
URL="$PROXY/sse"

step() { printf '\n### %s\n' "$*"; }

step "1. Read the stream and hang up after event 3"
# awk stops reading after the blank line that ends event 3; curl then gets SIGPIPE and disconnects.
curl -sN "$URL" | awk '{ print } /^id: 3$/ { three = 1 } three && /^$/ { exit }' || true

step "2. Reconnect with Last-Event-Id: 3: events 4, 5, 6, ... (from the proxy's history, then live)"
curl -sN --max-time 2 -H "Last-Event-Id: 3" "$URL" || true

step "3. Reconnect with an id nobody knows: served anyway, and told (header and comment)"
curl -sN --max-time 1 -i -H "Last-Event-Id: ancient-id" "$URL" | sed -n '1,12p' || true

step "4. Three clients at once, each with its own Last-Event-ID: each gets what follows its id"
dir=$(mktemp -d)
for id in 2 5 8; do
    curl -sN --max-time 1.5 -H "Last-Event-Id: $id" "$URL" >"$dir/$id" &
done
wait
for id in 2 5 8; do
    printf 'client with Last-Event-Id %s got ids: %s\n' "$id" "$(grep '^id: ' "$dir/$id" | head -4 | cut -c5- | tr '\n' ' ')"
done
rm -rf "$dir"

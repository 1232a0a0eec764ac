#!/usr/bin/env bash
# What the proxy does for a client that reconnects, shown with curl against a running proxy: start it with
# `./dev demo`, then
#
#   bash recipes/curl_walkthrough.sh [http://localhost:8080]
#
# Each step prints what curl received. tests/e2e/test_clients_e2e.py runs this script and checks its output.
#
# curl sends no `Accept: text/event-stream` here, so with the default sse_replay_mode=auto the proxy puts the
# missed events in front of the live stream (one long response, right for a client that does not reconnect by
# itself). With `-H "Accept: text/event-stream"` curl would be taken for an EventSource-like client: it gets the
# missed events as a complete response of their own, and curl then exits instead of reading on.
set -euo pipefail
PROXY=${1:-http://localhost:8080}
URL="$PROXY/sse"

step() { printf '\n### %s\n' "$*"; }

step "1. Read the stream and hang up after event 3"
# The loop stops reading after the blank line that ends event 3; curl then gets SIGPIPE and disconnects. (bash's
# read takes a pipe a byte at a time, so each line shows as it comes; some awks, mawk among them, buffer pipes.)
curl -sN "$URL" | {
    three=
    while IFS= read -r line; do
        line=${line%$'\r'}
        printf '%s\n' "$line"
        [[ $line == "id: 3" ]] && three=1
        [[ -n $three && -z $line ]] && break
    done
} || true

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

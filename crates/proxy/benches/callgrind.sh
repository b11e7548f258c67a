#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind (deterministic, unlike req/s on a shared
# machine). Starts the benchmark backend (bench/templates/backend-nginx.conf), runs `tunnelgate proxy` under
# valgrind with a 1-rule config, warms up with wrk for 2 s, zeroes the counters, drives wrk -t1 -c32 for the given
# time, dumps the counters, and divides the instructions by the requests wrk completed.
#
#   bash crates/proxy/benches/callgrind.sh [BIN] [SECONDS]      # BIN default target/release/tunnelgate
#   KEEP=FILE bash crates/proxy/benches/callgrind.sh ...         # keep the profile (callgrind_annotate FILE)
#
# Needs valgrind, nginx, wrk and curl. Numbers are comparable between builds, not with other machines' CPUs.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
bin=${1:-$repo/target/release/tunnelgate}
secs=${2:-6}
d=$(mktemp -d "${TMPDIR:-/tmp}/tg-callgrind.XXXXXX")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bport=$(free_port); pport=$(free_port); cport=$(free_port)
mkdir -p "$d"/n/{body,proxy,fastcgi,uwsgi,scgi}
sed -e "s#\$dir#$d/n#g" -e "s#\$port#$bport#g" "$repo/bench/templates/backend-nginx.conf" >"$d/n/nginx.conf"
nginx -p "$d/n/" -c "$d/n/nginx.conf" -e "$d/n/error.log" &
npid=$!
PROXY_ADDR=127.0.0.1:$pport PROXY_CONFIG_ADDR=127.0.0.1:$cport PROXY_AUTH_TOKEN=t PROXY_LOG_LEVEL=warn \
    valgrind --tool=callgrind --callgrind-out-file="$d/cg.out.%p" "$bin" proxy >"$d/proxy.log" 2>&1 &
vpid=$!
cleanup() {
    kill "$vpid" "$npid" 2>/dev/null || true
    sleep 1
    rm -rf "$d"
}
trap cleanup EXIT
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$cport/healthz" >/dev/null && break; sleep 0.2; done
curl -sf -X PUT -H 'Authorization: Bearer t' -H 'Content-Type: application/json' \
    --data "{\"version\":1,\"rules\":[{\"hostnames\":[\"bench.example.com\"],\"backends\":[{\"url\":\"http://127.0.0.1:$bport\",\"weight\":1}]}]}" \
    "http://127.0.0.1:$cport/config" >/dev/null
wrk -t1 -c32 -d2s -H 'Host: bench.example.com' "http://127.0.0.1:$pport/" >/dev/null
callgrind_control -z "$vpid" >/dev/null 2>&1
out=$(wrk -t1 -c32 "-d${secs}s" -H 'Host: bench.example.com' "http://127.0.0.1:$pport/")
callgrind_control -d "$vpid" >/dev/null 2>&1
sleep 1
reqs=$(awk '/requests in/ {print $1}' <<<"$out")
non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
profile=$(ls -t "$d"/cg.out.* | head -1)
ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$profile")
echo "requests=$reqs non2xx=${non2xx:-0} instructions=$ir per_request=$((ir / reqs))"
if [[ -n "${KEEP:-}" ]]; then cp "$profile" "$KEEP"; fi

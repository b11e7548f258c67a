#!/usr/bin/env bash
# Opt-in check of the edge emulator against the real cloudflared (tunnel.md §14).
# NOT run by `cargo test` or CI by default: it needs root (ip netns), a Go toolchain or a prebuilt
# cloudflared, and a few minutes. See docs/interop-cloudflared.md.
#
# Usage: sudo interop/cloudflared.sh [quic] [http2]        (default: both)
# Env:
#   CLOUDFLARED      path to a cloudflared binary (else built from CLOUDFLARED_SRC)
#   CLOUDFLARED_SRC  cloudflared source tree (vendored deps), default /tmp/cloudflared
#   GO               go binary, default: go on PATH, else /usr/lib/go-1.23/bin/go
#   EMULATOR         command that runs the emulator; default: the interop/edge-emu-runner package
#   OUT              directory for logs, default /tmp/cfd-interop
#   NETNS            namespace name, default cfdtest
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${OUT:-/tmp/cfd-interop}
ns=${NETNS:-cfdtest}
protocols=("$@")
[ ${#protocols[@]} -eq 0 ] && protocols=(quic http2)

edge_ports=(7844 7845 7846 7847)
http_port=18080
admin_port=18081
origin_port=18090
metrics_port=20241

die() { echo "cloudflared.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (ip netns)"
command -v ip >/dev/null || die "needs iproute2 (ip)"
command -v curl >/dev/null || die "needs curl"
command -v python3 >/dev/null || die "needs python3 (the origin)"
mkdir -p "$out"

# --- cloudflared ---------------------------------------------------------------------------
if [ -z "${CLOUDFLARED:-}" ]; then
  src=${CLOUDFLARED_SRC:-/tmp/cloudflared}
  [ -f "$src/cmd/cloudflared/main.go" ] || die "no cloudflared source at $src (set CLOUDFLARED or CLOUDFLARED_SRC)"
  go=${GO:-$(command -v go || echo /usr/lib/go-1.23/bin/go)}
  [ -x "$go" ] || die "no Go toolchain (set GO)"
  echo "== building cloudflared in $src with $($go version)"
  (cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=vendor CGO_ENABLED=0 GOPROXY=off \
    "$go" build -ldflags "-X main.Version=$(git -C "$src" describe --tags 2>/dev/null || echo interop)" \
    -o "$out/cloudflared" ./cmd/cloudflared)
  CLOUDFLARED=$out/cloudflared
fi
echo "== $("$CLOUDFLARED" --version)"

# --- emulator --------------------------------------------------------------------------------
if [ -z "${EMULATOR:-}" ]; then
  echo "== building interop/edge-emu-runner"
  (cd "$here/edge-emu-runner" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" cargo build -q)
  EMULATOR="${CARGO_TARGET_DIR:-$repo/target}/debug/edge-emu-runner"
fi

read -ra emu_cmd <<<"$EMULATOR" # allows EMULATOR="tunnelgate edge-emulator"

# --- namespace -------------------------------------------------------------------------------
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap "exit 130" INT TERM
ip netns del "$ns" 2>/dev/null || true
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
nsx() { ip netns exec "$ns" "$@"; }

ip netns exec "$ns" python3 "$here/origin.py" "$origin_port" 2>"$out/origin.log" &
pids+=($!)

# From here on a failed check is counted, not fatal.
set +e
failures=0
check() { # name, condition-result
  if [ "$2" = 0 ]; then echo "PASS $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}

# A process that exited but is not reaped yet is a zombie: kill -0 still succeeds on it.
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [[ $s != Z* ]]; }

wait_for() { # seconds, command...
  local n=$(( $1 * 10 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

listen=()
edges=()
for p in "${edge_ports[@]}"; do listen+=(--listen "127.0.0.1:$p"); edges+=(--edge "127.0.0.1:$p"); done

for proto in "${protocols[@]}"; do
  [ "${SKIP_MAIN:-0}" = 1 ] && break
  echo "== protocol $proto"
  emu_log=$out/emulator-$proto.jsonl
  cfd_log=$out/cloudflared-$proto.log
  ip netns exec "$ns" "${emu_cmd[@]}" "${listen[@]}" --http-listen "127.0.0.1:$http_port" \
    --admin-listen "127.0.0.1:$admin_port" --ca-out "$out/ca.pem" --token-out "$out/token" \
    >"$emu_log" 2>"$out/emulator-$proto.stderr" &
  emu_pid=$!
  pids+=("$emu_pid")
  wait_for 20 grep -q '"started"' "$emu_log" || die "emulator did not start (see $out/emulator-$proto.stderr)"
  head -1 "$emu_log"

  set -x
  ip netns exec "$ns" "$CLOUDFLARED" tunnel --no-autoupdate "${edges[@]}" --cacert "$out/ca.pem" \
    --metrics "127.0.0.1:$metrics_port" --grace-period 2s --protocol "$proto" \
    --loglevel debug --url "http://127.0.0.1:$origin_port" run --token "$(cat "$out/token")" \
    >"$cfd_log" 2>&1 &
  { set +x; } 2>/dev/null
  cfd_pid=$!
  pids+=("$cfd_pid")

  wait_for 30 nsx curl -sf "http://127.0.0.1:$metrics_port/ready"; check "$proto: cloudflared /ready" $?
  sleep 4 # let connections 1..3 register (one per second after connection 0)
  nsx curl -s "http://127.0.0.1:$metrics_port/ready" | tee "$out/ready-$proto.json"; echo
  ready=$(nsx curl -s "http://127.0.0.1:$metrics_port/ready" | python3 -c 'import json,sys; print(json.load(sys.stdin)["readyConnections"])' || echo 0)
  [ "$ready" = 4 ]; check "$proto: 4 connections ready (got $ready)" $?
  n_reg=$(grep -c '"event":"registered"' "$emu_log" || true)
  [ "$n_reg" -ge 4 ]; check "$proto: emulator saw $n_reg registrations" $?
  grep -q '"event":"local_config"' "$emu_log"; check "$proto: emulator received updateLocalConfiguration" $?

  # GET through the eyeball port
  code=$(nsx curl -s -o "$out/get-$proto.body" -D "$out/get-$proto.headers" -w '%{http_code}' \
    -H 'Host: app.example.com' -H 'X-Eyeball: 1' "http://127.0.0.1:$http_port/hello?x=1")
  cat "$out/get-$proto.headers" "$out/get-$proto.body"; echo
  [ "$code" = 200 ]; check "$proto: GET status 200 (got $code)" $?
  python3 - "$out/get-$proto.body" <<'PY'; check "$proto: GET reached origin with path, host and edge headers" $?
import json, sys
d = json.load(open(sys.argv[1]))
h = {k.lower(): v for k, v in d["headers"]}
assert d["method"] == "GET" and d["path"] == "/hello?x=1", d
assert h.get("host") == "app.example.com", h
assert h.get("x-eyeball") == "1", h
for k in ("cf-ray", "cf-connecting-ip", "x-forwarded-for", "x-forwarded-proto", "cf-visitor"):
    assert k in h, (k, h)
PY
  grep -qi '^x-origin: interop' "$out/get-$proto.headers"; check "$proto: origin response header relayed" $?
  [ "$(grep -ci '^x-multi:' "$out/get-$proto.headers")" = 2 ]; check "$proto: multi-value response header kept" $?

  # POST with a 1 MiB body
  head -c 1048576 /dev/urandom >"$out/post.bin"
  want=$(sha256sum "$out/post.bin" | cut -d' ' -f1)
  code=$(nsx curl -s -o "$out/post-$proto.body" -w '%{http_code}' -H 'Host: app.example.com' \
    --data-binary "@$out/post.bin" "http://127.0.0.1:$http_port/upload")
  got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["body_sha256"])' "$out/post-$proto.body" 2>/dev/null || echo none)
  [ "$code" = 200 ] && [ "$got" = "$want" ]; check "$proto: POST 1 MiB body byte-exact (status $code)" $?

  # origin status relayed
  code=$(nsx curl -s -o /dev/null -w '%{http_code}' -H 'Host: app.example.com' "http://127.0.0.1:$http_port/status/404")
  [ "$code" = 404 ]; check "$proto: origin 404 relayed (got $code)" $?

  # WebSocket echo (text + binary frames) through the tunnel
  nsx python3 "$here/ws_client.py" 127.0.0.1 "$http_port" app.example.com >"$out/ws-$proto.out" 2>&1
  r=$?; cat "$out/ws-$proto.out"; check "$proto: WebSocket echo" $r

  # Edge-initiated configuration update (QUIC: RPC stream; HTTP/2: update-configuration request).
  # The config keeps the same origin, so routing is unchanged whether or not cloudflared applies it.
  cfg='{"connIndex":0,"version":7,"config":{"ingress":[{"service":"http://127.0.0.1:'$origin_port'"}],"warp-routing":{"enabled":false}}}'
  ans=$(nsx curl -s -X POST --data "$cfg" "http://127.0.0.1:$admin_port/rpc/update-configuration")
  echo "update-configuration answer: $ans"
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=d.get("latestAppliedVersion", d.get("lastAppliedVersion")); assert v==7, d' "$ans"
  check "$proto: updateConfiguration answered with version 7" $?
  code=$(nsx curl -s -o /dev/null -w '%{http_code}' -H 'Host: app.example.com' "http://127.0.0.1:$http_port/after-update")
  [ "$code" = 200 ]; check "$proto: GET after configuration update (got $code)" $?
  if [ "$proto" = quic ]; then
    ans=$(nsx curl -s -X POST --data '{"connIndex":1}' "http://127.0.0.1:$admin_port/rpc/register-udp-session")
    echo "register-udp-session answer: $ans"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert "err" in d, d' "$ans"
    check "$proto: registerUdpSession RPC round-trip (answer recorded, not judged)" $?
  fi

  # graceful shutdown: cloudflared unregisters every connection
  kill -TERM "$cfd_pid"
  for _ in $(seq 100); do alive "$cfd_pid" || break; sleep 0.1; done
  ! alive "$cfd_pid"; check "$proto: cloudflared exited after SIGTERM" $?
  wait "$cfd_pid" 2>/dev/null || true
  sleep 0.5
  n_unreg=$(grep -c '"event":"unregistered"' "$emu_log" || true)
  [ "$n_unreg" -ge 4 ]; check "$proto: emulator saw $n_unreg unregisterConnection calls on SIGTERM" $?

  kill -TERM "$emu_pid"
  for _ in $(seq 50); do alive "$emu_pid" || break; sleep 0.1; done
  wait "$emu_pid" 2>/dev/null || true
  echo "-- registration fields seen by the emulator:"
  grep '"event":"registered"' "$emu_log" | head -1
done

# --- registration faults: retryable error and EDUPCONN ------------------------------------------
# connIndex 1 gets a retryable error on its first two attempts; connIndex 2 gets EDUPCONN once.
# Expected from cloudflared: backoff and retry, numPreviousAttempts recorded for connIndex 1; a retry
# on a different edge address for connIndex 2. (Not connIndex 0: cloudflared 2025.5.0 exits at
# start-up when connIndex 0 gets a retryable error other than EDUPCONN/Unauthorized, see the doc.)
for proto in "${protocols[@]}"; do
  [ "${SKIP_FAULTS:-0}" = 1 ] && break
  echo "== registration faults, protocol $proto"
  emu_log=$out/emulator-faults-$proto.jsonl
  ip netns exec "$ns" "${emu_cmd[@]}" "${listen[@]}" --http-listen "127.0.0.1:$http_port" \
    --admin-listen "127.0.0.1:$admin_port" --ca-out "$out/ca.pem" --token-out "$out/token" \
    >"$emu_log" 2>"$out/emulator-faults-$proto.stderr" &
  emu_pid=$!
  pids+=("$emu_pid")
  wait_for 20 grep -q '"started"' "$emu_log" || die "emulator did not start"
  for rule in '{"trigger":"register","connIndex":1,"action":{"retryable":"interop retry","retryAfterMs":0},"times":2}' \
              '{"trigger":"register","connIndex":2,"action":{"error":"EDUPCONN"},"times":1}'; do
    wait_for 5 nsx curl -sf -X POST --data "$rule" "http://127.0.0.1:$admin_port/faults" \
      || die "could not install fault $rule"
  done
  nsx curl -s "http://127.0.0.1:$admin_port/state" | python3 -c 'import json,sys; print("faults installed:", len(json.load(sys.stdin)["faults"]))'
  ip netns exec "$ns" "$CLOUDFLARED" tunnel --no-autoupdate "${edges[@]}" --cacert "$out/ca.pem" \
    --metrics "127.0.0.1:$metrics_port" --grace-period 1s --protocol "$proto" \
    --loglevel debug --url "http://127.0.0.1:$origin_port" run --token "$(cat "$out/token")" \
    >"$out/cloudflared-faults-$proto.log" 2>&1 &
  cfd_pid=$!
  pids+=("$cfd_pid")
  ready=0
  for _ in $(seq 600); do
    ready=$(nsx curl -s "http://127.0.0.1:$metrics_port/ready" | python3 -c 'import json,sys; print(json.load(sys.stdin)["readyConnections"])' 2>/dev/null || echo 0)
    [ "$ready" = 4 ] && break
    sleep 0.1
  done
  [ "$ready" = 4 ]; check "$proto: 4 connections ready despite faults (got $ready)" $?
  nsx curl -s "http://127.0.0.1:$admin_port/state" >"$out/state-faults-$proto.json"
  python3 - "$out/state-faults-$proto.json" "$emu_log" <<'PY'; check "$proto: retry counted in numPreviousAttempts; EDUPCONN retried (address printed, not asserted)" $?
import json, sys
state = json.load(open(sys.argv[1]))
events = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
refused = state["registrationAttempts"]
reg = {e["connIndex"]: e for e in events if e.get("event") == "registered"}
# registrationAttempts lists every registerConnection call seen (refused or not), in order.
attempts = state["registrationAttempts"]
r1 = [a["numPreviousAttempts"] for a in attempts if a["connIndex"] == 1]
print("connIndex 1: numPreviousAttempts of its calls:", r1)
assert r1 == [0, 1, 2] and reg[1]["numPreviousAttempts"] == 2, (r1, reg[1])
conns = state["connections"]
reg_conn = {c["connIndex"]: c for c in conns if "connIndex" in c}
refused = [c for c in conns if "connIndex" not in c]
print("refused connections (id, edge):", [(c["id"], c["edge"]) for c in refused],
      "| connIndex 2 registered on", reg_conn[2]["edge"], "id", reg_conn[2]["id"])
r2 = [a["numPreviousAttempts"] for a in attempts if a["connIndex"] == 2]
print("connIndex 2: numPreviousAttempts of its calls:", r2)
assert len(r2) == 2, r2
PY
  grep -E 'Retrying|EDUPCONN|uplicate|interop retry|Failed to serve' "$out/cloudflared-faults-$proto.log" | cut -c1-200 | head -8
  kill -TERM "$cfd_pid"; for _ in $(seq 50); do alive "$cfd_pid" || break; sleep 0.1; done; wait "$cfd_pid" 2>/dev/null
  kill -TERM "$emu_pid"; for _ in $(seq 50); do alive "$emu_pid" || break; sleep 0.1; done; wait "$emu_pid" 2>/dev/null
done

echo "== logs in $out"
[ "$failures" = 0 ] || die "$failures check(s) failed"
echo "all checks passed"

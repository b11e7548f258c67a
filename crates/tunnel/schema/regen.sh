#!/usr/bin/env bash
# Regenerate crates/tunnel/src/tunnel_capnp.rs from schema/tunnel.capnp.
# Needs the Cap'n Proto compiler (Debian: apt-get install capnproto).
set -euo pipefail
cd "$(dirname "$0")/../../.."
TUNNELGATE_REGEN_CAPNP=1 cargo test -p tunnelgate-tunnel --test schema_codegen

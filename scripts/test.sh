#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests, and the Helm chart tests.
# Works on a fresh Debian machine with the Rust toolchain: it installs what the tests need (as root, via apt,
# npm and pip) and is fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

# The 10,000-idle-connections test needs more file descriptors than the usual default of 1024.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A one-shot build gains nothing from incremental compilation, and its caches take gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "tools"
bash scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (binary used by black-box tests)"
cargo build --locked -p tunnelgate

step "cargo test"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

if [ -x tests/chart/run.sh ] || [ -f tests/chart/run.sh ]; then
  step "helm chart tests"
  bash tests/chart/run.sh
fi

step "demo smoke"
cargo run --locked -q -p tunnelgate -- demo --check --port 0 --config-port 0

echo; echo "all tests passed"
if [ -d target ]; then echo "target/ size: $(du -sh target 2>/dev/null | cut -f1)"; fi

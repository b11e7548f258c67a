#!/usr/bin/env bash
# Bounded fuzz smoke run for CI: builds the cargo-fuzz targets in fuzz/ and runs each one for a fixed time
# (default 20 s) from the committed seeds. Fails when a target crashes, leaks past the memory limits or
# times out on one input; the offending input is left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz-smoke.sh                 # every target, 20 s each
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh config_compile tunnel_stream
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The toolchain may be stable: RUSTC_BOOTSTRAP lets
# cargo-fuzz pass the -Z sanitizer flags it needs.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config_compile route_lookup redirect_rewrite tunnel_stream tunnel_text)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
    exit 1
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir fuzz -O

status=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
    flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1)
    case "$target" in
        config_compile) flags+=(-max_len=65536 -dict=fuzz/dicts/config.dict) ;;
        tunnel_stream) flags+=(-max_len=16384 -dict=fuzz/dicts/tunnel.dict) ;;
    esac
    echo "fuzz-smoke: $target for ${seconds}s"
    if ! cargo fuzz run --fuzz-dir fuzz -O "$target" "$corpus" "${seeds[@]}" -- "${flags[@]}" 2>"fuzz/$target.smoke.log"; then
        echo "fuzz-smoke: $target FAILED; see fuzz/$target.smoke.log and fuzz/artifacts/$target/" >&2
        tail -n 40 "fuzz/$target.smoke.log" >&2
        status=1
    else
        grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "fuzz/$target.smoke.log" | sed "s/^/fuzz-smoke: $target /"
    fi
done
exit "$status"

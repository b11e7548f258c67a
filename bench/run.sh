#!/usr/bin/env bash
# tunnelgate benchmark (issue 7): direct vs tunnelgate vs nginx vs haproxy on one machine, plus config-apply time,
# RSS, and the route crate's criterion lookup bench. See BENCHMARKS.md.
#
#   bash bench/run.sh            full run (3 alternating rounds of 10 s per target)
#   bash bench/run.sh --quick    smoke run (1 round of 3 s)
#
# Own options (the rest go to bench/bench.py; `bash bench/run.sh --help-driver` lists them):
#   --no-install   do not apt-get install missing tools
#   --no-build     use the existing target/release/tunnelgate
#   --keep-tmp     keep the temp dir (configs, logs) and print its path
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
install=1 build=1 keep_tmp=0 skip_tg=0
args=()
for arg in "$@"; do
    case "$arg" in
        --no-install) install=0 ;;
        --no-build) build=0 ;;
        --keep-tmp) keep_tmp=1 ;;
        --help-driver) exec python3 "$here/bench.py" --help ;;
        --skip-tunnelgate) skip_tg=1; args+=("$arg") ;;
        *) args+=("$arg") ;;
    esac
done

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    if ((install == 0)); then
        echo "missing tools: ${need[*]} (rerun without --no-install, as root)" >&2
        exit 1
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing tools: ${need[*]}; run as root so they can be installed with apt-get" >&2
        exit 1
    fi
    echo "installing ${need[*]} ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin="$target_dir/release/tunnelgate"
if ((skip_tg == 0 && build == 1)); then
    echo "building tunnelgate (release) ..." >&2
    (cd "$repo" && cargo build --release -p tunnelgate --bin tunnelgate)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tunnelgate-bench.XXXXXX")
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    # bench.py stops its children itself; this catches the case where it was killed before it could.
    if [[ -f "$tmp/pids" ]]; then
        while read -r pid; do
            kill -TERM -- "-$pid" 2>/dev/null || true
        done <"$tmp/pids"
        sleep 0.5
        while read -r pid; do
            kill -KILL -- "-$pid" 2>/dev/null || true
        done <"$tmp/pids"
    fi
    if ((keep_tmp)); then
        echo "kept temp dir: $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

python3 "$here/bench.py" --tmp "$tmp" --repo "$repo" --bin "$bin" "${args[@]+"${args[@]}"}"

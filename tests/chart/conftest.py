"""Shared fixtures for the chart tests: render the chart with `helm template` and look objects up.

The tests run the real helm binary against charts/tunnelgate; nothing is mocked. `run.sh` installs helm and
exports its path in HELM.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tunnelgate"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "rel"
NAMESPACE = "tg"
# The one value every tunnel-mode install must give (the seed's tunnel-token Secret).
TUNNEL = {"proxy": {"tunnelTokenSecretRef": {"name": "tunnel-token"}}}


def helm_bin() -> str:
    helm = os.environ.get("HELM", "helm")
    return helm


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class RenderError(Exception):
    def __init__(self, stderr: str):
        super().__init__(stderr)
        self.stderr = stderr


_cache: dict = {}


def helm_template(values: dict | None = None, files: tuple = (), release: str = RELEASE) -> list:
    """Renders the chart and returns the parsed objects; raises RenderError when helm fails."""
    key = (json.dumps(values, sort_keys=True), tuple(str(f) for f in files), release)
    if key in _cache:
        result = _cache[key]
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump(values or {}, fh)
            path = fh.name
        try:
            args = [helm_bin(), "template", release, str(CHART), "--namespace", NAMESPACE]
            for f in files:
                args += ["-f", str(f)]
            args += ["-f", path]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
        finally:
            os.unlink(path)
        result = (proc.returncode, proc.stdout, proc.stderr)
        _cache[key] = result
    code, out, err = result
    if code != 0:
        raise RenderError(err)
    return [d for d in yaml.safe_load_all(out) if d]


def render(values: dict | None = None, **kw) -> list:
    """Renders in tunnel mode with the seed's tunnel-token Secret, plus `values`."""
    return helm_template(deep_merge(TUNNEL, values or {}), **kw)


def render_error(values: dict | None, tunnel: bool = True) -> str:
    merged = deep_merge(TUNNEL, values or {}) if tunnel else (values or {})
    try:
        helm_template(merged)
    except RenderError as e:
        return e.stderr
    raise AssertionError(f"rendering was expected to fail with values {merged}")


def objects(docs: list, kind: str) -> list:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list, kind: str, name: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def controller_deployment(docs: list) -> dict:
    deps = [d for d in objects(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "controller"]
    assert len(deps) == 1
    return deps[0]


def proxy_deployment(docs: list) -> dict:
    deps = [d for d in objects(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy"]
    assert len(deps) == 1
    return deps[0]


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_map(deployment: dict) -> dict:
    """name -> value, or name -> valueFrom for references."""
    out = {}
    for e in container(deployment).get("env", []):
        assert e["name"] not in out, f"duplicate env var {e['name']}"
        out[e["name"]] = e["value"] if "value" in e else e.get("valueFrom")
    return out


def args_map(deployment: dict) -> dict:
    """--flag=value -> {flag: value}; every chart-owned arg is in --flag=value form."""
    args = container(deployment)["args"]
    assert args[0] == "controller"
    out = {}
    for a in args[1:]:
        if a.startswith("--") and "=" in a:
            flag, value = a[2:].split("=", 1)
            assert flag not in out, f"flag --{flag} given twice"
            out[flag] = value
    return out


@pytest.fixture(scope="session")
def default_docs() -> list:
    return render()

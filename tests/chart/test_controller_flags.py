"""The chart's controller args are flags the real binary accepts, and its proxy env vars are ones the proxy reads.

Two checks against `tunnelgate controller`: every flag the chart renders appears in `--help`, and the whole rendered
argument list parses (clap validates each argument as it reads it, so `<rendered args> --help` exits 0 only when
every flag before `--help` is known and its value is accepted).

The binary is TUNNELGATE_BIN, or target/debug/tunnelgate after `cargo build -p tunnelgate` (a no-op when it is
up to date). The tests skip only when the binary cannot be built.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CI_VALUES, REPO, container, controller_deployment, helm_template, render

FLAG = re.compile(r"^--([a-z0-9][a-z0-9-]*)(=|$)")


def _build_binary() -> Path:
    explicit = os.environ.get("TUNNELGATE_BIN")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            pytest.fail(f"TUNNELGATE_BIN={explicit} does not exist")
        return path
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("SKIPPED: cargo is not installed, so the tunnelgate binary cannot be built")
    proc = subprocess.run(
        [cargo, "build", "--quiet", "--locked", "-p", "tunnelgate", "--bin", "tunnelgate"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        pytest.skip(f"SKIPPED: the tunnelgate binary cannot be built (cargo build -p tunnelgate failed):\n{tail}")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "tunnelgate"


@pytest.fixture(scope="module")
def tunnelgate() -> Path:
    return _build_binary()


@pytest.fixture(scope="module")
def controller_help(tunnelgate) -> str:
    proc = subprocess.run([str(tunnelgate), "controller", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"tunnelgate controller --help failed: {proc.stderr}"
    return proc.stdout


def _help_flags(help_text: str) -> set:
    return set(re.findall(r"(?<![\w-])--([a-z0-9][a-z0-9-]*)", help_text))


SCENARIOS = {
    "defaults": lambda: render(),
    "standalone": lambda: helm_template({"proxy": {"mode": "standalone"}}),
    "quic": lambda: render({"proxy": {"tunnel": {"protocol": "quic"}}}),
    "everything-set": lambda: render(
        {
            "gatewayClass": {"controllerName": "example.com/ctl"},
            "controller": {
                "clusterDomain": "corp.local",
                "leaderElection": {"enabled": False},
                "logLevel": "trace",
                "logFormat": "text",
                "proxyPushTimeout": "1m30s",
                "service": {"metricsPort": 9090, "healthPort": 9091},
            },
            "proxy": {"authTokenSecretRef": {"name": "mine", "key": "bearer"}, "tunnel": {"protocol": "http2"}},
            "cloudflare": {"accountId": "0123456789abcdef0123456789abcdef", "tunnelId": "6ff42ae2-765d-4adf-8112-31c55c1551ef"},
        }
    ),
    "cloudflare-sync": lambda: render({"cloudflare": {"sync": True, "apiTokenSecretRef": {"name": "cf-api"}}}),
    "controller-tracing": lambda: render(
        {"controller": {"tracing": {"enabled": True, "endpoint": "http://otel-collector:4318", "sampleRate": 0.25}}}
    ),
    "cloudflare-sync-standalone": lambda: helm_template(
        {
            "proxy": {"mode": "standalone"},
            "cloudflare": {
                "sync": True,
                "apiTokenSecretRef": {"name": "cf-api", "key": "token"},
                "accountId": "0123456789abcdef0123456789abcdef",
                "tunnelId": "6ff42ae2-765d-4adf-8112-31c55c1551ef",
            },
        }
    ),
    **{f.name: (lambda f=f: helm_template(None, files=(f,))) for f in CI_VALUES},
}


def _chart_args(docs) -> list:
    args = container(controller_deployment(docs))["args"]
    assert args[0] == "controller"
    return args[1:]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_flag_is_in_controller_help(scenario, controller_help):
    known = _help_flags(controller_help)
    assert known, "controller --help lists no flags"
    missing = []
    for arg in _chart_args(SCENARIOS[scenario]()):
        m = FLAG.match(arg)
        assert m, f"chart arg {arg!r} is not a --flag"
        if m.group(1) not in known:
            missing.append(m.group(1))
    assert not missing, f"flags rendered by the chart but unknown to `tunnelgate controller --help`: {missing}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_args_parse(scenario, tunnelgate):
    args = _chart_args(SCENARIOS[scenario]())
    proc = subprocess.run(
        [str(tunnelgate), "controller", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("TUNNELGATE_")},
    )
    assert proc.returncode == 0, f"`tunnelgate controller {' '.join(args)}` does not parse:\n{proc.stderr}"


def test_a_bad_flag_is_refused(tunnelgate):
    """Guards the check above: an unknown flag before --help must fail, or test_rendered_args_parse proves nothing."""
    proc = subprocess.run(
        [str(tunnelgate), "controller", "--no-such-flag-tunnelgate=1", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0


def _offline_env(tmp_path) -> dict:
    """No kubeconfig, no in-cluster variables, no TUNNELGATE_* overrides: the controller gets as far as connecting."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "POD_NAMESPACE": "tg", "POD_NAME": "test"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_args_get_the_controller_as_far_as_the_api_server(scenario, tunnelgate, tmp_path):
    """Beyond clap: the controller also checks the values (names, addresses, refused features) before it
    connects. Without a cluster, a run whose flags are all accepted ends at the connection step."""
    args = _chart_args(SCENARIOS[scenario]())
    proc = subprocess.run(
        [str(tunnelgate), "controller", *args], capture_output=True, text=True, timeout=60, env=_offline_env(tmp_path)
    )
    assert proc.returncode == 1, proc.stderr
    assert "connecting to the Kubernetes API" in proc.stderr, (
        f"`tunnelgate controller {' '.join(args)}` stopped before connecting:\n{proc.stderr}"
    )


def test_every_proxy_env_var_is_known_to_the_proxy(tunnelgate):
    """The proxy reads its settings from the environment (config-api.md §8) through clap `env = …` arguments, so
    `tunnelgate proxy --help` lists every variable it knows as `[env: NAME=…]`."""
    proc = subprocess.run([str(tunnelgate), "proxy", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"tunnelgate proxy --help failed: {proc.stderr}"
    known = set(re.findall(r"\benv: ([A-Z][A-Z0-9_]*)", proc.stdout))
    assert known, "tunnelgate proxy --help lists no environment variables"
    everything = render(
        {
            "proxy": {
                "websocket": {"dialTimeout": "5s", "handshakeTimeout": "5s"},
                "mirror": {"maxBodyBytes": 65536},
                "accessLog": {"enabled": True, "stripQuery": True},
                "tracing": {"enabled": True, "endpoint": "http://otel:4317"},
            }
        }
    )
    from conftest import env_map, proxy_deployment

    rendered = set(env_map(proxy_deployment(everything))) | set(env_map(proxy_deployment(helm_template({"proxy": {"mode": "standalone"}}))))
    unknown = sorted(rendered - known)
    assert not unknown, f"env vars set by the chart but not listed by `tunnelgate proxy --help`: {unknown}"

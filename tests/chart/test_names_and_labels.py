"""Names stay valid DNS labels for any fullname, and every object carries the standard labels."""

import re

import pytest

from conftest import CHART, REPO, args_map, controller_deployment, objects, one, render

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
STANDARD = ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by")


@pytest.mark.parametrize(
    "fullname",
    [
        "a" * 63,
        "b" * 62 + "-",
        "my-very-long-release-name-with-many-hyphens-in-it-for-tunnelgate",
        "x-" * 31 + "x",
        "tg",
    ],
)
def test_long_fullname_overrides_keep_names_valid_and_distinct(fullname):
    docs = render({"fullnameOverride": fullname, "serviceMonitor": {"enabled": True}, "controller": {"podDisruptionBudget": {"enabled": True}}})
    seen = set()
    for d in docs:
        if d["kind"] == "GatewayClass":
            continue
        name = d["metadata"]["name"]
        assert len(name) <= 63 and DNS_LABEL.match(name), (d["kind"], name)
        assert (d["kind"], name) not in seen
        seen.add((d["kind"], name))
    args = args_map(controller_deployment(docs))
    headless = [s for s in objects(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [args["proxy-service"]]
    for flag in ("leader-election-lease-name",):
        assert len(args[flag]) <= 63 and DNS_LABEL.match(args[flag])
    secret = args["proxy-auth-secret"].split("/", 1)[1]
    assert len(secret) <= 63 and DNS_LABEL.match(secret)
    deployment = args["proxy-deployment"].split("/", 1)[1]
    one(docs, "Deployment", deployment)


def test_every_object_has_the_standard_labels(default_docs):
    for d in render({"serviceMonitor": {"enabled": True}, "commonLabels": {"team": "edge"}}):
        labels = d["metadata"]["labels"]
        for key in STANDARD:
            assert key in labels, (d["kind"], d["metadata"]["name"], key)
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"] in ("controller", "proxy")
        assert labels["team"] == "edge"


def test_namespaced_objects_carry_the_release_namespace(default_docs):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "GatewayClass"}
    for d in default_docs:
        if d["kind"] in cluster_scoped:
            assert "namespace" not in d["metadata"]
        else:
            assert d["metadata"]["namespace"] == "tg", d["kind"]


def test_app_version_tracks_the_workspace_version():
    import yaml

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cargo = (REPO / "Cargo.toml").read_text()
    m = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S)
    assert m, "workspace version not found in Cargo.toml"
    assert chart["appVersion"] == m.group(1)


def test_notes_render(tmp_path):
    """helm template does not print NOTES.txt (and install needs a cluster): render a copy of the chart where a
    manifest template runs NOTES.txt through `tpl`."""
    import shutil
    import subprocess

    import yaml

    from conftest import NAMESPACE, helm_bin

    chart = tmp_path / "tunnelgate"
    shutil.copytree(CHART, chart)
    (chart / "files").mkdir()
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "notes-as-manifest.yaml").write_text('notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}\n')

    def notes(*set_args):
        args = [helm_bin(), "template", "rel", str(chart), "-n", NAMESPACE, "--show-only", "templates/notes-as-manifest.yaml"]
        for a in set_args:
            args += ["--set", a]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return yaml.safe_load(out.stdout)["notes"]

    text = notes("proxy.tunnelTokenSecretRef.name=tunnel-token")
    assert "Gateway API Standard CRDs, v1.5 or later" in text
    assert "secret rel-tunnelgate-proxy-auth-token" in text
    assert 'Secret "tunnel-token", key "tunnel-token"' in text
    assert 'gatewayClassName "tunnelgate"' in text
    assert "cfargotunnel.com" in text
    text = notes("proxy.mode=standalone", "proxy.authTokenSecretRef.name=mine", "gatewayClass.create=false")
    assert "standalone mode" in text and 'Secret "mine"' in text and "No GatewayClass was created" in text
    assert "cfargotunnel.com" not in text

"""Static checks of the Containerfile (no container engine is needed, and none is run).

They catch what breaks an image build or the chart's use of the image without building it: COPY sources that do
not exist or are excluded from the context, a binary name or path that differs from Cargo's and the chart's, a
builder older than the workspace's rust-version, a root runtime user.
"""

import re
import tomllib

import pytest

from conftest import CHART, REPO, container, controller_deployment, proxy_deployment, render

CONTAINERFILE = REPO / "Containerfile"


def instructions():
    text = CONTAINERFILE.read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages():
    """[(FROM line, [instructions])]"""
    result = []
    for word, rest in instructions():
        if word == "FROM":
            result.append((rest, []))
        elif result:
            result[-1][1].append((word, rest))
    return result


def ignore_rules(name):
    return [l.strip() for l in (REPO / name).read_text().splitlines() if l.strip() and not l.startswith("#")]


def test_two_stages_builder_bookworm_runtime_minimal():
    st = stages()
    assert len(st) == 2
    assert re.match(r"docker\.io/library/rust:\$\{RUST_VERSION\}-bookworm AS build$", st[0][0])
    assert st[1][0] in ("gcr.io/distroless/cc-debian12:nonroot", "debian:bookworm-slim")


def test_copy_sources_exist_and_are_in_the_context():
    allowed = {r[1:].rstrip("/") for r in ignore_rules(".containerignore") if r.startswith("!")}
    assert ignore_rules(".containerignore")[0] == "*", "the context should be an allow-list"
    for _, body in stages():
        for word, rest in body:
            if word != "COPY" or rest.startswith("--from"):
                continue
            parts = [p for p in rest.split() if not p.startswith("--")]
            for src in parts[:-1]:
                assert (REPO / src).exists(), f"COPY source {src} does not exist"
                assert src.rstrip("/") in allowed, f"COPY source {src} is excluded by .containerignore"


def test_dockerignore_matches_containerignore():
    assert ignore_rules(".dockerignore") == ignore_rules(".containerignore")


def test_every_workspace_member_is_copied():
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    for member in cargo["workspace"]["members"]:
        assert member.split("/")[0] == "crates", f"workspace member {member} lives outside crates/, which is all the image copies"


def test_binary_name_matches_cargo_and_chart():
    crate = tomllib.loads((REPO / "crates" / "tunnelgate" / "Cargo.toml").read_text())
    bins = [b["name"] for b in crate.get("bin", [])] or [crate["package"]["name"]]
    assert "tunnelgate" in bins
    text = CONTAINERFILE.read_text()
    assert re.search(r"cargo build --release --locked -p tunnelgate --bin tunnelgate", text)
    assert "target/release/tunnelgate" in text
    runtime = dict(stages()[1][1])
    assert runtime["COPY"] == "--from=build /out/tunnelgate /usr/local/bin/tunnelgate"
    assert runtime["ENTRYPOINT"] == '["/usr/local/bin/tunnelgate"]'
    # The chart runs the image's entrypoint with a subcommand as args, and never overrides the command.
    docs = render()
    for dep, first in ((controller_deployment(docs), "controller"), (proxy_deployment(docs), "proxy")):
        c = container(dep)
        assert "command" not in c
        assert c["args"][0] == first


def test_runtime_user_is_non_root_and_matches_the_chart():
    runtime = dict(stages()[1][1])
    uid = runtime["USER"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    values = (CHART / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


def test_rust_version_is_at_least_the_workspace_msrv():
    m = re.search(r"^ARG RUST_VERSION=(\d+)\.(\d+)", CONTAINERFILE.read_text(), re.M)
    assert m, "ARG RUST_VERSION=<major>.<minor> not found"
    have = (int(m.group(1)), int(m.group(2)))
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    need = tuple(int(x) for x in cargo["workspace"]["package"]["rust-version"].split(".")[:2])
    assert have >= need, f"builder Rust {have} is older than the workspace rust-version {need}"


@pytest.mark.parametrize("path", ["Cargo.lock", "rustfmt.toml", "clippy.toml"])
def test_locked_build_inputs_are_committed(path):
    assert (REPO / path).is_file()

"""The proxy Deployment: replicas, image, secret refs, env contract (config-api.md §8), ports, probes, grace."""

import pytest

from conftest import (
    container,
    env_map,
    proxy_deployment,
    render,
    render_error,
    helm_template,
)


def test_tunnel_mode_requires_the_tunnel_token_secret_name():
    err = render_error({}, tunnel=False)
    assert "proxy.tunnelTokenSecretRef.name is required in tunnel mode" in err


def test_standalone_mode_renders_without_a_tunnel_token():
    docs = helm_template({"proxy": {"mode": "standalone"}})
    env = env_map(proxy_deployment(docs))
    assert "TUNNEL_TOKEN" not in env
    assert not any(k.startswith("PROXY_TUNNEL_") for k in env)


def test_default_render(default_docs):
    dep = proxy_deployment(default_docs)
    assert dep["metadata"]["name"] == "rel-tunnelgate-proxy"
    assert dep["spec"]["replicas"] == 2
    c = container(dep)
    assert c["image"] == "ghcr.io/tunnelgate/tunnelgate:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["proxy"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "proxy"
    assert dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_replicas_and_pull_policy_override():
    dep = proxy_deployment(render({"proxy": {"replicas": 5}, "image": {"pullPolicy": "Always", "tag": "9.9.9"}}))
    assert dep["spec"]["replicas"] == 5
    assert container(dep)["imagePullPolicy"] == "Always"
    assert container(dep)["image"].endswith(":9.9.9")


@pytest.mark.parametrize(
    "grace, want",
    [(None, 30), (30, 30), (0, 0), (90, 90), (180, 180)],
)
def test_grace_period_drives_env_and_termination_grace(grace, want):
    docs = render({"proxy": {"gracePeriodSeconds": grace}})
    dep = proxy_deployment(docs)
    assert env_map(dep)["PROXY_GRACE_PERIOD"] == f"{want}s"
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == want + 15


def test_metrics_env_follows_values(default_docs):
    assert env_map(proxy_deployment(default_docs))["PROXY_METRICS_ENABLED"] == "true"
    off = render({"proxy": {"metrics": {"enabled": False}}})
    assert env_map(proxy_deployment(off))["PROXY_METRICS_ENABLED"] == "false"


def test_tunnel_token_from_secret_default_key(default_docs):
    ref = env_map(proxy_deployment(default_docs))["TUNNEL_TOKEN"]
    assert ref == {"secretKeyRef": {"name": "tunnel-token", "key": "tunnel-token"}}


def test_tunnel_token_custom_key():
    docs = render({"proxy": {"tunnelTokenSecretRef": {"name": "cf", "key": "token"}}})
    assert env_map(proxy_deployment(docs))["TUNNEL_TOKEN"] == {"secretKeyRef": {"name": "cf", "key": "token"}}


def test_auth_token_defaults_to_the_generated_secret(default_docs):
    ref = env_map(proxy_deployment(default_docs))["PROXY_AUTH_TOKEN"]
    assert ref == {"secretKeyRef": {"name": "rel-tunnelgate-proxy-auth-token", "key": "auth-token"}}


def test_auth_token_bring_your_own():
    docs = render({"proxy": {"authTokenSecretRef": {"name": "mine", "key": "bearer"}}})
    assert env_map(proxy_deployment(docs))["PROXY_AUTH_TOKEN"] == {"secretKeyRef": {"name": "mine", "key": "bearer"}}


def test_auth_token_is_set_in_standalone_mode_too():
    docs = helm_template({"proxy": {"mode": "standalone"}})
    assert "secretKeyRef" in env_map(proxy_deployment(docs))["PROXY_AUTH_TOKEN"]


def test_default_env_is_exactly_the_contract(default_docs):
    env = env_map(proxy_deployment(default_docs))
    assert set(env) == {
        "TUNNEL_TOKEN",
        "PROXY_AUTH_TOKEN",
        "PROXY_CONFIG_ADDR",
        "PROXY_ADDR",
        "PROXY_GRACE_PERIOD",
        "PROXY_MAX_CONFIG_BYTES",
        "PROXY_TRUST_ORIGINAL_HOST",
        "PROXY_METRICS_ENABLED",
        "PROXY_LOG_LEVEL",
        "PROXY_LOG_FORMAT",
        "PROXY_TUNNEL_PROTOCOL",
        "PROXY_TUNNEL_PROTOCOL_WAIT",
        "PROXY_TUNNEL_HA_CONNECTIONS",
    }
    assert env["PROXY_CONFIG_ADDR"] == ":8081"
    assert env["PROXY_ADDR"] == ":8080"
    assert env["PROXY_MAX_CONFIG_BYTES"] == "16777216"
    assert env["PROXY_TRUST_ORIGINAL_HOST"] == "false"
    assert env["PROXY_TUNNEL_PROTOCOL"] == "auto"
    assert env["PROXY_TUNNEL_PROTOCOL_WAIT"] == "30s"
    assert env["PROXY_TUNNEL_HA_CONNECTIONS"] == "4"
    # Every plain value is a string: Kubernetes rejects numbers and booleans in env values.
    assert all(isinstance(v, (str, dict)) for v in env.values())


def test_max_config_bytes_and_trust_original_host_render():
    env = env_map(proxy_deployment(render({"proxy": {"maxConfigBytes": 33554432, "trustOriginalHost": True}})))
    assert env["PROXY_MAX_CONFIG_BYTES"] == "33554432"
    assert env["PROXY_TRUST_ORIGINAL_HOST"] == "true"


@pytest.mark.parametrize("protocol, want", [("auto", "auto"), ("http2", "http2"), ("", None)])
def test_tunnel_protocol_env(protocol, want):
    env = env_map(proxy_deployment(render({"proxy": {"tunnel": {"protocol": protocol}}})))
    assert env.get("PROXY_TUNNEL_PROTOCOL") == want


def test_access_log_env():
    assert not any(k.startswith("PROXY_ACCESS_LOG") for k in env_map(proxy_deployment(render())))
    on = env_map(proxy_deployment(render({"proxy": {"accessLog": {"enabled": True}}})))
    assert on["PROXY_ACCESS_LOG_ENABLED"] == "true"
    assert on["PROXY_ACCESS_LOG_SAMPLING_RATE"] == "1"
    assert "PROXY_ACCESS_LOG_STRIP_QUERY" not in on
    both = env_map(
        proxy_deployment(render({"proxy": {"accessLog": {"enabled": True, "stripQuery": True, "samplingRate": 0.25}}}))
    )
    assert both["PROXY_ACCESS_LOG_STRIP_QUERY"] == "true"
    assert both["PROXY_ACCESS_LOG_SAMPLING_RATE"] == "0.25"
    strip_only = env_map(proxy_deployment(render({"proxy": {"accessLog": {"stripQuery": True}}})))
    assert not any(k.startswith("PROXY_ACCESS_LOG") for k in strip_only)


def test_tracing_env():
    assert not any(k.startswith("PROXY_TRACING") for k in env_map(proxy_deployment(render())))
    on = env_map(proxy_deployment(render({"proxy": {"tracing": {"enabled": True}}})))
    assert on["PROXY_TRACING_ENABLED"] == "true"
    assert on["PROXY_TRACING_SAMPLE_RATE"] == "1"
    assert "PROXY_TRACING_ENDPOINT" not in on
    ep = env_map(proxy_deployment(render({"proxy": {"tracing": {"enabled": True, "endpoint": "http://otel:4317"}}})))
    assert ep["PROXY_TRACING_ENDPOINT"] == "http://otel:4317"


def test_websocket_and_mirror_env_only_when_set():
    env = env_map(proxy_deployment(render()))
    assert "PROXY_WS_DIAL_TIMEOUT" not in env and "PROXY_WS_HANDSHAKE_TIMEOUT" not in env
    assert "PROXY_MIRROR_MAX_BODY_BYTES" not in env
    env = env_map(
        proxy_deployment(
            render({"proxy": {"websocket": {"dialTimeout": "5s", "handshakeTimeout": "1m"}, "mirror": {"maxBodyBytes": 2097152}}})
        )
    )
    assert env["PROXY_WS_DIAL_TIMEOUT"] == "5s"
    assert env["PROXY_WS_HANDSHAKE_TIMEOUT"] == "1m"
    assert env["PROXY_MIRROR_MAX_BODY_BYTES"] == "2097152"


def test_extra_env_is_appended():
    env = env_map(proxy_deployment(render({"proxy": {"extraEnv": [{"name": "FOO", "value": "bar"}]}})))
    assert env["FOO"] == "bar"


def test_ports_tunnel_mode_expose_only_config_api(default_docs):
    ports = container(proxy_deployment(default_docs))["ports"]
    assert ports == [{"name": "config-api", "containerPort": 8081, "protocol": "TCP"}]


def test_ports_standalone_mode_add_the_data_port():
    docs = helm_template({"proxy": {"mode": "standalone", "proxyPort": 9000, "configAPIPort": 9001}})
    ports = {p["name"]: p["containerPort"] for p in container(proxy_deployment(docs))["ports"]}
    assert ports == {"config-api": 9001, "proxy": 9000}
    env = env_map(proxy_deployment(docs))
    assert env["PROXY_ADDR"] == ":9000" and env["PROXY_CONFIG_ADDR"] == ":9001"


def test_probes_target_config_api(default_docs):
    c = container(proxy_deployment(default_docs))
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "config-api"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "config-api"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "config-api"}
    assert c["startupProbe"]["failureThreshold"] == 30
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["timeoutSeconds"] >= 1 and c[probe]["failureThreshold"] >= 1


def test_probe_thresholds_override():
    docs = render({"proxy": {"healthProbes": {"startup": {"failureThreshold": 90, "timeoutSeconds": 5}}}})
    c = container(proxy_deployment(docs))
    assert c["startupProbe"]["failureThreshold"] == 90
    assert c["startupProbe"]["timeoutSeconds"] == 5


def test_resources_default_and_override(default_docs):
    c = container(proxy_deployment(default_docs))
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    big = {"requests": {"cpu": "16", "memory": "64Gi"}, "limits": {"cpu": "32", "memory": "128Gi"}}
    assert container(proxy_deployment(render({"proxy": {"resources": big}})))["resources"] == big
    tiny = {"requests": {"cpu": "1m", "memory": "4Mi"}, "limits": {"memory": "8Mi"}}
    assert container(proxy_deployment(render({"proxy": {"resources": tiny}})))["resources"] == tiny
    empty = container(proxy_deployment(render({"proxy": {"resources": {}}})))["resources"]
    assert empty == c["resources"]


def test_secure_security_context(default_docs):
    dep = proxy_deployment(default_docs)
    c = container(dep)["securityContext"]
    assert c["runAsNonRoot"] is True and c["runAsUser"] == 65532
    assert c["readOnlyRootFilesystem"] is True
    assert c["allowPrivilegeEscalation"] is False
    assert c["capabilities"]["drop"] == ["ALL"]
    assert c["seccompProfile"]["type"] == "RuntimeDefault"
    pod = dep["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True


def test_default_soft_anti_affinity_and_override(default_docs):
    aff = proxy_deployment(default_docs)["spec"]["template"]["spec"]["affinity"]
    term = aff["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    custom = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    assert proxy_deployment(render({"proxy": {"affinity": custom}}))["spec"]["template"]["spec"]["affinity"] == custom

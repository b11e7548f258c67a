"""The controller Deployment: args wiring (controller.md §10), image, scheduling, probes, security."""

from conftest import (
    args_map,
    container,
    controller_deployment,
    helm_template,
    objects,
    one,
    render,
    render_error,
)


def test_default_args_wire_every_flag(default_docs):
    dep = controller_deployment(default_docs)
    assert container(dep)["args"][0] == "controller"
    assert args_map(dep) == {
        "controller-name": "tunnelgate.dev/gateway-controller",
        "metrics-addr": ":8080",
        "health-addr": ":8081",
        "log-level": "info",
        "log-format": "json",
        "leader-elect": "true",
        "leader-election-namespace": "tg",
        "leader-election-lease-name": "rel-tunnelgate-leader",
        "proxy-service": "rel-tunnelgate-proxy-headless",
        "proxy-config-port-name": "config-api",
        "proxy-push-timeout": "10s",
        "proxy-deployment": "tg/rel-tunnelgate-proxy",
        "proxy-auth-secret": "tg/rel-tunnelgate-proxy-auth-token",
        "proxy-auth-secret-key": "auth-token",
        "proxy-auth-secret-generate": "true",
        "proxy-token-secret": "tg/tunnel-token",
        "proxy-token-secret-key": "tunnel-token",
        "tunnel-protocol": "auto",
        "cloudflare-sync": "false",
        "tracing-enabled": "false",
    }


def test_args_reference_rendered_objects(default_docs):
    """The names passed to the controller are those of objects the chart renders."""
    args = args_map(controller_deployment(default_docs))
    headless = one(default_docs, "Service", args["proxy-service"])
    assert headless["spec"]["clusterIP"] == "None"
    ns, name = args["proxy-deployment"].split("/")
    assert ns == "tg"
    one(default_docs, "Deployment", name)
    role = one(default_docs, "Role", "rel-tunnelgate")
    deploy_rule = [r for r in role["rules"] if r["resources"] == ["deployments"]][0]
    assert deploy_rule["resourceNames"] == [name]
    ports = [p["name"] for p in headless["spec"]["ports"]]
    assert args["proxy-config-port-name"] in ports


def test_overrides_of_every_value_backed_flag():
    docs = render(
        {
            "gatewayClass": {"controllerName": "example.com/ctl"},
            "controller": {
                "logLevel": "debug",
                "logFormat": "text",
                "clusterDomain": "corp.local",
                "proxyPushTimeout": "3s",
                "leaderElection": {"enabled": False},
                "service": {"metricsPort": 9090, "healthPort": 9091},
                "extraArgs": ["--backend-resolution=dns"],
            },
            "proxy": {
                "authTokenSecretRef": {"name": "mine", "key": "k"},
                "tunnel": {"protocol": "http2"},
                "tunnelTokenSecretRef": {"name": "cf", "key": "tok"},
            },
        }
    )
    dep = controller_deployment(docs)
    a = args_map(dep)
    assert a["controller-name"] == "example.com/ctl"
    assert a["log-level"] == "debug" and a["log-format"] == "text"
    assert a["cluster-domain"] == "corp.local"
    assert a["proxy-push-timeout"] == "3s"
    assert a["leader-elect"] == "false"
    assert a["metrics-addr"] == ":9090" and a["health-addr"] == ":9091"
    assert a["proxy-auth-secret"] == "tg/mine"
    assert a["proxy-auth-secret-key"] == "k"
    assert a["proxy-auth-secret-generate"] == "false"
    assert a["proxy-token-secret"] == "tg/cf" and a["proxy-token-secret-key"] == "tok"
    assert a["tunnel-protocol"] == "http2"
    assert a["cloudflare-sync"] == "false" and a["tracing-enabled"] == "false"
    for flag in ("cloudflare-api-token-secret", "cloudflare-account-id", "cloudflare-tunnel-id", "tracing-endpoint", "tracing-sample-rate"):
        assert flag not in a, flag
    assert container(dep)["args"][-1] == "--backend-resolution=dns"
    ports = {p["name"]: p["containerPort"] for p in container(dep)["ports"]}
    assert ports == {"metrics": 9090, "health": 9091}


def test_controller_tracing_flags_are_rendered_only_when_enabled():
    """test_controller_flags runs the binary with these (scenario controller-tracing): it accepts them."""
    a = args_map(
        controller_deployment(
            render({"controller": {"tracing": {"enabled": True, "endpoint": "http://otel:4318", "sampleRate": 0.5}}})
        )
    )
    assert a["tracing-enabled"] == "true"
    assert a["tracing-endpoint"] == "http://otel:4318"
    assert a["tracing-sample-rate"] == "0.5"
    plain = args_map(controller_deployment(render({"controller": {"tracing": {"endpoint": "http://otel:4318"}}})))
    assert plain["tracing-enabled"] == "false"
    assert "tracing-endpoint" not in plain and "tracing-sample-rate" not in plain


def test_the_tunnel_protocol_reaches_the_controller_in_tunnel_mode_only():
    """Under quic the controller does not accept GRPCRoutes (the edge cannot carry their trailers); standalone
    proxies have no tunnel, so the value must not reach the controller there."""
    assert args_map(controller_deployment(render({"proxy": {"tunnel": {"protocol": "quic"}}})))["tunnel-protocol"] == "quic"
    assert args_map(controller_deployment(render()))["tunnel-protocol"] == "auto"
    standalone = helm_template({"proxy": {"mode": "standalone", "tunnel": {"protocol": "quic"}}})
    assert "tunnel-protocol" not in args_map(controller_deployment(standalone))


def test_cluster_domain_omitted_when_empty(default_docs):
    assert "cluster-domain" not in args_map(controller_deployment(default_docs))


def test_standalone_mode_has_no_tunnel_flags():
    a = args_map(controller_deployment(helm_template({"proxy": {"mode": "standalone"}})))
    assert "proxy-token-secret" not in a and "tunnel-protocol" not in a


def test_cloudflare_sync_requires_api_token_secret():
    err = render_error({"cloudflare": {"sync": True}})
    assert "cloudflare.sync requires cloudflare.apiTokenSecretRef.name" in err


def test_cloudflare_sync_passes_the_secret_and_takes_the_ids_from_the_tunnel_token():
    a = args_map(controller_deployment(render({"cloudflare": {"sync": True, "apiTokenSecretRef": {"name": "cf-api"}}})))
    assert a["cloudflare-sync"] == "true"
    assert a["cloudflare-api-token-secret"] == "tg/cf-api"
    assert a["cloudflare-api-token-key"] == "api-token"
    # The controller reads the account and tunnel ids from the tunnel token Secret it is given.
    assert "proxy-token-secret" in a
    assert "cloudflare-account-id" not in a and "cloudflare-tunnel-id" not in a


def test_cloudflare_sync_with_explicit_ids_and_key():
    values = {
        "cloudflare": {
            "sync": True,
            "apiTokenSecretRef": {"name": "cf-api", "key": "token"},
            "accountId": "0123456789abcdef0123456789abcdef",
            "tunnelId": "6ff42ae2-765d-4adf-8112-31c55c1551ef",
        }
    }
    a = args_map(controller_deployment(render(values)))
    assert a["cloudflare-api-token-key"] == "token"
    assert a["cloudflare-account-id"] == "0123456789abcdef0123456789abcdef"
    assert a["cloudflare-tunnel-id"] == "6ff42ae2-765d-4adf-8112-31c55c1551ef"
    values["proxy"] = {"mode": "standalone"}
    a = args_map(controller_deployment(helm_template(values)))
    assert a["cloudflare-sync"] == "true" and "proxy-token-secret" not in a


def test_cloudflare_sync_in_standalone_mode_needs_both_ids():
    err = render_error(
        {"proxy": {"mode": "standalone"}, "cloudflare": {"sync": True, "apiTokenSecretRef": {"name": "cf-api"}}}
    )
    assert "cloudflare.sync in standalone mode needs cloudflare.accountId and cloudflare.tunnelId" in err


def test_image_tag_repository_and_pull_policy(default_docs):
    assert container(controller_deployment(default_docs))["image"] == "ghcr.io/tunnelgate/tunnelgate:0.1.0"
    dep = controller_deployment(render({"image": {"repository": "r.example/tg", "tag": "2.0.0", "pullPolicy": "Never"}}))
    assert container(dep)["image"] == "r.example/tg:2.0.0"
    assert container(dep)["imagePullPolicy"] == "Never"


def test_scheduling_and_metadata_values():
    tolerations = [
        {"key": "a", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "b", "operator": "Equal", "value": "x", "effect": "NoExecute"},
    ]
    spread = [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {}},
        {"maxSkew": 2, "topologyKey": "host", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {}},
    ]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    docs = render(
        {
            "imagePullSecrets": [{"name": "regcred"}],
            "controller": {
                "replicaCount": 3,
                "podAnnotations": {"a": "1"},
                "podLabels": {"team": "x"},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": tolerations,
                "affinity": affinity,
                "topologySpreadConstraints": spread,
                "priorityClassName": "high",
                "terminationGracePeriodSeconds": 5,
                "dnsPolicy": "None",
                "dnsConfig": {"nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9"], "searches": ["a.b", "c.d"]},
            },
        }
    )
    dep = controller_deployment(docs)
    pod = dep["spec"]["template"]
    assert dep["spec"]["replicas"] == 3
    assert pod["metadata"]["annotations"] == {"a": "1"}
    assert pod["metadata"]["labels"]["team"] == "x"
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"] == tolerations
    assert spec["affinity"] == affinity
    assert spec["topologySpreadConstraints"] == spread
    assert spec["priorityClassName"] == "high"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["terminationGracePeriodSeconds"] == 5
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"]["nameservers"] == ["1.1.1.1", "8.8.8.8", "9.9.9.9"]
    assert spec["dnsConfig"]["searches"] == ["a.b", "c.d"]


def test_optional_pod_fields_absent_by_default(default_docs):
    spec = controller_deployment(default_docs)["spec"]["template"]["spec"]
    for key in ("priorityClassName", "dnsPolicy", "dnsConfig", "imagePullSecrets", "nodeSelector", "tolerations", "affinity"):
        assert key not in spec, key
    assert spec["terminationGracePeriodSeconds"] == 30
    assert "annotations" not in controller_deployment(default_docs)["spec"]["template"]["metadata"]


def test_security_contexts_secure_by_default_and_overridable(default_docs):
    dep = controller_deployment(default_docs)
    c = container(dep)["securityContext"]
    assert c["runAsNonRoot"] is True and c["runAsUser"] == 65532
    assert c["readOnlyRootFilesystem"] is True and c["allowPrivilegeEscalation"] is False
    assert c["capabilities"]["drop"] == ["ALL"] and c["seccompProfile"]["type"] == "RuntimeDefault"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    # Helm merges a user's map into the defaults: the overridden keys change, the others stay secure.
    custom = controller_deployment(render({"controller": {"securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": False}}}))
    sc = container(custom)["securityContext"]
    assert sc["runAsUser"] == 1000 and sc["readOnlyRootFilesystem"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_probes(default_docs):
    c = container(controller_deployment(default_docs))
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "timeoutSeconds" in c[probe] and "failureThreshold" in c[probe]
    c = container(
        controller_deployment(render({"controller": {"healthProbes": {"readiness": {"timeoutSeconds": 7, "failureThreshold": 9}}}}))
    )
    assert c["readinessProbe"]["timeoutSeconds"] == 7 and c["readinessProbe"]["failureThreshold"] == 9


def test_resources_defaults_and_overrides(default_docs):
    assert container(controller_deployment(default_docs))["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }
    r = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    assert container(controller_deployment(render({"controller": {"resources": r}})))["resources"] == r
    empty = container(controller_deployment(render({"controller": {"resources": {}}})))["resources"]
    assert empty["limits"] == {"memory": "256Mi"}


def test_service_account_is_used(default_docs):
    spec = controller_deployment(default_docs)["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "rel-tunnelgate"
    assert [s["metadata"]["name"] for s in objects(default_docs, "ServiceAccount")] == ["rel-tunnelgate"]

"""Services, NetworkPolicies, PodDisruptionBudgets, ServiceMonitors and the GatewayClass."""

import ipaddress

import pytest

from conftest import helm_template, objects, one, render, render_error

# ---------------------------------------------------------------------------------------------- Services


def test_controller_service_defaults(default_docs):
    svc = one(default_docs, "Service", "rel-tunnelgate")
    assert svc["spec"]["type"] == "ClusterIP"
    assert {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        "metrics": (8080, "metrics"),
        "health": (8081, "health"),
    }
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "controller"
    assert svc["metadata"]["labels"]["app.kubernetes.io/component"] == "controller"
    assert "annotations" not in svc["metadata"]


@pytest.mark.parametrize("kind", ["NodePort", "LoadBalancer"])
def test_controller_service_types_ports_annotations(kind):
    docs = render({"controller": {"service": {"type": kind, "metricsPort": 9100, "healthPort": 9101, "annotations": {"a": "b"}}}})
    svc = one(docs, "Service", "rel-tunnelgate")
    assert svc["spec"]["type"] == kind
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"metrics": 9100, "health": 9101}
    assert svc["metadata"]["annotations"] == {"a": "b"}


def test_fullname_and_name_override():
    docs = render({"fullnameOverride": "gw"})
    one(docs, "Service", "gw")
    one(docs, "Service", "gw-proxy")
    one(docs, "Service", "gw-proxy-headless")
    docs = render({"nameOverride": "edge"})
    svc = one(docs, "Service", "rel-edge")
    assert svc["metadata"]["labels"]["app.kubernetes.io/name"] == "edge"


def test_proxy_cluster_ip_service_tunnel_mode_has_only_config_api(default_docs):
    svc = one(default_docs, "Service", "rel-tunnelgate-proxy")
    assert svc["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in svc["spec"]["ports"]] == ["config-api"]


def test_proxy_cluster_ip_service_standalone_exposes_both_ports():
    svc = one(helm_template({"proxy": {"mode": "standalone"}}), "Service", "rel-tunnelgate-proxy")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"config-api": 8081, "proxy": 8080}


def test_headless_service(default_docs):
    svc = one(default_docs, "Service", "rel-tunnelgate-proxy-headless")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["ports"] == [{"name": "config-api", "port": 8081, "targetPort": "config-api", "protocol": "TCP"}]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "proxy"
    standalone = one(helm_template({"proxy": {"mode": "standalone"}}), "Service", "rel-tunnelgate-proxy-headless")
    assert [p["name"] for p in standalone["spec"]["ports"]] == ["config-api"]


# ---------------------------------------------------------------------------------------------- NetworkPolicy


def _all_ip_blocks(policy):
    spec = policy["spec"]
    for rule in spec.get("ingress", []) or []:
        for peer in rule.get("from", []):
            if "ipBlock" in peer:
                yield peer["ipBlock"]["cidr"]
    for rule in spec.get("egress", []) or []:
        for peer in rule.get("to", []):
            if "ipBlock" in peer:
                yield peer["ipBlock"]["cidr"]


def test_proxy_policy_default_admits_only_the_controller_on_config_api(default_docs):
    pol = one(default_docs, "NetworkPolicy", "rel-tunnelgate-proxy")
    assert pol["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    assert len(pol["spec"]["ingress"]) == 1
    rule = pol["spec"]["ingress"][0]
    assert rule["ports"] == [{"port": "config-api", "protocol": "TCP"}]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "tunnelgate",
                    "app.kubernetes.io/instance": "rel",
                    "app.kubernetes.io/component": "controller",
                }
            }
        }
    ]
    # The named port follows a custom port number: it must name a port of the proxy container.
    proxy = one(default_docs, "Deployment", "rel-tunnelgate-proxy")
    names = [p["name"] for p in proxy["spec"]["template"]["spec"]["containers"][0]["ports"]]
    assert "config-api" in names


def test_proxy_policy_ingress_from_adds_peers_and_keeps_the_controller():
    extra = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    pol = one(render({"proxy": {"networkPolicy": {"ingress": {"from": extra}}}}), "NetworkPolicy", "rel-tunnelgate-proxy")
    peers = pol["spec"]["ingress"][0]["from"]
    assert len(peers) == 2
    assert peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"
    assert peers[1] == extra[0]


def test_proxy_policy_never_opens_the_data_port_in_tunnel_mode(default_docs):
    pol = one(render({"proxy": {"proxyPort": 9999}}), "NetworkPolicy", "rel-tunnelgate-proxy")
    ports = [p["port"] for rule in pol["spec"]["ingress"] for p in rule["ports"]]
    assert ports == ["config-api"]


def test_proxy_policy_standalone_opens_the_data_port():
    pol = one(helm_template({"proxy": {"mode": "standalone"}}), "NetworkPolicy", "rel-tunnelgate-proxy")
    ports = sorted(p["port"] for rule in pol["spec"]["ingress"] for p in rule["ports"])
    assert ports == ["config-api", "proxy"]


def test_proxy_policy_can_be_disabled():
    docs = render({"proxy": {"networkPolicy": {"enabled": False}}})
    assert not [p for p in objects(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-proxy")]


def test_proxy_policy_egress_restricted():
    pol = one(render({"proxy": {"networkPolicy": {"egressRestricted": True}}}), "NetworkPolicy", "rel-tunnelgate-proxy")
    assert pol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = pol["spec"]["egress"]
    dns = egress[0]["ports"]
    assert {"port": 53, "protocol": "UDP"} in dns and {"port": 53, "protocol": "TCP"} in dns
    edge = egress[1]
    assert {(p["port"], p["protocol"]) for p in edge["ports"]} == {(443, "TCP"), (7844, "TCP"), (7844, "UDP")}
    assert len(edge["to"]) > 0 and all("ipBlock" in t for t in edge["to"])
    assert egress[2] == {"to": [{"ipBlock": {"cidr": "1.1.1.1/32"}}], "ports": [{"port": 853, "protocol": "TCP"}]}
    assert egress[3] == {"to": [{"namespaceSelector": {}}]}
    for cidr in _all_ip_blocks(pol):
        assert ipaddress.ip_network(cidr).prefixlen > 0, cidr


def test_proxy_policy_egress_restricted_fails_without_ranges():
    err = render_error({"proxy": {"networkPolicy": {"egressRestricted": True, "cloudflareIpRanges": []}}})
    assert "egressRestricted needs proxy.networkPolicy.cloudflareIpRanges" in err


def test_policies_refuse_the_whole_internet():
    err = render_error({"proxy": {"networkPolicy": {"egressRestricted": True, "cloudflareIpRanges": ["0.0.0.0/0"]}}})
    assert "must not contain 0.0.0.0/0" in err
    err = render_error(
        {"controller": {"networkPolicy": {"enabled": True, "kubeApiServerCIDRs": ["::/0"]}}}
    )
    assert "must not contain ::/0" in err


def test_controller_policy_off_by_default(default_docs):
    assert [p["metadata"]["name"] for p in objects(default_docs, "NetworkPolicy")] == ["rel-tunnelgate-proxy"]


def test_controller_policy_requires_api_server_cidrs():
    err = render_error({"controller": {"networkPolicy": {"enabled": True}}})
    assert "kubeApiServerCIDRs" in err


@pytest.mark.parametrize(
    "peers",
    [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
            {"podSelector": {"matchLabels": {"app": "prometheus"}}},
        ],
    ],
)
def test_controller_policy_when_enabled(peers):
    docs = render({"controller": {"networkPolicy": {"enabled": True, "kubeApiServerCIDRs": ["10.0.0.1/32"], "ingress": {"from": peers}}}})
    pol = one(docs, "NetworkPolicy", "rel-tunnelgate")
    spec = pol["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}, {"port": "health", "protocol": "TCP"}], "from": peers}
    ]
    egress = spec["egress"]
    assert {"port": 53, "protocol": "UDP"} in egress[0]["ports"] and {"port": 53, "protocol": "TCP"} in egress[0]["ports"]
    assert egress[1] == {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}
    # No Cloudflare API rule while cloudflare.sync is off: the controller does not call it.
    assert egress[2]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    assert egress[2]["ports"] == [{"port": 8081, "protocol": "TCP"}]
    assert len(egress) == 3
    for cidr in _all_ip_blocks(pol):
        assert cidr not in ("0.0.0.0/0", "::/0")


def test_controller_policy_opens_the_cloudflare_api_with_the_sync():
    values = {
        "controller": {"networkPolicy": {"enabled": True, "kubeApiServerCIDRs": ["10.0.0.1/32"]}},
        "cloudflare": {"sync": True, "apiTokenSecretRef": {"name": "cf-api"}},
    }
    egress = one(render(values), "NetworkPolicy", "rel-tunnelgate")["spec"]["egress"]
    api = egress[2]
    assert api["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert {t["ipBlock"]["cidr"] for t in api["to"]} >= {"104.16.0.0/13", "173.245.48.0/20"}
    assert egress[3]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    values["controller"]["networkPolicy"]["cloudflareApiCIDRs"] = []
    err = render_error(values)
    assert "needs controller.networkPolicy.cloudflareApiCIDRs" in err


def test_controller_policy_without_peers_admits_nothing():
    docs = render({"controller": {"networkPolicy": {"enabled": True, "kubeApiServerCIDRs": ["10.0.0.1/32"]}}})
    assert one(docs, "NetworkPolicy", "rel-tunnelgate")["spec"]["ingress"] == []


# ---------------------------------------------------------------------------------------------- PDB


def test_proxy_pdb_on_by_default(default_docs):
    pdb = one(default_docs, "PodDisruptionBudget", "rel-tunnelgate-proxy")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"] and "unhealthyPodEvictionPolicy" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    docs = render({"proxy": {"podDisruptionBudget": {"enabled": False}}})
    assert not objects(docs, "PodDisruptionBudget")


def test_controller_pdb_off_by_default(default_docs):
    assert [p["metadata"]["name"] for p in objects(default_docs, "PodDisruptionBudget")] == ["rel-tunnelgate-proxy"]


@pytest.mark.parametrize(
    "pdb, want",
    [
        ({}, {"maxUnavailable": 1}),
        ({"minAvailable": 1}, {"minAvailable": 1}),
        ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
        ({"maxUnavailable": 2}, {"maxUnavailable": 2}),
        ({"maxUnavailable": "25%", "unhealthyPodEvictionPolicy": "AlwaysAllow"}, {"maxUnavailable": "25%", "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
    ],
)
def test_controller_pdb_variants(pdb, want):
    docs = render({"fullnameOverride": "x", "controller": {"podDisruptionBudget": {"enabled": True, **pdb}}})
    spec = one(docs, "PodDisruptionBudget", "x")["spec"]
    assert {k: v for k, v in spec.items() if k != "selector"} == want
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"


def test_pdb_rejects_both_bounds():
    err = render_error({"controller": {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}}})
    assert "set only one of minAvailable and maxUnavailable" in err


# ---------------------------------------------------------------------------------------------- ServiceMonitors


def test_no_service_monitors_by_default(default_docs):
    assert objects(default_docs, "ServiceMonitor") == []


def test_both_service_monitors_when_enabled():
    docs = render({"serviceMonitor": {"enabled": True}})
    sms = {s["metadata"]["name"]: s for s in objects(docs, "ServiceMonitor")}
    assert set(sms) == {"rel-tunnelgate", "rel-tunnelgate-proxy"}
    ctl, prx = sms["rel-tunnelgate"], sms["rel-tunnelgate-proxy"]
    assert ctl["apiVersion"] == "monitoring.coreos.com/v1"
    assert ctl["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics"}]
    assert prx["spec"]["endpoints"] == [{"port": "config-api", "path": "/metrics"}]
    assert ctl["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"
    assert prx["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    for sm in sms.values():
        assert sm["spec"]["namespaceSelector"] == {"matchNames": ["tg"]}
        assert "interval" not in sm["spec"]["endpoints"][0]
    # The proxy monitor selects the ClusterIP Service and not the headless one (no duplicate targets).
    services = objects(docs, "Service")
    selected = [s["metadata"]["name"] for s in services if _selects(prx["spec"]["selector"], s["metadata"]["labels"])]
    assert selected == ["rel-tunnelgate-proxy"]
    selected = [s["metadata"]["name"] for s in services if _selects(ctl["spec"]["selector"], s["metadata"]["labels"])]
    assert selected == ["rel-tunnelgate"]


def _selects(selector, labels):
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "DoesNotExist" and expr["key"] in labels:
            return False
        if expr["operator"] == "Exists" and expr["key"] not in labels:
            return False
    return True


def test_service_monitor_interval_and_labels():
    docs = render({"serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s", "labels": {"release": "prom"}}})
    for sm in objects(docs, "ServiceMonitor"):
        assert sm["spec"]["endpoints"][0]["interval"] == "15s"
        assert sm["spec"]["endpoints"][0]["scrapeTimeout"] == "5s"
        assert sm["metadata"]["labels"]["release"] == "prom"
        assert sm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_proxy_service_monitor_needs_proxy_metrics():
    docs = render({"serviceMonitor": {"enabled": True}, "proxy": {"metrics": {"enabled": False}}})
    assert [s["metadata"]["name"] for s in objects(docs, "ServiceMonitor")] == ["rel-tunnelgate"]


# ---------------------------------------------------------------------------------------------- GatewayClass


def test_gateway_class_default(default_docs):
    gc = one(default_docs, "GatewayClass", "tunnelgate")
    assert gc["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gc["spec"]["controllerName"] == "tunnelgate.dev/gateway-controller"
    assert "parametersRef" not in gc["spec"]
    assert gc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert "namespace" not in gc["metadata"]


def test_gateway_class_custom_and_independent_of_release():
    docs = helm_template(
        {"proxy": {"tunnelTokenSecretRef": {"name": "t"}}, "gatewayClass": {"name": "cf.tunnel-v2", "controllerName": "example.com/x"}},
        release="other-release",
    )
    gc = one(docs, "GatewayClass", "cf.tunnel-v2")
    assert gc["spec"]["controllerName"] == "example.com/x"
    # The controller is told the same controllerName as the class it serves.
    dep = one(docs, "Deployment", "other-release-tunnelgate")
    assert "--controller-name=example.com/x" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_gateway_class_can_be_disabled():
    assert objects(render({"gatewayClass": {"create": False}}), "GatewayClass") == []

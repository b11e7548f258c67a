"""RBAC: exactly the verbs of controller.md §11.3, nothing more."""

from conftest import objects, one, render

GW = "gateway.networking.k8s.io"

# (apiGroup, resource) -> verbs, as the spec's tables give them.
CLUSTER = {
    (GW, "gatewayclasses"): {"get", "list", "watch", "update", "patch"},
    (GW, "gateways"): {"get", "list", "watch", "update", "patch"},
    (GW, "gatewayclasses/status"): {"get", "update", "patch"},
    (GW, "gateways/status"): {"get", "update", "patch"},
    (GW, "httproutes/status"): {"get", "update", "patch"},
    (GW, "grpcroutes/status"): {"get", "update", "patch"},
    (GW, "backendtlspolicies/status"): {"get", "update", "patch"},
    (GW, "httproutes"): {"get", "list", "watch"},
    (GW, "grpcroutes"): {"get", "list", "watch"},
    (GW, "referencegrants"): {"get", "list", "watch"},
    (GW, "backendtlspolicies"): {"get", "list", "watch"},
    ("", "services"): {"get", "list", "watch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("", "configmaps"): {"get", "list", "watch"},
    ("", "secrets"): {"get", "list", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
NAMESPACED = {
    ("", "secrets"): {"create"},
    ("coordination.k8s.io", "leases"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("apps", "deployments"): {"get", "patch"},
}
WRITE = {"create", "update", "patch", "delete", "deletecollection", "*"}


def flatten(rules):
    out = {}
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                key = (group, res)
                assert key not in out, f"{key} granted by two rules"
                out[key] = set(rule["verbs"])
    return out


def test_cluster_role_is_exactly_the_spec(default_docs):
    role = one(default_docs, "ClusterRole", "rel-tunnelgate")
    assert flatten(role["rules"]) == CLUSTER


def test_role_is_exactly_the_spec(default_docs):
    role = one(default_docs, "Role", "rel-tunnelgate")
    assert role["metadata"]["namespace"] == "tg"
    assert flatten(role["rules"]) == NAMESPACED
    deploy = [r for r in role["rules"] if r["resources"] == ["deployments"]][0]
    assert deploy["resourceNames"] == ["rel-tunnelgate-proxy"]


def test_routes_and_grants_read_only_status_writable(default_docs):
    rules = flatten(one(default_docs, "ClusterRole", "rel-tunnelgate")["rules"])
    for res in ("httproutes", "grpcroutes", "referencegrants", "backendtlspolicies"):
        assert not rules[(GW, res)] & WRITE
    for key, verbs in rules.items():
        if key[1].endswith("/status"):
            assert verbs == {"get", "update", "patch"}
    assert rules[("apiextensions.k8s.io", "customresourcedefinitions")] == {"get"}
    assert not rules[("", "configmaps")] & WRITE


def test_no_write_on_pods_replicasets_serviceaccounts_configmaps(default_docs):
    for kind in ("ClusterRole", "Role"):
        rules = flatten(one(default_docs, kind, "rel-tunnelgate")["rules"])
        for (group, res), verbs in rules.items():
            if res in ("pods", "replicasets", "serviceaccounts", "configmaps"):
                assert not verbs & WRITE, (kind, group, res)
        assert ("", "secrets") not in rules or kind == "Role" or not rules[("", "secrets")] & WRITE


def test_bindings_point_at_the_service_account(default_docs):
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        b = one(default_docs, kind, "rel-tunnelgate")
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "rel-tunnelgate"}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "rel-tunnelgate", "namespace": "tg"}]


def test_service_account_annotations_and_custom_name():
    docs = render({"serviceAccount": {"name": "ctl", "annotations": {"eks.amazonaws.com/role-arn": "arn"}}})
    sa = one(docs, "ServiceAccount", "ctl")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn"}
    assert one(docs, "ClusterRoleBinding", "rel-tunnelgate")["subjects"][0]["name"] == "ctl"
    dep = one(docs, "Deployment", "rel-tunnelgate")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "ctl"


def test_rbac_and_service_account_can_be_left_to_the_user():
    docs = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "pre"}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"):
        assert objects(docs, kind) == [], kind
    assert one(docs, "Deployment", "rel-tunnelgate")["spec"]["template"]["spec"]["serviceAccountName"] == "pre"

"""Every rendered manifest, for the defaults and every ci/*-values.yaml, validated offline.

Built-in kinds go through kubernetes-validate (strict: unknown fields are errors) for the oldest Kubernetes the
chart supports and the newest schema the package ships. GatewayClass and ServiceMonitor are CRDs that
kubernetes-validate has no schema for; they are checked against the subset of their CRD schemas that the chart
uses, written out below, so that a typo in those templates still fails.
"""

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from conftest import CI_VALUES, helm_template, render

MIN_KUBE = "1.29.0"
KUBE_VERSIONS = [MIN_KUBE, kubernetes_validate.utils.latest_version()]

LABELS = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": LABELS,
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

CRD_SCHEMAS = {
    # gateway.networking.k8s.io/v1 GatewayClass (Gateway API v1.5/v1.6 Standard channel).
    ("gateway.networking.k8s.io/v1", "GatewayClass"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
            "kind": {"const": "GatewayClass"},
            "metadata": {**METADATA, "properties": {**METADATA["properties"], "namespace": False}},
            "spec": {
                "type": "object",
                "required": ["controllerName"],
                "additionalProperties": False,
                "properties": {
                    "controllerName": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 253,
                        "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$",
                    },
                    "description": {"type": "string", "maxLength": 64},
                    "parametersRef": {"type": "object"},
                },
            },
        },
    },
    # monitoring.coreos.com/v1 ServiceMonitor (prometheus-operator).
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": DURATION,
                                "scrapeTimeout": DURATION,
                            },
                        },
                    },
                },
            },
        },
    },
}

SCENARIOS = [("defaults+tunnel-token", None)] + [(f.name, f) for f in CI_VALUES]


def rendered(scenario):
    name, path = scenario
    if path is None:
        return render({"serviceMonitor": {"enabled": True}})
    return helm_template(None, files=(path,))


def test_ci_values_files_exist():
    names = {f.name for f in CI_VALUES}
    assert {"tunnel-values.yaml", "standalone-values.yaml", "full-values.yaml", "long-name-values.yaml", "minimal-values.yaml"} <= names


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s[0] for s in SCENARIOS])
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_rendered_manifests_validate(scenario, kube):
    docs = rendered(scenario)
    assert docs, "nothing rendered"
    checked = 0
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if key in CRD_SCHEMAS:
            jsonschema.Draft7Validator(CRD_SCHEMAS[key]).validate(doc)
            checked += 1
            continue
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except SchemaNotFoundError:
            pytest.fail(f"{where}: no schema for {key} in Kubernetes {kube}; add it to CRD_SCHEMAS if it is a CRD")
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} is invalid for Kubernetes {kube}: {e.message} at {list(e.path)}")
        checked += 1
    assert checked == len(docs)


def test_crd_schemas_catch_mistakes():
    """The hand-written CRD schemas reject the mistakes they exist to catch."""
    gc = CRD_SCHEMAS[("gateway.networking.k8s.io/v1", "GatewayClass")]
    good = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "x"}, "spec": {"controllerName": "a.b/c"}}
    jsonschema.Draft7Validator(gc).validate(good)
    for bad_spec in ({"controllerName": "no-slash"}, {"controllerNme": "a.b/c"}, {"controllerName": "a.b/c", "description": "d" * 65}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(gc).validate({**good, "spec": bad_spec})
    sm = CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]
    good = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"}, "spec": {"selector": {}, "endpoints": [{"port": "m", "interval": "15s"}]}}
    jsonschema.Draft7Validator(sm).validate(good)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(sm).validate({**good, "spec": {"selector": {}, "endpoints": [{"port": "m", "interval": "15 seconds"}]}})

"""values.schema.json: helm itself must reject bad values with an error naming the field."""

import json

import jsonschema
import pytest
import yaml

from conftest import CHART, render, render_error


def test_schema_is_valid_draft7_and_defaults_validate():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    # Every top-level key of values.yaml is described.
    assert set(values) <= set(schema["properties"])


def test_closed_sections():
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = schema["properties"]
    for section in (props["proxy"], props["cloudflare"], props["serviceMonitor"]):
        assert section["additionalProperties"] is False
    proxy = props["proxy"]["properties"]
    for key in ("networkPolicy", "tunnel", "accessLog"):
        assert proxy[key]["additionalProperties"] is False, key


BAD = [
    ({"proxy": {"replicas": "two"}}, "proxy.replicas"),
    ({"proxy": {"replicas": 0}}, "proxy.replicas"),
    ({"proxy": {"mode": "sidecar"}}, "proxy.mode"),
    ({"proxy": {"gracePeriodSeconds": 181}}, "proxy.gracePeriodSeconds"),
    ({"proxy": {"gracePeriodSeconds": -1}}, "proxy.gracePeriodSeconds"),
    ({"proxy": {"maxConfigBytes": 1024}}, "proxy.maxConfigBytes"),
    ({"proxy": {"configAPIPort": 0}}, "proxy.configAPIPort"),
    ({"proxy": {"proxyPort": 70000}}, "proxy.proxyPort"),
    ({"controller": {"service": {"metricsPort": 65536}}}, "controller.service.metricsPort"),
    ({"proxy": {"accessLog": {"samplingRate": "0.5"}}}, "proxy.accessLog.samplingRate"),
    ({"proxy": {"accessLog": {"samplingRate": -0.1}}}, "proxy.accessLog.samplingRate"),
    ({"proxy": {"accessLog": {"samplingRate": 1.5}}}, "proxy.accessLog.samplingRate"),
    ({"proxy": {"accessLog": {"stripQuery": "yes"}}}, "proxy.accessLog.stripQuery"),
    ({"proxy": {"tracing": {"sampleRate": 2}}}, "proxy.tracing.sampleRate"),
    ({"proxy": {"networkPolicy": {"egressRestrict": True}}}, "egressRestrict"),
    ({"proxy": {"tunnel": {"protocol": "h3"}}}, "proxy.tunnel.protocol"),
    ({"proxy": {"tunnel": {"haConnections": 17}}}, "proxy.tunnel.haConnections"),
    ({"proxy": {"tunnel": {"protocolWait": "30"}}}, "proxy.tunnel.protocolWait"),
    ({"proxy": {"tunnel": {"protocolWait": "-5s"}}}, "proxy.tunnel.protocolWait"),
    ({"proxy": {"websocket": {"dialTimeout": "soon"}}}, "proxy.websocket.dialTimeout"),
    ({"proxy": {"websocket": {"handshakeTimeout": "10"}}}, "proxy.websocket.handshakeTimeout"),
    ({"proxy": {"authTokenSecretRef": {"name": 5}}}, "proxy.authTokenSecretRef.name"),
    ({"proxy": {"tunnelTokenSecretRef": {"name": ["x"]}}}, "proxy.tunnelTokenSecretRef.name"),
    ({"proxy": {"logLevel": "verbose"}}, "proxy.logLevel"),
    ({"proxy": {"unknownKey": 1}}, "unknownKey"),
    ({"controller": {"logFormat": "xml"}}, "controller.logFormat"),
    ({"controller": {"logLevel": "loud"}}, "controller.logLevel"),
    ({"controller": {"replicaCount": 0}}, "controller.replicaCount"),
    ({"cloudflare": {"tunnelId": "not-a-uuid"}}, "cloudflare.tunnelId"),
    ({"cloudflare": {"accountId": "abc"}}, "cloudflare.accountId"),
    ({"cloudflare": {"zone": "x"}}, "zone"),
    ({"serviceMonitor": {"enabled": "true"}}, "serviceMonitor.enabled"),
    ({"serviceMonitor": {"path": "/m"}}, "path"),
    ({"gatewayClass": {"name": "Bad_Name"}}, "gatewayClass.name"),
    ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy"),
    ({"topLevelTypo": True}, "topLevelTypo"),
]


@pytest.mark.parametrize("values, field", BAD, ids=[f for _, f in BAD])
def test_schema_rejects(values, field):
    err = render_error(values)
    assert "values don't meet the specifications of the schema" in err, err
    assert field in err, err


GOOD = [
    {"proxy": {"tunnel": {"protocolWait": ""}}},
    {"proxy": {"tunnel": {"protocolWait": "30s"}}},
    {"proxy": {"tunnel": {"protocolWait": "1h30m"}}},
    {"proxy": {"websocket": {"dialTimeout": "2h45m30s", "handshakeTimeout": "1.5s"}}},
    {"proxy": {"tunnel": {"protocol": ""}}},
    {"proxy": {"accessLog": {"samplingRate": 0}}},
    {"proxy": {"accessLog": {"samplingRate": 1}}},
    {"proxy": {"accessLog": {"samplingRate": 0.01, "stripQuery": True}}},
    {"proxy": {"networkPolicy": {"enabled": True, "ingress": {"from": []}, "egressRestricted": False, "cloudflareIpRanges": ["1.2.3.0/24"]}}},
    {"proxy": {"mode": "standalone"}},
    {"proxy": {"gracePeriodSeconds": 0}},
    {"proxy": {"gracePeriodSeconds": 180}},
    {"proxy": {"maxConfigBytes": 65536}},
    {"cloudflare": {"tunnelId": "6ff42ae2-765d-4adf-8112-31c55c1551ef"}},
    {"cloudflare": {"tunnelId": "6FF42AE2-765D-4ADF-8112-31C55C1551EF"}},
    {"cloudflare": {"accountId": "0123456789abcdef0123456789ABCDEF"}},
    {"gatewayClass": {"name": "cloudflare.tunnel-v1"}},
]


@pytest.mark.parametrize("values", GOOD, ids=[json.dumps(v, sort_keys=True) for v in GOOD])
def test_schema_accepts(values):
    render(values)

#!/usr/bin/env python3
"""Generates tunnelgate config documents (the PUT /config wire format) for the benchmark.

`large(n, ...)` builds an n-rule document shaped like what a controller emits for a big cluster: mostly exact
hostnames with PathPrefix matches, some wildcard hostnames, a default bucket, header/method/query matches, header
modifier / rewrite / redirect filters, weighted backends spread over many services, and a small share (1 %) of
RegularExpression matches. The mix is fixed and seeded, so every run measures the same document.

Exactly one rule, the probe, routes `probe_host` to the real benchmark backend; no other rule (and no default
bucket rule) can match that host, so a request for it succeeds only once this document is live.

CLI: gen_config.py --rules 10000 --version 2 --backend http://127.0.0.1:8080 --probe-host p.example.com > c.json
"""

import argparse
import json
import random
import sys


def small(version, host, backend_url):
    """The one-rule document used for throughput runs and the 1-rule RSS figure."""
    return {
        "version": version,
        "rules": [{"hostnames": [host], "backends": [{"url": backend_url, "weight": 1}]}],
    }


def _service_url(rng, i):
    return "http://svc-%d.ns-%d.svc:%d" % (i % 800, i % 40, rng.choice((80, 8080, 9000)))


def _rule(rng, i):
    team = "team-%d" % (i % 97)
    kind = rng.random()
    rule = {}
    if kind < 0.70:
        hosts = ["app-%d.%s.example.com" % (i, team)]
        if rng.random() < 0.25:
            hosts.append("www.app-%d.%s.example.com" % (i, team))
        rule["hostnames"] = hosts
    elif kind < 0.95:
        rule["hostnames"] = ["*.zone-%d.example.net" % i]
    else:
        # Default bucket (no hostnames): only specific paths, so the probe host never falls into it.
        pass

    matches = []
    for m in range(rng.choice((1, 1, 1, 1, 2, 3))):
        match = {}
        r = rng.random()
        if i % 100 == 7 and m == 0:
            match["path"] = {"type": "RegularExpression", "value": "^/items/[0-9]+/detail-%d$" % i}
        elif r < 0.15:
            match["path"] = {"type": "Exact", "value": "/api/v%d/svc-%d/status" % (m + 1, i)}
        else:
            match["path"] = {"type": "PathPrefix", "value": "/api/v%d/svc-%d" % (m + 1, i)}
        if rng.random() < 0.2:
            match["method"] = rng.choice(("GET", "POST", "PUT"))
        if rng.random() < 0.15:
            match["headers"] = [{"type": "Exact", "name": "X-Tenant", "value": "tenant-%d" % (i % 13)}]
        if rng.random() < 0.05:
            match["queryParams"] = [{"type": "Exact", "name": "debug", "value": "1"}]
        matches.append(match)
    rule["matches"] = matches

    filters = []
    r = rng.random()
    if r < 0.15:
        filters.append({"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "X-Route", "value": "r-%d" % i}], "remove": ["X-Debug"]}})
    elif r < 0.22:
        filters.append({"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}})
    elif r < 0.25:
        filters.append({"type": "RequestRedirect", "requestRedirect": {
            "scheme": "https", "statusCode": 301}})
    if rng.random() < 0.05:
        filters.append({"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "add": [{"name": "X-Served-By", "value": "tunnelgate"}]}})
    if filters:
        rule["filters"] = filters

    redirect = any(f["type"] == "RequestRedirect" for f in filters)
    if redirect:
        rule["backends"] = []
    elif rng.random() < 0.2:
        rule["backends"] = [{"url": _service_url(rng, i), "weight": 90},
                            {"url": _service_url(rng, i + 1), "weight": 10}]
    else:
        rule["backends"] = [{"url": _service_url(rng, i), "weight": 1}]
    if rng.random() < 0.1:
        rule["timeouts"] = {"request": "30s", "backend": "10s"}
    return rule


def large(n, version, backend_url, probe_host, seed=7):
    """An n-rule document (n >= 1); the probe rule sits in the middle of the rule list."""
    rng = random.Random(seed)
    rules = [_rule(rng, i) for i in range(n - 1)]
    probe = {"hostnames": [probe_host], "backends": [{"url": backend_url, "weight": 1}]}
    rules.insert(len(rules) // 2, probe)
    return {"version": version, "rules": rules}


def encode(doc):
    """Compact JSON, as Go's encoding/json (the controller) sends it."""
    return json.dumps(doc, separators=(",", ":")).encode()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", type=int, default=10000)
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--backend", default="http://127.0.0.1:8080")
    p.add_argument("--probe-host", default="probe.bench.example.com")
    a = p.parse_args()
    if a.rules < 1:
        p.error("--rules must be >= 1")
    sys.stdout.buffer.write(encode(large(a.rules, a.version, a.backend, a.probe_host)))


if __name__ == "__main__":
    main()

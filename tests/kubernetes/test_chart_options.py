"""What users of well-kept charts set on the pods (labels, scheduling, extra containers,
volumes and environment, probe timings, the Service, the worker's PDB and autoscaler):
each value lands where it belongs, exactly, and the defaults spread the replicas."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.kubernetes.chart import (
    CHART,
    HARDENED,
    ROOT,
    VALUE_SETS,
    by_kind,
    pod_specs,
    render_objects,
    render_raw,
)
from tests.kubernetes.test_chart import _refusal

DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
SELECTOR = {"app.kubernetes.io/name": "shipshape", "app.kubernetes.io/instance": "shipshape"}


def _templates(value_set: str) -> dict[str, dict[str, Any]]:
    """Component -> pod template (metadata and spec) of the Deployments."""
    return {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"][
            "template"
        ]
        for d in by_kind(value_set, "Deployment")
    }


def _labels(component: str) -> dict[str, str]:
    return {**SELECTOR, "app.kubernetes.io/component": component}


def test_on_a_shared_volume_replicas_spread_over_nodes_and_zones_preferring_a_node_each() -> None:
    specs = pod_specs("shared-volume")
    for component in ("app", "worker"):
        spec = specs[component]
        assert spec["topologySpreadConstraints"] == [
            {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": _labels(component)}}
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
        ]  # fmt: skip
        assert spec["affinity"] == {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": _labels(component)}}}
                ]
            }
        }  # fmt: skip
        assert "priorityClassName" not in spec
        assert "initContainers" not in spec
        assert [c["name"] for c in spec["containers"]] == [component]
    [claim] = by_kind("shared-volume", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    budgets = {b["metadata"]["name"]: b["spec"] for b in by_kind("default", "PodDisruptionBudget")}
    assert budgets == {
        "shipshape": {"maxUnavailable": 1, "selector": {"matchLabels": _labels("app")}},
        "shipshape-worker": {"maxUnavailable": 1, "selector": {"matchLabels": _labels("worker")}},
    }
    [service] = by_kind("default", "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert "annotations" not in service["metadata"]


def test_every_pod_option_lands_where_it_belongs() -> None:
    options = VALUE_SETS["every-pod-option"]
    templates = _templates("every-pod-option")
    app, worker = templates["app"], templates["worker"]
    assert app["metadata"]["labels"] == {**_labels("app"), "team": "payments"}
    assert worker["metadata"]["labels"] == {**_labels("worker"), "team": "payments"}
    spec = app["spec"]
    assert spec["priorityClassName"] == "shipshape-critical"
    assert spec["affinity"] == {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname",
             "labelSelector": {"matchLabels": _labels("app")}}]}
    }  # fmt: skip
    assert [c["topologyKey"] for c in spec["topologySpreadConstraints"]] == [
        "kubernetes.io/hostname"
    ]
    assert spec["initContainers"] == options["app"]["initContainers"]
    main, sidecar = spec["containers"]
    assert main["name"] == "app"
    assert sidecar == HARDENED | {
        "name": "proxy",
        "command": ["sleep", "infinity"],
    }
    assert main["env"][-1] == {"name": "TZ", "value": "UTC"}
    assert all(e["name"].endswith("_FILE") for e in main["env"][:-1])  # the secrets first
    assert main["volumeMounts"][-1] == options["app"]["extraVolumeMounts"][0]
    assert spec["volumes"][-1] == options["app"]["extraVolumes"][0]
    for probe in ("startup", "liveness", "readiness"):
        given = DEFAULTS["app"]["probes"][probe] | options["app"]["probes"][probe]
        found = main[f"{probe}Probe"]
        assert {k: v for k, v in found.items() if k != "httpGet"} == given
        assert found["httpGet"]["path"] == ("/ready" if probe == "readiness" else "/live")
    # The worker: no preset, zones only, its probes' timings, no budget, scaled on the queue.
    wspec = worker["spec"]
    assert "affinity" not in wspec
    assert [c["topologyKey"] for c in wspec["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone"
    ]
    [wmain] = wspec["containers"]
    for probe in ("liveness", "readiness"):
        found = wmain[f"{probe}Probe"]
        merged = DEFAULTS["worker"]["probes"][probe] | options["worker"]["probes"][probe]
        assert {k: v for k, v in found.items() if k != "exec"} == merged
    [deployment] = [d for d in by_kind("every-pod-option", "Deployment")
                    if d["metadata"]["name"] == "shipshape-worker"]  # fmt: skip
    assert "replicas" not in deployment["spec"]  # the autoscaler's
    [budget] = by_kind("every-pod-option", "PodDisruptionBudget")
    assert budget["metadata"]["name"] == "shipshape"
    [scaler] = by_kind("every-pod-option", "HorizontalPodAutoscaler")
    assert scaler["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shipshape-worker"},
        "minReplicas": 1,
        "maxReplicas": 4,
        "metrics": [{"type": "External", "external": {
            "metric": {"name": "shipshape_jobs_queued",
                       "selector": {"matchLabels": {"state": "queued"}}},
            "target": {"type": "AverageValue", "averageValue": "25"}}}],
    }  # fmt: skip
    [service] = by_kind("every-pod-option", "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == options["service"]["annotations"]


def test_the_worker_scales_on_cpu_unless_told_the_queue_metric() -> None:
    rendered = render_raw({"worker": {"autoscaling": {"enabled": True}}})
    [text] = [t for name, t in rendered.items() if name.endswith("hpa.yaml")]
    assert "name: shipshape-worker" in text
    assert "averageUtilization: 80" in text
    assert "External" not in text


def test_a_given_affinity_replaces_the_preset() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["web"]}]}]}}}  # fmt: skip
    rendered = render_raw({"app": {"affinity": affinity, "podAntiAffinityPreset": "hard"}})
    [text] = [t for name, t in rendered.items() if name.endswith("deployment-app.yaml")]
    assert "nodeAffinity" in text
    assert "podAntiAffinity" not in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"app": {"podAntiAffinityPreset": "sometimes"}}, r"podAntiAffinityPreset"),
        ({"worker": {"extraEnv": [{"value": "x"}]}}, r"extraEnv.*name"),
        ({"app": {"extraEnv": [{"name": "1BAD", "value": "x"}]}}, r"extraEnv.*name"),
        ({"app": {"extraEnv": [{"name": "DB_PASSWORD", "value": "x"}]}}, r"extraEnv.*name"),
        ({"worker": {"extraEnv": [{"name": "SECRET_KEY_FILE", "value": "/x"}]}}, r"extraEnv"),
        ({"app": {"extraEnv": [{"name": "LOG_LEVEL", "value": "debug"}]}}, r"extraEnv"),
        ({"service": {"type": "ExternalName"}}, r"service.*type"),
        ({"app": {"probes": {"liveness": {"periodSeconds": 0}}}}, r"periodSeconds"),
        ({"worker": {"probes": {"liveness": {"exec": {"command": ["true"]}}}}}, r"exec"),
        ({"worker": {"topologySpread": {"zones": "yes"}}}, r"zones"),
        ({"app": {"sidecars": {"name": "x"}}}, r"sidecars"),
    ],
    ids=["preset", "env-without-name", "env-name", "env-secret", "env-secret-file",
         "env-setting", "service-type", "probe-period",
         "probe-handler", "spread", "sidecars-not-a-list"],
)  # fmt: skip
def test_the_schema_refuses_a_wrong_pod_option_naming_it(
    values: dict[str, Any], message: str
) -> None:
    assert re.search(message, _refusal(values), re.S), _refusal(values)


def _configmap(values: dict[str, Any]) -> dict[str, str]:
    rendered = render_raw(values)
    [text] = [t for name, t in rendered.items() if name.endswith("configmap.yaml")]
    data: dict[str, str] = yaml.safe_load(text)["data"]
    return data


def test_forwarded_headers_are_believed_from_any_peer_only_behind_the_network_policy() -> None:
    """FORWARDED_ALLOW_IPS decides the client address logins are throttled by: `*` is safe
    only while the NetworkPolicy admits the ingress controller alone."""
    assert _configmap({})["FORWARDED_ALLOW_IPS"] == "*"
    off = {"networkPolicy": {"enabled": False}}
    message = _refusal(off)
    assert "trustedProxies" in message
    assert "networkPolicy.enabled false" in message
    given = _configmap({**off, "trustedProxies": "10.42.0.0/16"})
    assert given["FORWARDED_ALLOW_IPS"] == "10.42.0.0/16"
    assert _configmap({**off, "trustedProxies": ""})["FORWARDED_ALLOW_IPS"] == ""
    assert "FORWARDED_ALLOW_IPS" in _refusal({"config": {"FORWARDED_ALLOW_IPS": "*"}})


def test_sign_in_paths_are_limited_at_the_ingress_as_the_compose_nginx_limits_them() -> None:
    """ingress-nginx's limit annotations on an Ingress of the sign-in paths alone, at the
    compose stack's nginx rate and burst (AUTH_RATE_LIMIT, `burst=10`)."""
    ingresses = {i["metadata"]["name"]: i for i in by_kind("default", "Ingress")}
    login = ingresses["shipshape-login"]
    notes = login["metadata"]["annotations"]
    rps = int(notes["nginx.ingress.kubernetes.io/limit-rps"])
    burst = rps * int(notes["nginx.ingress.kubernetes.io/limit-burst-multiplier"])
    compose = (ROOT / "docker-compose.prod.yml").read_text()
    nginx = (ROOT / "docker" / "nginx" / "templates" / "default.conf.template").read_text()
    rate = re.search(r"AUTH_RATE_LIMIT=\$\{AUTH_RATE_LIMIT:-(\d+)r/s\}", compose)
    assert rate is not None
    assert rps == int(rate[1])
    assert re.findall(r"limit_req zone=auth burst=(\d+)", nginx) == [str(burst)] * 2
    [rule] = login["spec"]["rules"]
    assert rule["host"] == ingresses["shipshape"]["spec"]["rules"][0]["host"]
    paths = {(p["path"], p["pathType"]) for p in rule["http"]["paths"]}
    assert paths == {("/api/v1/auth/", "Prefix"), ("/ui/login", "Exact")}
    assert {p["backend"]["service"]["name"] for p in rule["http"]["paths"]} == {"shipshape"}
    assert login["spec"]["tls"] == ingresses["shipshape"]["spec"]["tls"]
    assert "cert-manager.io/cluster-issuer" not in notes  # one certificate, the main Ingress's
    for values in (
        {"ingress": {"loginRateLimit": {"enabled": False}}},
        {"ingress": {"className": "traefik"}},  # the annotations are ingress-nginx's
    ):
        rendered = render_raw(values)
        [text] = [t for name, t in rendered.items() if name.endswith("ingress.yaml")]
        assert "shipshape-login" not in text


def test_a_managed_database_and_redis_are_reached_over_verified_tls_from_every_pod() -> None:
    """database.sslmode and redis.tls set the service's settings; each store's CA comes from
    its Secret into every pod that connects, the migrations Job's included."""
    values = {
        "database": {"sslmode": "verify-full", "caSecret": {"name": "rds-ca", "key": "bundle.pem"}},
        "redis": {"tls": True, "caSecret": {"name": "cache-ca", "key": "ca.crt"}},
    }
    data = _configmap(values)
    assert {
        k: data[k] for k in ("DB_SSLMODE", "DB_SSL_ROOT_CERT", "REDIS_TLS", "REDIS_CA_FILE")
    } == {
        "DB_SSLMODE": "verify-full",
        "DB_SSL_ROOT_CERT": "/etc/shipshape/tls/database-ca.pem",
        "REDIS_TLS": "true",
        "REDIS_CA_FILE": "/etc/shipshape/tls/redis-ca.pem",
    }
    objects = render_objects(values)
    pods = {
        o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"][
            "template"
        ]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    }
    assert set(pods) == {"app", "worker", "migrate"}
    for component, spec in pods.items():
        [volume] = [v for v in spec["volumes"] if v["name"] == "tls-ca"]
        assert volume["projected"] == {
            "defaultMode": 0o444,
            "sources": [
                {
                    "secret": {
                        "name": "rds-ca",
                        "items": [{"key": "bundle.pem", "path": "database-ca.pem"}],
                    }
                },
                {
                    "secret": {
                        "name": "cache-ca",
                        "items": [{"key": "ca.crt", "path": "redis-ca.pem"}],
                    }
                },
            ],
        }, component
        [main] = [c for c in spec["containers"] if c["name"] == component]
        mounts = [m for m in main["volumeMounts"] if m["name"] == "tls-ca"]
        assert mounts == [{"name": "tls-ca", "mountPath": "/etc/shipshape/tls", "readOnly": True}]
    # The defaults: the driver's own (prefer), plain Redis, and no CA volume.
    default = _configmap({})
    assert (default["DB_SSLMODE"], default["DB_SSL_ROOT_CERT"]) == ("prefer", "")
    assert (default["REDIS_TLS"], default["REDIS_CA_FILE"]) == ("false", "")
    assert all(v["name"] != "tls-ca" for s in pod_specs("default").values() for v in s["volumes"])
    assert re.search(r"sslmode", _refusal({"database": {"sslmode": "verify_full"}}))
    assert "DB_SSLMODE" in _refusal({"config": {"DB_SSLMODE": "require"}})


def test_by_default_every_pod_goes_to_the_node_of_the_read_write_once_volume() -> None:
    """No pod stays Pending on a cluster without ReadWriteMany: the files volume is
    ReadWriteOnce, and the app's and the worker's pods all go to the node that mounts it."""
    [claim] = by_kind("default", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    together = {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {
                        "matchLabels": SELECTOR,
                        "matchExpressions": [
                            {"key": "app.kubernetes.io/component", "operator": "In",
                             "values": ["app", "worker"]}
                        ],
                    },
                }
            ]
        }
    }  # fmt: skip
    specs = pod_specs("default")
    for component in ("app", "worker"):
        assert specs[component]["affinity"] == together, component
        assert "topologySpreadConstraints" not in specs[component], component
        mounts = {m["name"] for m in specs[component]["containers"][0]["volumeMounts"]}
        assert "files" in mounts
    # The migrations Job mounts no files: it may run anywhere.
    assert "affinity" not in specs["migrate"]
    assert "ReadWriteMany" in _refusal({"app": {"podAntiAffinityPreset": "hard"}})
    # Without persistence each pod has its own emptyDir: nothing to share a node for.
    rendered = render_raw({"persistence": {"enabled": False}})
    [text] = [t for name, t in rendered.items() if name.endswith("deployment-worker.yaml")]
    assert "podAffinity:" not in text
    assert "podAntiAffinity:" in text


def test_the_security_headers_preset_gives_ingress_nginx_the_compose_nginx_headers() -> None:
    """The headers docker/nginx/snippets/security-headers.conf adds on compose, on both
    Ingresses by ingress-nginx's custom-headers annotation; the CSP is the app's own."""
    snippet = (ROOT / "docker" / "nginx" / "snippets" / "security-headers.conf").read_text()
    compose = dict(re.findall(r'^add_header ([\w-]+) "([^"]*)" always;$', snippet, re.M))
    assert "Content-Security-Policy" in snippet  # from a variable: not in `compose`
    assert len(compose) == 7
    on = {"ingress": {"securityHeaders": {"enabled": True}}}
    objects = [
        doc
        for name, text in render_raw(on).items()
        if name.endswith("ingress.yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    [headers] = [o for o in objects if o["kind"] == "ConfigMap"]
    assert headers["data"] == compose
    name = f"{headers['metadata']['namespace']}/{headers['metadata']['name']}"
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    assert len(ingresses) == 2
    for ingress in ingresses:
        assert (
            ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/custom-headers"] == name
        )
    # Off by default (a controller that does not allow the headers answers 503), and only
    # for ingress-nginx.
    for values in ({}, {"ingress": {"securityHeaders": {"enabled": True}, "className": "traefik"}}):
        text = "".join(t for n, t in render_raw(values).items() if n.endswith("ingress.yaml"))
        assert "custom-headers" not in text
        assert "security-headers" not in text


def test_in_cluster_backups_run_the_compose_backup_script_nightly() -> None:
    """The CronJob runs the compose stack's own script (the chart's copy, kept identical by
    `make docs`), one dump per run, into a claim that outlives the release."""
    script = ROOT / "scripts" / "backup.sh"
    assert (CHART / "files" / "backup.sh").read_bytes() == script.read_bytes()
    [cronjob] = by_kind("in-cluster-backups", "CronJob")
    assert by_kind("default", "CronJob") == []
    spec = cronjob["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == (
        "30 2 * * *", "Etc/UTC", "Forbid",
    )  # fmt: skip
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "postgres:15-alpine"
    assert container["command"] == ["/bin/sh", "/opt/shipshape/backup.sh", "--once"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "PGHOST": "postgres", "PGPORT": "5432", "PGUSER": "shipshape", "PGDATABASE": "shipshape",
        "PGSSLMODE": "prefer", "DB_PASSWORD_FILE": "/run/secrets/db_password",
        "BACKUP_KEEP_DAILY": "7", "BACKUP_KEEP_WEEKLY": "4",
    }  # fmt: skip
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["secret"]["items"] == [{"key": "db_password", "path": "db_password"}]
    assert volumes["backups"]["persistentVolumeClaim"]["claimName"] == "shipshape-backups"
    [claim] = [c for c in by_kind("in-cluster-backups", "PersistentVolumeClaim")
               if c["metadata"]["name"] == "shipshape-backups"]  # fmt: skip
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    [configmap] = [c for c in by_kind("in-cluster-backups", "ConfigMap")
                   if c["metadata"]["name"] == "shipshape-backup"]  # fmt: skip
    assert configmap["data"]["backup.sh"].rstrip("\n") == script.read_text().rstrip("\n")
    [quiet] = [p for p in by_kind("in-cluster-backups", "NetworkPolicy")
               if p["metadata"]["name"] == "shipshape-no-ingress"]  # fmt: skip
    assert "backup" in quiet["spec"]["podSelector"]["matchExpressions"][0]["values"]

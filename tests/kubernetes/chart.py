"""Render the Helm chart offline (helm-python-sdk: Helm's own library, no helm binary)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "shipshape"
RELEASE = "shipshape"
NAMESPACE = "shipshape"

_TRIAL_SECRETS = {
    name: f"trial-{name}-0123456789abcdef0123456789abcdef"
    for name in (
        "secret_key",
        "jwt_secret_key",
        "db_password",
        "redis_password",
        "webhook_secret",
        "admin_password",
        "metrics_token",
    )
}

# A container as hardened as the chart's own: what an init container or a sidecar needs to
# pass the chart's checks (checkov) beside them.
HARDENED: dict[str, Any] = {
    "image": "busybox@sha256:" + "cd" * 32,
    "imagePullPolicy": "Always",
    "securityContext": {
        "runAsNonRoot": True, "runAsUser": 10001, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                  "limits": {"cpu": "100m", "memory": "32Mi"}},
    "livenessProbe": {"exec": {"command": ["true"]}},
    "readinessProbe": {"exec": {"command": ["true"]}},
}  # fmt: skip

# The default values and the shapes the chart's options give it.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "autoscaling-and-metrics": {
        "app": {"autoscaling": {"enabled": True}},
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        },
    },
    "chart-created-secret": {"secrets": {"create": True, "values": _TRIAL_SECRETS}},
    "ingress-off": {
        "ingress": {"enabled": False},
        "baseUrl": "https://api.internal.example.com",
        "networkPolicy": {"enabled": False},
        "trustedProxies": "10.42.0.0/16",
    },
    "shared-volume": {"persistence": {"accessModes": ["ReadWriteMany"]}},
    "in-cluster-backups": {"backup": {"enabled": True}},
    "every-pod-option": {
        "persistence": {"accessModes": ["ReadWriteMany"]},
        "app": {
            "podAntiAffinityPreset": "hard",
            "topologySpread": {"nodes": True, "zones": False},
            "priorityClassName": "shipshape-critical",
            "podLabels": {"team": "payments"},
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
            "extraVolumes": [{"name": "ca", "configMap": {"name": "company-ca"}}],
            "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/company-ca", "readOnly": True}],
            "initContainers": [HARDENED | {"name": "wait", "command": ["true"]}],
            "sidecars": [HARDENED | {"name": "proxy", "command": ["sleep", "infinity"]}],
            "probes": {
                "startup": {"periodSeconds": 3, "timeoutSeconds": 2, "failureThreshold": 40},
                "liveness": {"periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 4},
                "readiness": {"periodSeconds": 7, "timeoutSeconds": 4, "failureThreshold": 3},
            },
        },
        "worker": {
            "podAntiAffinityPreset": "",
            "topologySpread": {"nodes": False, "zones": True},
            "podLabels": {"team": "payments"},
            "autoscaling": {"enabled": True, "queue": {"enabled": True, "jobsPerReplica": 25}},
            "podDisruptionBudget": {"enabled": False},
            "probes": {
                "liveness": {"periodSeconds": 60, "timeoutSeconds": 25, "failureThreshold": 2},
                "readiness": {"periodSeconds": 45, "timeoutSeconds": 25, "failureThreshold": 2},
            },
        },
        "service": {
            "type": "LoadBalancer",
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"},
        },
    },
    "pinned-and-external": {
        "image": {"digest": "sha256:" + "ab" * 32},
        "persistence": {"existingClaim": "shared-files"},
        "migrations": {"enabled": False},
        "worker": {"enabled": False},
        "ingress": {"certManager": {"enabled": True}},
        "database": {"host": "shipshape.abc123.eu-west-1.rds.amazonaws.com"},
        "redis": {"host": "redis-master.cache.svc.cluster.local"},
        "networkPolicy": {"webhooks": {"enabled": False}},
    },
}


def render_raw(values: dict[str, Any]) -> dict[str, str]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return chart.render(
            copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True
        )


@functools.cache
def _render_set(name: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(render_raw(VALUE_SETS[name]).items()))


def manifests(name: str) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt left out) of one value set."""
    return {k: v for k, v in _render_set(name) if not k.endswith("NOTES.txt")}


def _parsed(texts: Iterable[str]) -> list[dict[str, Any]]:
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def objects(name: str) -> list[dict[str, Any]]:
    """Every Kubernetes object one value set renders."""
    return _parsed(manifests(name).values())


def render_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Kubernetes object `values` render (not cached: for values of one test)."""
    return _parsed(t for name, t in render_raw(values).items() if not name.endswith("NOTES.txt"))


def by_kind(name: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects(name) if o["kind"] == kind]


def pod_specs(name: str) -> dict[str, dict[str, Any]]:
    """Component (app, worker, migrate) -> pod spec."""
    specs = {}
    for o in objects(name):
        if o["kind"] in ("Deployment", "Job"):
            template = o["spec"]["template"]
            specs[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template["spec"]
    return specs

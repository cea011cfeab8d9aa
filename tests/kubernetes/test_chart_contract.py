"""The chart and the compose/Swarm files describe the same service: image, user, probes,
ports, settings and secrets agree, and secrets reach the pods only as files."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.config import Settings, is_secret
from tests.helpers import dockerfile
from tests.kubernetes.chart import CHART, ROOT, VALUE_SETS, by_kind, objects, pod_specs
from tools import chart_schema

STACK = yaml.safe_load((ROOT / "docker-stack.yml").read_text())["services"]
SECRETS = {name.upper() for name, f in Settings.model_fields.items() if is_secret(f)}
FIELDS = {name.upper() for name in Settings.model_fields}
PROD = dockerfile(ROOT / "docker" / "Dockerfile.prod")


def _instruction(name: str) -> str:
    return [i.value for i in PROD if i.keyword == name][-1]


def _containers(value_set: str) -> dict[str, dict[str, Any]]:
    return {c: spec["containers"][0] for c, spec in pod_specs(value_set).items()}


def test_chart_runs_the_image_and_version_the_project_builds() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    for container in _containers("default").values():
        assert container["image"].endswith(f"/shipshape:{project['version']}")
    for container in _containers("pinned-and-external").values():
        assert re.fullmatch(r".*/shipshape@sha256:[0-9a-f]{64}", container["image"])


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_runs_as_the_image_user_hardened(value_set: str) -> None:
    uid, gid = (int(part) for part in _instruction("USER").split(":"))
    for component, spec in pod_specs(value_set).items():
        assert spec["automountServiceAccountToken"] is False, component
        pod = spec["securityContext"]
        assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (uid, gid, gid)
        assert pod["runAsNonRoot"] is True
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, component
            assert security["allowPrivilegeEscalation"] is False, component
            assert security["capabilities"] == {"drop": ["ALL"]}, component
            assert security["runAsUser"] == uid
            assert set(container["resources"]) == {"requests", "limits"}, component


def test_roles_are_the_entrypoint_modes_the_stack_uses() -> None:
    containers = _containers("default")
    assert containers["app"]["args"] == STACK["app"]["command"] == ["prod"]
    assert containers["worker"]["args"] == ["worker"]
    assert STACK["worker"]["command"][-1] == "worker"
    assert containers["migrate"]["args"] == ["migrate"]
    for container in containers.values():
        assert "command" not in container, "the image's entrypoint picks the mode"


def test_ports_and_probes_match_the_image_and_the_stack() -> None:
    exposed = int(_instruction("EXPOSE"))
    assert STACK["nginx"]["environment"]["APP_UPSTREAM"] == f"app:{exposed}"
    app = _containers("default")["app"]
    assert app["ports"] == [{"name": "http", "containerPort": exposed, "protocol": "TCP"}]
    healthcheck = (ROOT / "scripts" / "healthcheck.py").read_text()
    live = re.search(r"/(\w+)\"\n", healthcheck)
    assert live is not None
    assert live.group(1) == "live"
    assert app["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
    assert app["startupProbe"]["httpGet"] == {"path": "/live", "port": "http"}
    assert app["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    worker = _containers("default")["worker"]
    stack_check = STACK["worker"]["healthcheck"]["test"]
    assert stack_check[0] == "CMD"
    assert worker["livenessProbe"]["exec"]["command"] == stack_check[1:]
    (service,) = by_kind("default", "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_updates_keep_capacity_and_stops_outlast_the_drain() -> None:
    (app,) = [d for d in by_kind("default", "Deployment") if d["metadata"]["name"] == "shipshape"]
    assert app["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = app["spec"]["template"]["spec"]
    pre_stop = int(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = Settings.model_fields["graceful_timeout"].default
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain
    shared = pod_specs("shared-volume")["app"]  # a ReadWriteMany volume: replicas spread
    assert shared["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    worker = pod_specs("default")["worker"]
    assert worker["terminationGracePeriodSeconds"] >= int(
        STACK["worker"]["stop_grace_period"].rstrip("s")
    )
    budgets = {b["metadata"]["name"]: b for b in by_kind("default", "PodDisruptionBudget")}
    assert budgets["shipshape"]["spec"]["selector"] == app["spec"]["selector"]


def test_every_setting_is_settable_once_and_nothing_else() -> None:
    schema = chart_schema.render(yaml.safe_load((CHART / "values.schema.json").read_text()))
    config = set(schema["properties"]["config"]["properties"])
    files = {
        f.upper() for f in schema["properties"]["secrets"]["properties"]["files"]["items"]["enum"]
    }
    chart_owned = set(chart_schema.CHART_SETTINGS)
    assert config | files | chart_owned | chart_schema.BUILD_STAMPED == FIELDS
    assert not config & (files | chart_owned | chart_schema.BUILD_STAMPED)
    assert files == SECRETS
    # What the chart sets itself is in the ConfigMap, so the app reads it.
    (configmap,) = by_kind("default", "ConfigMap")
    assert chart_owned <= set(configmap["data"])
    assert set(configmap["data"]) <= FIELDS
    # The stores by their service names in the cluster's DNS, never an address.
    data = configmap["data"]
    assert (data["DB_HOST"], data["REDIS_HOST"]) == ("postgres", "redis")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_secrets_reach_the_pods_only_as_files(value_set: str) -> None:
    for configmap in by_kind(value_set, "ConfigMap"):
        assert not set(configmap["data"]) & SECRETS
    for component, spec in pod_specs(value_set).items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounted = {
            f"{m['mountPath']}/{item['path']}"
            for c in spec["containers"]
            for m in c.get("volumeMounts", [])
            if "secret" in volumes[m["name"]]
            for item in volumes[m["name"]]["secret"]["items"]
        }
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            mounts = container.get("volumeMounts", [])
            secret_mounts = [m for m in mounts if "secret" in volumes[m["name"]]]
            # The chart's container: read-only, at the path the *_FILE settings name, and
            # only readable by the pod. A user's sidecar mounts what it was given.
            if container["name"] == component:
                assert [(m["mountPath"], m.get("readOnly")) for m in secret_mounts] == [
                    ("/run/secrets", True)
                ], component
            for m in secret_mounts:
                assert volumes[m["name"]]["secret"].get("defaultMode", 0o644) & 0o007 == 0
            assert all("secretRef" not in source for source in container.get("envFrom", []))
            for env in container.get("env", []):
                assert "valueFrom" not in env, f"{component}: {env['name']} from a secret ref"
                assert env["name"] not in SECRETS, f"{component}: {env['name']} as a variable"
                # A secret's file form (not a setting that names a file, as REDIS_CA_FILE).
                if env["name"].removesuffix("_FILE") in SECRETS:
                    assert env["value"] in mounted, f"{component}: {env['name']} names no file"
            if container["name"] == component:  # every file it mounts, a *_FILE names
                env = container.get("env", [])
                file_vars = {e["name"][: -len("_FILE")].lower() for e in env}
                names = {Path(p).name for p in mounted}
                assert names == file_vars & names


def test_each_role_gets_the_secrets_it_gets_in_the_swarm_stack() -> None:
    """With its metrics scraped, as the Swarm stack's are (docker-stack.monitoring.yml); not
    scraped, the worker goes without the metrics token."""
    for component, service in (("app", "app"), ("worker", "worker")):
        spec = pod_specs("autoscaling-and-metrics")[component]
        (volume,) = [v for v in spec["volumes"] if "secret" in v]
        keys = {item["key"] for item in volume["secret"]["items"]}
        assert keys == set(STACK[service]["secrets"]), component
        assert volume["secret"]["secretName"] == "shipshape"
    (volume,) = [v for v in pod_specs("default")["worker"]["volumes"] if "secret" in v]
    keys = {item["key"] for item in volume["secret"]["items"]}
    assert keys == set(STACK["worker"]["secrets"]) - {"metrics_token"}


def test_a_chart_created_secret_exists_before_the_migrations_job() -> None:
    (secret,) = by_kind("chart-created-secret", "Secret")
    (job,) = by_kind("chart-created-secret", "Job")
    assert set(secret["data"]) == {f.lower() for f in SECRETS} & set(secret["data"])
    secret_hook = secret["metadata"]["annotations"]
    job_hook = job["metadata"]["annotations"]
    assert secret_hook["helm.sh/hook"] == job_hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret_hook["helm.sh/hook-weight"]) < int(job_hook["helm.sh/hook-weight"])
    assert by_kind("default", "Secret") == []


def test_the_migrations_job_has_its_settings_inline() -> None:
    (job,) = by_kind("default", "Job")
    (configmap,) = by_kind("default", "ConfigMap")
    container = job["spec"]["template"]["spec"]["containers"][0]
    files = {f"{secret}_FILE" for secret in SECRETS}
    inline = {e["name"]: e["value"] for e in container["env"] if e["name"] not in files}
    assert inline == configmap["data"]
    assert "envFrom" not in container
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]
    assert configmap["data"]["RUN_MIGRATIONS"] == "false"
    (no_job_configmap,) = by_kind("pinned-and-external", "ConfigMap")
    assert no_job_configmap["data"]["RUN_MIGRATIONS"] == "true"


def test_network_policies_let_in_only_the_ingress_controller_and_out_only_what_is_needed() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind("default", "NetworkPolicy")}
    app = policies["shipshape-app"]
    (rule,) = app["ingress"]
    assert [set(peer) for peer in rule["from"]] == [{"namespaceSelector", "podSelector"}]
    assert policies["shipshape-no-ingress"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in policies["shipshape-no-ingress"]
    egress = policies["shipshape-egress"]["egress"]
    ports = [sorted(p["port"] for p in rule["ports"]) for rule in egress]
    assert ports == [[53, 53], [5432], [6379], [80, 443]]
    (public,) = egress[-1]["to"]
    assert public["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert {
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "127.0.0.0/8",
    } <= set(public["ipBlock"]["except"])
    metrics = {
        p["metadata"]["name"]: p["spec"]
        for p in by_kind("autoscaling-and-metrics", "NetworkPolicy")
    }
    assert len(metrics["shipshape-app"]["ingress"][0]["from"]) == 2
    # With a ServiceMonitor, Prometheus reaches the worker's metrics port and nothing else of it.
    (worker_rule,) = metrics["shipshape-worker-metrics"]["ingress"]
    assert worker_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert [set(peer) for peer in worker_rule["from"]] == [{"namespaceSelector", "podSelector"}]
    assert (
        metrics["shipshape-worker-metrics"]["podSelector"]["matchLabels"][
            "app.kubernetes.io/component"
        ]
        == "worker"
    )
    assert "shipshape-worker-metrics" not in policies
    no_webhooks = by_kind("pinned-and-external", "NetworkPolicy")
    assert all(len(p["spec"].get("egress", [])) in (0, 3) for p in no_webhooks)


def test_autoscaling_owns_the_replica_count() -> None:
    (hpa,) = by_kind("autoscaling-and-metrics", "HorizontalPodAutoscaler")
    app = [
        d
        for d in by_kind("autoscaling-and-metrics", "Deployment")
        if d["metadata"]["name"] == "shipshape"
    ]
    assert "replicas" not in app[0]["spec"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shipshape"
    assert all(o["kind"] != "HorizontalPodAutoscaler" for o in objects("default"))


def test_the_ingress_lets_through_the_largest_import() -> None:
    (ingress,) = [i for i in by_kind("default", "Ingress") if i["metadata"]["name"] == "shipshape"]
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()  # type: ignore[union-attr]
    limit = int(number) * 1024 ** " kmg".index(unit or " ")
    assert limit >= Settings.model_fields["import_max_bytes"].default
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]

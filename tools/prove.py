"""Prove the compliance matrix by mutation: break each item, and its tests must fail.

    python -m tools.prove              # `make prove`: rows proved by the fast and config tiers
    python -m tools.prove --all        # every row with all its tests, Docker tiers too
    python -m tools.prove --row TEXT   # only the rows whose `section / item` contains TEXT
    python -m tools.prove --all --docker-rows  # `make prove-all`: the edits only Docker proves
    python -m tools.prove ... --part 2/4       # every 4th of those edits, from the 2nd
    python -m tools.prove --write-status   # the proof table at the end of the matrix (`make docs`)

docs/mutations.yml declares, for rows of docs/conventions.md, one or more breaking edits:
a text in a named file replaced by another, which removes or breaks the item. For each
edit, in a scratch copy of the tree, this applies the edit, runs that row's named tests
(without --all, only those of the tiers that need no Docker engine) and requires them to
fail ("killed"). The same tests must pass on the copy without any edit first. An edit
marked `docker: true` is one only a Docker tier's test can see: `make prove-all` runs it,
with every test of its row, and `make prove` does not. It prints
a table (row, edit, tests, killed or survived, time) and exits 1 when an edit survived,
no longer applies, or names a row the matrix does not have.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from tools.matrix import MATRIX, ROOT, Row, matrix_rows

MUTATIONS = ROOT / "docs" / "mutations.yml"
# The tiers that need no Docker engine (compose needs only the CLI).
FAST_TIERS = ("unit", "fuzz", "compose", "kubernetes")


@dataclass(frozen=True)
class Edit:
    file: str
    find: str
    replace: str
    # Only a Docker tier's test can see this edit (a behaviour of a running container):
    # `make prove-all` runs it, `make prove` does not.
    docker: bool = False

    def describe(self) -> str:
        return f"{self.file}: {_short(self.find)} -> {_short(self.replace)}"


@dataclass(frozen=True)
class Mutation:
    row: Row
    edit: Edit
    tests: tuple[str, ...]


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str  # killed, survived, error
    seconds: float
    detail: str = ""


def _short(text: str, width: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _tier(test: str) -> str:
    return test.split("/")[1]


def load(path: Path = MUTATIONS) -> dict[str, list[Edit]]:
    """`section / item` -> its breaking edits."""
    entries: list[dict[str, Any]] = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    declared: dict[str, list[Edit]] = {}
    for entry in entries:
        edits = [
            Edit(e["file"], e["find"], e["replace"], bool(e.get("docker", False)))
            for e in entry["edits"]
        ]
        declared.setdefault(entry["row"], []).extend(edits)
    return declared


def plan(
    everything: bool, only: str | None, docker_rows: bool = False
) -> tuple[list[Mutation], list[str]]:
    """The mutations to run, and the problems found before running any. `docker_rows`:
    only the edits that no test of the tiers without Docker can see (the rows without such
    a test, and the edits marked `docker: true`)."""
    rows = {row.key: row for row in matrix_rows()}
    declared = load()
    problems = [f"{key}: no such row in docs/conventions.md" for key in declared if key not in rows]
    mutations: list[Mutation] = []
    for key, edits in declared.items():
        row = rows.get(key)
        if row is None or (only and only not in key):
            continue
        fast_row = any(_tier(t) in FAST_TIERS for t in row.tests)
        tests = tuple(t for t in row.tests if everything or _tier(t) in FAST_TIERS)
        for edit in edits:
            target = ROOT / edit.file
            count = target.read_text(encoding="utf-8").count(edit.find) if target.is_file() else 0
            if count != 1:
                problems.append(
                    f"{key}: {edit.describe()}: the text occurs {count} times, not once"
                )
                continue
            if edit.docker and not fast_row:
                problems.append(f"{key}: `docker: true` on a row only Docker proves anyway")
            if docker_rows and fast_row and not edit.docker:
                continue  # `make prove` runs it
            if not tests or (edit.docker and not everything):
                continue
            mutations.append(Mutation(row, edit, tests))
    return mutations, problems


def scratch_copy(destination: Path) -> Path:
    """The tree as it is now (tracked and new files, not ignored ones) in `destination`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # A repository of its own: the tests that ask git what it ignores run there too.
    subprocess.run(["git", "init", "--quiet", str(destination)], check=True)
    return destination


# Imported once by the prover: each fast run is a fork of it, so a run does not load them
# again (about 3 of a run's 4 seconds). The tree's own packages are not among them: each run
# imports app, tests and tools afresh from its scratch copy.
PRELOAD = (
    "fastapi", "fastapi.testclient", "pydantic", "pydantic_settings", "sqlalchemy",
    "sqlalchemy.ext.asyncio", "httpx", "typer", "alembic", "jwt", "pwdlib", "limits", "redis",
    "prometheus_client", "dockerfile_parse", "yaml", "pytest",
)  # fmt: skip
OWN_PACKAGES = {"app", "tests", "tools", "bench", "gunicorn_config"}
PYTEST_ARGS = ("-q", "-x", "-p", "no:cacheprovider")


class Run:
    """One pytest run of some tests in a tree, started now and waited for later."""

    def __init__(self, tree: Path, tests: tuple[str, ...], fork: bool = True) -> None:
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish()
        self.started = time.monotonic()
        fast = all(_tier(test) in FAST_TIERS for test in tests)
        # A fork only from the prover's own process: inside another pytest run, a fork
        # would carry that run's state into the new one.
        if fork and fast:
            self.pid = _fork_pytest(tree, tests, self.output.fileno())
            self.process: subprocess.Popen[bytes] | None = None
        else:
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            if fast:
                env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests], cwd=tree,
                stdout=self.output, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
            self.pid = self.process.pid

    def finish(self, status: int) -> tuple[int, str, float]:
        """(pytest's exit code, its output, seconds) once os.waitpid gave `status`."""
        self.output.seek(0)
        text = self.output.read().decode(errors="replace")
        self.output.close()
        if self.process is not None:
            self.process.returncode = os.waitstatus_to_exitcode(status)
        return os.waitstatus_to_exitcode(status), text, time.monotonic() - self.started

    def wait(self) -> tuple[int, str, float]:
        _, status = os.waitpid(self.pid, 0)
        return self.finish(status)


def _fork_pytest(tree: Path, tests: tuple[str, ...], output: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:  # the child: never returns
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.chdir(tree)
        for name in [n for n in sys.modules if n.split(".")[0] in OWN_PACKAGES]:
            del sys.modules[name]
        sys.path.insert(0, str(tree))
        sys.dont_write_bytecode = True
        # Plugins these tiers do not use (schemathesis, hypothesis): seconds per run.
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        import pytest

        code = int(pytest.main([*PYTEST_ARGS, *tests]))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    code, text, _ = Run(tree, tests).wait()
    return code, text


def skipped(text: str) -> bool:
    """Did pytest skip a test? Its summary line says so ("1 passed, 2 skipped in 3.1s")."""
    return re.search(r"^\S*=*\s*(\d+ \w+, )*\d+ skipped\b", text, re.MULTILINE) is not None


def _verdict(mutation: Mutation, code: int, text: str, seconds: float) -> Outcome:
    # 1: a test failed. Anything else (no test ran, a collection error) proves nothing; nor
    # does a pass with a test skipped (no Docker engine, a missing tool): that test never ran.
    if code == 1:
        return Outcome(mutation, "killed", seconds)
    if code == 0 and not skipped(text):
        return Outcome(mutation, "survived", seconds)
    return Outcome(mutation, "error", seconds, text[-3000:])


def _apply(mutation: Mutation, tree: Path) -> str:
    """Apply the edit in `tree`; the file's text before it."""
    target = tree / mutation.edit.file
    original = target.read_text(encoding="utf-8")
    target.write_text(original.replace(mutation.edit.find, mutation.edit.replace, 1))
    return original


def prove(mutation: Mutation, tree: Path, fork: bool = False) -> Outcome:
    original = _apply(mutation, tree)
    try:
        code, text, seconds = Run(tree, mutation.tests, fork).wait()
    finally:
        (tree / mutation.edit.file).write_text(original)
    return _verdict(mutation, code, text, seconds)


STATUS_START = "<!-- mutation-status:start (generated by `make docs`) -->"
STATUS_END = "<!-- mutation-status:end -->"


def status_table() -> str:
    """Per row of the matrix: how `make prove`/`prove-all` prove it, or why not yet."""
    declared = load()
    lines = ["| Row | Proved by mutation |", "|---|---|"]
    for row in matrix_rows():
        edits = declared.get(row.key, [])
        fast = [t for t in row.tests if _tier(t) in FAST_TIERS]
        weekly = len(edits) if not fast else sum(e.docker for e in edits)
        parts = []
        if len(edits) - weekly:
            parts.append(f"`make prove` ({len(edits) - weekly} every push)")
        if weekly:
            parts.append(f"`make prove-all` ({weekly} weekly)")
        proof = " + ".join(parts) if edits else "not yet: no breaking edit declared"
        lines.append(f"| {row.key} | {proof} |")
    return "\n".join([STATUS_START, *lines, STATUS_END])


def write_status(path: Path = MATRIX) -> None:
    text = path.read_text(encoding="utf-8")
    before, start, rest = text.partition(STATUS_START)
    _, end, after = rest.partition(STATUS_END)
    if not start or not end:
        raise SystemExit(f"{path} has no {STATUS_START} ... {STATUS_END} block")
    path.write_text(before + status_table() + after, encoding="utf-8")


def select_part(mutations: list[Mutation], number: int, parts: int) -> list[Mutation]:
    """Part `number` of `parts`: every edit once across the parts, the slow rows spread."""
    return mutations[number - 1 :: parts]


def _part(text: str) -> tuple[int, int]:
    number, _, parts = text.partition("/")
    if not (number.isdigit() and parts.isdigit() and 1 <= int(number) <= int(parts)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(number), int(parts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.prove", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--all", action="store_true", help="run the Docker tiers' tests too")
    parser.add_argument("--row", help="only rows whose `section / item` contains this text")
    parser.add_argument(
        "--docker-rows", action="store_true", help="only the edits `make prove` cannot run"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="in parallel")
    parser.add_argument(
        "--part", type=_part, help="K/N: only every Nth edit from the Kth (parallel CI jobs)"
    )
    parser.add_argument(
        "--write-status", action="store_true", help="rewrite the proof table of the matrix"
    )
    args = parser.parse_args(argv)
    if args.write_status:
        write_status()
        return 0

    mutations, problems = plan(args.all, args.row, args.docker_rows)
    if args.part:
        mutations = select_part(mutations, *args.part)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not mutations:
        print("no mutation to prove", file=sys.stderr)
        return 1
    jobs = 1 if args.all else max(1, min(args.jobs, len(mutations)))
    with tempfile.TemporaryDirectory(prefix="shipshape-prove-") as scratch:
        trees = [scratch_copy(Path(scratch) / f"tree{n}") for n in range(jobs)]
        baseline = tuple(sorted({t for m in mutations for t in m.tests}))
        print(f"{len(mutations)} edits of {len({m.row.key for m in mutations})} rows; "
              f"first the {len(baseline)} tests without any edit", flush=True)  # fmt: skip
        with warnings.catch_warnings():  # the tests' own filters apply in each run
            warnings.simplefilter("ignore")
            for module in PRELOAD:
                __import__(module)
        code, text = run_tests(trees[0], baseline)
        if code != 0 or skipped(text):
            print(text[-5000:], file=sys.stderr)
            print("the tests fail (or skip) without any edit: nothing is proved", file=sys.stderr)
            return 1
        outcomes = _run_all(mutations, trees)
    _print_table(outcomes)
    bad = [o for o in outcomes if o.verdict != "killed"]
    for outcome in bad:
        if outcome.detail:
            print(
                f"--- {outcome.mutation.row.key}: {outcome.verdict}\n{outcome.detail}",
                file=sys.stderr,
            )
    killed = len(outcomes) - len(bad)
    print(f"\n{killed} of {len(outcomes)} edits killed, {len(bad)} not; "
          f"{len(problems)} declaration problems")  # fmt: skip
    return 1 if bad or problems else 0


def _run_all(mutations: list[Mutation], trees: list[Path], fork: bool = True) -> list[Outcome]:
    """Each mutation in a free tree, as many at once as there are trees (one thread: the
    fast runs are forks of this process). An edit that several rows declare with the same
    tests runs once, and each of those rows gets its outcome."""
    same: dict[tuple[str, str, str, tuple[str, ...]], Mutation] = {}
    for mutation in mutations:
        same.setdefault(_identity(mutation), mutation)
    ran = {_identity(o.mutation): o for o in _run_each(list(same.values()), trees, fork)}
    return [replace(ran[_identity(m)], mutation=m) for m in mutations]


def _identity(mutation: Mutation) -> tuple[str, str, str, tuple[str, ...]]:
    edit = mutation.edit
    return edit.file, edit.find, edit.replace, mutation.tests


def _run_each(mutations: list[Mutation], trees: list[Path], fork: bool) -> list[Outcome]:
    pending = list(reversed(mutations))
    free = list(trees)
    running: dict[int, tuple[Mutation, Path, str, Run]] = {}
    outcomes: list[Outcome] = []
    while pending or running:
        while pending and free:
            mutation, tree = pending.pop(), free.pop()
            original = _apply(mutation, tree)
            run = Run(tree, mutation.tests, fork)
            running[run.pid] = (mutation, tree, original, run)
        pid, status = os.wait()
        if pid not in running:
            continue
        mutation, tree, original, run = running.pop(pid)
        (tree / mutation.edit.file).write_text(original)
        free.append(tree)
        outcome = _verdict(mutation, *run.finish(status))
        outcomes.append(outcome)
        print(f"  {outcome.verdict:8} {outcome.seconds:5.1f}s  {mutation.row.key}", flush=True)
    return outcomes  # in the order they ended: _run_all puts them in the declared order


def _print_table(outcomes: list[Outcome]) -> None:
    print("\n| Row | Edit | Tests | Result | Time |\n|---|---|---|---|---|")
    for o in outcomes:
        tests = ", ".join(t.split("::")[-1] for t in o.mutation.tests)
        print(f"| {o.mutation.row.key} | {o.mutation.edit.describe()} | {_short(tests, 60)} "
              f"| {o.verdict} | {o.seconds:.1f}s |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

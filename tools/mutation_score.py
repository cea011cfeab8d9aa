"""The verdict of `make mutate`: the mutation score, and every surviving mutant accounted for.

    mutmut results --all true | python -m tools.mutation_score

reads mutmut's list of mutants and their status ("    app.core.text.x_is_clean__mutmut_3:
killed") and docs/mutants.md, where each survivor that no test can kill is listed with the
reason it behaves as the original (`app.core.text.x_is_clean__mutmut_3`: reason). It prints
the score per file and in all, and exits 1 when the score is below MIN_SCORE, when a
survivor is not listed, or when a listed one is no longer a survivor (killed since, or
renamed by a change of the code: the list is kept true).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "docs" / "mutants.md"
MIN_SCORE = 90.0
# mutmut's statuses: a test failed (killed) or ran out of time (timeout) kills a mutant.
KILLED = {"killed", "timeout"}
_LINE = re.compile(r"^\s*([\w.]+__mutmut_\d+): ([\w ]+?)\s*$")
_NAME = re.compile(r"`([\w.]+__mutmut_\d+)`")


def parse(lines: Iterable[str]) -> dict[str, str]:
    """Mutant name -> status."""
    found: dict[str, str] = {}
    for line in lines:
        match = _LINE.match(line)
        if match:
            found[match[1]] = match[2]
    return found


def listed(text: str) -> set[str]:
    """The mutants docs/mutants.md gives a reason for: each item of its list names one or
    more (`name`, `name`) before a colon, and the reason after it."""
    names: set[str] = set()
    section = text.split("\n## The list\n", 1)[-1]
    for item in re.split(r"^- ", section, flags=re.MULTILINE)[1:]:
        found = re.match(r"(.*?`):\s+\S", item, flags=re.DOTALL)
        if found:
            names.update(_NAME.findall(found[1]))
    return names


def module_of(name: str) -> str:
    """`app.core.text` of `app.core.text.x_is_clean__mutmut_3` (functions are named x_...,
    methods x\u01c1Class\u01c1method)."""
    parts = name.split(".")
    while parts and (parts[-1].startswith(("x_", "x\u01c1")) or "__mutmut_" in parts[-1]):
        parts.pop()
    return ".".join(parts)


def verdict(statuses: dict[str, str], equivalent: set[str]) -> tuple[list[str], list[str]]:
    """(report lines, problems)."""
    report, problems = [], []
    per_module: dict[str, Counter[str]] = {}
    for name, status in statuses.items():
        per_module.setdefault(module_of(name), Counter())[status] += 1
    for module, counts in sorted(per_module.items()):
        total = sum(counts.values())
        killed = sum(counts[s] for s in KILLED)
        report.append(f"{module}: {killed}/{total} killed ({100 * killed / total:.1f} %)")
    total = len(statuses)
    killed = sum(1 for status in statuses.values() if status in KILLED)
    score = 100 * killed / total if total else 0.0
    report.append(f"mutation score: {killed}/{total} = {score:.1f} % (at least {MIN_SCORE:g} %)")
    if not total:
        problems.append("no mutants: run `mutmut run` first")
    elif score < MIN_SCORE:
        problems.append(f"mutation score {score:.1f} % is below {MIN_SCORE:g} %")
    survivors = {name for name, status in statuses.items() if status not in KILLED}
    for name in sorted(survivors - equivalent):
        problems.append(f"{name}: {statuses[name]}, and not listed in docs/mutants.md")
    for name in sorted(equivalent - survivors):
        state = statuses.get(name, "no such mutant")
        problems.append(f"{name}: listed in docs/mutants.md, but {state}")
    return report, problems


def main(argv: list[str]) -> int:
    source = Path(argv[0]).read_text().splitlines() if argv else sys.stdin.read().splitlines()
    report, problems = verdict(parse(source), listed(EQUIVALENT.read_text(encoding="utf-8")))
    print("\n".join(report))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

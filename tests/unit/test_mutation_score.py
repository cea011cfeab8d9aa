"""`make mutate`'s verdict: the score, and every survivor accounted for in docs/mutants.md."""

from __future__ import annotations

from tools import mutation_score

RESULTS = """
    app.core.text.x_is_clean__mutmut_1: killed
    app.core.text.x_is_clean__mutmut_2: survived
    app.services.csvfiles.x\u01c1ItemCsvReader\u01c1_header__mutmut_1: timeout
    app.services.csvfiles.x_neutralise__mutmut_1: no tests
"""


def test_results_are_read_per_mutant_and_grouped_per_module() -> None:
    statuses = mutation_score.parse(RESULTS.splitlines())
    assert statuses == {
        "app.core.text.x_is_clean__mutmut_1": "killed",
        "app.core.text.x_is_clean__mutmut_2": "survived",
        "app.services.csvfiles.x\u01c1ItemCsvReader\u01c1_header__mutmut_1": "timeout",
        "app.services.csvfiles.x_neutralise__mutmut_1": "no tests",
    }
    assert mutation_score.module_of("app.services.csvfiles.x_neutralise__mutmut_1") == (
        "app.services.csvfiles"
    )
    report, _ = mutation_score.verdict(statuses, set())
    assert report == [
        "app.core.text: 1/2 killed (50.0 %)",
        "app.services.csvfiles: 1/2 killed (50.0 %)",
        "mutation score: 2/4 = 50.0 % (at least 90 %)",
    ]


def test_a_low_score_and_every_unlisted_survivor_fail() -> None:
    statuses = mutation_score.parse(RESULTS.splitlines())
    _, problems = mutation_score.verdict(statuses, {"app.core.text.x_is_clean__mutmut_1"})
    assert problems == [
        "mutation score 50.0 % is below 90 %",
        "app.core.text.x_is_clean__mutmut_2: survived, and not listed in docs/mutants.md",
        "app.services.csvfiles.x_neutralise__mutmut_1: no tests, and not listed in docs/mutants.md",
        "app.core.text.x_is_clean__mutmut_1: listed in docs/mutants.md, but killed",
    ]


def test_a_high_score_with_its_survivors_listed_passes() -> None:
    statuses = {f"app.core.text.x_f__mutmut_{n}": "killed" for n in range(1, 10)}
    statuses["app.core.text.x_f__mutmut_10"] = "survived"
    listed = mutation_score.listed(
        "# Equivalent mutants\n\n`app.core.text.x_f__mutmut_1` is an example.\n\n## The list\n\n"
        "- `app.core.text.x_f__mutmut_10`: the same regular expression.\n"
        "- `app.core.text.x_g__mutmut_1`, `app.core.text.x_g\u01c1h__mutmut_2`: two at once,\n"
        "  on two lines.\n"
        "- `app.core.text.x_h__mutmut_3`:\n"
    )  # the last one gives no reason: not listed
    assert listed == {
        "app.core.text.x_f__mutmut_10", "app.core.text.x_g__mutmut_1",
        "app.core.text.x_g\u01c1h__mutmut_2",
    }  # fmt: skip
    report, problems = mutation_score.verdict(statuses, {"app.core.text.x_f__mutmut_10"})
    assert problems == []
    assert report[-1] == "mutation score: 9/10 = 90.0 % (at least 90 %)"
    assert mutation_score.verdict({}, set())[1] == ["no mutants: run `mutmut run` first"]


def test_the_list_of_equivalent_mutants_gives_a_reason_for_each() -> None:
    text = mutation_score.EQUIVALENT.read_text(encoding="utf-8")
    section = text.split("\n## The list\n", 1)[1]
    named = set(mutation_score._NAME.findall(section))
    assert named == mutation_score.listed(text)  # every name in an item with its reason
    assert len(named) >= 1

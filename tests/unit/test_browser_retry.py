"""The browser journeys' page loads survive a change of the machine's networks (Docker
creating or removing one for other tests meanwhile), and only that."""

from __future__ import annotations

import pytest

from tests.browser_journey import NETWORK_CHANGED, retried_on_network_change


def test_a_load_dropped_for_a_network_change_is_tried_once_more() -> None:
    loads: list[str] = []

    def goto(url: str, **options: object) -> str:
        loads.append(url)
        if len(loads) == 1:
            raise RuntimeError(f"Page.goto: {NETWORK_CHANGED} at https://shipshape.test{url}")
        return "loaded"

    assert retried_on_network_change(goto)("/ui/items") == "loaded"
    assert loads == ["/ui/items", "/ui/items"]


@pytest.mark.parametrize("failures", [1, 2])
def test_any_other_failure_and_a_second_drop_are_raised(failures: int) -> None:
    loads: list[str] = []
    error = "net::ERR_CONNECTION_REFUSED" if failures == 1 else NETWORK_CHANGED

    def goto(url: str, **options: object) -> str:
        loads.append(url)
        raise RuntimeError(error)

    with pytest.raises(RuntimeError, match=error):
        retried_on_network_change(goto)("/ui/jobs")
    assert loads == ["/ui/jobs"] * failures

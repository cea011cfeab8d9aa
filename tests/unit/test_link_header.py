"""The listings' Link header: the request's own query with the cursor replaced, exactly as
Starlette's `URL.include_query_params` writes it."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from app.api.pages import link_header

QUERIES = [
    b"", b"limit=3", b"limit=3&cursor=abc", b"cursor=x&limit=3&q=a+b%26c",
    b"q=%C3%A9t%C3%A9&limit=2", b"limit=3&limit=4", b"a=1&cursor=2&cursor=3&b=%2F",
    b"q=&limit=5", b"q=%20x%20&limit=5", b"x=%3D%26%3F%23",
]  # fmt: skip


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize(("following", "preceding"), [("N1", "P-2"), ("N_3", None), (None, "P")])
def test_each_link_is_the_requests_url_with_the_cursor_replaced(
    query: bytes, following: str | None, preceding: str | None
) -> None:
    scope = {"type": "http", "path": "/api/v1/items", "query_string": query, "headers": [],
             "root_path": "", "scheme": "http", "server": ("testserver", 80)}  # fmt: skip
    request = Request(scope)
    expected = [
        f'<{request.url.path}?{request.url.include_query_params(cursor=cursor).query}>; rel="{rel}"'
        for rel, cursor in (("next", following), ("prev", preceding))
        if cursor
    ]
    assert link_header(request, following, preceding) == {"Link": ", ".join(expected)}


def test_a_page_with_no_neighbour_has_no_link() -> None:
    scope = {"type": "http", "path": "/api/v1/items", "query_string": b"limit=3", "headers": []}
    assert link_header(Request(scope), None, None) == {}

"""What every listing route adds to its page: the `Link` header (RFC 8288) with the page's
`next` and `prev` cursors, as links relative to the request's own URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from app.api.errors import error_responses

# A listing's answers in the API document: its page, with the Link header; 400 for a cursor
# that is not this listing's.
LISTING_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "Link": {
                "description": 'The `next` and `prev` pages (RFC 8288): `<URL>; rel="next"`.',
                "schema": {"type": "string"},
            }
        }
    },
    **error_responses(400),
}


def link_header(request: Request, following: str | None, preceding: str | None) -> dict[str, str]:
    if not following and not preceding:
        return {}
    # The request's own query with its cursor replaced, as URL.include_query_params makes it
    # (that parsed the URL and its query again for each link: 20 µs a page). The rest of the
    # query is encoded once; a cursor is URL-safe base64, which urlencode leaves as it is.
    kept = [(key, value) for key, value in request.query_params.multi_items() if key != "cursor"]
    start = f"{request.url.path}?{urlencode(kept)}&" if kept else f"{request.url.path}?"
    links = [
        f'<{start}cursor={cursor}>; rel="{rel}"'
        for rel, cursor in (("next", following), ("prev", preceding))
        if cursor
    ]
    return {"Link": ", ".join(links)}

"""Domain errors: what the domain refuses, and why, in words safe to show anyone.

They carry no transport: the API (app/api/errors.py) gives each kind its HTTP status and
headers, and the web UI (app/web/errors.py, app/web/pages.py) its page. `retry_after` is
the domain's own "try again in N seconds", for the kinds that have one.
"""


class ServiceError(Exception):
    """The request cannot be done as asked (its input, as a whole, is not valid)."""

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class Unauthorized(ServiceError):
    """No valid credentials came with the request."""


class NotFound(ServiceError):
    """What the request names does not exist, or is not the caller's to know of."""


class Forbidden(ServiceError):
    """The caller is known, and not allowed to do this."""


class Conflict(ServiceError):
    """The request conflicts with the current state of what it names."""


class TooLarge(ServiceError):
    """A body or file above its limit."""


class TooManyRequests(ServiceError):
    """Throttled: the caller may try again after `retry_after` seconds."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)


# Seconds a client is asked to wait when a dependency is down.
UNAVAILABLE_RETRY_SECONDS = 5


class Unavailable(ServiceError):
    """A dependency (database, job queue) cannot be reached; nothing was done."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after=UNAVAILABLE_RETRY_SECONDS)


class Busy(ServiceError):
    """A bounded resource is in use: try again after `retry_after` seconds."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)

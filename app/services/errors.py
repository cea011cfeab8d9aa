"""Domain errors. The API layer maps each to one HTTP status (app/api/errors.py)."""


class ServiceError(Exception):
    status_code = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class Unauthorized(ServiceError):
    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ServiceError):
    status_code = 404


class Forbidden(ServiceError):
    status_code = 403


class Conflict(ServiceError):
    status_code = 409


class TooLarge(ServiceError):
    status_code = 413


class TooManyRequests(ServiceError):
    """Throttled: `headers` carry Retry-After."""

    status_code = 429


# Seconds a client is asked to wait (`Retry-After`) when a dependency is down.
UNAVAILABLE_RETRY_AFTER = "5"


class Unavailable(ServiceError):
    """A dependency (database, job queue) cannot be reached; nothing was done."""

    status_code = 503

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": UNAVAILABLE_RETRY_AFTER})


class Busy(ServiceError):
    """A bounded resource is in use; try again shortly (`headers` carry Retry-After)."""

    status_code = 503

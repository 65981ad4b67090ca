"""Typed errors shared by every layer.

Each error carries the HTTP status it should become; exactly one place
(``origin.http.middleware``) turns them into responses, and the licence
module's own app does the same for its routes.  Messages are short, safe
to show to a client, and never contain key material or tokens.
"""

from __future__ import annotations


class OriginError(Exception):
    """Base of every error the origin raises on purpose."""

    status: int = 500
    reason: str = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.reason
        super().__init__(self.detail)

    @property
    def headers(self) -> dict[str, str] | None:
        """Extra response headers the status needs (e.g. ``Content-Range`` on 416)."""
        return None


class BadRequest(OriginError):
    status = 400
    reason = "bad request"


class NotFound(OriginError):
    status = 404
    reason = "not found"


class Unauthorized(OriginError):
    """No credentials, or credentials that do not verify (RFC 9110 §15.5.2)."""

    status = 401
    reason = "unauthorized"

    def __init__(self, detail: str | None = None, *, realm: str = "origin") -> None:
        super().__init__(detail)
        self.realm = realm

    @property
    def headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": f'Bearer realm="{self.realm}"'}


class Forbidden(OriginError):
    status = 403
    reason = "forbidden"


class RangeNotSatisfiable(OriginError):
    status = 416
    reason = "range not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Content-Range": f"bytes */{self.size}"}


class MalformedMedia(OriginError):
    """The source media or manifest cannot be processed (502: the origin's upstream is bad)."""

    status = 502
    reason = "malformed media"


class DependencyUnavailable(OriginError):
    """A dependency (the licence module) cannot be reached or answered badly."""

    status = 503
    reason = "dependency unavailable"


class RequestTimeout(OriginError):
    """The client did not send its request (body) in time (RFC 9110 §15.5.9)."""

    status = 408
    reason = "request timeout"


class PayloadTooLarge(OriginError):
    """A request body over the route's cap (RFC 9110 §15.5.14)."""

    status = 413
    reason = "request body too large"


class TooManyRequests(OriginError):
    """A client over its request rate (RFC 6585 §4); ``retry_after`` whole seconds."""

    status = 429
    reason = "too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)}

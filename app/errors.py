"""Failures a caller can act on, each with its HTTP status and error code.

Services raise these; the API's error middleware turns them into the error
body of the contract. Library errors (ARI, database) are translated into
these at the service boundary, never passed through.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidRequest(AppError):
    status = 400
    code = "invalid_request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"

    def __init__(self, kind: str, resource_id: str):
        super().__init__(
            f"{kind} {resource_id} does not exist",
            details={"resource": kind, "id": resource_id},
        )


class Conflict(AppError):
    """A state conflict; ``code`` names the state so clients can branch on it."""

    status = 409

    def __init__(
        self, code: str, message: str, *, details: dict[str, Any] | None = None
    ):
        super().__init__(message, details=details)
        self.code = code


class Unprocessable(AppError):
    """The body parses but breaks a rule."""

    status = 422

    def __init__(
        self, code: str, message: str, *, details: dict[str, Any] | None = None
    ):
        super().__init__(message, details=details)
        self.code = code


class TooManyRequests(AppError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class MixerUnavailable(AppError):
    status = 503
    code = "mixer_unavailable"

"""Errors raised when talking to Asterisk over ARI (REST) and AMI.

Callers catch the type that says what they can do about it: a missing channel is
``AriNotFound`` (already hung up: carry on), a busy resource is ``AriConflict``,
an Asterisk that cannot be reached is ``AriUnavailable`` (retry later or report
the mixer down). ``error_for_status`` is the one table from HTTP status to type.

    >>> error_for_status(404, "Channel not found", "/channels/17.3")
    AriNotFound(status=404, path='/channels/17.3', message='Channel not found')
"""

from __future__ import annotations


class AriError(Exception):
    """An ARI request failed; ``status`` is None when no HTTP answer came back."""

    def __init__(self, status: int | None, message: str, path: str) -> None:
        self.status = status
        self.message = message
        self.path = path
        super().__init__(self._describe())

    def _describe(self) -> str:
        code = "no answer" if self.status is None else str(self.status)
        return f"ARI {self.path}: {code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, path={self.path!r}, "
            f"message={self.message!r})"
        )


class AriBadRequest(AriError):
    """400: a parameter or body was wrong (a bug on our side, or a bad id)."""


class AriNotFound(AriError):
    """404: the channel, bridge, variable or config object does not exist."""


class AriConflict(AriError):
    """409: the resource exists but is in the wrong state (e.g. channel not in
    Stasis, bridge id already used with another type)."""


class AriUnprocessable(AriError):
    """422: a referenced resource is missing (e.g. endpoint for originate)."""


class AriUnavailable(AriError):
    """Asterisk did not answer usefully: refused, reset, timed out, 5xx, or the
    client was not started. Safe to retry later."""


class AmiError(Exception):
    """An AMI action was refused (bad login, action error)."""


class AmiUnavailable(AmiError):
    """The AMI port could not be reached, or the connection broke or timed out."""


# Map to the most specific type; anything else (401, 403, 501, odd codes) stays
# a plain AriError because no caller can recover from it at run time.
_STATUS_TYPES: dict[int, type[AriError]] = {
    400: AriBadRequest,
    404: AriNotFound,
    409: AriConflict,
    422: AriUnprocessable,
}

_HINTS: dict[int, str] = {
    401: "check the ARI username and password (ari.conf) given to SOMVAD",
    403: "the ARI user is read-only or the object is static configuration",
    501: "this Asterisk lacks the module or feature for this request",
}


def error_for_status(status: int, message: str, path: str) -> AriError:
    """Return the typed error for an HTTP error ``status`` from ARI."""
    error_type = _STATUS_TYPES.get(status)
    if error_type is None:
        # 501 means "not implemented": retrying will not help, so not Unavailable.
        error_type = (
            AriUnavailable if 500 <= status <= 599 and status != 501 else AriError
        )

    hint = _HINTS.get(status)
    if hint and hint not in message:
        message = f"{message} ({hint})" if message else hint
    return error_type(status, message, path)

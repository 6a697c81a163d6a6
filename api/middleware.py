"""Trace ids, the error body, and access logging for every response."""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from app import logs
from app.errors import AppError, TooManyRequests

logger = logging.getLogger(__name__)

TRACE_KEY = web.RequestKey("trace_id", str)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_compact = functools.partial(json.dumps, separators=(",", ":"))
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _trace_id(request: web.Request) -> str:
    match = _TRACEPARENT.match(request.headers.get("traceparent", "").lower())
    if match and match.group(1) != "0" * 32:
        return match.group(1)
    return secrets.token_hex(16)


def error_response(
    status: int, code: str, message: str, trace_id: str, details: dict | None = None
) -> web.Response:
    response = web.json_response(
        dumps=_compact,
        data={
            "error": code,
            "message": message,
            "details": details or {},
            "trace_id": trace_id,
        },
        status=status,
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="somvad"'
    return response


@web.middleware
async def trace_and_errors(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    trace_id = _trace_id(request)
    request[TRACE_KEY] = trace_id
    logs.bind(trace_id=trace_id, tenant_id=None, conference_id=None, user_id=None)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except AppError as exc:
        response = error_response(
            exc.status, exc.code, exc.message, trace_id, exc.details
        )
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        response = error_response(
            413,
            "payload_too_large",
            f"the body is larger than the limit of {limit} bytes",
            trace_id,
            {"max_bytes": limit},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(
            exc.status,
            _HTTP_CODES.get(exc.status, "http_error"),
            exc.reason,
            trace_id,
        )
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(
            500,
            "internal_error",
            "the server failed; quote the trace_id when reporting it",
            trace_id,
        )
    response.headers["X-Trace-Id"] = trace_id
    logger.debug(
        "%s %s -> %s in %.1f ms",
        request.method,
        request.path,
        response.status,
        (time.perf_counter() - started) * 1000,
    )
    return response

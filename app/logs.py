"""Structured JSON logs that carry the ids an operator follows a call by.

The ids live in context variables, so a handler sets them once (trace id per
request, tenant and conference once known) and every log line below it in the
same task carries them without passing them around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_FIELDS = ("trace_id", "tenant_id", "conference_id", "channel_id", "user_id")
_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(name, default=None) for name in _FIELDS
}


def bind(**values: str | None) -> None:
    """Attach ids to every later log line of the current task."""
    for name, value in values.items():
        _context[name].set(value)


@contextmanager
def bound(**values: str | None) -> Iterator[None]:
    tokens = [(name, _context[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for name, token in reversed(tokens):
            _context[name].reset(token)


def current(name: str) -> str | None:
    return _context[name].get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = _context[name].get()
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats what the trace middleware already logs.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Alembic narrates every plugin it loads at INFO; only the outcome matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)

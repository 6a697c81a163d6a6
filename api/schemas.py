"""Request and response models shared by every domain of the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error, not a no-op."""

    # strict: "true" or 1 is not a boolean, 5 is not a name.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


class ErrorBody(BaseModel):
    error: str = Field(description="snake_case error code a client can branch on")
    message: str = Field(description="what went wrong and what to do next")
    details: dict[str, Any] = Field(default_factory=dict)
    trace_id: str


class PageQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)


# Printable text only: names end up in logs, caller ids and SIP headers.
# C0 and C1 controls, zero-width and bidirectional marks, line and paragraph
# separators: all invisible, all able to disguise or break what they land in.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]*$"
Name = Field(min_length=1, max_length=120, pattern=PRINTABLE)
DisplayName = Field(default="", max_length=120, pattern=PRINTABLE)
Username = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
Password = Field(min_length=8, max_length=256)

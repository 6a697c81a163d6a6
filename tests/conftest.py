"""Shared fixtures: a platform over HTTP, with or without the real Asterisk."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.api import Api, make_settings, running
from tests.support.databases import database_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """A platform with its own database (each backend) and no mixer."""
    async with database_url(request.param, tmp_path) as url:
        settings = dataclasses.replace(make_settings(tmp_path), database_url=url)
        async with running(settings) as handle:
            yield handle

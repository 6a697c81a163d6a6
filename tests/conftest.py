"""Shared fixtures: a platform over HTTP, with or without the real Asterisk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.api import Api, make_settings, running


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """A platform with its own database and no mixer."""
    async with running(make_settings(tmp_path)) as handle:
        yield handle

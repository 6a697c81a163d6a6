"""The Asterisk instance that the test suite runs, and helpers around it.

The "test" instance uses its own ports so that it never collides with the
"default" instance of `make run`; both run from the same cached Debian root.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from app.asterisk_host import AsteriskInstance, log_path


def asterisk_test_instance() -> AsteriskInstance:
    """The "test" instance, with cache and state folders taken from the env."""
    instance = AsteriskInstance(
        name="test",
        http_port=8089,
        sip_port=5070,
        rtp_start=20000,
        rtp_end=20999,
        ami_port=5039,
    )
    if os.environ.get("SOMVAD_ASTERISK_CACHE"):
        instance = replace(
            instance, cache_dir=Path(os.environ["SOMVAD_ASTERISK_CACHE"])
        )
    if os.environ.get("SOMVAD_ASTERISK_STATE"):
        instance = replace(
            instance, state_dir=Path(os.environ["SOMVAD_ASTERISK_STATE"])
        )
    return instance


def log_tail(instance: AsteriskInstance, lines: int = 40) -> str:
    """The last lines of the instance's full log, for assertion messages."""
    try:
        text = log_path(instance).read_text(errors="replace")
    except OSError as exc:
        return f"(no Asterisk log: {exc})"
    return "\n--- Asterisk full log:\n" + "\n".join(text.splitlines()[-lines:])

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


def main() -> int:
    """`python -m tests.support.asterisk up|down|status` for the test instance.

    `make test` runs `up` before pytest, so that building the Debian root on
    a fresh machine (about a minute) is not charged to the first test's
    timeout.
    """
    import sys

    from app.asterisk_host import AsteriskError, down, status, up

    action = sys.argv[1] if len(sys.argv) > 1 else "status"
    instance = asterisk_test_instance()
    try:
        if action == "up":
            up(instance)
        elif action == "down":
            down(instance)
        else:
            for key, value in status(instance).items():
                print(f"{key}: {value}")
    except AsteriskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

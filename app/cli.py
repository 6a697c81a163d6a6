"""The ``somvad`` command: run the platform, manage Asterisk, print the contract.

somvad run                 provision Asterisk, migrate, serve the API
somvad asterisk up|down|status
somvad openapi             print /openapi.json without starting anything
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import socket
import sys

from aiohttp import web

from app import logs
from app.config import DEFAULT_ADMIN_PASSWORD, ConfigError, Settings

logger = logging.getLogger(__name__)


def _with_asterisk(settings: Settings) -> Settings:
    """Start (or find) the local Asterisk and take its ARI/AMI credentials."""
    from app import asterisk_host

    instance = asterisk_host.AsteriskInstance.from_env(settings.asterisk_instance)
    credentials = asterisk_host.up(instance)
    return dataclasses.replace(
        settings,
        ari_url=credentials.ari_url,
        ari_username=credentials.ari_username,
        ari_password=credentials.ari_password,
        ami_host=credentials.ami_host,
        ami_port=credentials.ami_port,
        ami_username=credentials.ami_username,
        ami_password=credentials.ami_password,
    )


async def _serve(settings: Settings, listener: socket.socket) -> None:
    from api.app import create_app
    from app.platform import Platform

    platform = Platform(settings)
    try:
        await platform.start()
    except BaseException:
        await platform.stop()
        raise
    runner = web.AppRunner(create_app(platform), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, listener)
    await site.start()
    api = f"http://{settings.host}:{settings.port}"
    print(f"SOMVAD API on {api} (OpenAPI at {api}/openapi.json, docs at {api}/docs)")
    print(f"SIP phones register at {settings.registrar} over UDP")
    if platform.created_admin:
        shown = (
            settings.admin_password
            if settings.admin_password == DEFAULT_ADMIN_PASSWORD
            else "<SOMVAD_ADMIN_PASSWORD>"
        )
        print(f"Platform admin created: {settings.admin_username} / {shown}")
    if settings.demo:
        await _demo(platform, api)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("stopping")
    await runner.cleanup()
    await platform.stop()


async def _demo(platform: object, api: str) -> None:
    from app.platform import Platform
    from app.services import demo

    assert isinstance(platform, Platform)
    settings = platform.settings
    seeded = await demo.seed(
        platform.tenants, platform.users, platform.sip, platform.conferences
    )
    if seeded is None:
        path = settings.data_dir / "demo.txt"
        if path.exists():
            print(f"Demo tenant: see {path} for its logins and how to join")
        return
    text = demo.instructions(
        seeded, api, settings.registrar, settings.effective_sip_domain
    )
    demo.save(text, settings.data_dir)
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="somvad")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="provision Asterisk, migrate, serve the API")
    asterisk = commands.add_parser("asterisk", help="manage the local Asterisk")
    asterisk.add_argument("args", nargs=argparse.REMAINDER)
    commands.add_parser("openapi", help="print the OpenAPI document")
    args = parser.parse_args(argv)

    if args.command == "asterisk":
        from app import asterisk_host

        return asterisk_host.cli(args.args)
    if args.command == "openapi":
        from api.app import operations
        from api.openapi import build
        from app.platform import package_version

        print(json.dumps(build(operations(), package_version()), indent=2))
        return 0
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    from app.platform import StartupError

    if settings.manage_asterisk and not settings.ari_url:
        from app.asterisk_host import AsteriskError

        try:
            settings = _with_asterisk(settings)
        except AsteriskError as exc:
            print(f"Asterisk could not start: {exc}", file=sys.stderr)
            return 1
    try:
        # Bound before anything else starts: a second `somvad run` must fail
        # here, not after it has connected to Asterisk.
        listener = socket.create_server((settings.host, settings.port))
    except OSError as exc:
        print(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
            "is another somvad running? (SOMVAD_PORT picks another port)",
            file=sys.stderr,
        )
        return 1
    try:
        asyncio.run(_serve(settings, listener))
    except StartupError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo tenant a newcomer gets on first start (unless SOMVAD_DEMO=0).

Two traders, a SIP credential each and a conference, so that two softphones
can register and be joined within minutes. The generated secrets are printed
once and kept in ``<data_dir>/demo.txt`` (mode 0600), never logged.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from app.security import Principal
from app.services.conferences import ConferenceService
from app.services.sip import SipService
from app.services.tenants import TenantService
from app.services.users import UserService

DEMO_TENANT = "demo"


@dataclass(frozen=True)
class DemoPhone:
    trader: str
    trader_password: str
    user_id: str
    sip_username: str
    sip_password: str


@dataclass(frozen=True)
class Demo:
    tenant_id: str
    admin_username: str
    admin_password: str
    conference_id: str
    dial_in: str
    phones: list[DemoPhone]


async def seed(
    tenants: TenantService,
    users: UserService,
    sip: SipService,
    conferences: ConferenceService,
) -> Demo | None:
    """Create the demo tenant once; returns None when it already exists."""
    if await tenants.find_by_name(DEMO_TENANT) is not None:
        return None
    platform_admin = await tenants.platform_admin()
    admin_password = secrets.token_urlsafe(12)
    created = await tenants.create(
        platform_admin, DEMO_TENANT, "demo-admin", admin_password, "Demo admin"
    )
    admin = Principal(
        user_id=created.admin_user_id,
        tenant_id=created.tenant.id,
        role="tenant_admin",
        username="demo-admin",
        session_id="demo-seed",
    )
    phones = []
    for name in ("alice", "bob"):
        password = secrets.token_urlsafe(12)
        profile = await users.create(
            admin, f"demo-{name}", password, name.capitalize(), "trader"
        )
        issued = await sip.create(admin, profile.id)
        phones.append(
            DemoPhone(
                trader=f"demo-{name}",
                trader_password=password,
                user_id=profile.id,
                sip_username=issued.credential.username,
                sip_password=issued.password,
            )
        )
    conference = await conferences.create(admin, "Demo room")
    return Demo(
        tenant_id=created.tenant.id,
        admin_username="demo-admin",
        admin_password=admin_password,
        conference_id=conference.id,
        dial_in=conference.dial_in,
        phones=phones,
    )


def instructions(demo: Demo, api: str, registrar: str, domain: str) -> str:
    lines = [
        "Demo tenant created (shown once; also kept in demo.txt in the data dir):",
        f"  tenant {demo.tenant_id}: admin {demo.admin_username} / "
        f"{demo.admin_password}",
    ]
    for phone in demo.phones:
        lines.append(
            f"  {phone.trader} / {phone.trader_password}: SIP user "
            f"{phone.sip_username}, password {phone.sip_password}, "
            f"domain {domain}, registrar {registrar} (UDP)"
        )
    alice, bob = demo.phones
    lines += [
        "Register two softphones with the SIP users above, then join both:",
        f"  TOKEN=$(curl -s {api}/auth/login -H 'Content-Type: application/json' "
        f'-d \'{{"username":"{demo.admin_username}","password":'
        f'"{demo.admin_password}"}}\' | python3 -c '
        "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
    ]
    for phone in (alice, bob):
        lines.append(
            f"  curl -s {api}/conferences/{demo.conference_id}/join "
            f"-H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
            f'-d \'{{"user_id":"{phone.user_id}"}}\''
        )
    lines.append(f"  (or dial {demo.dial_in} from either phone)")
    return "\n".join(lines)


def save(text: str, data_dir: Path) -> Path:
    path = data_dir / "demo.txt"
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    return path

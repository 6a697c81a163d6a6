"""Login, tokens and their forgeries, refresh and logout."""

from __future__ import annotations

import time
from pathlib import Path

import jwt

from tests.support.api import ADMIN_PASSWORD, Api, make_settings, running


async def test_login_returns_the_contract_shape(api: Api) -> None:
    reply = await api.call(
        "POST", "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )

    assert reply.status == 200
    assert reply.body["token_type"] == "bearer"
    assert reply.body["expires_in"] > 0
    assert {"access_token", "user_id", "tenant_id", "refresh_token"} <= set(reply.body)


async def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    wrong = await api.call(
        "POST", "/auth/login", json={"username": "admin", "password": "nope-nope"}
    )
    unknown = await api.call(
        "POST", "/auth/login", json={"username": "ghost", "password": "nope-nope"}
    )

    assert wrong.status == unknown.status == 401
    assert wrong.body["message"] == unknown.body["message"]
    assert wrong.body["error"] == "unauthorized"


async def test_me_reports_user_tenant_and_role(api: Api) -> None:
    tenant_id, token = await api.onboard("acme")

    reply = await api.call("GET", "/auth/me", token)

    assert reply.status == 200
    assert reply.body["tenant_id"] == tenant_id
    assert reply.body["username"] == "acme-admin"
    assert reply.body["role"] == "tenant_admin"
    assert reply.body["impersonator_id"] is None


async def test_missing_token_is_401_with_the_error_body(api: Api) -> None:
    reply = await api.call("GET", "/auth/me")

    assert reply.status == 401
    assert reply.body["error"] == "unauthorized"
    assert reply.body["trace_id"] == reply.headers["X-Trace-Id"]


def _claims(api: Api, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "somvad",
        "aud": "somvad-api",
        "sub": "usr_x",
        "tenant_id": "ten_x",
        "role": "platform_admin",
        "username": "admin",
        "sid": "ses_x",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return claims


async def _real_claims(api: Api) -> dict[str, object]:
    token = await api.admin_token()
    return jwt.decode(token, options={"verify_signature": False})


async def test_forged_tokens_are_refused(api: Api) -> None:
    claims = await _real_claims(api)
    secret = api.platform.settings.jwt_secret
    forgeries = {
        "alg none": jwt.encode(claims, key=None, algorithm="none"),
        "wrong key": jwt.encode(claims, "y" * 48, algorithm="HS256"),
        "wrong audience": jwt.encode(
            {**claims, "aud": "someone-else"}, secret, algorithm="HS256"
        ),
        "wrong issuer": jwt.encode({**claims, "iss": "evil"}, secret, "HS256"),
        "expired": jwt.encode(
            {**claims, "exp": int(time.time()) - 5}, secret, algorithm="HS256"
        ),
        "garbage": "not.a.token",
    }

    for name, token in forgeries.items():
        reply = await api.call("GET", "/auth/me", token)
        assert reply.status == 401, name
        assert reply.body["error"] == "unauthorized", name


async def test_a_correctly_signed_token_still_works(api: Api) -> None:
    claims = await _real_claims(api)
    token = jwt.encode(claims, api.platform.settings.jwt_secret, algorithm="HS256")

    assert (await api.call("GET", "/auth/me", token)).status == 200


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(
    api: Api,
) -> None:
    login = await api.call(
        "POST", "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    first = login.body["refresh_token"]

    renewed = await api.call("POST", "/auth/refresh", json={"refresh_token": first})
    replay = await api.call("POST", "/auth/refresh", json={"refresh_token": first})
    after = await api.call("GET", "/auth/me", renewed.body["access_token"])

    assert renewed.status == 200
    assert renewed.body["refresh_token"] != first
    assert replay.status == 401
    assert after.status == 401


async def test_logout_revokes_the_token_across_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as api:
        token = await api.admin_token()
        other = await api.admin_token()
        assert (await api.call("POST", "/auth/logout", token)).status == 204
        assert (await api.call("GET", "/auth/me", token)).status == 401

    async with running(settings) as api:
        assert (await api.call("GET", "/auth/me", token)).status == 401
        assert (await api.call("GET", "/auth/me", other)).status == 200


async def test_a_removed_user_loses_access_at_once(api: Api) -> None:
    _, admin = await api.onboard("acme")
    user_id, token = await api.user(admin, "trader-one")

    assert (await api.call("DELETE", f"/users/{user_id}", admin)).status == 204
    assert (await api.call("GET", "/auth/me", token)).status == 401


async def test_auth_config_is_public(api: Api) -> None:
    reply = await api.call("GET", "/auth/config")

    assert reply.status == 200
    assert reply.body["password_login"] is True


async def test_a_reused_refresh_token_keeps_the_session_ended_after_restart(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as api:
        login = await api.call(
            "POST",
            "/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
        )
        first = login.body["refresh_token"]
        renewed = await api.call("POST", "/auth/refresh", json={"refresh_token": first})
        await api.call("POST", "/auth/refresh", json={"refresh_token": first})

    async with running(settings) as api:
        access = await api.call("GET", "/auth/me", renewed.body["access_token"])
        refresh = await api.call(
            "POST",
            "/auth/refresh",
            json={"refresh_token": renewed.body["refresh_token"]},
        )

    assert access.status == 401
    assert refresh.status == 401


async def test_a_password_change_ends_every_session(api: Api) -> None:
    _, admin = await api.onboard("acme")
    user_id, token = await api.user(admin, "trader-one")
    login = await api.call(
        "POST",
        "/auth/login",
        json={"username": "trader-one", "password": "user-password"},
    )

    wrong = await api.call(
        "PUT",
        f"/users/{user_id}/password",
        token,
        {"password": "new-password-1", "current_password": "not-it"},
    )
    changed = await api.call(
        "PUT",
        f"/users/{user_id}/password",
        token,
        {"password": "new-password-1", "current_password": "user-password"},
    )
    old_access = await api.call("GET", "/auth/me", token)
    old_refresh = await api.call(
        "POST", "/auth/refresh", json={"refresh_token": login.body["refresh_token"]}
    )

    assert (wrong.status, wrong.body["error"]) == (422, "wrong_password")
    assert changed.status == 204
    assert old_access.status == 401
    assert old_refresh.status == 401
    assert await api.login("trader-one", "new-password-1")


async def test_deeply_nested_json_is_invalid_request(api: Api) -> None:
    body = b"[" * 30000 + b"]" * 30000

    reply = await api.call(
        "POST", "/auth/login", data=body, headers={"Content-Type": "application/json"}
    )

    assert reply.status == 400
    assert reply.body["error"] == "invalid_request"

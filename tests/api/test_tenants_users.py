"""Tenants and users: onboarding, roles, and the walls between tenants."""

from __future__ import annotations

from tests.support.api import Api


async def test_onboarding_creates_a_tenant_whose_admin_can_log_in(api: Api) -> None:
    tenant_id, token = await api.onboard("acme")

    me = await api.call("GET", "/auth/me", token)

    assert me.body["tenant_id"] == tenant_id
    assert (await api.call("GET", f"/tenants/{tenant_id}", token)).status == 200


async def test_onboarding_a_taken_name_is_409(api: Api) -> None:
    await api.onboard("acme")
    admin = await api.admin_token()

    reply = await api.call(
        "POST",
        "/tenants",
        admin,
        {"name": "acme", "admin": {"username": "other", "password": "password1"}},
    )

    assert reply.status == 409
    assert reply.body["error"] == "tenant_exists"


async def test_only_platform_admins_onboard(api: Api) -> None:
    _, token = await api.onboard("acme")

    reply = await api.call(
        "POST",
        "/tenants",
        token,
        {"name": "evil", "admin": {"username": "evil-admin", "password": "password1"}},
    )

    assert reply.status == 403
    assert reply.body["error"] == "forbidden"


async def test_another_tenant_is_404(api: Api) -> None:
    acme_id, acme = await api.onboard("acme")
    globex_id, globex = await api.onboard("globex")
    globex_user, _ = await api.user(globex, "g-trader")

    assert (await api.call("GET", f"/tenants/{globex_id}", acme)).status == 404
    assert (await api.call("GET", f"/users/{globex_user}", acme)).status == 404
    assert (await api.call("DELETE", f"/users/{globex_user}", acme)).status == 404
    listed = await api.call("GET", "/tenants", acme)
    assert [t["id"] for t in listed.body["items"]] == [acme_id]


async def test_users_are_listed_per_tenant_and_paged(api: Api) -> None:
    _, acme = await api.onboard("acme")
    for index in range(3):
        await api.user(acme, f"trader-{index}")

    first = await api.call("GET", "/users?limit=2", acme)
    second = await api.call(
        "GET", f"/users?limit=2&cursor={first.body['next_cursor']}", acme
    )

    names = [u["username"] for u in first.body["items"] + second.body["items"]]
    assert sorted(names) == ["acme-admin", "trader-0", "trader-1", "trader-2"]
    assert second.body["next_cursor"] is None


async def test_duplicate_username_is_409(api: Api) -> None:
    _, acme = await api.onboard("acme")
    await api.user(acme, "trader-one")

    reply = await api.call(
        "POST",
        "/users",
        acme,
        {"username": "trader-one", "password": "password1", "role": "trader"},
    )

    assert reply.status == 409
    assert reply.body["error"] == "username_taken"


async def test_traders_cannot_create_users_or_grant_roles(api: Api) -> None:
    _, acme = await api.onboard("acme")
    trader_id, trader = await api.user(acme, "trader-one")

    create = await api.call(
        "POST",
        "/users",
        trader,
        {"username": "x-user", "password": "password1", "role": "trader"},
    )
    promote = await api.call(
        "PATCH", f"/users/{trader_id}", trader, {"role": "tenant_admin"}
    )

    assert create.status == 403
    assert promote.status == 403


async def test_tenant_admin_cannot_grant_platform_admin(api: Api) -> None:
    _, acme = await api.onboard("acme")

    reply = await api.call(
        "POST",
        "/users",
        acme,
        {"username": "sneaky", "password": "password1", "role": "platform_admin"},
    )

    assert reply.status == 403


async def test_the_last_tenant_admin_cannot_be_demoted(api: Api) -> None:
    _, acme = await api.onboard("acme")
    me = (await api.call("GET", "/auth/me", acme)).body

    reply = await api.call("PATCH", f"/users/{me['user_id']}", acme, {"role": "trader"})

    assert reply.status == 409
    assert reply.body["error"] == "last_admin"


async def test_password_change_takes_effect(api: Api) -> None:
    _, acme = await api.onboard("acme")
    user_id, _ = await api.user(acme, "trader-one")

    reply = await api.call(
        "PUT", f"/users/{user_id}/password", acme, {"password": "a-new-password"}
    )

    assert reply.status == 204
    assert await api.login("trader-one", "a-new-password")


async def test_removing_a_tenant_removes_its_users(api: Api) -> None:
    tenant_id, acme = await api.onboard("acme")
    await api.user(acme, "trader-one")
    admin = await api.admin_token()

    assert (await api.call("DELETE", f"/tenants/{tenant_id}", admin)).status == 204
    login = await api.call(
        "POST",
        "/auth/login",
        json={"username": "trader-one", "password": "user-password"},
    )
    assert login.status == 401
    assert (await api.call("GET", f"/tenants/{tenant_id}", admin)).status == 404

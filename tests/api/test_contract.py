"""The error contract for bad input, trace ids, and the OpenAPI document."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.api import ADMIN_PASSWORD, Api, make_settings, running


async def test_malformed_json_is_invalid_request(api: Api) -> None:
    token = await api.admin_token()

    reply = await api.call(
        "POST",
        "/tenants",
        token,
        data=b'{"name": ',
        headers={"Content-Type": "application/json"},
    )

    assert reply.status == 400
    assert reply.body["error"] == "invalid_request"


async def test_wrong_types_and_unknown_fields_are_listed_per_field(api: Api) -> None:
    token = await api.admin_token()

    reply = await api.call(
        "POST",
        "/tenants",
        token,
        {"name": 5, "admin": {"username": "ok-user"}, "colour": "red"},
    )

    assert reply.status == 400
    fields = reply.body["details"]["fields"]
    assert {"name", "admin.password", "colour"} <= set(fields)


async def test_bad_input_changes_nothing(api: Api) -> None:
    token = await api.admin_token()
    before = await api.call("GET", "/tenants", token)

    await api.call("POST", "/tenants", token, {"name": "", "admin": {}})

    after = await api.call("GET", "/tenants", token)
    assert after.body == before.body


async def test_oversized_body_is_413(api: Api) -> None:
    token = await api.admin_token()
    huge = b'{"name": "' + b"a" * (api.platform.settings.max_body_bytes + 10) + b'"}'

    reply = await api.call(
        "POST",
        "/tenants",
        token,
        data=huge,
        headers={"Content-Type": "application/json"},
    )

    assert reply.status == 413
    assert reply.body["error"] == "payload_too_large"


async def test_non_json_body_is_415(api: Api) -> None:
    token = await api.admin_token()

    reply = await api.call(
        "POST",
        "/tenants",
        token,
        data=b"name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert reply.status == 415
    assert reply.body["error"] == "unsupported_media_type"


async def test_unknown_route_is_404_with_the_error_body(api: Api) -> None:
    reply = await api.call("GET", "/nowhere")

    assert reply.status == 404
    assert reply.body["error"] == "not_found"


async def test_traceparent_sets_the_trace_id(api: Api) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"

    reply = await api.call(
        "GET", "/health", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    )

    assert reply.headers["X-Trace-Id"] == trace


async def test_bad_limit_is_invalid_request(api: Api) -> None:
    token = await api.admin_token()

    for query in ("limit=0", "limit=abc", "limit=1000", "cursor=%%%"):
        reply = await api.call("GET", f"/tenants?{query}", token)
        assert reply.status == 400, query


async def test_openapi_is_3_1_and_every_operation_is_documented(api: Api) -> None:
    reply = await api.call("GET", "/openapi.json")

    document = reply.body
    assert document["openapi"] == "3.1.0"
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) >= 30
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation["tags"], where
        assert operation["summary"], where
        statuses = set(operation["responses"])
        assert any(s.startswith("2") for s in statuses), where
        if operation["security"]:
            assert "401" in statuses, where


async def test_openapi_lists_the_conference_errors(api: Api) -> None:
    document = (await api.call("GET", "/openapi.json")).body

    join = document["paths"]["/conferences/{conference_id}/join"]["post"]

    assert {"202", "404", "409", "503"} <= set(join["responses"])
    schema = document["components"]["schemas"]["ErrorBody"]
    assert set(schema["required"]) >= {"error", "message", "trace_id"}


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.glob("somvad.db*")}


async def test_the_sqlite_files_are_private(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as api:
        await api.onboard("acme")  # writes through the WAL

        modes = _modes(tmp_path)

    assert {"somvad.db", "somvad.db-wal"} <= set(modes)
    assert all(mode == 0o600 for mode in modes.values()), modes


async def test_booleans_and_names_are_not_coerced(api: Api) -> None:
    token = await api.admin_token()

    numeric = await api.call(
        "POST",
        "/tenants",
        token,
        {"name": 5, "admin": {"username": "x-admin", "password": "password1"}},
    )
    control = await api.call(
        "POST",
        "/tenants",
        token,
        {
            "name": "a\u0000b\nc",
            "admin": {"username": "x-admin", "password": "password1"},
        },
    )

    assert numeric.status == 400
    assert "name" in numeric.body["details"]["fields"]
    assert control.status == 400
    assert "name" in control.body["details"]["fields"]


async def test_a_wrong_method_is_405_with_allow(api: Api) -> None:
    reply = await api.call("PUT", "/auth/login")

    assert reply.status == 405
    assert reply.body["error"] == "method_not_allowed"
    assert "POST" in reply.headers["Allow"]


async def test_repeated_failed_logins_are_throttled(api: Api) -> None:
    attempts = [
        await api.call(
            "POST", "/auth/login", json={"username": "admin", "password": "guess-it"}
        )
        for _ in range(11)
    ]
    correct = await api.call(
        "POST", "/auth/login", json={"username": "admin", "password": "guess-it!"}
    )

    assert [a.status for a in attempts[:10]] == [401] * 10
    assert attempts[10].status == 429
    assert attempts[10].body["error"] == "too_many_requests"
    assert int(attempts[10].headers["Retry-After"]) > 0
    assert correct.status == 429


async def test_invisible_characters_in_names_are_refused(api: Api) -> None:
    token = await api.admin_token()

    for name in ("a\u0085b", "a\u2028b", "evil\u202etxt", "zero\u200bwidth"):
        reply = await api.call(
            "POST",
            "/tenants",
            token,
            {"name": name, "admin": {"username": "x-admin", "password": "password1"}},
        )
        assert reply.status == 400, repr(name)


async def test_parallel_guesses_do_not_slip_past_the_throttle(api: Api) -> None:
    replies = await asyncio.gather(
        *(
            api.call(
                "POST",
                "/auth/login",
                json={"username": "admin", "password": f"guess-{n}"},
            )
            for n in range(30)
        )
    )

    statuses = sorted(r.status for r in replies)
    assert statuses.count(401) == 10
    assert statuses.count(429) == 20


async def test_a_refresh_token_used_twice_at_once_ends_the_session(api: Api) -> None:
    login = await api.call(
        "POST", "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    token = login.body["refresh_token"]

    replies = await asyncio.gather(
        *(
            api.call("POST", "/auth/refresh", json={"refresh_token": token})
            for _ in range(10)
        )
    )

    winners = [r for r in replies if r.status == 200]
    assert len(winners) == 1
    assert (
        await api.call("GET", "/auth/me", winners[0].body["access_token"])
    ).status == 401


async def test_head_answers_like_get(api: Api) -> None:
    reply = await api.call("HEAD", "/health")

    assert reply.status == 200

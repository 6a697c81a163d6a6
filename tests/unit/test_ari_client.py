"""Unit tests for the ARI client against a fake ARI served on 127.0.0.1.

The fake speaks just enough ARI (REST routes and the /ari/events WebSocket) for
the tests to inject failures: dropped sockets, 5xx answers, refused ports.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import socket
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from ari_handlers.client import AriClient, backoff_delay, dispatch_key
from ari_handlers.errors import (
    AriBadRequest,
    AriConflict,
    AriError,
    AriNotFound,
    AriUnavailable,
    AriUnprocessable,
    error_for_status,
)

# A fresh loop per test, so "no task left behind" checks see only this test.
fresh_loop = pytest.mark.asyncio(loop_scope="function")

USER = "somvad"
PASSWORD = "s3cret-Pa55"
APP = "somvad-test"
DEADLINE = 1.5


async def wait_until(predicate: Callable[[], bool], within: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def channel_event(
    channel_id: str, n: int, kind: str = "ChannelVarset"
) -> dict[str, Any]:
    return {"type": kind, "channel": {"id": channel_id}, "n": n}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


@dataclass
class FakeAri:
    """A programmable ARI: canned REST answers and a controllable event socket."""

    responses: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    ws_requests: list[web.Request] = field(default_factory=list)
    refuse_events: bool = False
    stall: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ari/events", self._events)
        app.router.add_route("*", "/ari/{tail:.*}", self._rest)
        return app

    async def start(self, port: int | None = None) -> None:
        self.server = TestServer(self.make_app(), host="127.0.0.1", port=port)
        await self.server.start_server()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def stop(self) -> None:
        self.stall.set()
        for ws in self.sockets:
            await ws.close()
        if self.server is not None:
            await self.server.close()

    def _authorized(self, request: web.Request) -> bool:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {token}"

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"message": "Authentication required"}, status=401)
        if self.refuse_events:
            return web.json_response({"message": "not now"}, status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_requests.append(request)
        self.sockets.append(ws)
        async for _ in ws:
            pass
        return ws

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = "/" + request.match_info["tail"]
        self.requests.append(
            Recorded(
                request.method,
                request.raw_path.split("?")[0].removeprefix("/ari"),
                dict(request.query),
                json.loads(raw) if raw else None,
                request.headers.get("Authorization"),
            )
        )
        if not self._authorized(request):
            return web.json_response({"message": "Authentication required"}, status=401)
        if path == "/stall":
            await self.stall.wait()
        status, body = self.responses.get((request.method, path), (200, {}))
        if status == 204:
            return web.Response(status=204)
        return web.json_response(body, status=status)

    async def send(self, *events: dict[str, Any]) -> None:
        for event in events:
            await self.sockets[-1].send_json(event)

    async def drop_socket(self) -> None:
        """Abort the TCP connection under the WebSocket, with no close frame."""
        transport = self.ws_requests[-1].transport
        assert transport is not None
        transport.abort()


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakeAri]:
    server = FakeAri()
    await server.start()
    yield server
    await server.stop()


def make_client(base_url: str, **kwargs: Any) -> AriClient:
    options: dict[str, Any] = {
        "request_timeout": 0.5,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
    }
    options.update(kwargs)
    return AriClient(base_url, USER, PASSWORD, APP, **options)


@pytest_asyncio.fixture(loop_scope="function")
async def client(fake: FakeAri) -> AsyncIterator[AriClient]:
    ari = make_client(fake.base_url)
    yield ari
    await ari.close()


# Status -> error mapping


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, AriBadRequest),
        (404, AriNotFound),
        (409, AriConflict),
        (422, AriUnprocessable),
        (500, AriUnavailable),
        (502, AriUnavailable),
        (503, AriUnavailable),
        (501, AriError),
        (401, AriError),
        (403, AriError),
    ],
)
def test_error_for_status_maps_status_to_most_specific_type(
    status: int, error_type: type[AriError]
) -> None:
    error = error_for_status(status, "why", "/channels/1")

    assert type(error) is error_type
    assert error.status == status
    assert error.path == "/channels/1"
    assert error.message.startswith("why")


def test_error_for_401_tells_what_to_fix() -> None:
    error = error_for_status(401, "", "/channels")

    assert "password" in error.message
    assert "401" in str(error)


@fresh_loop
async def test_request_error_carries_aris_message(
    fake: FakeAri, client: AriClient
) -> None:
    fake.responses[("GET", "/channels/1.1")] = (404, {"message": "Channel not found"})
    await client.start()

    with pytest.raises(AriNotFound) as caught:
        await client.request("GET", "/channels/1.1")

    assert caught.value.status == 404
    assert caught.value.message == "Channel not found"
    assert caught.value.path == "/channels/1.1"


@fresh_loop
async def test_request_5xx_is_unavailable(fake: FakeAri, client: AriClient) -> None:
    fake.responses[("GET", "/bridges")] = (503, {"message": "Shutting down"})
    await client.start()

    with pytest.raises(AriUnavailable) as caught:
        await client.list_bridges()

    assert caught.value.status == 503


@fresh_loop
async def test_request_to_refused_port_is_unavailable_without_password() -> None:
    ari = make_client(f"http://127.0.0.1:{free_port()}")
    await ari.start()
    try:
        with pytest.raises(AriUnavailable) as caught:
            await ari.get_info()
    finally:
        await ari.close()

    assert caught.value.status is None
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(ari)


@fresh_loop
async def test_request_timeout_is_unavailable(fake: FakeAri, client: AriClient) -> None:
    await client.start()

    with pytest.raises(AriUnavailable, match="no answer"):
        await client.request("GET", "/stall", timeout=0.1)


@fresh_loop
async def test_request_before_start_is_unavailable(client: AriClient) -> None:
    with pytest.raises(AriUnavailable, match="not started"):
        await client.list_channels()


@fresh_loop
async def test_credentials_in_base_url_are_not_sent_or_shown(fake: FakeAri) -> None:
    url = fake.base_url.replace("http://", f"http://intruder:{PASSWORD}@")
    ari = make_client(url)
    await ari.start()
    try:
        await ari.get_info()
    finally:
        await ari.close()

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert fake.requests[-1].authorization == f"Basic {token}"
    assert "intruder" not in repr(ari)


# REST helpers


@fresh_loop
async def test_helpers_send_the_ari_requests_services_rely_on(
    fake: FakeAri, client: AriClient
) -> None:
    fake.responses[("POST", "/channels/call-1")] = (200, {"id": "call-1"})
    fake.responses[("POST", "/bridges/conf-1")] = (200, {"id": "conf-1"})
    fake.responses[("DELETE", "/channels/call-1")] = (204, None)
    await client.start()

    channel = await client.originate(
        "call-1",
        "PJSIP/1001",
        app_args="dial,conf-1",
        caller_id="Desk <1000>",
        timeout=20,
        variables={"SOMVAD_TENANT": "t1"},
    )
    bridge = await client.create_bridge("conf-1", name="Rates desk")
    await client.add_channel("conf-1", "call-1")
    await client.remove_channel("conf-1", "call-1")
    await client.mute("call-1")
    await client.unmute("call-1", "both")
    await client.answer("call-1")
    hung_up = await client.request("DELETE", "/channels/call-1", params={"x": True})
    await client.hangup("call-1", "busy")
    await client.destroy_bridge("conf-1")

    assert channel == {"id": "call-1"}
    assert bridge == {"id": "conf-1"}
    assert hung_up is None
    calls = [(r.method, r.path, r.query) for r in fake.requests]
    assert calls == [
        (
            "POST",
            "/channels/call-1",
            {
                "endpoint": "PJSIP/1001",
                "app": APP,
                "timeout": "20",
                "appArgs": "dial,conf-1",
                "callerId": "Desk <1000>",
            },
        ),
        ("POST", "/bridges/conf-1", {"type": "mixing", "name": "Rates desk"}),
        ("POST", "/bridges/conf-1/addChannel", {"channel": "call-1"}),
        ("POST", "/bridges/conf-1/removeChannel", {"channel": "call-1"}),
        ("POST", "/channels/call-1/mute", {"direction": "in"}),
        ("DELETE", "/channels/call-1/mute", {"direction": "both"}),
        ("POST", "/channels/call-1/answer", {}),
        ("DELETE", "/channels/call-1", {"x": "true"}),
        ("DELETE", "/channels/call-1", {"reason": "busy"}),
        ("DELETE", "/bridges/conf-1", {}),
    ]
    assert fake.requests[0].body == {"variables": {"SOMVAD_TENANT": "t1"}}


@fresh_loop
async def test_push_config_sends_fields_and_delete_tolerates_missing_object(
    fake: FakeAri, client: AriClient
) -> None:
    path = "/asterisk/config/dynamic/res_pjsip/auth/desk 1001"
    fake.responses[("DELETE", path)] = (404, {"message": "Object not found"})
    fake.responses[("GET", path)] = (
        200,
        [{"attribute": "username", "value": "1001"}],
    )
    await client.start()

    await client.push_config(
        "res_pjsip", "auth", "desk 1001", {"username": "1001", "password": "pw"}
    )
    await client.delete_config("res_pjsip", "auth", "desk 1001")
    config = await client.get_config("res_pjsip", "auth", "desk 1001")

    assert fake.requests[0].method == "PUT"
    assert (
        fake.requests[0].path == "/asterisk/config/dynamic/res_pjsip/auth/desk%201001"
    )
    assert fake.requests[0].body == {
        "fields": [
            {"attribute": "username", "value": "1001"},
            {"attribute": "password", "value": "pw"},
        ]
    }
    assert config == {"username": "1001"}


@fresh_loop
async def test_get_channel_var_is_none_when_unset_but_missing_channel_raises(
    fake: FakeAri, client: AriClient
) -> None:
    fake.responses[("GET", "/channels/a/variable")] = (200, {"value": "x"})
    fake.responses[("GET", "/channels/b/variable")] = (
        404,
        {"message": "Provided variable was not found"},
    )
    fake.responses[("GET", "/channels/c/variable")] = (
        404,
        {"message": "Provided channel was not found"},
    )
    await client.start()

    assert await client.get_channel_var("a", "TENANT") == "x"
    assert await client.get_channel_var("b", "TENANT") is None
    with pytest.raises(AriNotFound):
        await client.get_channel_var("c", "TENANT")
    assert fake.requests[0].query == {"variable": "TENANT"}


@fresh_loop
async def test_requests_go_out_while_events_socket_is_down(fake: FakeAri) -> None:
    fake.refuse_events = True
    ari = make_client(fake.base_url)
    await ari.start()
    try:
        info = await ari.get_info()
        connected = await ari.wait_connected(0.1)
    finally:
        await ari.close()

    assert info == {}
    assert connected is False


# Events WebSocket


@fresh_loop
async def test_events_socket_uses_basic_auth_and_subscribes_the_app(
    fake: FakeAri, client: AriClient
) -> None:
    await client.start()

    assert await client.wait_connected(DEADLINE)
    request = fake.ws_requests[-1]
    assert dict(request.query) == {"app": APP, "subscribeAll": "true"}
    assert PASSWORD not in str(request.url)
    assert request.headers["Authorization"].startswith("Basic ")


def test_dispatch_key_prefers_channel_then_bridge_then_global() -> None:
    both = {
        "type": "ChannelEnteredBridge",
        "channel": {"id": "c"},
        "bridge": {"id": "b"},
    }

    assert dispatch_key(both) == "channel:c"
    assert (
        dispatch_key({"type": "BridgeDestroyed", "bridge": {"id": "b"}}) == "bridge:b"
    )
    assert dispatch_key({"type": "EndpointStateChange", "endpoint": {}}) == "global"
    assert dispatch_key({"type": "ChannelVarset", "channel": {}}) == "global"


@fresh_loop
async def test_slow_channel_holds_only_its_own_events(
    fake: FakeAri, client: AriClient
) -> None:
    release_a = asyncio.Event()
    seen: list[tuple[str, int]] = []

    async def handler(event: dict[str, Any]) -> None:
        channel = event["channel"]["id"]
        if channel == "A" and event["n"] == 1:
            await release_a.wait()
        seen.append((channel, event["n"]))

    client.on_event("ChannelVarset", handler)
    await client.start()
    assert await client.wait_connected(DEADLINE)

    await fake.send(
        channel_event("A", 1),
        channel_event("A", 2),
        channel_event("B", 1),
        channel_event("A", 3),
        channel_event("B", 2),
    )
    await wait_until(lambda: ("B", 2) in seen)

    assert seen == [("B", 1), ("B", 2)]
    release_a.set()
    await wait_until(lambda: len(seen) == 5)
    assert [n for channel, n in seen if channel == "A"] == [1, 2, 3]


@fresh_loop
async def test_events_of_one_channel_never_run_concurrently(
    fake: FakeAri, client: AriClient
) -> None:
    running = 0
    peak = 0
    done: list[int] = []

    async def handler(event: dict[str, Any]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running -= 1
        done.append(event["n"])

    client.on_event("*", handler)
    await client.start()
    assert await client.wait_connected(DEADLINE)

    await fake.send(*(channel_event("A", n) for n in range(20)))
    await wait_until(lambda: len(done) == 20)

    assert peak == 1
    assert done == list(range(20))


@fresh_loop
async def test_failing_handler_is_logged_and_next_event_still_runs(
    fake: FakeAri, client: AriClient, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    async def handler(event: dict[str, Any]) -> None:
        if event["n"] == 1:
            raise RuntimeError("handler bug")
        seen.append(event["n"])

    async def also_for_every_event(event: dict[str, Any]) -> None:
        seen.append(-event["n"])

    client.on_event("ChannelVarset", handler)
    client.on_event("*", also_for_every_event)
    await client.start()
    assert await client.wait_connected(DEADLINE)

    with caplog.at_level(logging.ERROR, logger="ari_handlers.client"):
        await fake.send(channel_event("A", 1), channel_event("A", 2))
        await wait_until(lambda: len(seen) == 3)

    assert seen == [-1, 2, -2]
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1
    assert "handler bug" in str(failures[0].exc_info[1])  # type: ignore[index]


@fresh_loop
async def test_idle_key_workers_go_away(fake: FakeAri, client: AriClient) -> None:
    handled: list[int] = []

    async def handler(event: dict[str, Any]) -> None:
        handled.append(event["n"])

    client.on_event("*", handler)
    await client.start()
    assert await client.wait_connected(DEADLINE)

    await fake.send(*(channel_event(f"chan-{n}", n) for n in range(50)))
    await wait_until(lambda: len(handled) == 50)
    await wait_until(lambda: client._dispatcher.active_keys == 0)

    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ari-events")]


@fresh_loop
async def test_non_json_frames_are_skipped(fake: FakeAri, client: AriClient) -> None:
    handled: list[int] = []

    async def handler(event: dict[str, Any]) -> None:
        handled.append(event["n"])

    client.on_event("*", handler)
    await client.start()
    assert await client.wait_connected(DEADLINE)

    await fake.sockets[-1].send_str("not json")
    await fake.sockets[-1].send_str("[1, 2]")
    await fake.send(channel_event("A", 7))
    await wait_until(lambda: handled == [7])


# Reconnect


@fresh_loop
@pytest.mark.parametrize("how", ["close_frame", "abort"])
async def test_reconnects_after_server_drops_socket(
    fake: FakeAri, client: AriClient, how: str
) -> None:
    log: list[str] = []

    async def on_connect() -> None:
        log.append("connect")

    async def on_disconnect() -> None:
        log.append("disconnect")

    async def handler(event: dict[str, Any]) -> None:
        log.append(f"event {event['n']}")

    client.on_connect(on_connect)
    client.on_disconnect(on_disconnect)
    client.on_event("*", handler)
    await client.start()
    assert await client.wait_connected(DEADLINE)

    if how == "abort":
        await fake.drop_socket()
    else:
        await fake.sockets[-1].close()
    await wait_until(lambda: len(fake.sockets) == 2)
    await wait_until(lambda: client.connected)
    await fake.send(channel_event("A", 1))
    await wait_until(lambda: "event 1" in log)

    assert log == ["connect", "disconnect", "connect", "event 1"]


@fresh_loop
async def test_reconnects_once_refused_port_starts_listening() -> None:
    port = free_port()
    ari = make_client(f"http://127.0.0.1:{port}")
    server = FakeAri()
    await ari.start()
    try:
        assert await ari.wait_connected(0.1) is False
        assert ari.connected is False

        await server.start(port=port)

        assert await ari.wait_connected(DEADLINE)
    finally:
        await ari.close()
        await server.stop()


def test_backoff_grows_from_initial_and_is_capped() -> None:
    def top(attempt: int) -> float:
        return backoff_delay(attempt, 0.2, 5.0, rand=lambda: 1.0)

    ceilings = [top(n) for n in range(8)]

    assert ceilings[:5] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    assert ceilings[5:] == pytest.approx([5.0, 5.0, 5.0])
    assert top(10_000) == pytest.approx(5.0)


def test_backoff_is_jittered_within_the_upper_half() -> None:
    low = backoff_delay(3, 0.2, 5.0, rand=lambda: 0.0)
    mid = backoff_delay(3, 0.2, 5.0, rand=lambda: 0.5)
    high = backoff_delay(3, 0.2, 5.0, rand=lambda: 1.0)
    drawn = {backoff_delay(3, 0.2, 5.0) for _ in range(50)}

    assert (low, mid, high) == pytest.approx((0.8, 1.2, 1.6))
    assert all(0.8 <= delay <= 1.6 for delay in drawn)
    assert len(drawn) > 1


@fresh_loop
async def test_events_during_on_connect_are_delivered_after_it(
    fake: FakeAri, client: AriClient
) -> None:
    log: list[str] = []
    gate = asyncio.Event()

    async def reconcile() -> None:
        log.append("reconcile started")
        await gate.wait()
        log.append("reconcile done")

    async def handler(event: dict[str, Any]) -> None:
        log.append(f"event {event['n']}")

    client.on_connect(reconcile)
    client.on_event("*", handler)
    await client.start()
    await wait_until(lambda: len(fake.sockets) == 1 and "reconcile started" in log)

    await fake.send(channel_event("A", 1), {"type": "X", "n": 2})
    await wait_until(lambda: len(client._dispatcher._held or ()) == 2)
    assert client.connected is False
    gate.set()
    await wait_until(lambda: len(log) == 4)

    assert log[:2] == ["reconcile started", "reconcile done"]
    assert sorted(log[2:]) == ["event 1", "event 2"]
    assert client.connected


@fresh_loop
async def test_failing_on_connect_handler_does_not_stop_the_others(
    fake: FakeAri, client: AriClient
) -> None:
    ran: list[str] = []

    async def broken() -> None:
        raise AriUnavailable(503, "busy", "/channels")

    async def second() -> None:
        ran.append("second")

    client.on_connect(broken)
    client.on_connect(second)
    await client.start()

    assert await client.wait_connected(DEADLINE)
    assert ran == ["second"]


# Close


@fresh_loop
async def test_close_leaves_no_pending_tasks_nor_open_session(
    fake: FakeAri,
) -> None:
    stuck = asyncio.Event()
    ari = make_client(fake.base_url)

    async def slow(event: dict[str, Any]) -> None:
        stuck.set()
        await asyncio.sleep(60)

    ari.on_event("*", slow)
    await ari.start()
    assert await ari.wait_connected(DEADLINE)
    await fake.send(channel_event("A", 1))
    await wait_until(stuck.is_set)
    session = ari._session

    await ari.close()
    await ari.close()

    assert session is not None and session.closed
    assert ari.connected is False
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ari-")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


@fresh_loop
async def test_close_during_backoff_leaves_nothing_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ari = make_client(f"http://127.0.0.1:{free_port()}", backoff_initial=5.0)
    with caplog.at_level(logging.WARNING, logger="ari_handlers.client"):
        await ari.start()
        await wait_until(lambda: "unreachable" in caplog.text)

    await ari.close()

    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(RuntimeError):
        await ari.start()


@fresh_loop
async def test_client_closes_its_socket_cleanly(fake: FakeAri) -> None:
    ari = make_client(fake.base_url)
    await ari.start()
    assert await ari.wait_connected(DEADLINE)
    server_ws = fake.sockets[-1]

    await ari.close()
    await wait_until(lambda: server_ws.closed)

    assert server_ws.close_code is not None

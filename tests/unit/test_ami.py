"""Unit tests for the AMI reader against a fake AMI TCP server on 127.0.0.1.

The fake answers Login and PJSIPShowContacts the way Asterisk does: a banner
line, then ``Key: Value`` blocks ending in a blank line, list items as
``ContactList`` events tagged with the ActionID, closed by
``ContactListComplete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from ari_handlers.ami import AmiClient, AmiError, AmiUnavailable, Contact

# A fresh loop per test, so "no task left behind" checks see only this test.
fresh_loop = pytest.mark.asyncio(loop_scope="function")

USER = "somvad"
SECRET = "ami-S3cret"

CONTACT_1001 = {
    "ObjectType": "contact",
    "ObjectName": "1001;@4f1c2a9b7e",
    "ViaAddr": "127.0.0.1",
    "ViaPort": "5062",
    "CallId": "abc@127.0.0.1",
    "Endpoint": "1001",
    "Uri": "sip:1001@127.0.0.1:5062;transport=udp",
    "UserAgent": "pyVoIP 1.6.8",
    "ExpirationTime": "1767225600",
    "Status": "Reachable",
    "RoundtripUsec": "412",
}
CONTACT_TRUNK = {
    "ObjectType": "contact",
    "ObjectName": "carrier-a@@9d8e7f",
    "Endpoint": "carrier-a",
    "Uri": "sip:[::1]:5080",
    "UserAgent": "",
    "ViaAddr": "::1",
    "ViaPort": "5080",
    "ExpirationTime": "0",
    "Status": "NonQualified",
}


def block(fields: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class FakeAmi:
    """Scripted AMI server. ``mode`` picks how PJSIPShowContacts is answered."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.contacts: list[dict[str, str]] = [CONTACT_1001, CONTACT_TRUNK]
        self.endpoints: list[str] = ["sip1001", "carrier-a"]
        self.banner = b"Asterisk Call Manager/9.0.0\r\n"
        self.connections = 0
        self.actions: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.drop_all()
        async with asyncio.timeout(1):
            await asyncio.gather(*self._handlers, return_exceptions=True)

    def drop_all(self) -> None:
        for writer in self._writers:
            writer.close()

    def client(self, timeout: float = 0.5) -> AmiClient:
        return AmiClient("127.0.0.1", self.port, USER, SECRET, timeout=timeout)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        self._writers.append(writer)
        writer.write(self.banner)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            for _ in range(100):
                action = await self._read_block(reader)
                if action is None:
                    break
                self.actions.append(action)
                if not await self._answer(action, writer):
                    break
        writer.close()

    async def _read_block(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        fields: dict[str, str] = {}
        for _ in range(100):
            line = await reader.readline()
            if not line:
                return None
            text = line.decode().rstrip("\r\n")
            if not text:
                return fields
            key, _, value = text.partition(": ")
            fields[key] = value
        raise AssertionError("action too long")

    async def _answer(
        self, action: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        """Write the answer; False to hang up afterwards."""
        name = action.get("Action", "").lower()
        action_id = action.get("ActionID", "")
        if name == "login":
            ok = action.get("Username") == USER and action.get("Secret") == SECRET
            writer.write(
                block(
                    {
                        "Response": "Success" if ok else "Error",
                        "ActionID": action_id,
                        "Message": "Authentication accepted"
                        if ok
                        else "Authentication failed",
                    }
                )
            )
            return ok
        if name == "logoff":
            writer.write(block({"Response": "Goodbye", "ActionID": action_id}))
            return False
        if name == "pjsipshowendpoints":
            self._write_endpoints(writer, action_id)
            return True
        if name != "pjsipshowcontacts":
            writer.write(block({"Response": "Error", "Message": "Invalid/unknown"}))
            return True

        if self.mode == "hang":
            await self.release.wait()
            return False
        if self.mode == "drop":
            return False
        if self.mode == "empty":
            writer.write(
                block(
                    {
                        "Response": "Error",
                        "ActionID": action_id,
                        "Message": "No Contacts found",
                    }
                )
            )
            return True

        writer.write(
            block(
                {
                    "Response": "Success",
                    "ActionID": action_id,
                    "EventList": "start",
                    "Message": "A listing of Contacts follows, presented as "
                    "ContactList events",
                }
            )
        )
        if self.mode == "drop_mid_list":
            await writer.drain()
            return False
        for contact in self.contacts:
            # An unsolicited event between items must not confuse the reader.
            writer.write(block({"Event": "PeerStatus", "Peer": "PJSIP/x"}))
            writer.write(
                block({"Event": "ContactList", "ActionID": action_id, **contact})
            )
        writer.write(
            block(
                {
                    "Event": "ContactListComplete",
                    "ActionID": action_id,
                    "EventList": "Complete",
                    "ListItems": str(len(self.contacts)),
                }
            )
        )
        await writer.drain()
        return True

    def _write_endpoints(self, writer: asyncio.StreamWriter, action_id: str) -> None:
        if not self.endpoints:
            writer.write(
                block(
                    {
                        "Response": "Error",
                        "ActionID": action_id,
                        "Message": "No endpoints found",
                    }
                )
            )
            return
        writer.write(
            block(
                {
                    "Response": "Success",
                    "ActionID": action_id,
                    "EventList": "start",
                    "Message": "A listing of Endpoints follows, presented as "
                    "EndpointList events",
                }
            )
        )
        for endpoint in self.endpoints:
            writer.write(
                block(
                    {
                        "Event": "EndpointList",
                        "ActionID": action_id,
                        "ObjectType": "endpoint",
                        "ObjectName": endpoint,
                        "Transport": "udp",
                        "Aor": endpoint,
                        "DeviceState": "Not in use",
                    }
                )
            )
        writer.write(
            block(
                {
                    "Event": "EndpointListComplete",
                    "ActionID": action_id,
                    "EventList": "Complete",
                    "ListItems": str(len(self.endpoints)),
                }
            )
        )


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakeAmi]:
    server = FakeAmi()
    await server.start()
    yield server
    await server.stop()


@fresh_loop
async def test_contacts_are_read_from_contact_list_events(fake: FakeAmi) -> None:
    ami = fake.client()
    try:
        contacts = await ami.contacts()
    finally:
        await ami.close()

    assert contacts == [
        Contact(
            endpoint="1001",
            aor="1001",
            uri="sip:1001@127.0.0.1:5062;transport=udp",
            id="1001;@4f1c2a9b7e",
            status="Reachable",
            user_agent="pyVoIP 1.6.8",
            via_address="127.0.0.1:5062",
            reg_expire=1767225600,
        ),
        Contact(
            endpoint="carrier-a",
            aor="carrier-a",
            uri="sip:[::1]:5080",
            id="carrier-a@@9d8e7f",
            status="NonQualified",
            user_agent="",
            via_address="[::1]:5080",
            reg_expire=None,
        ),
    ]
    login = fake.actions[0]
    assert login["Action"] == "Login"
    assert login["Events"] == "off"
    assert fake.actions[1]["Action"] == "PJSIPShowContacts"


@fresh_loop
async def test_no_registered_contacts_is_an_empty_list(fake: FakeAmi) -> None:
    fake.mode = "empty"
    ami = fake.client()
    try:
        assert await ami.contacts() == []
    finally:
        await ami.close()


@fresh_loop
async def test_endpoints_lists_endpoint_names_and_empty_is_no_error(
    fake: FakeAmi,
) -> None:
    ami = fake.client()
    try:
        names = await ami.endpoints()
        fake.endpoints = []
        none = await ami.endpoints()
    finally:
        await ami.close()

    assert names == ["sip1001", "carrier-a"]
    assert none == []
    assert fake.connections == 1


@fresh_loop
async def test_connection_is_opened_lazily_and_kept_between_calls(
    fake: FakeAmi,
) -> None:
    ami = fake.client()
    assert fake.connections == 0
    try:
        await ami.contacts()
        await ami.contacts()
    finally:
        await ami.close()

    assert fake.connections == 1
    assert [a["Action"] for a in fake.actions].count("Login") == 1


@fresh_loop
async def test_refused_port_raises_ami_unavailable() -> None:
    ami = AmiClient("127.0.0.1", free_port(), USER, SECRET, timeout=0.5)

    with pytest.raises(AmiUnavailable):
        await ami.contacts()
    await ami.close()


@fresh_loop
async def test_refused_login_is_an_error_that_names_no_secret(fake: FakeAmi) -> None:
    ami = AmiClient("127.0.0.1", fake.port, USER, "wrong-secret", timeout=0.5)

    with pytest.raises(AmiError) as caught:
        await ami.contacts()
    await ami.close()

    assert not isinstance(caught.value, AmiUnavailable)
    assert "manager.conf" in str(caught.value)
    assert "wrong-secret" not in str(caught.value)
    assert "wrong-secret" not in repr(ami)


@fresh_loop
async def test_silent_server_times_out_and_next_call_reconnects(
    fake: FakeAmi,
) -> None:
    fake.mode = "hang"
    ami = fake.client(timeout=0.2)
    try:
        with pytest.raises(AmiUnavailable, match="did not answer"):
            await ami.contacts()
        fake.mode = "ok"
        fake.release.set()
        contacts = await ami.contacts()
    finally:
        await ami.close()

    assert len(contacts) == 2
    assert fake.connections == 2


@fresh_loop
async def test_connection_dropped_while_idle_is_replaced_transparently(
    fake: FakeAmi,
) -> None:
    ami = fake.client()
    try:
        await ami.contacts()
        fake.drop_all()  # Asterisk restarted between two calls
        contacts = await ami.contacts()
    finally:
        await ami.close()

    assert len(contacts) == 2
    assert fake.connections == 2


@fresh_loop
async def test_drop_on_a_fresh_connection_is_unavailable_without_retry(
    fake: FakeAmi,
) -> None:
    fake.mode = "drop"
    ami = fake.client()

    with pytest.raises(AmiUnavailable):
        await ami.contacts()
    await ami.close()

    assert fake.connections == 1


@fresh_loop
async def test_drop_in_the_middle_of_a_list_is_unavailable(fake: FakeAmi) -> None:
    fake.mode = "drop_mid_list"
    ami = fake.client()

    with pytest.raises(AmiUnavailable):
        await ami.contacts()
    await ami.close()


@fresh_loop
async def test_a_port_that_is_not_ami_is_unavailable(fake: FakeAmi) -> None:
    fake.banner = b"SSH-2.0-OpenSSH_9.2\r\n"
    ami = fake.client()

    with pytest.raises(AmiUnavailable, match="not an AMI port"):
        await ami.contacts()
    await ami.close()


@fresh_loop
async def test_close_logs_off_is_idempotent_and_leaves_no_tasks(
    fake: FakeAmi,
) -> None:
    ami = fake.client()
    await ami.contacts()

    await ami.close()
    await ami.close()
    await fake.stop()

    assert fake.actions[-1]["Action"] == "Logoff"
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_line_breaks_in_credentials_are_refused() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        AmiClient("127.0.0.1", 5038, USER, "x\r\nAction: Originate")

"""A small AMI reader for what ARI does not tell: PJSIP contacts and endpoints.

It speaks just enough of the Asterisk Manager Interface (a text protocol of
``Key: Value`` blocks) to log in with events off and run list actions. It
connects on first use, keeps the connection between calls, and after any
failure reconnects on the next call. It is hand-written on asyncio streams
because panoramisk 1.4 runs its own endless reconnect timer that ``close()``
cannot stop, which leaks retries and callbacks once Asterisk is unreachable.

    ami = AmiClient("127.0.0.1", 5038, "somvad", secret)
    for contact in await ami.contacts():
        print(contact.endpoint, contact.uri, contact.status)
    await ami.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass

from ari_handlers.errors import AmiError, AmiUnavailable

__all__ = ["AmiClient", "AmiError", "AmiUnavailable", "Contact"]

logger = logging.getLogger(__name__)

Message = dict[str, str]

BANNER_PREFIX = "Asterisk Call Manager/"

# Bounds on what one answer may contain, so a confused peer cannot keep us
# reading forever; a trading floor has thousands of contacts, not millions.
_MAX_LINES_PER_MESSAGE = 1000
_MAX_MESSAGES_PER_ACTION = 200_000


@dataclass(frozen=True)
class Contact:
    """One registered (or static) PJSIP contact as PJSIPShowContacts lists it."""

    endpoint: str
    aor: str
    uri: str
    id: str  # the sorcery object id, "<aor>;@<hash>"
    status: str
    user_agent: str
    via_address: str
    reg_expire: int | None  # absolute Unix time; None for permanent contacts


class _StaleConnection(Exception):
    """A kept-alive connection turned out dead before it answered anything."""


class AmiClient:
    """Runs AMI list actions one at a time over one lazily opened connection."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        timeout: float = 5.0,
    ) -> None:
        for name, value in (("username", username), ("secret", secret)):
            if "\r" in value or "\n" in value:
                raise ValueError(f"AMI {name} must not contain line breaks")
        self._host = host
        self._port = port
        self._username = username
        self._secret = secret
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._action_ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"AmiClient({self._host!r}, {self._port}, user={self._username!r})"

    async def contacts(self) -> list[Contact]:
        """All PJSIP contacts; [] when none are registered.

        Raises AmiUnavailable when AMI cannot be reached or stops answering,
        AmiError when Asterisk refuses the login or the action.
        """
        events = await self._list_action(
            "PJSIPShowContacts",
            item_event="ContactList",
            complete_event="ContactListComplete",
        )
        return [_contact(event) for event in events]

    async def endpoints(self) -> list[str]:
        """Names of all PJSIP endpoints (static and pushed); [] when none.

        Raises like ``contacts``.
        """
        events = await self._list_action(
            "PJSIPShowEndpoints",
            item_event="EndpointList",
            complete_event="EndpointListComplete",
        )
        return [name for event in events if (name := event.get("objectname", ""))]

    async def close(self) -> None:
        """Log off and close the connection; safe to call more than once."""
        async with self._lock:
            await self._disconnect(logoff=True)

    async def _list_action(
        self, action: str, *, item_event: str, complete_event: str
    ) -> list[Message]:
        """Run a list action and return its item events in order."""
        async with self._lock:
            reused = self._writer is not None
            try:
                return await self._run_list(action, item_event, complete_event)
            except _StaleConnection as exc:
                if not reused:
                    raise AmiUnavailable(str(exc)) from exc
            # The kept connection died while idle (Asterisk restarted): one
            # fresh attempt is right, more would hide a real outage.
            logger.info("AMI connection to %s:%s was stale; reconnecting", *self._peer)
            try:
                return await self._run_list(action, item_event, complete_event)
            except _StaleConnection as exc:
                raise AmiUnavailable(str(exc)) from exc

    @property
    def _peer(self) -> tuple[str, int]:
        return self._host, self._port

    async def _run_list(
        self, action: str, item_event: str, complete_event: str
    ) -> list[Message]:
        try:
            async with asyncio.timeout(self._timeout):
                await self._ensure_connected()
                return await self._exchange_list(action, item_event, complete_event)
        except TimeoutError as exc:
            await self._disconnect()
            raise AmiUnavailable(
                f"AMI at {self._host}:{self._port} did not answer {action} "
                f"within {self._timeout:g} s"
            ) from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            await self._disconnect()
            raise AmiUnavailable(
                f"AMI at {self._host}:{self._port} failed during {action}: {exc!r}"
            ) from exc
        except (_StaleConnection, AmiError):
            await self._disconnect()
            raise

    async def _exchange_list(
        self, action: str, item_event: str, complete_event: str
    ) -> list[Message]:
        action_id = f"somvad-{next(self._action_ids)}"
        try:
            await self._send({"Action": action, "ActionID": action_id})
            first = await self._next_for(action_id)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise _StaleConnection(
                f"AMI at {self._host}:{self._port} dropped the connection: {exc!r}"
            ) from exc

        response = first.get("response", "")
        if response.lower() != "success":
            reason = first.get("message", "")
            if _means_empty(reason):
                return []
            raise AmiError(f"AMI {action} failed: {reason or response}")

        wanted = {item_event, complete_event}
        items: list[Message] = []
        for _ in range(_MAX_MESSAGES_PER_ACTION):
            item = await self._next_for(action_id, events=wanted)
            if item.get("event") == complete_event:
                return items
            if item.get("event") == item_event:
                items.append(item)
        raise AmiError(f"AMI {action} sent more than {_MAX_MESSAGES_PER_ACTION} items")

    async def _ensure_connected(self) -> None:
        if self._writer is not None:
            return

        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            raise AmiUnavailable(
                f"cannot connect to AMI at {self._host}:{self._port}: {exc}"
            ) from exc
        self._reader, self._writer = reader, writer

        banner = (await reader.readline()).decode("utf-8", "replace").strip()
        if not banner.startswith(BANNER_PREFIX):
            raise AmiUnavailable(
                f"{self._host}:{self._port} is not an AMI port (banner {banner[:60]!r})"
            )

        action_id = f"somvad-{next(self._action_ids)}"
        # Events off: this client only runs actions, and an event stream would
        # have to be drained even when nobody asks for contacts.
        await self._send(
            {
                "Action": "Login",
                "ActionID": action_id,
                "Username": self._username,
                "Secret": self._secret,
                "Events": "off",
            }
        )
        answer = await self._next_for(action_id)
        if answer.get("response", "").lower() != "success":
            raise AmiError(
                f"AMI login as {self._username!r} refused "
                f"({answer.get('message', 'no reason given')}); check manager.conf"
            )
        logger.debug("AMI logged in to %s:%s (%s)", self._host, self._port, banner)

    async def _send(self, fields: dict[str, str]) -> None:
        writer = self._writer
        if writer is None:
            raise AmiUnavailable("AMI connection is not open")
        lines = []
        for key, value in fields.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"AMI field {key} must not contain line breaks")
            lines.append(f"{key}: {value}\r\n")
        writer.write(("".join(lines) + "\r\n").encode())
        await writer.drain()

    async def _next_for(
        self, action_id: str, *, events: frozenset[str] | set[str] = frozenset()
    ) -> Message:
        """The next message answering ``action_id``.

        Messages for other ActionIDs are skipped, and so are unsolicited events
        without an ActionID unless their name is in ``events``.
        """
        for _ in range(_MAX_MESSAGES_PER_ACTION):
            message = await self._read_message()
            if "actionid" in message:
                if message["actionid"] == action_id:
                    return message
            elif "event" not in message or message["event"] in events:
                return message
        raise AmiError("AMI sent too many unrelated messages")

    async def _read_message(self) -> Message:
        reader = self._reader
        if reader is None:
            raise AmiUnavailable("AMI connection is not open")

        message: Message = {}
        for _ in range(_MAX_LINES_PER_MESSAGE):
            raw = await reader.readline()
            if not raw:
                raise asyncio.IncompleteReadError(b"", None)
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if message:
                    return message
                continue  # blank lines between messages
            key, sep, value = line.partition(":")
            if sep:
                message[key.strip().lower()] = value.strip()
        raise AmiError("AMI message too long")

    async def _disconnect(self, *, logoff: bool = False) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        with contextlib.suppress(OSError, RuntimeError):
            if logoff and not writer.is_closing():
                # Polite goodbye so Asterisk does not log a dropped manager
                # session; no need to wait for its answer.
                writer.write(b"Action: Logoff\r\n\r\n")
            writer.close()
            async with asyncio.timeout(self._timeout):
                await writer.wait_closed()


def _means_empty(reason: str) -> bool:
    """Asterisk answers an empty PJSIP list with an error such as "No Contacts
    found" or "No endpoints found" rather than with zero items."""
    words = reason.strip().lower().split()
    return len(words) >= 2 and words[0] == "no" and words[-1] == "found"


def _contact(event: Message) -> Contact:
    object_name = event.get("objectname", "")
    return Contact(
        endpoint=event.get("endpoint", ""),
        aor=event.get("aor") or _aor_of(object_name),
        uri=event.get("uri", ""),
        id=object_name,
        status=event.get("status", ""),
        user_agent=event.get("useragent", ""),
        via_address=_via_address(event.get("viaaddr", ""), event.get("viaport", "")),
        reg_expire=_expiration(event.get("expirationtime", "")),
    )


def _aor_of(object_name: str) -> str:
    """The AOR part of a contact id: ``<aor>;@<hash>`` (older: ``<aor>@@<hash>``)."""
    for separator in (";@", "@@"):
        aor, found, _ = object_name.partition(separator)
        if found:
            return aor
    return object_name


def _via_address(host: str, port: str) -> str:
    if not host:
        return ""
    if not port or port == "0":
        return host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 needs brackets before a port
    return f"{host}:{port}"


def _expiration(value: str) -> int | None:
    """Absolute expiry in Unix seconds; 0 marks a contact that never expires."""
    try:
        seconds = int(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None

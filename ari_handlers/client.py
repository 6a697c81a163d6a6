"""Async ARI client: REST calls plus the one events WebSocket of a Stasis app.

The client keeps a single reader on ``/ari/events`` and reconnects with capped,
jittered backoff. Events are handled in order per channel and per bridge, each
key on its own worker, so a slow handler for one call never holds up another.
After every (re)connect the ``on_connect`` handlers run first (reconcile
channels and bridges, re-push configuration); events that arrive meanwhile are
held and delivered afterwards, never dropped.

    client = AriClient("http://127.0.0.1:8088", "somvad", secret, "somvad")
    client.on_event("StasisStart", calls.on_stasis_start)
    client.on_connect(calls.reconcile)
    await client.start()
    await client.wait_connected(timeout=5)
    ...
    await client.close()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json as jsonlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ari_handlers.errors import AriNotFound, AriUnavailable, error_for_status

logger = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]

GLOBAL_KEY = "global"

# 2**32 times any sane initial delay is far beyond any cap; stopping the
# exponent there keeps the float arithmetic finite after days of outage.
_MAX_BACKOFF_EXPONENT = 32


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 for the first retry).

    The ceiling doubles per attempt from ``initial`` up to ``maximum``; the
    delay is drawn between half the ceiling and the ceiling ("equal jitter"),
    so many control-plane nodes do not hammer a restarting Asterisk in step
    while the wait still grows.
    """
    exponent = min(max(attempt, 0), _MAX_BACKOFF_EXPONENT)
    ceiling = min(maximum, initial * (2**exponent))
    return ceiling / 2 + rand() * ceiling / 2


def dispatch_key(event: Mapping[str, Any]) -> str:
    """The ordering key of an ARI event: its channel, else its bridge, else global."""
    for field in ("channel", "bridge"):
        obj = event.get(field)
        if isinstance(obj, Mapping) and obj.get("id"):
            return f"{field}:{obj['id']}"
    return GLOBAL_KEY


def _segment(value: str) -> str:
    """Quote one path segment so an id with '/' or '?' stays one segment."""
    return quote(value, safe="")


def _query_value(value: str | int | bool) -> str:
    # ARI spells booleans in lower case; aiohttp refuses bool query values.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _KeyedDispatcher:
    """One FIFO queue and one worker task per dispatch key.

    A worker exits as soon as its queue is empty, so keys of finished calls do
    not accumulate. While ``hold()`` is in force (on_connect handlers running),
    events are parked in arrival order and queued on ``release()``.
    """

    def __init__(self, handle: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._handle = handle
        self._queues: dict[str, deque[dict[str, Any]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._held: list[dict[str, Any]] | None = None

    @property
    def active_keys(self) -> int:
        return len(self._workers)

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        for event in held or ():
            self.submit(event)

    def submit(self, event: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append(event)
            return

        key = dispatch_key(event)
        queue = self._queues.get(key)
        if queue is None:
            queue = deque()
            self._queues[key] = queue
            self._workers[key] = asyncio.create_task(
                self._work(key, queue), name=f"ari-events-{key}"
            )
        queue.append(event)

    async def _work(self, key: str, queue: deque[dict[str, Any]]) -> None:
        try:
            while queue:
                await self._handle(queue.popleft())
        finally:
            # No await between the empty check and this removal, so submit()
            # cannot append to a queue whose worker has already left.
            self._queues.pop(key, None)
            self._workers.pop(key, None)

    async def close(self) -> None:
        self._held = None
        current = asyncio.current_task()
        workers = [task for task in self._workers.values() if task is not current]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._queues.clear()
        self._workers.clear()


class AriClient:
    """REST + events client for one Asterisk and one Stasis application."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str,
        *,
        request_timeout: float = 5.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        heartbeat: float | None = 10.0,
        exclusive: bool = False,
    ) -> None:
        self.app = app
        # Credentials travel only in the Authorization header, so neither the
        # URLs we request nor the ones we log ever carry a user or password.
        self._base = URL(base_url.rstrip("/")).with_user(None)
        self._display_url = str(self._base)
        self._auth_headers = {"Authorization": _basic_auth(username, password)}
        self._request_timeout = request_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._heartbeat = heartbeat
        # Refuse to open the events socket while another client holds the
        # app: Asterisk would silently move the events to the newest socket.
        self._exclusive = exclusive

        self._event_handlers: dict[str, list[EventHandler]] = {}
        self._connect_handlers: list[ConnectHandler] = []
        self._disconnect_handlers: list[ConnectHandler] = []
        self._dispatcher = _KeyedDispatcher(self._handle_event)

        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._connected = False
        self._connected_event = asyncio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"AriClient({self._display_url!r}, app={self.app!r})"

    @property
    def connected(self) -> bool:
        """True while the events WebSocket is open and on_connect handlers ran."""
        return self._connected

    def on_event(self, event_type: str, handler: EventHandler) -> None:
        """Call ``handler`` for each event of ``event_type`` ("*" = every event).

        Per event, the handlers of its type run first, then the "*" handlers,
        each in registration order.
        """
        self._event_handlers.setdefault(event_type, []).append(handler)

    def on_connect(self, handler: ConnectHandler) -> None:
        """Run ``handler`` after every (re)connect, before held events flow."""
        self._connect_handlers.append(handler)

    def on_disconnect(self, handler: ConnectHandler) -> None:
        """Run ``handler`` each time the events WebSocket drops."""
        self._disconnect_handlers.append(handler)

    async def start(self) -> None:
        """Create the HTTP session and start the connection loop; returns at once."""
        if self._closed:
            raise RuntimeError("AriClient was closed; create a new one")
        if self._loop_task is not None:
            return

        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._request_timeout,
            sock_connect=self._request_timeout,
        )
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._loop_task = asyncio.create_task(
            self._connection_loop(), name=f"ari-connection-{self.app}"
        )

    async def app_in_use(self) -> bool:
        """Whether another client holds this Stasis application right now.

        Asterisk hands an application's events to the newest websocket, so a
        second control plane connecting as the same app silently takes the
        events away from the first. Callable before start().
        """
        timeout = aiohttp.ClientTimeout(total=self._request_timeout)
        url = URL(f"{self._base}/ari/applications/{_segment(self.app)}")
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, headers=self._auth_headers) as response,
            ):
                status = response.status
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AriUnavailable(None, str(exc), "/applications") from exc
        if status == 404:
            return False
        if status == 200:
            return True
        raise error_for_status(status, body.decode(errors="replace"), "/applications")

    async def wait_connected(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until ``connected``; False if ``timeout`` seconds pass first."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected_event.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop reconnecting, cancel handler workers, close WebSocket and session."""
        if self._closed:
            return
        self._closed = True

        task, self._loop_task = self._loop_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._dispatcher.close()

        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._set_connected(False)
        logger.debug("ARI client for %s closed", self._display_url)

    # REST

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        json: Any = None,
        timeout: float | None = None,  # noqa: ASYNC109 (per-request HTTP limit)
    ) -> Any:
        """Call ``<base_url>/ari<path>``; parsed JSON, None for an empty answer.

        A non-JSON body (a recording's audio) comes back as bytes. HTTP errors
        raise the typed errors of ``ari_handlers.errors``; refused, reset or
        timed-out requests raise ``AriUnavailable``.
        """
        session = self._session
        if session is None or session.closed:
            raise AriUnavailable(None, "ARI client is not started", path)

        if not path.startswith("/"):
            path = f"/{path}"
        query = {k: _query_value(v) for k, v in (params or {}).items()}
        url = URL(f"{self._base}/ari{path}")
        seconds = self._request_timeout if timeout is None else timeout
        try:
            async with session.request(
                method,
                url,
                params=query or None,
                json=json,
                headers=self._auth_headers,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                status = response.status
                content_type = response.content_type
                body = await response.read()
        except TimeoutError as exc:
            raise AriUnavailable(
                None, f"no answer within {seconds:g} s from {self._display_url}", path
            ) from exc
        except aiohttp.ClientError as exc:
            raise AriUnavailable(
                None, f"cannot reach {self._display_url}: {exc}", path
            ) from exc

        logger.debug("ARI %s %s -> %s", method, path, status)
        if status >= 400:
            raise error_for_status(status, _error_message(body), path)
        if not body:
            return None
        if content_type == "application/json":
            try:
                return jsonlib.loads(body)
            except ValueError as exc:
                raise AriUnavailable(status, "ARI sent malformed JSON", path) from exc
        return body

    async def get_info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/asterisk/info")
        return result

    async def list_channels(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/channels")
        return result

    async def list_bridges(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/bridges")
        return result

    async def create_bridge(
        self, bridge_id: str, *, bridge_type: str = "mixing", name: str = ""
    ) -> dict[str, Any]:
        """Create the bridge, or update it if ``bridge_id`` exists (ARI semantics)."""
        params: dict[str, str | int | bool] = {"type": bridge_type}
        if name:
            params["name"] = name
        result: dict[str, Any] = await self.request(
            "POST", f"/bridges/{_segment(bridge_id)}", params=params
        )
        return result

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{_segment(bridge_id)}")

    async def add_channel(self, bridge_id: str, channel_id: str) -> None:
        await self.request(
            "POST",
            f"/bridges/{_segment(bridge_id)}/addChannel",
            params={"channel": channel_id},
        )

    async def remove_channel(self, bridge_id: str, channel_id: str) -> None:
        await self.request(
            "POST",
            f"/bridges/{_segment(bridge_id)}/removeChannel",
            params={"channel": channel_id},
        )

    async def originate(
        self,
        channel_id: str,
        endpoint: str,
        *,
        app_args: str = "",
        caller_id: str | None = None,
        timeout: int = 30,  # noqa: ASYNC109 (Asterisk's ring time, sent as a parameter)
        variables: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Dial ``endpoint`` into this client's Stasis app as ``channel_id``."""
        params: dict[str, str | int | bool] = {
            "endpoint": endpoint,
            "app": self.app,
            "timeout": timeout,
        }
        if app_args:
            params["appArgs"] = app_args
        if caller_id is not None:
            params["callerId"] = caller_id
        # Variables go in the body: query strings end up in access logs.
        body = {"variables": variables} if variables else None
        result: dict[str, Any] = await self.request(
            "POST", f"/channels/{_segment(channel_id)}", params=params, json=body
        )
        return result

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_segment(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self.request(
            "DELETE", f"/channels/{_segment(channel_id)}", params={"reason": reason}
        )

    async def mute(self, channel_id: str, direction: str = "in") -> None:
        await self.request(
            "POST",
            f"/channels/{_segment(channel_id)}/mute",
            params={"direction": direction},
        )

    async def unmute(self, channel_id: str, direction: str = "in") -> None:
        await self.request(
            "DELETE",
            f"/channels/{_segment(channel_id)}/mute",
            params={"direction": direction},
        )

    async def get_channel_var(self, channel_id: str, name: str) -> str | None:
        """The variable's value, or None if it is not set on the channel.

        A missing channel still raises ``AriNotFound``.
        """
        try:
            result = await self.request(
                "GET",
                f"/channels/{_segment(channel_id)}/variable",
                params={"variable": name},
            )
        except AriNotFound as exc:
            # Asterisk answers 404 both for an unknown channel and for an
            # unset variable; only its message tells them apart.
            if "variable" in exc.message.lower():
                return None
            raise
        value = result.get("value") if isinstance(result, dict) else None
        return value if isinstance(value, str) else None

    async def push_config(
        self,
        config_class: str,
        object_type: str,
        object_id: str,
        fields: dict[str, str],
    ) -> None:
        """Create or replace a dynamic sorcery object (e.g. a PJSIP auth).

        Field values may be SIP passwords: they go only in the request body and
        never into logs or error messages.
        """
        body = {"fields": [{"attribute": k, "value": v} for k, v in fields.items()]}
        await self.request(
            "PUT", _config_path(config_class, object_type, object_id), json=body
        )

    async def delete_config(
        self, config_class: str, object_type: str, object_id: str
    ) -> None:
        """Delete a dynamic sorcery object; one that is already gone is fine."""
        with contextlib.suppress(AriNotFound):
            await self.request(
                "DELETE", _config_path(config_class, object_type, object_id)
            )

    async def get_config(
        self, config_class: str, object_type: str, object_id: str
    ) -> dict[str, str]:
        result = await self.request(
            "GET", _config_path(config_class, object_type, object_id)
        )
        return {
            str(item["attribute"]): str(item["value"])
            for item in result or ()
            if isinstance(item, dict) and "attribute" in item
        }

    # Events

    def _events_url(self) -> URL:
        return self._base / "ari" / "events"

    async def _connection_loop(self) -> None:
        attempt = 0
        while not self._closed:
            ws = await self._try_connect(attempt)
            if ws is None:
                delay = backoff_delay(attempt, self._backoff_initial, self._backoff_max)
                attempt += 1
                await asyncio.sleep(delay)
                continue

            attempt = 0
            try:
                await self._serve(ws)
            except Exception:
                # A bug in the reader must not end reconnection for good.
                logger.exception("ARI events loop failed for app %s", self.app)
            finally:
                self._ws = None
                await ws.close()
            if self._closed:
                return

            await self._run_handlers(self._disconnect_handlers, "on_disconnect")
            # Pause before redialling so a server that accepts and at once
            # drops the socket cannot spin this loop.
            await asyncio.sleep(
                backoff_delay(0, self._backoff_initial, self._backoff_max)
            )

    async def _held_elsewhere(self, attempt: int) -> bool:
        try:
            held = await self.app_in_use()
        except AriUnavailable:
            return False  # the connect attempt reports the outage
        if held and attempt % 20 == 0:
            logger.error(
                "ARI app %s at %s is held by another client; not connecting",
                self.app,
                self._display_url,
            )
        return held

    async def _try_connect(
        self, attempt: int
    ) -> aiohttp.ClientWebSocketResponse | None:
        session = self._session
        if session is None:
            return None
        if self._exclusive and await self._held_elsewhere(attempt):
            return None
        try:
            async with asyncio.timeout(self._request_timeout):
                ws = await session.ws_connect(
                    self._events_url(),
                    params={"app": self.app, "subscribeAll": "true"},
                    headers=self._auth_headers,
                    heartbeat=self._heartbeat,
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Loud on the first failure and then now and again; quiet between,
            # so a long outage leaves a trace without flooding the log.
            level = logging.WARNING if attempt % 20 == 0 else logging.DEBUG
            logger.log(
                level,
                "ARI events for app %s at %s unreachable (attempt %s): %s",
                self.app,
                self._display_url,
                attempt + 1,
                exc,
            )
            return None
        self._ws = ws
        logger.info("ARI events connected: app %s at %s", self.app, self._display_url)
        return ws

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read ``ws`` until it closes; on_connect handlers run while events wait."""
        self._dispatcher.hold()
        reader = asyncio.create_task(self._read(ws), name=f"ari-reader-{self.app}")
        try:
            await self._run_handlers(self._connect_handlers, "on_connect")
            if not reader.done():
                self._set_connected(True)
            self._dispatcher.release()
            await reader
        finally:
            # Deliver whatever arrived, even if the socket died during on_connect.
            self._dispatcher.release()
            self._set_connected(False)
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        logger.warning(
            "ARI events disconnected: app %s at %s (close code %s)",
            self.app,
            self._display_url,
            ws.close_code,
        )

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self._accept(message.data)
            elif message.type == aiohttp.WSMsgType.ERROR:
                logger.warning("ARI events socket error: %s", ws.exception())
                return

    def _accept(self, data: str) -> None:
        try:
            event = jsonlib.loads(data)
        except ValueError:
            logger.warning("ARI sent a non-JSON event frame (%s bytes)", len(data))
            return
        if not isinstance(event, dict):
            logger.warning("ARI sent a non-object event: %s", type(event).__name__)
            return
        self._dispatcher.submit(event)

    async def _handle_event(self, event: dict[str, Any]) -> None:
        event_type = str(event.get("type", ""))
        handlers = [
            *self._event_handlers.get(event_type, ()),
            *self._event_handlers.get("*", ()),
        ]
        for handler in handlers:
            try:
                await handler(event)
            except Exception:
                logger.exception(
                    "ARI %s handler %s failed (key %s)",
                    event_type,
                    getattr(handler, "__qualname__", handler),
                    dispatch_key(event),
                )

    async def _run_handlers(self, handlers: list[ConnectHandler], kind: str) -> None:
        for handler in list(handlers):
            try:
                await handler()
            except Exception:
                logger.exception(
                    "ARI %s handler %s failed",
                    kind,
                    getattr(handler, "__qualname__", handler),
                )

    def _set_connected(self, value: bool) -> None:
        self._connected = value
        if value:
            self._connected_event.set()
        else:
            self._connected_event.clear()


def _basic_auth(username: str, password: str) -> str:
    # Built by hand: aiohttp 3.14 deprecates BasicAuth, and its replacement
    # does not exist in the older 3.x releases setup.cfg still allows.
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _config_path(config_class: str, object_type: str, object_id: str) -> str:
    return (
        f"/asterisk/config/dynamic/{_segment(config_class)}/"
        f"{_segment(object_type)}/{_segment(object_id)}"
    )


def _error_message(body: bytes) -> str:
    """ARI's ``message`` from an error body, else a short excerpt of the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = jsonlib.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return text[:200]

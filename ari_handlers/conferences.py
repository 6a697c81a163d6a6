"""What Asterisk says about conference calls, routed to the conference service.

The ARI client hands events over in order per channel; the service takes the
conference's lock, so API calls and these events never interleave badly.
"""

from __future__ import annotations

from typing import Any

from app.services.conferences import ConferenceService
from ari_handlers.client import AriClient


def register(client: AriClient, mixer_id: str, service: ConferenceService) -> None:
    async def stasis_start(event: dict[str, Any]) -> None:
        await service.on_stasis_start(mixer_id, event)

    async def stasis_end(event: dict[str, Any]) -> None:
        await service.on_channel_gone(mixer_id, str(event["channel"]["id"]), None)

    async def channel_destroyed(event: dict[str, Any]) -> None:
        cause = event.get("cause")
        await service.on_channel_gone(
            mixer_id,
            str(event["channel"]["id"]),
            int(cause) if isinstance(cause, int) else None,
        )

    client.on_event("StasisStart", stasis_start)
    client.on_event("StasisEnd", stasis_end)
    client.on_event("ChannelDestroyed", channel_destroyed)

"""The mixer pool: the Asterisk instances the platform drives, and placement.

Every conference is placed through ``place``, even while there is one
mixer, so that adding mixers later changes one function, not its callers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import MixerUnavailable
from app.models import Conference, Mixer
from ari_handlers.ami import AmiClient
from ari_handlers.client import AriClient

logger = logging.getLogger(__name__)


@dataclass
class MixerLink:
    """A live connection to one Asterisk: ARI for control, AMI for contacts."""

    id: str
    ari: AriClient
    ami: AmiClient

    @property
    def available(self) -> bool:
        return self.ari.connected


def place(mixers: Sequence[Mixer], load: dict[str, int]) -> Mixer | None:
    """The least loaded mixer that is not draining (ties go to the oldest)."""
    candidates = [mixer for mixer in mixers if not mixer.draining]
    if not candidates:
        return None
    return min(candidates, key=lambda m: (load.get(m.id, 0), m.created_at, m.id))


class MixerPool:
    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self._db = db
        self._links: dict[str, MixerLink] = {}

    def add(self, link: MixerLink) -> None:
        self._links[link.id] = link

    def links(self) -> list[MixerLink]:
        return list(self._links.values())

    def link(self, mixer_id: str) -> MixerLink:
        link = self._links.get(mixer_id)
        if link is None or not link.available:
            raise MixerUnavailable(
                f"mixer {mixer_id} is not reachable; retry when it is back",
                details={"mixer_id": mixer_id},
            )
        return link

    async def register(self, mixer_id: str, name: str, ari_url: str) -> None:
        async with self._db() as session, session.begin():
            mixer = await session.get(Mixer, mixer_id)
            if mixer is None:
                session.add(Mixer(id=mixer_id, name=name, ari_url=ari_url))
            else:
                mixer.ari_url = ari_url

    async def place_conference(self, session: AsyncSession) -> Mixer:
        mixers = list(await session.scalars(select(Mixer)))
        counts = await session.execute(
            select(Conference.mixer_id, func.count()).group_by(Conference.mixer_id)
        )
        load = {mixer_id: count for mixer_id, count in counts.all()}
        chosen = place(mixers, load)
        if chosen is None:
            raise MixerUnavailable("no mixer accepts new conferences right now")
        return chosen
